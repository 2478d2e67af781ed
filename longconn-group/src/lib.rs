//! Groups of the longconn gateway framework: group id -> this node's member connections,
//! and multicast fan-out that encodes a push once and shares it between members.
//!
//! ```text
//! JoinGroup / LeaveGroup ──► driver ──► GroupRegistry (GroupMembership) ◄── server-side join/leave
//!                                              │
//! GroupRegistry::publish(group, msg) ── saturated? ──► Error::Saturated (HTTP 503 group_saturated)
//!          │  (max_pending_publishes waiting, or sampled members' queues at max_group_backlog)
//!          └── GroupLog position, encode once ──► member snapshot
//!                ├── small group: every member's ConnHandle::push, inline
//!                ├── large group: chunks of `fanout_chunk` members ──► FanoutPool (bounded workers)
//!                └── with a relay: Relay::publish_group ──► other nodes' RelayInbox ──► deliver_relayed
//! ```
//!
//! In a cluster, [`GroupRegistry::with_relay`] sends each publish once to every other
//! node with members (with the position it took from the shared
//! `longconn_server::GroupLog`), and those nodes deliver it to their own members
//! without numbering it again.
//!
//! A connection may be in many groups (up to [`GroupConfig::max_groups_per_connection`]);
//! it leaves all of them when it closes. Each publish numbers its push with the group's
//! next position (`epoch` and `seq` in the `Push` frame, `seq` from 1), so a client can
//! tell a gap. With the default `LocalGroupLog`, a group created again after its last
//! member left starts a new epoch at `seq` 1.
//!
//! # Layout
//! - [`config`]: [`GroupConfig`], the limits and fan-out sizing.
//! - [`registry`]: [`GroupRegistry`], membership, presence counts and publish; the
//!   [`JoinAuthorizer`] hook.
//! - `fanout`: the bounded worker pool that pushes chunks of large groups.
//! - [`error`]: the crate's one error type, [`Error`].
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod config;
pub mod error;
mod fanout;
pub mod history;
mod metrics;
pub mod registry;

pub use config::{GroupConfig, GroupConfigBuilder};
pub use error::{Error, Result};
pub use history::{GroupHistory, HistoryConfig, HistoryRule, MemoryHistory, NoHistory, Recovery};
pub use registry::{AllowAll, GroupRegistry, JoinAuthorizer, PublishReport};
