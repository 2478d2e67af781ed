//! The group layer's metrics (docs/METRICS.md): `longconn_groups`,
//! `longconn_group_members`, and group fan-out in `longconn_pushes_total{mode="group"}`.
//! Handles are registered at first use, so install a recorder before the first join.

use std::sync::OnceLock;

use longconn_server::metrics::{PushMetrics, PushMode, PushOutcomeLabel};
use metrics::{Gauge, gauge};

use crate::fanout::Tally;

#[derive(Debug)]
pub(crate) struct GroupMetrics {
    pub(crate) groups: Gauge,
    pub(crate) members: Gauge,
    pushes: PushMetrics,
}

impl GroupMetrics {
    /// Counts one fan-out: per member, once per publish (not per push).
    pub(crate) fn record_fanout(&self, tally: &Tally) {
        let gone = tally.dropped - tally.full - tally.slow;
        let counts = [
            (PushOutcomeLabel::Queued, tally.queued),
            (PushOutcomeLabel::DroppedFull, tally.full),
            (PushOutcomeLabel::DroppedSlow, tally.slow),
            (PushOutcomeLabel::Offline, gone),
        ];
        for (outcome, n) in counts {
            if n > 0 {
                self.pushes.record(PushMode::Group, outcome, n as u64);
            }
        }
    }
}

pub(crate) fn group_metrics() -> &'static GroupMetrics {
    static METRICS: OnceLock<GroupMetrics> = OnceLock::new();
    METRICS.get_or_init(|| GroupMetrics {
        groups: gauge!("longconn_groups"),
        members: gauge!("longconn_group_members"),
        pushes: PushMetrics::new(),
    })
}
