//! Groups of the longconn gateway framework: group id -> this node's member connections,
//! and multicast fan-out that encodes a push once and shares it between members.
//!
//! ```text
//! JoinGroup / LeaveGroup ──► driver ──► GroupRegistry (GroupMembership) ◄── server-side join/leave
//!                                              │
//! GroupRegistry::publish(group, msg) ── seq+1, encode once ──► member snapshot
//!          ├── small group: every member's ConnHandle::push, inline
//!          └── large group: chunks of `fanout_chunk` members ──► FanoutPool (bounded workers)
//! ```
//!
//! A connection may be in many groups (up to [`GroupConfig::max_groups_per_connection`]);
//! it leaves all of them when it closes. Each publish numbers its push with the group's
//! next sequence number (`seq` in the `Push` frame, from 1), so a client can tell a gap.
//! The numbering restarts at 1 when a group is created again after its last member left.
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
pub mod registry;

pub use config::{GroupConfig, GroupConfigBuilder};
pub use error::{Error, Result};
pub use registry::{AllowAll, GroupRegistry, JoinAuthorizer, PublishReport};
