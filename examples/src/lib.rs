//! Reference binaries of the longconn gateway framework, and the code they share.
//!
//! # Layout
//! - [`gateway`]: the reference gateway (`cargo run --release --bin gateway`): settings
//!   from defaults, a TOML file and flags; every listener; `/healthz`; graceful shutdown.
//! - [`loadgen`]: the load and scenario tool (`cargo run --release --bin loadgen`).
//! - `src/bin/`: thin `main`s: `gateway`, `client`, `loadgen`, `lcdump` (decode hex
//!   frames).
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod gateway;
pub mod loadgen;
