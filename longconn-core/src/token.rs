//! Login tokens: the default HMAC-SHA256 token scheme ([`TokenKeys`]) that the gateway,
//! the client SDK, the load tool and the control layer share. The server's
//! `Authenticator` trait (in longconn-server) implements login checks on top of it.
//!
//! # Token format
//! ASCII, dot-separated parts (docs/PROTOCOL.md, section 10 "Login tokens"). Two versions
//! are verified; [`TokenKeys::mint`] writes `lc1`, [`TokenKeys::mint_in_bucket`] writes
//! `lc2`, which also carries the rule bucket the control layer issued the token under:
//!
//! ```text
//! lc1.<kid>.<b64url(app)>.<b64url(device)>.<expires_unix_s>.<b64url(mac)>
//! lc2.<kid>.<b64url(app)>.<b64url(device)>.<expires_unix_s>.<b64url(bucket)>.<b64url(mac)>
//! mac = HMAC-SHA256(secret of kid, the token text before the last dot)
//! ```
//! `b64url` is unpadded base64url. Verification looks the key up by `kid`, so several keys
//! are accepted at once during a rotation, and compares the MAC in constant time.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;

use crate::error::TokenError;

/// Version tag of tokens without a bucket.
const PREFIX_V1: &str = "lc1";
/// Version tag of tokens that carry the rule bucket.
const PREFIX_V2: &str = "lc2";
/// Longest bucket name [`TokenKeys::mint_in_bucket`] accepts, in bytes.
pub const MAX_BUCKET_LEN: usize = 64;

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
    /// The rule bucket the control layer issued it under (`lc2` tokens); `None` for
    /// `lc1` tokens.
    pub bucket: Option<String>,
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

    /// Mints an `lc1` token for (app, device) that expires at `expires_unix_s`.
    pub fn mint(&self, app: &str, device: &str, expires_unix_s: u64) -> String {
        let key = &self.keys[0];
        let body = format!(
            "{PREFIX_V1}.{}.{}.{}.{expires_unix_s}",
            key.id,
            B64.encode(app),
            B64.encode(device)
        );
        sign(key, body)
    }

    /// Mints an `lc2` token: like [`TokenKeys::mint`], and it also carries `bucket`, the
    /// small-traffic rule the token was issued under, so the gateway and backends can
    /// tell canary sessions apart. Fails with [`TokenError::BadBucket`] if `bucket` is
    /// empty or longer than [`MAX_BUCKET_LEN`] bytes.
    pub fn mint_in_bucket(
        &self,
        app: &str,
        device: &str,
        expires_unix_s: u64,
        bucket: &str,
    ) -> Result<String, TokenError> {
        if bucket.is_empty() || bucket.len() > MAX_BUCKET_LEN {
            return Err(TokenError::BadBucket {
                len: bucket.len(),
                max: MAX_BUCKET_LEN,
            });
        }
        let key = &self.keys[0];
        let body = format!(
            "{PREFIX_V2}.{}.{}.{}.{expires_unix_s}.{}",
            key.id,
            B64.encode(app),
            B64.encode(device),
            B64.encode(bucket)
        );
        Ok(sign(key, body))
    }

    /// The id of the signing key.
    pub fn signing_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Checks `token` (`lc1` or `lc2`) at `now_unix_s`: format, key id, MAC (constant
    /// time), then expiry. Fails with [`TokenError::Invalid`] or [`TokenError::Expired`].
    pub fn verify(&self, token: &[u8], now_unix_s: u64) -> Result<TokenClaims, TokenError> {
        let invalid = |reason| TokenError::Invalid { reason };
        let token = std::str::from_utf8(token).map_err(|_| invalid("not ASCII"))?;
        let (body, mac_b64) = token.rsplit_once('.').ok_or(invalid("too few parts"))?;
        let mut parts = body.split('.');
        let prefix = parts.next().unwrap_or_default();
        let with_bucket = match prefix {
            PREFIX_V1 => false,
            PREFIX_V2 => true,
            _ => return Err(invalid("unknown token version")),
        };
        let (Some(kid), Some(app), Some(device), Some(exp)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("wrong number of parts"));
        };
        let bucket = if with_bucket {
            Some(parts.next().ok_or(invalid("wrong number of parts"))?)
        } else {
            None
        };
        if parts.next().is_some() {
            return Err(invalid("wrong number of parts"));
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
            bucket: bucket.map(text).transpose()?,
        })
    }
}

/// `body.<b64url(HMAC(key, body))>`.
fn sign(key: &TokenKey, body: String) -> String {
    let mac = hmac::sign(&key.key, body.as_bytes());
    format!("{body}.{}", B64.encode(mac.as_ref()))
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

    /// The test vectors of docs/PROTOCOL.md section 10: the same key, claims and token
    /// text, so the spec and the code cannot drift apart.
    #[test]
    fn protocol_vectors() {
        let k = keys("k1", b"0123456789abcdef");
        let v1 = "lc1.k1.ZGVtbw.cGhvbmUtMQ.2000000000.UTy_aQrbiCXSqrG-GyvRN_uC2Q-1pSVnJIvPe4QOgN0";
        let v2 = "lc2.k1.ZGVtbw.cGhvbmUtMQ.2000000000.Y2FuYXJ5LXF1aWM.-Fh-AP-lyO3XpscS9m1DndCCwIBxQYlkhKUz1Jd3vr8";
        assert_eq!(k.mint("demo", "phone-1", 2_000_000_000), v1);
        assert_eq!(
            k.mint_in_bucket("demo", "phone-1", 2_000_000_000, "canary-quic")
                .unwrap(),
            v2
        );
        let c1 = k.verify(v1.as_bytes(), 1_000).unwrap();
        assert_eq!(c1.bucket, None);
        let c2 = k.verify(v2.as_bytes(), 1_000).unwrap();
        assert_eq!(
            (c2.app.as_str(), c2.device.as_str(), c2.bucket.as_deref()),
            ("demo", "phone-1", Some("canary-quic"))
        );
    }

    #[test]
    fn bucket_tokens_resist_tampering_and_version_swaps() {
        let k = keys("k1", b"0123456789abcdef");
        let token = k.mint_in_bucket("demo", "d", 2_000, "canary").unwrap();
        // Moving the device into another bucket breaks the MAC.
        let other = token.replace(&B64.encode("canary"), &B64.encode("default"));
        assert!(matches!(
            k.verify(other.as_bytes(), 1),
            Err(TokenError::Invalid {
                reason: "bad signature"
            })
        ));
        // Relabelling an lc2 token as lc1 (or the reverse) is refused, never misread.
        let relabelled = token.replacen("lc2", "lc1", 1);
        assert!(k.verify(relabelled.as_bytes(), 1).is_err());
        let plain = k.mint("demo", "d", 2_000).replacen("lc1", "lc2", 1);
        assert!(k.verify(plain.as_bytes(), 1).is_err());
        assert!(matches!(
            k.mint_in_bucket("demo", "d", 2_000, ""),
            Err(TokenError::BadBucket { len: 0, .. })
        ));
        assert!(
            k.mint_in_bucket("demo", "d", 2_000, &"b".repeat(65))
                .is_err()
        );
    }

    /// Rotation in the order a deployment does it: verifiers learn the new key first,
    /// then the signer switches, then the old key is dropped after the longest token
    /// lifetime. A holder of an old-key token is never logged out before its expiry.
    #[test]
    fn rotation_keeps_old_bucket_tokens_valid_until_expiry() {
        let old = TokenKey::new("old", b"old-secret-0123456").unwrap();
        let new_key = TokenKey::new("new", b"new-secret-0123456").unwrap();
        let before = TokenKeys::new(old.clone());
        let held = before.mint_in_bucket("a", "d", 100, "canary").unwrap();
        let after = TokenKeys::new(new_key).with_verify_key(old);
        let claims = after.verify(held.as_bytes(), 99).unwrap();
        assert_eq!(
            (claims.key_id.as_str(), claims.bucket.as_deref()),
            ("old", Some("canary"))
        );
        assert_eq!(after.signing_key_id(), "new");
        assert!(matches!(
            after.verify(held.as_bytes(), 100),
            Err(TokenError::Expired { .. })
        ));
    }
}
