//! Login tokens: the default HMAC-SHA256 token scheme ([`TokenKeys`]) that the gateway,
//! the client SDK, the load tool and the control layer share. The server's
//! `Authenticator` trait (in longconn-server) implements login checks on top of it.
//!
//! # Token format
//! ASCII, five dot-separated parts (docs/PROTOCOL.md, "Tokens"):
//!
//! ```text
//! lc1.<kid>.<b64url(app)>.<b64url(device)>.<expires_unix_s>.<b64url(mac)>
//! mac = HMAC-SHA256(secret of kid, "lc1.<kid>.<b64url(app)>.<b64url(device)>.<expires_unix_s>")
//! ```
//! `b64url` is unpadded base64url. Verification looks the key up by `kid`, so several keys
//! are accepted at once during a rotation, and compares the MAC in constant time.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;

use crate::error::TokenError;

const PREFIX: &str = "lc1";

/// Signing secret of the development key: the reference gateway uses it when no key is
/// configured (and warns loudly), the example client and the load tool sign with it by
/// default. Anyone can mint tokens with it; never use it in a deployment.
pub const DEV_TOKEN_SECRET: &str = "longconn-development-secret-do-not-use";
/// Key id of [`DEV_TOKEN_SECRET`].
pub const DEV_TOKEN_KEY_ID: &str = "dev";

/// One HMAC key with its id. The id travels in the token; the secret never does.
#[derive(Clone)]
pub struct TokenKey {
    id: String,
    key: hmac::Key,
}

impl TokenKey {
    /// A key. `id` is 1..=32 characters of `[A-Za-z0-9_-]`; `secret` at least 16 bytes.
    pub fn new(id: &str, secret: &[u8]) -> Result<TokenKey, TokenError> {
        let id_ok = (1..=32).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok {
            return Err(TokenError::BadKey {
                reason: "key id must be 1..=32 characters of [A-Za-z0-9_-]",
            });
        }
        if secret.len() < 16 {
            return Err(TokenError::BadKey {
                reason: "secret must be at least 16 bytes",
            });
        }
        Ok(TokenKey {
            id: id.to_owned(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// App id.
    pub app: String,
    /// Device id.
    pub device: String,
    /// Expiry, Unix seconds.
    pub expires_unix_s: u64,
    /// Id of the key that signed it.
    pub key_id: String,
}

/// A key set: the first key signs, every key verifies (key rotation).
#[derive(Debug, Clone)]
pub struct TokenKeys {
    keys: Vec<TokenKey>,
}

impl TokenKeys {
    /// A key set that signs with `signing` and verifies tokens of it.
    pub fn new(signing: TokenKey) -> TokenKeys {
        TokenKeys {
            keys: vec![signing],
        }
    }

    /// Also accepts tokens signed by `key` (an older or newer key during rotation). When
    /// two keys share an id, the one added first wins.
    pub fn with_verify_key(mut self, key: TokenKey) -> TokenKeys {
        self.keys.push(key);
        self
    }

    /// Mints a token for (app, device) that expires at `expires_unix_s`.
    pub fn mint(&self, app: &str, device: &str, expires_unix_s: u64) -> String {
        let key = &self.keys[0];
        let body = format!(
            "{PREFIX}.{}.{}.{}.{expires_unix_s}",
            key.id,
            B64.encode(app),
            B64.encode(device)
        );
        let mac = hmac::sign(&key.key, body.as_bytes());
        format!("{body}.{}", B64.encode(mac.as_ref()))
    }

    /// Checks `token` at `now_unix_s`: format, key id, MAC (constant time), then expiry.
    /// Fails with [`TokenError::Invalid`] or [`TokenError::Expired`].
    pub fn verify(&self, token: &[u8], now_unix_s: u64) -> Result<TokenClaims, TokenError> {
        let invalid = |reason| TokenError::Invalid { reason };
        let token = std::str::from_utf8(token).map_err(|_| invalid("not ASCII"))?;
        let (body, mac_b64) = token.rsplit_once('.').ok_or(invalid("too few parts"))?;
        let mut parts = body.split('.');
        let (Some(prefix), Some(kid), Some(app), Some(device), Some(exp), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid("wrong number of parts"));
        };
        if prefix != PREFIX {
            return Err(invalid("unknown token version"));
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id == kid)
            .ok_or(invalid("unknown key id"))?;
        let mac = B64
            .decode(mac_b64)
            .map_err(|_| invalid("bad mac encoding"))?;
        hmac::verify(&key.key, body.as_bytes(), &mac).map_err(|_| invalid("bad signature"))?;
        let text = |part: &str| {
            B64.decode(part)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(invalid("bad id encoding"))
        };
        let expires_unix_s: u64 = exp.parse().map_err(|_| invalid("bad expiry"))?;
        if expires_unix_s <= now_unix_s {
            return Err(TokenError::Expired { expires_unix_s });
        }
        Ok(TokenClaims {
            app: text(app)?,
            device: text(device)?,
            expires_unix_s,
            key_id: kid.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(id: &str, secret: &[u8]) -> TokenKeys {
        TokenKeys::new(TokenKey::new(id, secret).unwrap())
    }

    #[test]
    fn minted_tokens_verify_and_tampering_fails() {
        let k = keys("k1", b"0123456789abcdef");
        let token = k.mint("demo", "phone-1", 2_000);
        let claims = k.verify(token.as_bytes(), 1_000).unwrap();
        assert_eq!(claims.app, "demo");
        assert_eq!(claims.device, "phone-1");
        assert_eq!(claims.expires_unix_s, 2_000);

        let forged = token.replace(&B64.encode("phone-1"), &B64.encode("phone-2"));
        assert!(matches!(
            k.verify(forged.as_bytes(), 1_000),
            Err(TokenError::Invalid {
                reason: "bad signature"
            })
        ));
        assert!(matches!(
            k.verify(token.as_bytes(), 2_000),
            Err(TokenError::Expired {
                expires_unix_s: 2_000
            })
        ));
        let foreign = keys("k1", b"another secret!!").mint("demo", "phone-1", 2_000);
        assert!(k.verify(foreign.as_bytes(), 1_000).is_err());
    }

    #[test]
    fn rotation_accepts_old_and_new_keys() {
        let old = keys("old", b"old-secret-0123456");
        let new_key = TokenKey::new("new", b"new-secret-0123456").unwrap();
        let rotated = TokenKeys::new(new_key)
            .with_verify_key(TokenKey::new("old", b"old-secret-0123456").unwrap());
        assert!(rotated.verify(old.mint("a", "d", 10).as_bytes(), 1).is_ok());
        assert_eq!(
            rotated
                .verify(rotated.mint("a", "d", 10).as_bytes(), 1)
                .unwrap()
                .key_id,
            "new"
        );
    }
}
