//! The relay's message encoding (docs/CLUSTER.md "Relay messages"): a 12-byte header
//! (version, kind, sender node, correlation id) and a body of big-endian integers and
//! `u32`-length-prefixed byte strings.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use longconn_core::protocol::Code;
use longconn_server::{
    BatchFrames, GroupDelivery, GroupMessage, GroupPosition, KickRequest, KickTarget, RelayBatch,
    RelayResult, RelayTarget,
};

pub(crate) const VERSION: u8 = 1;
const HEADER: usize = 12;

/// What a relay message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    PushBatch(RelayBatch),
    Group(GroupMessage),
    Kick(KickRequest),
    /// A presence query: the group id.
    Presence(String),
    PushAnswer(Vec<RelayResult>),
    GroupAnswer(GroupDelivery),
    KickAnswer(RelayResult),
    /// The answering node's local member count of the queried group.
    PresenceAnswer(u64),
}

impl Body {
    fn kind(&self) -> u8 {
        match self {
            Body::PushBatch(_) => 1,
            Body::Group(_) => 2,
            Body::Kick(_) => 3,
            Body::Presence(_) => 4,
            Body::PushAnswer(_) => 0x81,
            Body::GroupAnswer(_) => 0x82,
            Body::KickAnswer(_) => 0x83,
            Body::PresenceAnswer(_) => 0x84,
        }
    }

    pub(crate) fn is_answer(&self) -> bool {
        self.kind() & 0x80 != 0
    }
}

/// One relay message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// The node that sent it (where an answer goes).
    pub(crate) from: u16,
    /// Chosen by the requester; an answer carries its request's.
    pub(crate) id: u64,
    pub(crate) body: Body,
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

fn result_byte(r: RelayResult) -> u8 {
    match r {
        RelayResult::Queued => 0,
        RelayResult::Offline => 1,
        RelayResult::Dropped => 2,
        RelayResult::Unknown => 3,
    }
}

fn byte_result(b: u8) -> Option<RelayResult> {
    Some(match b {
        0 => RelayResult::Queued,
        1 => RelayResult::Offline,
        2 => RelayResult::Dropped,
        3 => RelayResult::Unknown,
        _ => return None,
    })
}

impl Message {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_u8(VERSION);
        out.put_u8(self.body.kind());
        out.put_u16(self.from);
        out.put_u64(self.id);
        match &self.body {
            Body::PushBatch(batch) => {
                put_bytes(&mut out, batch.app.as_bytes());
                out.put_u32(batch.targets.len() as u32);
                for target in &batch.targets {
                    put_bytes(&mut out, target.device.as_bytes());
                    out.put_u64(target.conn_id);
                }
                match &batch.frames {
                    BatchFrames::Shared(frame) => {
                        out.put_u8(0);
                        put_bytes(&mut out, frame);
                    }
                    BatchFrames::Each(frames) => {
                        out.put_u8(1);
                        out.put_u32(frames.len() as u32);
                        for frame in frames {
                            put_bytes(&mut out, frame);
                        }
                    }
                }
            }
            Body::Group(message) => {
                put_bytes(&mut out, message.group.as_bytes());
                out.put_u64(message.position.epoch);
                out.put_u64(message.position.offset);
                put_bytes(&mut out, &message.frame);
            }
            Body::Kick(kick) => {
                match &kick.target {
                    KickTarget::Conn(id) => {
                        out.put_u8(0);
                        out.put_u64(*id);
                    }
                    KickTarget::Device { app, device } => {
                        out.put_u8(1);
                        put_bytes(&mut out, app.as_bytes());
                        put_bytes(&mut out, device.as_bytes());
                    }
                }
                out.put_u16(kick.code.as_u16());
                put_bytes(&mut out, kick.message.as_bytes());
            }
            Body::Presence(group) => put_bytes(&mut out, group.as_bytes()),
            Body::PushAnswer(results) => {
                out.put_u32(results.len() as u32);
                for r in results {
                    out.put_u8(result_byte(*r));
                }
            }
            Body::GroupAnswer(d) => {
                out.put_u64(d.members as u64);
                out.put_u64(d.queued as u64);
                out.put_u64(d.dropped as u64);
            }
            Body::KickAnswer(r) => out.put_u8(result_byte(*r)),
            Body::PresenceAnswer(members) => out.put_u64(*members),
        }
        out.freeze()
    }

    /// `None` for a message that is not version 1 or is malformed.
    pub(crate) fn decode(mut input: Bytes) -> Option<Message> {
        if input.len() < HEADER || input[0] != VERSION {
            return None;
        }
        input.advance(1);
        let kind = input.get_u8();
        let from = input.get_u16();
        let id = input.get_u64();
        let r = &mut Reader(input);
        let body = match kind {
            1 => {
                let app = r.string()?;
                let n = r.u32()? as usize;
                let mut targets = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    let device = r.string()?;
                    let conn_id = r.u64()?;
                    targets.push(RelayTarget { device, conn_id });
                }
                let frames = match r.u8()? {
                    0 => BatchFrames::Shared(r.bytes()?),
                    1 => {
                        let m = r.u32()? as usize;
                        let mut frames = Vec::with_capacity(m.min(4096));
                        for _ in 0..m {
                            frames.push(r.bytes()?);
                        }
                        BatchFrames::Each(frames)
                    }
                    _ => return None,
                };
                Body::PushBatch(RelayBatch {
                    app,
                    targets,
                    frames,
                })
            }
            2 => Body::Group(GroupMessage {
                group: r.string()?,
                position: GroupPosition {
                    epoch: r.u64()?,
                    offset: r.u64()?,
                },
                frame: r.bytes()?,
            }),
            3 => {
                let target = match r.u8()? {
                    0 => KickTarget::Conn(r.u64()?),
                    1 => KickTarget::Device {
                        app: r.string()?,
                        device: r.string()?,
                    },
                    _ => return None,
                };
                Body::Kick(KickRequest {
                    target,
                    code: Code::from_u16(r.u16()?),
                    message: r.string()?,
                })
            }
            4 => Body::Presence(r.string()?),
            0x81 => {
                let n = r.u32()? as usize;
                let mut results = Vec::with_capacity(n.min(65_536));
                for _ in 0..n {
                    results.push(byte_result(r.u8()?)?);
                }
                Body::PushAnswer(results)
            }
            0x82 => Body::GroupAnswer(GroupDelivery {
                members: r.u64()? as usize,
                queued: r.u64()? as usize,
                dropped: r.u64()? as usize,
            }),
            0x83 => Body::KickAnswer(byte_result(r.u8()?)?),
            0x84 => Body::PresenceAnswer(r.u64()?),
            _ => return None,
        };
        if r.0.has_remaining() {
            return None;
        }
        Some(Message { from, id, body })
    }
}

/// Bounds-checked reads; `None` past the end.
struct Reader(Bytes);

impl Reader {
    fn u8(&mut self) -> Option<u8> {
        (self.0.remaining() >= 1).then(|| self.0.get_u8())
    }
    fn u16(&mut self) -> Option<u16> {
        (self.0.remaining() >= 2).then(|| self.0.get_u16())
    }
    fn u32(&mut self) -> Option<u32> {
        (self.0.remaining() >= 4).then(|| self.0.get_u32())
    }
    fn u64(&mut self) -> Option<u64> {
        (self.0.remaining() >= 8).then(|| self.0.get_u64())
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let n = self.u32()? as usize;
        (self.0.remaining() >= n).then(|| self.0.split_to(n))
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(body: Body) {
        let message = Message {
            from: 7,
            id: 0x0102_0304_0506_0708,
            body,
        };
        let bytes = message.encode();
        assert_eq!(Message::decode(bytes.clone()), Some(message));
        // Every truncation is refused, never misread.
        for cut in 0..bytes.len() {
            assert_eq!(Message::decode(bytes.slice(..cut)), None, "cut at {cut}");
        }
        let mut longer = BytesMut::from(&bytes[..]);
        longer.put_u8(0);
        assert_eq!(Message::decode(longer.freeze()), None);
    }

    #[test]
    fn every_message_kind_round_trips() {
        let targets = vec![
            RelayTarget {
                device: "phone".into(),
                conn_id: 2 << 48 | 5,
            },
            RelayTarget {
                device: "tablet".into(),
                conn_id: 9,
            },
        ];
        round_trip(Body::PushBatch(RelayBatch {
            app: "app".into(),
            targets: targets.clone(),
            frames: BatchFrames::Shared(Bytes::from_static(b"frame")),
        }));
        round_trip(Body::PushBatch(RelayBatch {
            app: "app".into(),
            targets,
            frames: BatchFrames::Each(vec![Bytes::from_static(b"a"), Bytes::new()]),
        }));
        round_trip(Body::Group(GroupMessage {
            group: "room".into(),
            position: GroupPosition {
                epoch: (1 << 53) - 1,
                offset: 42,
            },
            frame: Bytes::from_static(b"group frame"),
        }));
        round_trip(Body::Kick(KickRequest {
            target: KickTarget::Conn(77),
            code: Code::Replaced,
            message: "logged in elsewhere".into(),
        }));
        round_trip(Body::Kick(KickRequest {
            target: KickTarget::Device {
                app: "app".into(),
                device: "phone".into(),
            },
            code: Code::Kicked,
            message: String::new(),
        }));
        round_trip(Body::PushAnswer(vec![
            RelayResult::Queued,
            RelayResult::Offline,
            RelayResult::Dropped,
            RelayResult::Unknown,
        ]));
        round_trip(Body::GroupAnswer(GroupDelivery {
            members: 3,
            queued: 2,
            dropped: 1,
        }));
        round_trip(Body::KickAnswer(RelayResult::Queued));
        round_trip(Body::Presence("room".into()));
        round_trip(Body::PresenceAnswer(12_345));
    }

    #[test]
    fn a_presence_query_and_its_answer_are_laid_out_as_documented() {
        let query = Message {
            from: 1,
            id: 2,
            body: Body::Presence("g1".into()),
        }
        .encode();
        assert_eq!(
            &query[..],
            &[1, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, b'g', b'1']
        );
        let answer = Message {
            from: 2,
            id: 2,
            body: Body::PresenceAnswer(3),
        }
        .encode();
        assert_eq!(
            &answer[..],
            &[
                1, 0x84, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3
            ]
        );
        assert!(Message::decode(answer).unwrap().body.is_answer());
        assert!(!Message::decode(query).unwrap().body.is_answer());
    }

    #[test]
    fn the_header_is_version_kind_node_id() {
        let bytes = Message {
            from: 0x0203,
            id: 1,
            body: Body::KickAnswer(RelayResult::Offline),
        }
        .encode();
        assert_eq!(&bytes[..], &[1, 0x83, 2, 3, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        let mut other_version = BytesMut::from(&bytes[..]);
        other_version[0] = 2;
        assert_eq!(Message::decode(other_version.freeze()), None);
    }
}
