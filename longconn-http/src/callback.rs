//! [`HttpBackend`]: forwards requests to an HTTP endpoint.
//!
//! # Request (gateway -> callback URL)
//! `POST <url>`, body = the request payload as is (`application/octet-stream`), and:
//!
//! | header | value |
//! |---|---|
//! | `x-longconn-conn-id` | connection id, decimal |
//! | `x-longconn-app` | app id, percent-encoded |
//! | `x-longconn-device` | device id, percent-encoded |
//! | `x-longconn-business` | business id, decimal |
//! | `x-longconn-meta` | request metadata as `k1=v1&k2=v2`, keys and values percent-encoded; absent if empty |
//!
//! Percent-encoded means every byte other than `A-Z a-z 0-9 - . _ ~` is written `%XX`,
//! so values may be any bytes and every query-string parser reads them back.
//!
//! # Reply (callback -> gateway)
//! A 2xx status: the body becomes the `Response` payload and an `x-longconn-meta`
//! header (same format) its metadata. Any other status, a body larger than
//! [`HttpBackendConfig::max_reply_bytes`], or a failed connection: the client gets
//! `backend_error` (302). A reply slower than the rule's timeout: `backend_timeout` (301).
//!
//! # https
//! `https://` URLs are called over rustls (ring provider), checked against the
//! system's root certificates plus those of [`HttpBackendConfig::ca_file`] (a private
//! CA, or a backend's self-signed certificate). A certificate that does not check out
//! fails the call like an unreachable callback: `backend_error` (302).
//!
//! # Connection events (gateway -> events URL)
//! `POST <events_url>`, `application/json`:
//! `{"event":"connected","conn_id":1,"app":"a","device":"d","protocol":"tcp"}` or
//! `{"event":"disconnected","conn_id":1,"app":"a","device":"d","code":2,"reason":"replaced","by":"local"}`
//! where `by` is `local` (this side closed), `peer` (the client sent `Close`) or
//! `transport` (the stream ended or failed).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use longconn_core::{CloseReason, Metadata};
use longconn_server::{Backend, BackendError, BackendReply, BackendRequest, ConnectionEvent};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use reqwest::Url;
use serde_json::json;
use tracing::debug;

use crate::error::{Error, Result};

/// The header carrying metadata, both ways.
pub const META_HEADER: &str = "x-longconn-meta";

/// Settings of one [`HttpBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBackendConfig {
    /// Where requests are POSTed: `http://` or `https://`.
    pub url: String,
    /// Where connection events are POSTed, if anywhere (subscribe the backend in the
    /// router for them to arrive).
    pub events_url: Option<String>,
    /// Largest reply body accepted. Default 60 KiB, which fits the default 64 KiB frame.
    pub max_reply_bytes: usize,
    /// How long connecting to the callback may take. Default 2 s. The whole call is
    /// bounded by the router rule's timeout.
    pub connect_timeout: Duration,
    /// A PEM file of certificates trusted for `https://` callbacks besides the
    /// system's roots (a private CA, or the backend's self-signed certificate).
    /// Default `None`.
    pub ca_file: Option<std::path::PathBuf>,
}

impl HttpBackendConfig {
    /// Requests to `url`, no events, default limits.
    pub fn new(url: impl Into<String>) -> HttpBackendConfig {
        HttpBackendConfig {
            url: url.into(),
            events_url: None,
            max_reply_bytes: 60 * 1024,
            connect_timeout: Duration::from_secs(2),
            ca_file: None,
        }
    }
}

/// A router backend that POSTs requests to a URL. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct HttpBackend {
    client: reqwest::Client,
    url: Url,
    events_url: Option<Url>,
    max_reply_bytes: usize,
}

fn parse_url(url: &str) -> Result<Url> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(invalid(format!("unsupported scheme `{other}`"))),
    }
}

impl HttpBackend {
    /// A backend for `config`.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL that does not parse or is neither `http://` nor
    /// `https://`; [`Error::Tls`] for an https URL without usable trust (an unreadable
    /// `ca_file`).
    pub fn new(config: HttpBackendConfig) -> Result<HttpBackend> {
        let url = parse_url(&config.url)?;
        let events_url = config.events_url.as_deref().map(parse_url).transpose()?;
        let mut builder = reqwest::Client::builder().connect_timeout(config.connect_timeout);
        let https = std::iter::once(&url)
            .chain(&events_url)
            .any(|u| u.scheme() == "https");
        if https {
            let tls = crate::tls::client_config(config.ca_file.as_deref())?;
            builder = builder.use_preconfigured_tls(tls);
        }
        let client = builder.build()?;
        Ok(HttpBackend {
            client,
            url,
            events_url,
            max_reply_bytes: config.max_reply_bytes,
        })
    }
}

/// Bytes left as they are: RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent(value: &[u8]) -> String {
    percent_encode(value, UNRESERVED).to_string()
}

/// Metadata as `k1=v1&k2=v2`, keys and values percent-encoded (any bytes survive).
pub fn encode_meta(meta: &Metadata) -> String {
    let pairs: Vec<String> = meta
        .iter()
        .map(|(key, value)| format!("{}={}", percent(key.as_bytes()), percent(value)))
        .collect();
    pairs.join("&")
}

/// The inverse of [`encode_meta`].
///
/// # Errors
/// A key that is empty, over 255 bytes or not UTF-8, or too much metadata for one field.
pub fn decode_meta(header: &[u8]) -> Result<Metadata, longconn_core::EncodeError> {
    let mut pairs = Vec::new();
    for pair in header.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        let key: Vec<u8> = percent_decode(key).collect();
        let key = String::from_utf8(key).map_err(|_| longconn_core::EncodeError::InvalidValue {
            what: "metadata key",
            reason: "not UTF-8",
        })?;
        pairs.push((key, percent_decode(value).collect::<Vec<u8>>()));
    }
    Metadata::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v)))
}

#[async_trait]
impl Backend for HttpBackend {
    async fn call(&self, request: BackendRequest) -> Result<BackendReply, BackendError> {
        let mut post = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/octet-stream")
            .header("x-longconn-conn-id", request.conn_id)
            .header("x-longconn-app", percent(request.device.app().as_bytes()))
            .header(
                "x-longconn-device",
                percent(request.device.device().as_bytes()),
            )
            .header("x-longconn-business", request.business);
        if !request.meta.is_empty() {
            post = post.header(META_HEADER, encode_meta(&request.meta));
        }
        let reply = post
            .body(request.payload)
            .send()
            .await
            .map_err(|e| BackendError::failed(format!("callback unreachable: {e}")))?;
        let status = reply.status();
        if !status.is_success() {
            return Err(BackendError::failed(format!("callback answered {status}")));
        }
        if reply
            .content_length()
            .is_some_and(|len| len > self.max_reply_bytes as u64)
        {
            return Err(BackendError::failed("callback reply too large"));
        }
        let meta = match reply.headers().get(META_HEADER) {
            Some(value) => decode_meta(value.as_bytes())
                .map_err(|e| BackendError::failed(format!("callback metadata: {e}")))?,
            None => Metadata::new(),
        };
        let payload: Bytes = reply
            .bytes()
            .await
            .map_err(|e| BackendError::failed(format!("callback reply: {e}")))?;
        if payload.len() > self.max_reply_bytes {
            return Err(BackendError::failed("callback reply too large"));
        }
        Ok(BackendReply { meta, payload })
    }

    async fn connection_event(&self, event: ConnectionEvent) {
        let Some(url) = &self.events_url else {
            return;
        };
        let body = event_json(&event).to_string();
        let post = self
            .client
            .post(url.clone())
            .header("content-type", "application/json")
            .body(body);
        match post.send().await {
            Ok(reply) if reply.status().is_success() => {}
            Ok(reply) => debug!(status = %reply.status(), "connection event refused"),
            Err(err) => debug!(error = %err, "connection event not delivered"),
        }
    }
}

/// The JSON body of a connection event (see the [module docs](self)).
pub fn event_json(event: &ConnectionEvent) -> serde_json::Value {
    match event {
        ConnectionEvent::Connected {
            conn_id,
            device,
            protocol,
        } => json!({
            "event": "connected",
            "conn_id": conn_id,
            "app": device.app(),
            "device": device.device(),
            "protocol": protocol.as_str(),
        }),
        ConnectionEvent::Disconnected {
            conn_id,
            device,
            reason,
        } => {
            let by = match reason {
                CloseReason::Local(_) => "local",
                CloseReason::Peer(_) => "peer",
                CloseReason::TransportEnded | CloseReason::TransportFailed => "transport",
            };
            json!({
                "event": "disconnected",
                "conn_id": conn_id,
                "app": device.app(),
                "device": device.device(),
                "code": reason.code().as_u16(),
                "reason": reason.code().name(),
                "by": by,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_survives_the_header_format() {
        let meta =
            Metadata::from_pairs([("trace id", &b"a&b=c"[..]), ("lang", "zh-汉".as_bytes())])
                .unwrap();
        let header = encode_meta(&meta);
        assert!(header.is_ascii(), "{header}");
        assert_eq!(decode_meta(header.as_bytes()).unwrap(), meta);
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(HttpBackend::new(HttpBackendConfig::new("http://127.0.0.1:9/rpc")).is_ok());
        let mut https = HttpBackendConfig::new("https://127.0.0.1:9/rpc");
        https.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(HttpBackend::new(https), Err(Error::Tls(m)) if m.contains("ca_file")));
        for bad in ["ftp://x/", "not a url"] {
            assert!(
                matches!(
                    HttpBackend::new(HttpBackendConfig::new(bad)),
                    Err(Error::InvalidUrl { .. })
                ),
                "{bad}"
            );
        }
    }
}
