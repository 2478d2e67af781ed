//! Groups of the longconn gateway framework: group id -> this node's member connections,
//! and multicast fan-out that encodes a push once and shares it between members.
//!
//! This crate is reserved in the workspace by the foundation issue; its contents arrive
//! with the groups-and-push issue. The wire side (`JoinGroup`, `LeaveGroup`, group
//! sequence numbers in `Push`) is already in `longconn_core::protocol`.
//!
//! # Layout
//! Empty for now: a registry module and a fan-out module.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
