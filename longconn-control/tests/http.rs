//! The HTTP API over a real socket: answers, tokens, bad input, rate limit, key
//! rotation and hot reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use longconn_control::{Control, ControlConfig, DEFAULT_CONFIG_TOML};
use longconn_core::{TokenKey, TokenKeys};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Serves `control` on a free loopback port until the returned token is cancelled.
async fn serve(control: &Control) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let control = control.clone();
    let done = stop.clone();
    tokio::spawn(async move {
        control
            .serve(listener, async move { done.cancelled().await })
            .await
            .unwrap();
    });
    (url, stop)
}

async fn post(
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, headers, value)
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::Client::new().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
    )
}

fn access_body(device: &str) -> String {
    json!({
        "app": "demo", "device": device, "platform": "android",
        "app_version": "2.3.1", "sdk_version": "0.1.0", "network": "wifi"
    })
    .to_string()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn dev_keys() -> TokenKeys {
    TokenKeys::new(
        TokenKey::new(
            longconn_core::token::DEV_TOKEN_KEY_ID,
            longconn_core::token::DEV_TOKEN_SECRET.as_bytes(),
        )
        .unwrap(),
    )
}

fn config_with(extra: &str) -> String {
    format!("{DEFAULT_CONFIG_TOML}\n{extra}")
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

#[tokio::test]
async fn access_answers_endpoints_and_a_token_the_gateway_keys_accept() {
    let control = Control::embedded();
    let (url, stop) = serve(&control).await;
    let (status, _, body) = post(&format!("{url}/v1/access"), access_body("phone-1")).await;
    assert_eq!(status, 200, "{body}");
    let endpoints = body["endpoints"].as_array().unwrap();
    let urls: Vec<&str> = endpoints
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "tcp://127.0.0.1:7100",
            "ws://127.0.0.1:7101/ws",
            "quic://127.0.0.1:7102"
        ]
    );
    assert_eq!(endpoints[1]["transport"], "ws");
    assert_eq!(endpoints[2]["priority"], 2);
    assert_eq!(body["heartbeat_ms"], 30_000);
    assert_eq!(
        body["reconnect"],
        json!({"base_ms": 1000, "cap_ms": 10000, "jitter": "full"})
    );
    assert_eq!(body["bucket"], "default");
    // The reference gateway with no key configured checks the development key.
    let token = body["token"].as_str().unwrap();
    let claims = dev_keys().verify(token.as_bytes(), unix_now()).unwrap();
    assert_eq!(
        (claims.app.as_str(), claims.device.as_str()),
        ("demo", "phone-1")
    );
    assert_eq!(
        claims.expires_unix_s,
        body["expires_at_unix_s"].as_u64().unwrap()
    );

    let (status, health) = get(&format!("{url}/healthz")).await;
    assert_eq!((status, health["live_nodes"].as_u64()), (200, Some(1)));
    let (status, rules) = get(&format!("{url}/v1/rules")).await;
    assert_eq!((status, rules["version"].as_u64()), (200, Some(1)));
    assert_eq!(rules["default"]["transports"], json!(["tcp", "ws", "quic"]));
    stop.cancel();
}

#[tokio::test]
async fn bad_input_gets_4xx_with_a_json_error() {
    let control = Control::embedded();
    let (url, stop) = serve(&control).await;
    let access = format!("{url}/v1/access");
    let refresh = format!("{url}/v1/token/refresh");

    let (status, _, body) = post(&access, "{\"app\": ").await;
    assert_eq!((status, error_code(&body)), (400, "malformed_json"));

    let (status, _, body) = post(&access, json!({"app": "demo"}).to_string()).await;
    assert_eq!((status, error_code(&body)), (422, "invalid_request"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("device"),
        "{body}"
    );

    let wrong_type = access_body("d").replace("\"device\":\"d\"", "\"device\":42");
    let (status, _, body) = post(&access, wrong_type).await;
    assert_eq!((status, error_code(&body)), (422, "invalid_request"));

    let bad_version = access_body("d").replace("2.3.1", "two");
    let (status, _, body) = post(&access, bad_version).await;
    assert_eq!((status, error_code(&body)), (422, "invalid_request"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("app_version")
    );

    let (status, _, body) = post(&access, access_body("").replace("\"demo\"", "\"nope\"")).await;
    assert_eq!(
        status, 422,
        "an empty device is refused before the app: {body}"
    );
    let (status, _, body) = post(&access, access_body("d").replace("\"demo\"", "\"nope\"")).await;
    assert_eq!((status, error_code(&body)), (404, "unknown_app"));

    let huge = json!({"app": "demo", "device": "x".repeat(20_000)}).to_string();
    let (status, _, body) = post(&access, huge).await;
    assert_eq!((status, error_code(&body)), (413, "body_too_large"));

    let forged = dev_keys()
        .mint("demo", "d", unix_now() + 60)
        .replace(".ZA.", ".ZQ.");
    let other_key = TokenKeys::new(TokenKey::new("dev", b"not the dev secret!!").unwrap()).mint(
        "demo",
        "d",
        unix_now() + 60,
    );
    for token in [forged, other_key, "garbage".to_owned()] {
        let (status, _, body) = post(&refresh, json!({"token": token}).to_string()).await;
        assert_eq!(
            (status, error_code(&body)),
            (401, "invalid_token"),
            "{token}"
        );
    }
    let expired = dev_keys().mint("demo", "d", unix_now() - 1);
    let (status, _, body) = post(&refresh, json!({"token": expired}).to_string()).await;
    assert_eq!((status, error_code(&body)), (401, "expired_token"));
    let (status, _, body) = post(&refresh, "{}").await;
    assert_eq!((status, error_code(&body)), (422, "invalid_request"));

    let (status, body) = get(&format!("{url}/v2/nothing")).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let (status, body) = get(&access).await;
    assert_eq!((status, error_code(&body)), (405, "method_not_allowed"));
    stop.cancel();
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let text = DEFAULT_CONFIG_TOML
        .replace("per_second = 50.0", "per_second = 0.5")
        .replace("burst = 100", "burst = 3");
    let control = Control::new(ControlConfig::load(&text, 1, "test").unwrap());
    let (url, stop) = serve(&control).await;
    let access = format!("{url}/v1/access");
    for _ in 0..3 {
        assert_eq!(post(&access, access_body("d")).await.0, 200);
    }
    let (status, headers, body) = post(&access, access_body("d")).await;
    assert_eq!((status, error_code(&body)), (429, "rate_limited"));
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry, 2, "one token at 0.5/s takes 2 s");
    // Refresh is not rate limited (it is cheap and needs a valid token anyway).
    let token = dev_keys().mint("demo", "d", unix_now() + 60);
    let (status, _, _) = post(
        &format!("{url}/v1/token/refresh"),
        json!({"token": token}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    stop.cancel();
}

/// Rotation: tokens signed by the old key keep working, at the gateway and at
/// `/v1/token/refresh`, after the control layer switches to a new signing key.
#[tokio::test]
async fn key_rotation_never_logs_out_old_token_holders() {
    let old_only = DEFAULT_CONFIG_TOML.replace(
        "signing_key = \"dev\"",
        "signing_key = \"k1\"\n[[tokens.keys]]\nid = \"k1\"\nsecret = \"first-secret-0123456789\"",
    );
    let control = Control::new(ControlConfig::load(&old_only, 1, "test").unwrap());
    let (url, stop) = serve(&control).await;
    let (_, _, body) = post(&format!("{url}/v1/access"), access_body("phone-9")).await;
    let old_token = body["token"].as_str().unwrap().to_owned();

    // The new key signs; the old one stays, verify-only.
    let rotated = old_only.replace("signing_key = \"k1\"", "signing_key = \"k2\"").replace(
        "[[tokens.keys]]\nid = \"k1\"",
        "[[tokens.keys]]\nid = \"k2\"\nsecret = \"second-secret-0123456789\"\n[[tokens.keys]]\nid = \"k1\"",
    );
    assert_eq!(control.reload_text(&rotated, "rotated").unwrap(), 2);

    // A gateway configured for the rotation (new key signs, old verifies).
    let gateway_keys = TokenKeys::new(TokenKey::new("k2", b"second-secret-0123456789").unwrap())
        .with_verify_key(TokenKey::new("k1", b"first-secret-0123456789").unwrap());
    assert_eq!(
        gateway_keys
            .verify(old_token.as_bytes(), unix_now())
            .unwrap()
            .key_id,
        "k1"
    );

    let (status, _, body) = post(
        &format!("{url}/v1/token/refresh"),
        json!({"token": old_token}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let new_token = body["token"].as_str().unwrap();
    let claims = gateway_keys
        .verify(new_token.as_bytes(), unix_now())
        .unwrap();
    assert_eq!(claims.key_id, "k2");
    assert_eq!(claims.device, "phone-9");
    assert_eq!(
        claims.bucket.as_deref(),
        Some("default"),
        "the bucket is carried over"
    );
    let (_, _, body) = post(&format!("{url}/v1/access"), access_body("phone-10")).await;
    assert!(body["token"].as_str().unwrap().starts_with("lc2.k2."));
    stop.cancel();
}

fn temp_file(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "longconn-control-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The file changes under a steady stream of requests: a good file is picked up (the
/// version moves and the new rule answers), a bad one is refused with its line and
/// field while the previous rules keep answering, and no request fails throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_swaps_good_files_refuses_bad_ones_and_drops_nothing() {
    let path = temp_file("control.toml");
    let base = DEFAULT_CONFIG_TOML
        .replace("reload_poll_ms = 1000", "reload_poll_ms = 50")
        .replace("per_second = 50.0", "per_second = 0.0");
    std::fs::write(&path, &base).unwrap();
    let control = Control::from_file(&path).unwrap();
    let (url, stop) = serve(&control).await;
    let watcher = longconn_control::reload::watch(control.clone(), stop.clone());

    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn({
        let (url, failures, served, running) = (
            url.clone(),
            failures.clone(),
            served.clone(),
            running.clone(),
        );
        async move {
            let client = reqwest::Client::new();
            let mut i = 0u64;
            while running.load(Ordering::Relaxed) {
                i += 1;
                let ok = client
                    .post(format!("{url}/v1/access"))
                    .body(access_body(&format!("load-{}", i % 50)))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                let counter = if ok { &served } else { &failures };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    let wait_version = async |want: u64| {
        for _ in 0..200 {
            if control.policy().version == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "version {want} never came; last error {:?}",
            control.last_reload_error()
        );
    };

    let with_rule = format!(
        "{base}\n[[rules]]\nname = \"vip\"\ndevices_allow = [\"phone-7\"]\nflags = {{ beta = \"on\" }}\n"
    );
    std::fs::write(&path, &with_rule).unwrap();
    wait_version(2).await;
    let (_, _, body) = post(&format!("{url}/v1/access"), access_body("phone-7")).await;
    assert_eq!(
        (body["bucket"].as_str(), body["rules_version"].as_u64()),
        (Some("vip"), Some(2))
    );
    assert_eq!(body["flags"]["beta"], "on");

    let bad = with_rule.replace(
        "devices_allow = [\"phone-7\"]",
        "devices_allow = [\"phone-7\"]\npercent = 250.0",
    );
    std::fs::write(&path, &bad).unwrap();
    let rule_line = bad.lines().position(|l| l == "[[rules]]").unwrap() + 1;
    for _ in 0..200 {
        if control.last_reload_error().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = control
        .last_reload_error()
        .expect("the bad file was noticed")
        .error;
    assert!(
        error.contains(&format!("line {rule_line}")) && error.contains("rules.percent"),
        "{error}"
    );
    assert_eq!(
        control.policy().version,
        2,
        "the previous rules stay in force"
    );
    let (_, rules) = get(&format!("{url}/v1/rules")).await;
    assert_eq!(rules["version"], 2);
    assert!(
        rules["last_reload_error"]["error"]
            .as_str()
            .unwrap()
            .contains("rules.percent")
    );
    let (_, _, body) = post(&format!("{url}/v1/access"), access_body("phone-7")).await;
    assert_eq!(body["bucket"], "vip");

    // Fixed again: accepted, and the error is cleared.
    std::fs::write(&path, format!("{with_rule}\n# fixed\n")).unwrap();
    wait_version(3).await;
    assert!(control.last_reload_error().is_none());

    running.store(false, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert!(served.load(Ordering::Relaxed) > 10, "the load ran");
    stop.cancel();
    watcher.await.unwrap();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// The acceptance figure: a 10 % rule over 100,000 device ids through the full
/// access path, within the binomial 99.9 % bound, and the same devices when asked again.
#[test]
fn canary_split_over_100k_devices() {
    let text = config_with("[[rules]]\nname = \"canary\"\npercent = 10\nsalt = \"2026-12\"\n");
    let control = Control::new(ControlConfig::load(&text, 1, "test").unwrap());
    let ask = |i: u32| {
        let req: longconn_control::AccessRequest =
            serde_json::from_str(&access_body(&format!("device-{i}"))).unwrap();
        control.access(&req, 1_000).unwrap().bucket == "canary"
    };
    let picked: Vec<u32> = (0..100_000).filter(|&i| ask(i)).collect();
    let (n, p) = (100_000.0_f64, 0.1_f64);
    let bound = 3.29 * (n * p * (1.0 - p)).sqrt();
    println!(
        "canary: {} of 100000 devices (expected 10000 ± {bound:.0})",
        picked.len()
    );
    assert!(
        (picked.len() as f64 - n * p).abs() <= bound,
        "{}",
        picked.len()
    );
    assert!(
        picked.iter().take(2_000).all(|&i| ask(i)),
        "stable per device"
    );
}
