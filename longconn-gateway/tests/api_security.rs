//! The gateway binary's push API security (issue 16 item 5): API keys from flags or the
//! config file, 401 JSON without one, `/healthz` open, an open API only on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SECRET: &str = "ops-secret-0123456789abcdef";

struct Running {
    child: Child,
    http: SocketAddr,
    /// The log lines up to the HTTP listener's.
    log: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--tcp", "127.0.0.1:0", "--ws", "off", "--quic", "off"])
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway binary starts");
    let listening = common::read_listening(&mut child);
    let http = listening.bound["http"];
    let log = listening.log;
    Running { child, http, log }
}

/// (status, headers, body) of a raw HTTP/1.1 request.
fn call(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = r#"{"app":"a","device":"d"}"#;
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn assert_locked(gateway: &Running) {
    let (status, head, body) = call(gateway.http, "POST", "/v1/kick", None);
    assert_eq!(status, 401, "{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "unauthorized");
    let wrong = call(
        gateway.http,
        "POST",
        "/v1/kick",
        Some("Bearer nope-nope-nope-nope"),
    );
    assert_eq!(wrong.0, 401);
    let bearer = format!("Bearer {SECRET}");
    let (status, _, body) = call(gateway.http, "POST", "/v1/kick", Some(&bearer));
    assert_eq!((status, &*body), (200, r#"{"kicked":false}"#));
    let (status, _, _) = call(gateway.http, "GET", "/healthz", None);
    assert_eq!(status, 200, "/healthz needs no key");
}

#[test]
fn a_key_from_the_flag_is_required_and_healthz_stays_open() {
    let gateway = start(&[
        "--http",
        "127.0.0.1:0",
        "--api-key",
        &format!("ops:{SECRET}"),
    ]);
    assert_locked(&gateway);
    assert!(!gateway.log.iter().any(|l| l.contains("NO API KEY")));
}

#[test]
fn a_key_from_the_config_file_is_required() {
    let dir = std::env::temp_dir().join(format!("longconn-api-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    std::fs::write(
        &file,
        format!("[[http.api_keys]]\nid = \"ops\"\nsecret = \"{SECRET}\"\n"),
    )
    .unwrap();
    let gateway = start(&["--http", "127.0.0.1:0", "--config", file.to_str().unwrap()]);
    assert_locked(&gateway);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_a_key_the_api_is_open_on_loopback_with_a_warning() {
    let gateway = start(&["--http", "127.0.0.1:0"]);
    let (status, _, _) = call(gateway.http, "POST", "/v1/kick", None);
    assert_eq!(status, 200);
    assert!(
        gateway
            .log
            .iter()
            .any(|l| l.contains("NO API KEY") && l.contains("--api-key ID:SECRET")),
        "{:#?}",
        gateway.log
    );
}

#[test]
fn a_non_loopback_api_without_a_key_refuses_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--tcp", "127.0.0.1:0", "--ws", "off", "--quic", "off"])
        .args(["--http", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--api-key"), "{stderr}");
    // A short secret, or no `:`, is refused with its reason.
    for key in ["ops:short", "no-colon-secret-0123456789"] {
        let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["--tcp", "127.0.0.1:0", "--ws", "off", "--quic", "off"])
            .args(["--http", "127.0.0.1:0", "--api-key", key])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("API key"), "{key}: {stderr}");
        assert!(
            !stderr.contains("0123456789"),
            "secrets are not echoed: {stderr}"
        );
    }
}
