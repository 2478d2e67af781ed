//! `GatewaySettings::resolve_text`, the config file's parser and validation without a
//! file (the entry point of the config fuzz target): the same answers as `--config`.

use clap::Parser;
use longconn_gateway::GatewayError;
use longconn_gateway::{Cli, GatewaySettings};

fn resolve(text: &str) -> Result<GatewaySettings, GatewayError> {
    GatewaySettings::resolve_text(Cli::try_parse_from(["gateway"]).unwrap(), text)
}

#[test]
fn config_text_is_parsed_and_validated_like_a_config_file() {
    let settings =
        resolve("node_id = 7\n[listen]\nquic = \"off\"\n[session]\nmax_frame_size = 4096\n")
            .unwrap();
    assert_eq!(settings.server.node_id(), 7);
    assert_eq!(settings.quic, None);
    assert_eq!(settings.transport.max_frame_size(), 4096);

    for (text, needle) in [
        ("node_id = \"seven\"", "node_id"),
        ("no_such_key = 1", "no_such_key"),
        ("[session]\nmax_frame_size = 10", "max_frame_size"),
        (
            "[transport]\nws_max_request_head = 1",
            "ws_max_request_head",
        ),
        ("[tls]\ncert = \"/c.pem\"", "both"),
        ("[[", ""),
    ] {
        let err = resolve(text)
            .err()
            .unwrap_or_else(|| panic!("{text:?} was accepted"));
        assert!(
            matches!(err, GatewayError::Config(_) | GatewayError::Transport(_)),
            "{err:?}"
        );
        assert!(err.to_string().contains(needle), "{text:?}: {err}");
    }
}
