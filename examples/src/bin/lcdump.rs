//! `lcdump`: decode longconn frames given as hex and print them.
//!
//! ```text
//! cargo run --bin lcdump -- 4c43010300000000000000000000000770696e67
//! echo 4c43... | cargo run --bin lcdump
//! ```
//! Each argument (or each stdin line) holds one or more frames back to back. Decoding
//! uses the library's codec, so the output is what a gateway would see, errors included.

use std::io::BufRead;
use std::process::ExitCode;

use bytes::BytesMut;
use longconn_core::FrameCodec;
use longconn_core::config::MAX_FRAME_SIZE;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inputs = if args.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .collect()
    } else {
        args
    };
    let mut ok = true;
    for input in inputs.iter().filter(|line| !line.trim().is_empty()) {
        ok &= match parse_hex(input) {
            Ok(mut buf) => dump(&mut buf),
            Err(e) => {
                eprintln!("error: {e}");
                false
            }
        };
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints every frame in `buf`; false on the first decode error.
fn dump(buf: &mut BytesMut) -> bool {
    let mut codec = FrameCodec::new(MAX_FRAME_SIZE);
    loop {
        match codec.decode_eof(buf) {
            Ok(Some(frame)) => println!("{frame:#?}"),
            Ok(None) => return true,
            Err(e) => {
                println!("error: {e} (wire code {})", e.wire_code());
                return false;
            }
        }
    }
}

fn parse_hex(s: &str) -> Result<BytesMut, String> {
    let digits: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("not hex: {:?}", String::from_utf8_lossy(pair)))
        })
        .collect::<Result<Vec<u8>, _>>()
        .map(|v| BytesMut::from(&v[..]))
}
