//! Fuzzes the gateway's TOML config file: parsing into the file's schema and every
//! validation `GatewaySettings::resolve` does on it (the same code as `--config FILE`,
//! through `GatewaySettings::resolve_text`, without reading a file). Any text must give
//! settings or a `GatewayError` with a message; nothing may panic.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run config` (seeds: the example configs).
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use longconn_gateway::{Cli, GatewaySettings};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cli = Cli::try_parse_from(["gateway"]).expect("no flags parse");
    match GatewaySettings::resolve_text(cli, text) {
        Ok(settings) => {
            // The listeners take the session's frame limit.
            assert_eq!(
                settings.transport.max_frame_size(),
                settings.server.session().max_frame_size()
            );
        }
        Err(err) => assert!(!err.to_string().is_empty(), "an error without a message"),
    }
});
