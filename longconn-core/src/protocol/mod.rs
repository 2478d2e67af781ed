//! The wire protocol: frame layout, field encodings, wire codes and the stream codec.
//!
//! docs/PROTOCOL.md is the specification; docs/protocol-vectors.json holds test vectors
//! that this module's tests decode and re-encode byte for byte.

mod code;
mod codec;
mod fields;
mod frame;
mod quality;

pub use code::Code;
pub use codec::{FrameCodec, FrameView};
pub use fields::{
    MAX_FIELD_LEN, MAX_ID_LEN, MAX_MESSAGE_LEN, MAX_NETWORK, MAX_TOKEN_LEN, Metadata, MetadataIter,
    Text, tag,
};
pub use frame::{FLAG_ACK_REQUIRED, Frame, FrameType, HEADER_LEN, MAGIC, Position, VERSION};
pub use quality::{
    LATENCY_BUCKET_BOUNDS_MS, LATENCY_BUCKETS, MAX_REPORT_LEN, QualityReport, REPORT_ENTRY_LEN,
    REPORT_VERSION, ReportError, ReportTransport, TransportReport, latency_bucket,
};
