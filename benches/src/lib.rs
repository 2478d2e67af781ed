//! Benchmarks for longconn. The criterion benches are in `benches/`; this library holds
//! the sample frames they share, so every bench measures the same bytes.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

use bytes::Bytes;
use longconn_core::{Frame, Metadata, Text};

/// A group push with a 128-byte payload: the frame a fan-out sends most.
pub fn push_frame_128() -> Frame {
    Frame::Push {
        id: 0,
        ack_required: false,
        business: 7,
        group: Some(Text::from_static("room-1")),
        seq: Some(42),
        epoch: None,
        meta: Metadata::new(),
        payload: Bytes::from(vec![0xAB; 128]),
    }
}

/// An upstream request with a 128-byte payload and one metadata entry.
pub fn request_frame_128() -> Frame {
    Frame::Request {
        id: 9,
        business: 1,
        meta: Metadata::from_pairs([("trace", b"abc123".as_slice())]).expect("valid metadata"),
        payload: Bytes::from(vec![0xCD; 128]),
    }
}
