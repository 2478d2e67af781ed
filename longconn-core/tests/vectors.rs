//! Checks the codec against docs/protocol-vectors.json, the test vectors produced by the
//! independent Python encoder docs/tools/gen_protocol_vectors.py.
//!
//! Valid vectors must decode (as a stream, whole and one byte at a time, and as one
//! message) to exactly the frame the file describes, and canonical ones must re-encode to
//! the same bytes. Invalid vectors must fail with the documented `Error` variant.

use std::path::Path;
use std::process::Command;

use bytes::{Bytes, BytesMut};
use longconn_core::DecodeError as Error;
use longconn_core::protocol::{
    Code, Frame, FrameCodec, FrameType, Metadata, QualityReport, ReportError, ReportTransport,
    VERSION,
};
use serde_json::{Map, Value, json};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol-vectors.json");
const GENERATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/tools/gen_protocol_vectors.py"
);

/// Every frame type, by the name the vectors use.
const FRAME_TYPES: [&str; 20] = [
    "Login",
    "LoginAck",
    "Ping",
    "Pong",
    "Request",
    "Response",
    "Push",
    "PushAck",
    "JoinGroup",
    "JoinAck",
    "LeaveGroup",
    "LeaveAck",
    "TokenExpiring",
    "TokenRefresh",
    "TokenRefreshAck",
    "Kick",
    "GoAway",
    "Error",
    "Close",
    "QualityReport",
];

/// Every `Error` variant that `FrameCodec` decoding can return (read off
/// protocol/codec.rs, frame.rs and fields.rs). Encoder failures are `EncodeError`s,
/// a different type, so they cannot appear here.
const DECODER_ERRORS: [&str; 10] = [
    "BadMagic",
    "UnsupportedVersion",
    "FrameTooLarge",
    "UnknownFrameType",
    "ReservedBits",
    "MalformedField",
    "InvalidUtf8",
    "DuplicateField",
    "MissingField",
    "Truncated",
];

struct Vectors {
    max_frame_size: usize,
    valid: Vec<Value>,
    invalid: Vec<Value>,
}

fn load() -> Vectors {
    let text = std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("{VECTORS}: {e}"));
    let doc: Value = serde_json::from_str(&text).expect("protocol-vectors.json is not JSON");
    assert_eq!(doc["protocol_version"], json!(VERSION));
    assert!(doc["description"].as_str().is_some_and(|d| !d.is_empty()));
    let list = |key: &str| doc[key].as_array().cloned().expect("a list of vectors");
    Vectors {
        max_frame_size: doc["max_frame_size"].as_u64().expect("max_frame_size") as usize,
        valid: list("valid"),
        invalid: list("invalid"),
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field `{key}` is not a string: {v}"))
}

fn name(v: &Value) -> &str {
    str_of(v, "name")
}

fn bytes_of(v: &Value) -> Bytes {
    Bytes::from(unhex(str_of(v, "hex")))
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd-length hex");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Error` variant's name, as the vectors spell it.
fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::BadMagic { .. } => "BadMagic",
        Error::UnsupportedVersion { .. } => "UnsupportedVersion",
        Error::FrameTooLarge { .. } => "FrameTooLarge",
        Error::UnknownFrameType(_) => "UnknownFrameType",
        Error::ReservedBits { .. } => "ReservedBits",
        Error::MalformedField { .. } => "MalformedField",
        Error::InvalidUtf8 { .. } => "InvalidUtf8",
        Error::DuplicateField { .. } => "DuplicateField",
        Error::MissingField { .. } => "MissingField",
        Error::Truncated { .. } => "Truncated",
        other => panic!("error variant without a name in this test: {other:?}"),
    }
}

/// The tag a field error carries, if it is one.
fn error_tag(error: &Error) -> Option<u8> {
    match error {
        Error::MalformedField { tag, .. }
        | Error::InvalidUtf8 { tag }
        | Error::DuplicateField { tag }
        | Error::MissingField { tag, .. } => Some(*tag),
        _ => None,
    }
}

fn meta_json(meta: &Metadata) -> Value {
    meta.iter()
        .map(|(key, value)| {
            let value = match std::str::from_utf8(value) {
                Ok(text) => json!(text),
                Err(_) => json!({ "hex": hex(value) }),
            };
            json!([key, value])
        })
        .collect()
}

fn type_name(ty: FrameType) -> &'static str {
    match ty {
        FrameType::Login => "Login",
        FrameType::LoginAck => "LoginAck",
        FrameType::Ping => "Ping",
        FrameType::Pong => "Pong",
        FrameType::Request => "Request",
        FrameType::Response => "Response",
        FrameType::Push => "Push",
        FrameType::PushAck => "PushAck",
        FrameType::JoinGroup => "JoinGroup",
        FrameType::JoinAck => "JoinAck",
        FrameType::LeaveGroup => "LeaveGroup",
        FrameType::LeaveAck => "LeaveAck",
        FrameType::TokenExpiring => "TokenExpiring",
        FrameType::TokenRefresh => "TokenRefresh",
        FrameType::TokenRefreshAck => "TokenRefreshAck",
        FrameType::Kick => "Kick",
        FrameType::GoAway => "GoAway",
        FrameType::Error => "Error",
        FrameType::Close => "Close",
        FrameType::QualityReport => "QualityReport",
    }
}

/// A decoded frame in the JSON form the vectors use, with every field of its variant.
fn frame_json(frame: &Frame) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(type_name(frame.frame_type())));
    let flags = matches!(
        frame,
        Frame::Push {
            ack_required: true,
            ..
        }
    ) as u8;
    m.insert("flags".into(), json!(flags));
    let fields = match frame {
        Frame::Login {
            id,
            app,
            device,
            token,
            meta,
        } => json!({
            "id": id, "app": app.as_str(), "device": device.as_str(),
            "token_hex": hex(token), "meta": meta_json(meta),
        }),
        Frame::LoginAck {
            id,
            conn_id,
            heartbeat_ms,
            expires_at_ms,
        } => json!({
            "id": id, "conn_id": conn_id, "heartbeat_ms": heartbeat_ms,
            "expires_at_ms": expires_at_ms,
        }),
        Frame::Ping { id, payload } | Frame::Pong { id, payload } => {
            json!({ "id": id, "payload_hex": hex(payload) })
        }
        Frame::Request {
            id,
            business,
            meta,
            payload,
        }
        | Frame::Response {
            id,
            business,
            meta,
            payload,
        } => json!({
            "id": id, "business": business, "meta": meta_json(meta),
            "payload_hex": hex(payload),
        }),
        Frame::Push {
            id,
            ack_required,
            business,
            group,
            seq,
            epoch,
            meta,
            payload,
        } => json!({
            "id": id, "ack_required": ack_required, "business": business,
            "group": group.as_ref().map(|g| g.as_str()), "seq": seq, "epoch": epoch,
            "meta": meta_json(meta), "payload_hex": hex(payload),
        }),
        Frame::PushAck { id } => json!({ "id": id }),
        Frame::JoinGroup { id, group, since } => json!({
            "id": id, "group": group.as_str(),
            "seq": since.map(|p| p.seq), "epoch": since.map(|p| p.epoch),
        }),
        Frame::JoinAck {
            id,
            group,
            position,
            recovered,
        } => json!({
            "id": id, "group": group.as_str(),
            "seq": position.map(|p| p.seq), "epoch": position.map(|p| p.epoch),
            "recovered": recovered,
        }),
        Frame::LeaveGroup { id, group } | Frame::LeaveAck { id, group } => {
            json!({ "id": id, "group": group.as_str() })
        }
        Frame::TokenExpiring { deadline_ms } => json!({ "deadline_ms": deadline_ms }),
        Frame::TokenRefresh { id, token } => json!({ "id": id, "token_hex": hex(token) }),
        Frame::TokenRefreshAck { id, expires_at_ms } => {
            json!({ "id": id, "expires_at_ms": expires_at_ms })
        }
        Frame::Kick { code, message } | Frame::Close { code, message } => {
            json!({ "code": code.as_u16(), "message": message.as_str() })
        }
        Frame::GoAway {
            retry_after_ms,
            message,
        } => json!({ "retry_after_ms": retry_after_ms, "message": message.as_str() }),
        Frame::Error { id, code, message } => {
            json!({ "id": id, "code": code.as_u16(), "message": message.as_str() })
        }
        Frame::QualityReport {
            id,
            network,
            payload,
        } => json!({ "id": id, "network": network, "payload_hex": hex(payload) }),
        other => panic!("frame variant without a JSON form in this test: {other:?}"),
    };
    let Value::Object(fields) = fields else {
        unreachable!()
    };
    m.extend(fields);
    Value::Object(m)
}

/// Decodes `bytes` as a stream: exactly one frame, the buffer consumed, a clean EOF after.
fn decode_stream(codec: &mut FrameCodec, bytes: &[u8], name: &str) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = codec
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("{name}: stream decode failed: {e}"))
        .unwrap_or_else(|| panic!("{name}: stream decode wants more bytes"));
    assert!(buf.is_empty(), "{name}: {} bytes left over", buf.len());
    assert!(matches!(codec.decode(&mut buf), Ok(None)), "{name}");
    assert!(matches!(codec.decode_eof(&mut buf), Ok(None)), "{name}");
    frame
}

fn encode(codec: &mut FrameCodec, frame: &Frame, name: &str) -> Bytes {
    let mut dst = BytesMut::new();
    codec
        .encode(frame, &mut dst)
        .unwrap_or_else(|e| panic!("{name}: encode failed: {e}"));
    dst.freeze()
}

#[test]
fn valid_vectors_decode_to_their_frames_and_reencode() {
    let vectors = load();
    let mut codec = FrameCodec::new(vectors.max_frame_size);
    for v in &vectors.valid {
        let name = name(v);
        let bytes = bytes_of(v);
        assert!(
            bytes.len() <= vectors.max_frame_size,
            "{name}: over the limit"
        );

        let frame = decode_stream(&mut codec, &bytes, name);
        let message = codec
            .decode_message(bytes.clone())
            .unwrap_or_else(|e| panic!("{name}: decode_message failed: {e}"));
        assert_eq!(message, frame, "{name}: stream and message decoding differ");
        assert_eq!(
            frame_json(&frame),
            v["frame"],
            "{name}: decoded frame differs"
        );

        let encoded = encode(&mut codec, &frame, name);
        assert_eq!(frame.encoded_len().unwrap(), encoded.len(), "{name}");
        assert_eq!(frame.to_bytes(vectors.max_frame_size).unwrap(), encoded);
        match v["canonical"].as_bool() {
            Some(true) => assert_eq!(hex(&encoded), hex(&bytes), "{name}: not canonical"),
            Some(false) => {
                assert_ne!(
                    encoded, bytes,
                    "{name}: marked non-canonical but re-encodes equal"
                );
                let again = decode_stream(&mut codec, &encoded, name);
                assert_eq!(again, frame, "{name}: re-encoded frame decodes differently");
                assert_eq!(encode(&mut codec, &again, name), encoded, "{name}");
            }
            None => panic!("{name}: `canonical` must be true or false"),
        }
    }
}

#[test]
fn valid_vectors_decode_one_byte_at_a_time() {
    let vectors = load();
    let mut codec = FrameCodec::new(vectors.max_frame_size);
    for v in &vectors.valid {
        let name = name(v);
        let bytes = bytes_of(v);
        let whole = codec.decode_message(bytes.clone()).unwrap();
        let mut buf = BytesMut::new();
        for (i, byte) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let out = codec
                .decode(&mut buf)
                .unwrap_or_else(|e| panic!("{name}: error after {} bytes: {e}", i + 1));
            if i + 1 < bytes.len() {
                assert!(out.is_none(), "{name}: frame after only {} bytes", i + 1);
            } else {
                assert_eq!(
                    out.as_ref(),
                    Some(&whole),
                    "{name}: last byte gave no frame"
                );
            }
        }
        assert!(buf.is_empty(), "{name}");
    }
}

fn decoders(v: &Value) -> Vec<&str> {
    let list: Vec<&str> = v["decoders"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: `decoders` is not a list", name(v)))
        .iter()
        .map(|d| d.as_str().expect("decoder name"))
        .collect();
    assert!(!list.is_empty(), "{}: no decoders", name(v));
    for d in &list {
        assert!(
            matches!(*d, "stream" | "message"),
            "{}: decoder {d}",
            name(v)
        );
    }
    list
}

/// Asserts that `error` is what the invalid vector `v` documents.
fn check_error(v: &Value, error: &Error, how: &str) {
    let name = name(v);
    assert_eq!(
        error_kind(error),
        str_of(v, "error"),
        "{name} ({how}): wrong error: {error}"
    );
    match v.get("tag") {
        Some(tag) => {
            let tag = tag.as_u64().expect("tag is a number");
            assert_eq!(
                error_tag(error).map(u64::from),
                Some(tag),
                "{name} ({how}): wrong tag: {error}"
            );
        }
        None => assert!(
            error_tag(error).is_none(),
            "{name}: field error without a `tag` in the vector: {error}"
        ),
    }
}

#[test]
fn invalid_vectors_fail_with_the_documented_error() {
    let vectors = load();
    let mut codec = FrameCodec::new(vectors.max_frame_size);
    for v in &vectors.invalid {
        let name = name(v);
        let bytes = bytes_of(v);
        let truncated = str_of(v, "error") == "Truncated";
        assert!(
            v["note"].as_str().is_some_and(|n| !n.is_empty()),
            "{name}: no note"
        );
        for decoder in decoders(v) {
            match decoder {
                "message" => match codec.decode_message(bytes.clone()) {
                    Ok(frame) => panic!("{name}: decode_message accepted it: {frame:?}"),
                    Err(e) => check_error(v, &e, "decode_message"),
                },
                _ => {
                    let mut buf = BytesMut::from(&bytes[..]);
                    if truncated {
                        assert!(
                            matches!(codec.decode(&mut buf), Ok(None)),
                            "{name}: a truncated frame must be Ok(None) before EOF"
                        );
                        let e = codec.decode_eof(&mut buf).expect_err(name);
                        check_error(v, &e, "decode_eof");
                    } else {
                        match codec.decode(&mut buf) {
                            Ok(out) => panic!("{name}: stream decode accepted it: {out:?}"),
                            Err(e) => check_error(v, &e, "decode"),
                        }
                        let mut buf = BytesMut::from(&bytes[..]);
                        let e = codec.decode_eof(&mut buf).expect_err(name);
                        check_error(v, &e, "decode_eof");
                    }
                }
            }
        }
    }
}

#[test]
fn invalid_vectors_fail_the_same_way_one_byte_at_a_time() {
    let vectors = load();
    let mut codec = FrameCodec::new(vectors.max_frame_size);
    for v in vectors
        .invalid
        .iter()
        .filter(|v| decoders(v).contains(&"stream"))
    {
        let name = name(v);
        let bytes = bytes_of(v);
        let mut buf = BytesMut::new();
        let mut error = None;
        for (i, byte) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            match codec.decode(&mut buf) {
                Ok(None) => {}
                Ok(Some(frame)) => panic!("{name}: frame after {} bytes: {frame:?}", i + 1),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let error = match error {
            Some(e) => {
                assert_ne!(str_of(v, "error"), "Truncated", "{name}: error before EOF");
                e
            }
            None => codec.decode_eof(&mut buf).expect_err(name),
        };
        check_error(v, &error, "byte at a time");
    }
}

#[test]
fn vector_file_covers_every_frame_type_and_decoder_error() {
    let vectors = load();
    assert!(
        vectors.valid.len() >= 19,
        "only {} valid vectors",
        vectors.valid.len()
    );
    assert!(
        vectors.invalid.len() >= 12,
        "only {} invalid",
        vectors.invalid.len()
    );

    let mut names: Vec<&str> = vectors
        .valid
        .iter()
        .chain(&vectors.invalid)
        .map(name)
        .collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "vector names must be unique");

    for ty in FRAME_TYPES {
        let n = vectors
            .valid
            .iter()
            .filter(|v| v["frame"]["type"] == ty)
            .count();
        assert!(n >= 1, "no valid vector for frame type {ty}");
    }
    for kind in DECODER_ERRORS {
        let n = vectors
            .invalid
            .iter()
            .filter(|v| v["error"] == kind)
            .count();
        assert!(n >= 1, "no invalid vector for decoder error {kind}");
    }
    for v in &vectors.invalid {
        let kind = str_of(v, "error");
        assert!(DECODER_ERRORS.contains(&kind), "{}: {kind}", name(v));
    }

    // Features the file must keep exercising.
    let frames: Vec<&Value> = vectors.valid.iter().map(|v| &v["frame"]).collect();
    let any = |pred: &dyn Fn(&Value) -> bool| frames.iter().any(|f| pred(f));
    assert!(any(&|f| f["ack_required"] == true && f["flags"] == 1));
    assert!(any(&|f| f["id"] == u32::MAX));
    assert!(any(&|f| f["meta"].as_array().is_some_and(|m| m.len() >= 3)));
    assert!(any(&|f| f["payload_hex"] == ""));
    assert!(any(&|f| f["payload_hex"]
        .as_str()
        .is_some_and(|p| !p.is_empty())));
    assert!(any(
        &|f| f["expires_at_ms"].is_null() && f["type"] == "LoginAck"
    ));
    assert!(any(
        &|f| f["expires_at_ms"].is_u64() && f["type"] == "LoginAck"
    ));
    assert!(any(&|f| f["app"].as_str().is_some_and(|a| a.len() == 128)));
    assert!(any(&|f| f["code"].as_u64().is_some_and(|c| matches!(
        Code::from_u16(c as u16),
        Code::Other(_)
    ))));
    assert!(vectors.valid.iter().any(|v| v["canonical"] == false));
    assert!(
        vectors
            .valid
            .iter()
            .any(|v| unhex(str_of(v, "hex")).len() == vectors.max_frame_size),
        "no valid vector of exactly max_frame_size bytes"
    );
}

#[test]
fn unknown_codes_decode_as_other() {
    let vectors = load();
    let codec = FrameCodec::new(vectors.max_frame_size);
    let v = vectors
        .valid
        .iter()
        .find(|v| name(v) == "error_unknown_code")
        .expect("vector error_unknown_code");
    let frame = codec.decode_message(bytes_of(v)).unwrap();
    assert!(
        matches!(
            frame,
            Frame::Error {
                code: Code::Other(9999),
                ..
            }
        ),
        "{frame:?}"
    );
}

#[test]
fn vector_file_matches_the_python_generator() {
    let output = match Command::new("python3").arg(GENERATOR).output() {
        Ok(output) => output,
        Err(e) => {
            eprintln!("skipped: cannot run python3 ({e}); the vector file is not re-generated");
            return;
        }
    };
    assert!(
        output.status.success(),
        "{GENERATOR} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let on_disk = std::fs::read(VECTORS).unwrap();
    assert!(
        output.stdout == on_disk,
        "{} differs from the generator's output; run \
         `python3 docs/tools/gen_protocol_vectors.py > docs/protocol-vectors.json`",
        Path::new(VECTORS).display()
    );
}

fn report_json(report: &QualityReport) -> Value {
    json!({
        "version": report.version,
        "transports": report.transports.iter().map(|e| json!({
            "transport": e.transport.name(),
            "connect_attempts": e.connect_attempts,
            "connect_latency": e.connect_latency,
            "pings": e.pings,
            "rtt": e.rtt,
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn quality_report_bodies_decode_reencode_or_fail_with_their_error() {
    let text = std::fs::read_to_string(VECTORS).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let bodies = doc["quality_report_bodies"]
        .as_array()
        .expect("quality_report_bodies");
    let mut kinds = std::collections::BTreeSet::new();
    for v in bodies {
        let bytes = unhex(str_of(v, "hex"));
        match QualityReport::decode(&bytes) {
            Ok(report) => {
                assert!(
                    v["error"].is_null(),
                    "{}: decoded but {}",
                    name(v),
                    v["error"]
                );
                assert_eq!(report_json(&report), v["report"], "{}", name(v));
                assert_eq!(
                    hex(&report.encode().unwrap()),
                    str_of(v, "hex"),
                    "{}",
                    name(v)
                );
            }
            Err(err) => {
                assert_eq!(err.kind(), str_of(v, "error"), "{}: {err}", name(v));
                kinds.insert(err.kind());
            }
        }
    }
    let every: [ReportError; 7] = [
        ReportError::TooLong(0),
        ReportError::Truncated(""),
        ReportError::UnsupportedVersion(0),
        ReportError::UnknownTransport(0),
        ReportError::TransportOrder { id: 0, previous: 0 },
        ReportError::CountsInconsistent(ReportTransport::Tcp),
        ReportError::TrailingBytes(0),
    ];
    for e in every {
        assert!(kinds.contains(e.kind()), "no body vector for {}", e.kind());
    }
}
