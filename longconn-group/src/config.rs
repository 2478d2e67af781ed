//! [`GroupConfig`]: every limit of the group layer, with its default and range.

use crate::error::{Error, Result};

/// Group limits and fan-out sizing. Build with [`GroupConfig::builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    max_groups_per_connection: usize,
    max_members_per_group: usize,
    max_group_id_len: usize,
    max_frame_size: usize,
    fanout_chunk: usize,
    fanout_workers: usize,
    relay_timeout: std::time::Duration,
    max_pending_publishes: usize,
    max_group_backlog: usize,
    saturated_retry_after: std::time::Duration,
    history: crate::history::HistoryConfig,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            max_groups_per_connection: 64,
            max_members_per_group: 1_000_000,
            max_group_id_len: 128,
            max_frame_size: longconn_core::SessionConfig::default().max_frame_size(),
            fanout_chunk: 1024,
            fanout_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            relay_timeout: std::time::Duration::from_secs(5),
            max_pending_publishes: 64,
            max_group_backlog: 128,
            saturated_retry_after: std::time::Duration::from_millis(100),
            history: crate::history::HistoryConfig::default(),
        }
    }
}

impl GroupConfig {
    /// Which groups keep their recent publications for recovery after a reconnect, and
    /// how many (see [`crate::history`]). Default: none (off). A registry built with
    /// rules keeps the history in memory ([`crate::MemoryHistory`]).
    pub fn history(&self) -> &crate::history::HistoryConfig {
        &self.history
    }

    /// A builder starting from the defaults.
    pub fn builder() -> GroupConfigBuilder {
        GroupConfigBuilder {
            config: GroupConfig::default(),
        }
    }

    /// A builder starting from these settings (to change one and keep the others).
    pub fn to_builder(&self) -> GroupConfigBuilder {
        GroupConfigBuilder {
            config: self.clone(),
        }
    }

    /// Groups one connection may be in at once; one more join gets `group_limit`.
    /// Default 64; 1 to 65,536.
    pub fn max_groups_per_connection(&self) -> usize {
        self.max_groups_per_connection
    }

    /// Members one group may have on this node; one more join gets `group_full`.
    /// Default 1,000,000; at least 1.
    pub fn max_members_per_group(&self) -> usize {
        self.max_members_per_group
    }

    /// Longest group id in bytes; longer ids (and empty ones) get `group_forbidden`.
    /// Default 128; 1 to 1,024.
    pub fn max_group_id_len(&self) -> usize {
        self.max_group_id_len
    }

    /// Largest encoded group push; set it to the sessions' `max_frame_size`. Default
    /// `SessionConfig`'s default, 64 KiB.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Members pushed per fan-out chunk. Groups up to this size are pushed inline by the
    /// publisher; larger ones are split into chunks for the worker pool. Default 1,024;
    /// 16 to 1,048,576.
    pub fn fanout_chunk(&self) -> usize {
        self.fanout_chunk
    }

    /// Fan-out worker tasks (the bounded pool large groups share). Default: the number of
    /// CPUs the process may run on; 1 to 256. With 1, publishers push inline (no pool).
    /// With [`crate::GroupRegistry::wake_on`] (the gateway) the pool is not used: the
    /// publisher pushes inline and this is the most wake-up tasks one publish spawns on
    /// the drivers' runtime.
    pub fn fanout_workers(&self) -> usize {
        self.fanout_workers
    }

    /// Longest wait for the other nodes' answers to a relayed publish
    /// ([`crate::GroupRegistry::with_relay`]); nodes still unanswered then count in
    /// [`crate::PublishReport::unknown_nodes`]. Default 5 s; at least 1 ms.
    pub fn relay_timeout(&self) -> std::time::Duration {
        self.relay_timeout
    }

    /// Publishes to one group this node may hold at once, waiting for the group's
    /// publish order or fanning out; one more is refused with [`Error::Saturated`]
    /// (HTTP 503 `group_saturated`) instead of waiting. Bounds how long a publish can
    /// wait behind others of its group. Default 64; 1 to 65,536.
    pub fn max_pending_publishes(&self) -> usize {
        self.max_pending_publishes
    }

    /// The group's fan-out backlog at which it counts as saturated: when more than half
    /// of a sample of its members (8, spread over the member list; all of them in
    /// smaller groups) each have at least this many pushes still waiting in their
    /// queue, a publish is refused with [`Error::Saturated`] before it is numbered. So
    /// a group whose members are not keeping up costs at most about `members ×
    /// (max_group_backlog + 1)` queued pushes (40 B each, the frames shared), and a
    /// publish is never more than this many pushes behind for most members. Lone slow
    /// members are the slow-consumer policy's business (`max_queued_pushes`), not
    /// this limit's. Default 128; 1 to 1,048,576. Set it below the sessions'
    /// `max_queued_pushes` (default 256) for it to act before members drop pushes.
    pub fn max_group_backlog(&self) -> usize {
        self.max_group_backlog
    }

    /// The retry hint a refused publish carries ([`Error::Saturated`]; the HTTP API's
    /// `Retry-After` header, rounded up to whole seconds, and `retry_after_ms`).
    /// Default 100 ms; 1 ms to 60 s.
    pub fn saturated_retry_after(&self) -> std::time::Duration {
        self.saturated_retry_after
    }
}

/// Builder for [`GroupConfig`].
#[derive(Debug, Clone)]
pub struct GroupConfigBuilder {
    config: GroupConfig,
}

impl GroupConfigBuilder {
    /// See [`GroupConfig::max_groups_per_connection`].
    pub fn max_groups_per_connection(mut self, value: usize) -> Self {
        self.config.max_groups_per_connection = value;
        self
    }
    /// See [`GroupConfig::max_members_per_group`].
    pub fn max_members_per_group(mut self, value: usize) -> Self {
        self.config.max_members_per_group = value;
        self
    }
    /// See [`GroupConfig::max_group_id_len`].
    pub fn max_group_id_len(mut self, value: usize) -> Self {
        self.config.max_group_id_len = value;
        self
    }
    /// See [`GroupConfig::max_frame_size`].
    pub fn max_frame_size(mut self, value: usize) -> Self {
        self.config.max_frame_size = value;
        self
    }
    /// See [`GroupConfig::fanout_chunk`].
    pub fn fanout_chunk(mut self, value: usize) -> Self {
        self.config.fanout_chunk = value;
        self
    }
    /// See [`GroupConfig::fanout_workers`].
    pub fn fanout_workers(mut self, value: usize) -> Self {
        self.config.fanout_workers = value;
        self
    }
    /// See [`GroupConfig::relay_timeout`].
    pub fn relay_timeout(mut self, value: std::time::Duration) -> Self {
        self.config.relay_timeout = value;
        self
    }
    /// See [`GroupConfig::max_pending_publishes`].
    pub fn max_pending_publishes(mut self, value: usize) -> Self {
        self.config.max_pending_publishes = value;
        self
    }
    /// See [`GroupConfig::max_group_backlog`].
    pub fn max_group_backlog(mut self, value: usize) -> Self {
        self.config.max_group_backlog = value;
        self
    }
    /// See [`GroupConfig::saturated_retry_after`].
    pub fn saturated_retry_after(mut self, value: std::time::Duration) -> Self {
        self.config.saturated_retry_after = value;
        self
    }

    /// See [`GroupConfig::history`].
    pub fn history(mut self, value: crate::history::HistoryConfig) -> Self {
        self.config.history = value;
        self
    }

    /// Checks every value against its documented range.
    pub fn build(self) -> Result<GroupConfig> {
        let c = self.config;
        let check = |ok: bool, field, reason| {
            if ok {
                Ok(())
            } else {
                Err(Error::InvalidConfig { field, reason })
            }
        };
        check(
            (1..=65_536).contains(&c.max_groups_per_connection),
            "max_groups_per_connection",
            "must be 1 to 65536",
        )?;
        check(
            c.max_members_per_group >= 1,
            "max_members_per_group",
            "must be at least 1",
        )?;
        check(
            (1..=1024).contains(&c.max_group_id_len),
            "max_group_id_len",
            "must be 1 to 1024",
        )?;
        check(
            c.max_frame_size >= 64,
            "max_frame_size",
            "must be at least 64",
        )?;
        check(
            (16..=1 << 20).contains(&c.fanout_chunk),
            "fanout_chunk",
            "must be 16 to 1048576",
        )?;
        check(
            (1..=256).contains(&c.fanout_workers),
            "fanout_workers",
            "must be 1 to 256",
        )?;
        check(
            c.relay_timeout >= std::time::Duration::from_millis(1),
            "relay_timeout",
            "must be at least 1 ms",
        )?;
        check(
            (1..=65_536).contains(&c.max_pending_publishes),
            "max_pending_publishes",
            "must be 1 to 65536",
        )?;
        check(
            (1..=1 << 20).contains(&c.max_group_backlog),
            "max_group_backlog",
            "must be 1 to 1048576",
        )?;
        check(
            (std::time::Duration::from_millis(1)..=std::time::Duration::from_secs(60))
                .contains(&c.saturated_retry_after),
            "saturated_retry_after",
            "must be 1 ms to 60 s",
        )?;
        c.history.validate().map_err(|e| Error::InvalidConfig {
            field: "history",
            reason: e.0,
        })?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(GroupConfig::builder().build().is_ok());
        for builder in [
            GroupConfig::builder().max_groups_per_connection(0),
            GroupConfig::builder().max_members_per_group(0),
            GroupConfig::builder().max_group_id_len(0),
            GroupConfig::builder().fanout_chunk(8),
            GroupConfig::builder().fanout_workers(0),
            GroupConfig::builder().max_frame_size(10),
            GroupConfig::builder().relay_timeout(std::time::Duration::ZERO),
            GroupConfig::builder().max_pending_publishes(0),
            GroupConfig::builder().max_group_backlog(0),
            GroupConfig::builder().max_group_backlog((1 << 20) + 1),
            GroupConfig::builder().saturated_retry_after(std::time::Duration::ZERO),
            GroupConfig::builder().saturated_retry_after(std::time::Duration::from_secs(61)),
        ] {
            assert!(matches!(builder.build(), Err(Error::InvalidConfig { .. })));
        }
    }
}
