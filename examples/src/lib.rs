//! Reference binaries of the longconn gateway framework, and the code they share.
//!
//! # Layout
//! - [`gateway`]: the reference gateway (`cargo run --release --bin gateway`): settings
//!   from defaults, a TOML file and flags; every listener; `/healthz`; graceful shutdown.
//! - `src/bin/`: thin `main`s: `gateway`, `lcdump` (decode hex frames).
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod gateway;
