//! Login checks: the [`Authenticator`] trait the driver calls for `Login` and
//! `TokenRefresh`, with the default implementation over core's HMAC [`TokenKeys`].

use async_trait::async_trait;
use longconn_core::{Code, Metadata, Text, TokenKeys};

/// A login (or token refresh) to check.
#[derive(Debug, Clone)]
pub struct LoginRequest {
    /// App id the client claims.
    pub app: Text,
    /// Device id the client claims.
    pub device: Text,
    /// The token.
    pub token: bytes::Bytes,
    /// Client metadata from `Login`.
    pub meta: Metadata,
}

/// A successful check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthGrant {
    /// Token expiry, Unix seconds; `None` for tokens that never expire.
    pub expires_unix_s: Option<u64>,
}

/// Decides whether a login may proceed. The runtime calls it for `Login` and
/// `TokenRefresh`; the session waits (in `Authenticating`) without blocking anything.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Checks `login` at `now_unix_s`; on failure returns the wire code to close with
    /// (`invalid_token`, `expired_token` or `forbidden`).
    async fn authenticate(&self, login: &LoginRequest, now_unix_s: u64) -> Result<AuthGrant, Code>;
}

/// The default authenticator: HMAC tokens from [`TokenKeys`] whose app and device must
/// match the login's.
#[async_trait]
impl Authenticator for TokenKeys {
    async fn authenticate(&self, login: &LoginRequest, now_unix_s: u64) -> Result<AuthGrant, Code> {
        let claims = self
            .verify(&login.token, now_unix_s)
            .map_err(|e| e.wire_code())?;
        if claims.app != login.app.as_str() || claims.device != login.device.as_str() {
            return Err(Code::Forbidden);
        }
        Ok(AuthGrant {
            expires_unix_s: Some(claims.expires_unix_s),
        })
    }
}
