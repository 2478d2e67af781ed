//! API keys for the push API: `Authorization: Bearer <secret>`.
//!
//! Each key has an id (for logs and rotation: several keys may be valid at once) and a
//! secret of at least [`MIN_API_SECRET_LEN`] bytes. A request is let through when its
//! bearer token equals the secret of any configured key. The comparison is constant
//! time: each secret is kept as its HMAC-SHA256 tag under a random per-process key, and
//! the presented token is checked with `ring::hmac::verify` (a constant-time tag
//! comparison) against every key, without an early exit, so neither the content nor the
//! length of a secret leaks through timing.
//!
//! A request without a key, or with a wrong one, gets `401` with
//! `WWW-Authenticate: Bearer` and the JSON body
//! `{"error":"unauthorized","message":"..."}`.
//!
//! With no keys ([`ApiKeys::is_empty`]) the API is open: the gateway allows that only on
//! a loopback HTTP listener.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use ring::hmac;
use serde_json::json;

/// The shortest API secret accepted, in bytes.
pub const MIN_API_SECRET_LEN: usize = 16;

/// One API key: an id and its secret's HMAC tag.
#[derive(Clone)]
struct ApiKey {
    id: String,
    tag: hmac::Tag,
}

/// The API keys the push API accepts; empty: no authentication.
#[derive(Clone)]
pub struct ApiKeys {
    /// A random key the secrets are tagged with, so that checks compare tags.
    mac: hmac::Key,
    keys: Vec<ApiKey>,
}

impl Default for ApiKeys {
    fn default() -> Self {
        let rng = ring::rand::SystemRandom::new();
        // The system's random source failing is not recoverable.
        let mac =
            hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the system random source works");
        ApiKeys {
            mac,
            keys: Vec::new(),
        }
    }
}

impl std::fmt::Debug for ApiKeys {
    /// Lists the key ids, never the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("ids", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

/// Why an API key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// The key id is empty, or holds `:` or whitespace.
    #[error("API key id `{0}` must be non-empty, without `:` or whitespace")]
    BadId(String),
    /// The secret is shorter than [`MIN_API_SECRET_LEN`] bytes.
    #[error("API key `{id}`: the secret has {len} bytes, at least {MIN_API_SECRET_LEN} are needed")]
    ShortSecret {
        /// The key's id.
        id: String,
        /// The secret's length.
        len: usize,
    },
    /// The secret holds whitespace (it could not be sent as a bearer token).
    #[error("API key `{0}`: the secret must not hold whitespace")]
    BadSecret(String),
    /// Two keys share an id.
    #[error("API key id `{0}` is given twice")]
    DuplicateId(String),
    /// `ID:SECRET` expected (the text is not repeated: it may be a secret).
    #[error("an API key must be given as ID:SECRET")]
    NotIdSecret,
}

impl ApiKeys {
    /// No keys: the API is open.
    pub fn new() -> ApiKeys {
        ApiKeys::default()
    }

    /// Adds the key `id` with `secret`.
    ///
    /// # Errors
    /// A bad id, a secret under [`MIN_API_SECRET_LEN`] bytes or with whitespace, or an
    /// id given before.
    pub fn with_key(mut self, id: &str, secret: &str) -> Result<ApiKeys, ApiKeyError> {
        if id.is_empty() || id.contains(':') || id.contains(char::is_whitespace) {
            return Err(ApiKeyError::BadId(id.to_owned()));
        }
        if secret.len() < MIN_API_SECRET_LEN {
            return Err(ApiKeyError::ShortSecret {
                id: id.to_owned(),
                len: secret.len(),
            });
        }
        if secret.contains(char::is_whitespace) {
            return Err(ApiKeyError::BadSecret(id.to_owned()));
        }
        if self.keys.iter().any(|k| k.id == id) {
            return Err(ApiKeyError::DuplicateId(id.to_owned()));
        }
        self.keys.push(ApiKey {
            id: id.to_owned(),
            tag: hmac::sign(&self.mac, secret.as_bytes()),
        });
        Ok(self)
    }

    /// Splits `ID:SECRET` (the `--api-key` flag's form) into its parts.
    ///
    /// # Errors
    /// [`ApiKeyError::NotIdSecret`] without a `:`.
    pub fn split_id_secret(text: &str) -> Result<(String, String), ApiKeyError> {
        match text.split_once(':') {
            Some((id, secret)) => Ok((id.to_owned(), secret.to_owned())),
            None => Err(ApiKeyError::NotIdSecret),
        }
    }

    /// Whether no key is configured (the API is then open).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The id of the key whose secret is `presented`, comparing in constant time with
    /// every key (no early exit).
    pub fn verify(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for key in &self.keys {
            if hmac::verify(&self.mac, presented.as_bytes(), key.tag.as_ref()).is_ok() {
                found = Some(key.id.as_str());
            }
        }
        found
    }

    /// The id of the key an `Authorization` header value carries (`Bearer <secret>`,
    /// the scheme case-insensitive).
    pub fn verify_header(&self, value: &str) -> Option<&str> {
        let (scheme, token) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.verify(token.trim())
    }
}

/// The 401 reply: JSON body and `WWW-Authenticate: Bearer`.
pub fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"longconn\"")],
        Json(json!({"error": "unauthorized", "message": message})),
    )
        .into_response()
}

/// Middleware: lets a request through when its `Authorization` header carries a valid
/// key (or no key is configured), else answers [`unauthorized`].
pub async fn require_api_key(
    State(keys): State<ApiKeys>,
    request: Request,
    next: Next,
) -> Response {
    if keys.is_empty() {
        return next.run(request).await;
    }
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return unauthorized("an API key is required: Authorization: Bearer <secret>");
    };
    match value.to_str().ok().and_then(|v| keys.verify_header(v)) {
        Some(id) => {
            tracing::trace!(key_id = id, "push API call authorized");
            next.run(request).await
        }
        None => unauthorized("the API key is not valid"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_by_secret_and_name_their_id() {
        let keys = ApiKeys::new()
            .with_key("ops", "0123456789abcdef")
            .unwrap()
            .with_key("ci", "fedcba9876543210-ci")
            .unwrap();
        assert_eq!(keys.verify("0123456789abcdef"), Some("ops"));
        assert_eq!(keys.verify_header("Bearer fedcba9876543210-ci"), Some("ci"));
        assert_eq!(keys.verify_header("bearer 0123456789abcdef"), Some("ops"));
        assert_eq!(keys.verify("0123456789abcdeX"), None);
        assert_eq!(keys.verify(""), None);
        assert_eq!(keys.verify_header("Basic 0123456789abcdef"), None);
        assert_eq!(keys.verify_header("0123456789abcdef"), None);
        assert!(!format!("{keys:?}").contains("0123"), "Debug hides secrets");
    }

    #[test]
    fn bad_keys_are_explained() {
        let k = ApiKeys::new();
        assert!(matches!(
            k.clone().with_key("", "0123456789abcdef"),
            Err(ApiKeyError::BadId(_))
        ));
        assert!(matches!(
            k.clone().with_key("a", "short"),
            Err(ApiKeyError::ShortSecret { len: 5, .. })
        ));
        assert!(matches!(
            k.clone().with_key("a", "0123456789 abcdef"),
            Err(ApiKeyError::BadSecret(_))
        ));
        let one = k.with_key("a", "0123456789abcdef").unwrap();
        assert!(matches!(
            one.with_key("a", "0123456789abcdefg"),
            Err(ApiKeyError::DuplicateId(_))
        ));
        assert_eq!(
            ApiKeys::split_id_secret("ops:s3cr:et").unwrap(),
            ("ops".into(), "s3cr:et".into())
        );
        assert!(ApiKeys::split_id_secret("nocolon").is_err());
    }
}
