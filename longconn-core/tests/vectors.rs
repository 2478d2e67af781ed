//! Checks the codec against docs/protocol-vectors.json, which an independent Python
//! encoder (docs/tools/gen_protocol_vectors.py) produced from the specification.

use bytes::BytesMut;
use longconn_core::{Error, Frame, FrameCodec, FrameType};
use serde_json::{Value, json};
use tokio_util::codec::Decoder;

const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/protocol-vectors.json"
));

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("protocol-vectors.json is valid JSON")
}

fn codec(doc: &Value) -> FrameCodec {
    FrameCodec::new(doc["max_frame_size"].as_u64().unwrap() as usize)
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The error's kind, as the vectors name it (the `Error` variant's name).
fn kind(err: &Error) -> &'static str {
    match err {
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
        other => panic!("not a decode error: {other}"),
    }
}

/// A decoded frame in the vectors' JSON form (every field of its type).
fn to_json(frame: &Frame) -> Value {
    let text = |t: &longconn_core::Text| json!(t.as_str());
    let opt_text = |t: &Option<longconn_core::Text>| t.as_ref().map_or(Value::Null, &text);
    let meta = |m: &longconn_core::Metadata| {
        Value::Array(
            m.iter()
                .map(|(k, v)| json!({"key": k, "value_hex": hex(v)}))
                .collect(),
        )
    };
    let ty = format!("{:?}", frame.frame_type());
    let mut v = match frame {
        Frame::Login {
            id,
            app,
            device,
            token,
            meta: m,
        } => json!({
            "id": id, "app": text(app), "device": text(device), "token": hex(token), "meta": meta(m)
        }),
        Frame::LoginAck {
            id,
            conn_id,
            heartbeat_ms,
            expires_at_ms,
        } => json!({
            "id": id, "conn_id": conn_id, "heartbeat_ms": heartbeat_ms, "expires_at_ms": expires_at_ms
        }),
        Frame::Ping { id, payload } | Frame::Pong { id, payload } => {
            json!({"id": id, "payload_hex": hex(payload)})
        }
        Frame::Request {
            id,
            business,
            meta: m,
            payload,
        }
        | Frame::Response {
            id,
            business,
            meta: m,
            payload,
        } => json!({
            "id": id, "business": business, "meta": meta(m), "payload_hex": hex(payload)
        }),
        Frame::Push {
            id,
            ack_required,
            business,
            group,
            seq,
            meta: m,
            payload,
        } => json!({
            "id": id, "ack_required": ack_required, "business": business, "group": opt_text(group),
            "seq": seq, "meta": meta(m), "payload_hex": hex(payload)
        }),
        Frame::PushAck { id } => json!({"id": id}),
        Frame::JoinGroup { id, group }
        | Frame::JoinAck { id, group }
        | Frame::LeaveGroup { id, group }
        | Frame::LeaveAck { id, group } => json!({"id": id, "group": text(group)}),
        Frame::TokenExpiring { deadline_ms } => json!({"deadline_ms": deadline_ms}),
        Frame::TokenRefresh { id, token } => json!({"id": id, "token": hex(token)}),
        Frame::TokenRefreshAck { id, expires_at_ms } => {
            json!({"id": id, "expires_at_ms": expires_at_ms})
        }
        Frame::Kick { code, message } | Frame::Close { code, message } => {
            json!({"code": code.as_u16(), "message": text(message)})
        }
        Frame::Error { id, code, message } => {
            json!({"id": id, "code": code.as_u16(), "message": text(message)})
        }
        Frame::GoAway {
            retry_after_ms,
            message,
        } => {
            json!({"retry_after_ms": retry_after_ms, "message": text(message)})
        }
        other => panic!("no JSON form for {other:?}: extend the vectors"),
    };
    v["type"] = json!(ty);
    v
}

#[test]
fn valid_vectors_decode_to_their_frames_and_encode_back() {
    let doc = vectors();
    let mut codec = codec(&doc);
    let max = doc["max_frame_size"].as_u64().unwrap() as usize;
    for vector in doc["valid"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        let bytes = unhex(vector["hex"].as_str().unwrap());

        // As a stream: exactly one frame, everything consumed.
        let mut buf = BytesMut::from(&bytes[..]);
        let frame = codec
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: incomplete"));
        assert!(buf.is_empty(), "{name}: bytes left over");
        assert_eq!(to_json(&frame), vector["frame"], "{name}: decoded fields");

        // As one message.
        let message = codec.decode_message(bytes.clone().into()).unwrap();
        assert_eq!(message, frame, "{name}: message decode");

        // Encoding: byte for byte when canonical, otherwise a faithful round trip.
        let encoded = frame.to_bytes(max).unwrap();
        if vector["canonical"] != json!(false) {
            assert_eq!(
                hex(&encoded),
                vector["hex"].as_str().unwrap(),
                "{name}: encoding"
            );
        } else {
            assert_ne!(encoded.as_ref(), &bytes[..], "{name}: marked non-canonical");
            assert_eq!(
                codec.decode_message(encoded).unwrap(),
                frame,
                "{name}: round trip"
            );
        }
    }
}

#[test]
fn valid_vectors_need_every_byte_before_they_decode() {
    let doc = vectors();
    let mut codec = codec(&doc);
    for vector in doc["valid"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        let bytes = unhex(vector["hex"].as_str().unwrap());
        let mut buf = BytesMut::new();
        for (i, byte) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let out = codec
                .decode(&mut buf)
                .unwrap_or_else(|e| panic!("{name}@{i}: {e}"));
            assert_eq!(out.is_some(), i == bytes.len() - 1, "{name}: byte {i}");
        }
    }
}

#[test]
fn invalid_vectors_fail_with_their_error() {
    let doc = vectors();
    let mut codec = codec(&doc);
    for vector in doc["invalid"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        let mut buf = BytesMut::from(&unhex(vector["hex"].as_str().unwrap())[..]);
        let result = if vector["at_eof"] == json!(true) {
            assert!(
                matches!(codec.decode(&mut buf), Ok(None)),
                "{name}: incomplete input is not an error before the end"
            );
            codec.decode_eof(&mut buf)
        } else {
            codec.decode(&mut buf)
        };
        match result {
            Err(err) => assert_eq!(kind(&err), vector["error"], "{name}: {err}"),
            Ok(frame) => panic!("{name}: decoded {frame:?}"),
        }
    }
}

#[test]
fn vectors_cover_every_frame_type_and_error_kind() {
    let doc = vectors();
    let types: Vec<&str> = doc["valid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["frame"]["type"].as_str().unwrap())
        .collect();
    for code in 0x01..=0x13u8 {
        let ty = format!("{:?}", FrameType::from_u8(code).unwrap());
        assert!(types.contains(&ty.as_str()), "no valid vector for {ty}");
    }
    let errors: Vec<&str> = doc["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["error"].as_str().unwrap())
        .collect();
    for kind in [
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
    ] {
        assert!(errors.contains(&kind), "no invalid vector for {kind}");
    }
}

#[test]
fn vectors_file_matches_its_generator() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let output = match std::process::Command::new("python3")
        .arg("docs/tools/gen_protocol_vectors.py")
        .current_dir(root)
        .output()
    {
        Ok(output) => output,
        Err(err) => {
            eprintln!("SKIPPED vectors_file_matches_its_generator: python3 not runnable: {err}");
            return;
        }
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stdout == VECTORS.as_bytes(),
        "docs/protocol-vectors.json is stale: rerun docs/tools/gen_protocol_vectors.py"
    );
}
