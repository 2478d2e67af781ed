//! Transports of the longconn gateway framework: thin adapters that move frames between a
//! socket and a `longconn_core::Session`.
//!
//! This crate is reserved in the workspace by the foundation issue; its contents arrive
//! with the access-layer issue (TCP, TLS, WebSocket at `/ws`, QUIC with ALPN `longconn`).
//! The byte-level mappings are already specified in docs/PROTOCOL.md.
//!
//! # Layout
//! Empty for now: one module per transport, behind cargo features (`tcp` default, `ws`,
//! `quic`, `tls`).
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
