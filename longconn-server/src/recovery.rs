//! The live-push filter of a recovered rejoin.
//!
//! A rejoin from a position is answered with `JoinAck { position: top, recovered }`
//! and the pushes after the client's position up to `top`, taken from the group's
//! history after the member was added. A publish racing the join may therefore reach
//! the member twice: in the replay and live, through the inbox. [`Recovering`] drops
//! the live copies at or below `top` (same group, same epoch) until the first live push
//! above it arrives, so the client sees every push once, in order.

use bytes::Bytes;
use longconn_core::protocol::{Frame, FrameCodec, Position, Text};

use crate::hub::QueuedPush;

/// Groups whose replay ended at `top`, waiting for their first newer live push.
#[derive(Debug, Default)]
pub(crate) struct Recovering {
    groups: Vec<(Text, Position)>,
}

impl Recovering {
    /// Drops live pushes of `group` at or below `top` from now on.
    pub(crate) fn watch(&mut self, group: Text, top: Position) {
        self.groups.retain(|(g, _)| *g != group);
        self.groups.push((group, top));
    }

    /// Whether no group is watched any more.
    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Whether `push` was already replayed (drop it). A newer push of a watched group
    /// ends the watch.
    pub(crate) fn is_replayed(&mut self, push: &QueuedPush) -> bool {
        let Some((group, position)) = group_position(push) else {
            return false;
        };
        let Some(at) = self.groups.iter().position(|(g, _)| *g == group.as_str()) else {
            return false;
        };
        let top = self.groups[at].1;
        if position.epoch == top.epoch && position.seq <= top.seq {
            return true;
        }
        self.groups.swap_remove(at);
        false
    }
}

/// The group and position of a group push.
fn group_position(push: &QueuedPush) -> Option<(Text, Position)> {
    let decoded;
    let frame = match push {
        QueuedPush::Frame(frame) => &**frame,
        QueuedPush::Encoded(bytes) => {
            decoded = decode(bytes)?;
            &decoded
        }
    };
    match frame {
        Frame::Push {
            group: Some(group),
            seq: Some(seq),
            epoch: Some(epoch),
            ..
        } => Some((
            group.clone(),
            Position {
                epoch: *epoch,
                seq: *seq,
            },
        )),
        _ => None,
    }
}

fn decode(bytes: &Bytes) -> Option<Frame> {
    FrameCodec::new(usize::MAX)
        .decode_message(bytes.clone())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(group: &str, epoch: u64, seq: u64) -> QueuedPush {
        let frame = Frame::Push {
            id: 0,
            ack_required: false,
            business: 1,
            group: Some(group.into()),
            seq: Some(seq),
            epoch: Some(epoch),
            meta: Default::default(),
            payload: Bytes::from_static(b"x"),
        };
        QueuedPush::Encoded(frame.to_bytes(1 << 20).unwrap())
    }

    #[test]
    fn drops_replayed_live_pushes_until_a_newer_one() {
        let mut r = Recovering::default();
        r.watch("room".into(), Position { epoch: 5, seq: 10 });
        assert!(r.is_replayed(&push("room", 5, 9)));
        assert!(r.is_replayed(&push("room", 5, 10)));
        assert!(!r.is_replayed(&push("other", 5, 3)), "another group");
        assert!(!r.is_empty());
        assert!(!r.is_replayed(&push("room", 5, 11)));
        assert!(r.is_empty(), "the first newer push ends the watch");
        assert!(!r.is_replayed(&push("room", 5, 10)));
    }

    #[test]
    fn another_epoch_ends_the_watch() {
        let mut r = Recovering::default();
        r.watch("room".into(), Position { epoch: 5, seq: 10 });
        assert!(!r.is_replayed(&push("room", 6, 1)));
        assert!(r.is_empty());
    }
}
