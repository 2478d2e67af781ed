//! Fuzzes the frame decoder: any input, split into two reads at a point taken from the
//! input, through the streaming decoder and as one message. Whatever decodes must encode
//! back to a frame that decodes equal, and nothing may panic.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run decode`.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use longconn_core::{Frame, FrameCodec};

/// Small, so the size limit is exercised as often as valid frames.
const MAX_FRAME: usize = 4096;

fn check_round_trip(codec: &FrameCodec, frame: &Frame) {
    let bytes = frame.to_bytes(MAX_FRAME).expect("a decoded frame re-encodes");
    assert_eq!(frame.encoded_len().unwrap(), bytes.len());
    let again = codec.decode_message(bytes).expect("a re-encoded frame decodes");
    assert_eq!(&again, frame);
}

fuzz_target!(|data: &[u8]| {
    let mut codec = FrameCodec::new(MAX_FRAME);
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut buf = BytesMut::from(&data[..split]);
    let mut frames = Vec::new();
    let mut failed = false;
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if !failed {
        buf.extend_from_slice(&data[split..]);
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) | Err(_) => break,
            }
        }
    }
    for frame in &frames {
        check_round_trip(&codec, frame);
    }
    if let Ok(frame) = codec.decode_message(Bytes::copy_from_slice(data)) {
        check_round_trip(&codec, &frame);
    }
});
