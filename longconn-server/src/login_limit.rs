//! Login attempts per device per minute ([`crate::ServerConfig::max_logins_per_device`]):
//! an [`Authenticator`] wrapper the server puts in front of the configured one. Attempts
//! are counted per (app, device) in fixed one-minute windows that start at a device's
//! first attempt; beyond the limit the login is refused with `login_rate_limited` (203)
//! without asking the inner authenticator (so a client in a login loop costs no token
//! checks or backend calls). Token refreshes count as attempts too (they are checked by
//! the same authenticator; a client refreshes about once per token lifetime).
//!
//! Every device that logged in keeps its window until a later sweep, so the entry is
//! part of an idle connection's memory: it is 16 bytes, a keyed 64-bit hash of (app,
//! device) and the window as two `u32`s, with no string copied. Two devices whose
//! hashes collide (about one pair in 10^10 among 10^5 devices) share a window, which
//! can only refuse early, never let more through.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use longconn_core::Code;

use crate::auth::{AuthGrant, Authenticator, LoginRequest};

const WINDOW: Duration = Duration::from_secs(60);

/// Counts logins per device and refuses those over the limit.
pub(crate) struct LoginLimit {
    inner: Arc<dyn Authenticator>,
    max_per_minute: u32,
    /// Keys the device hashes (random per process, so no client can aim at a collision).
    keys: RandomState,
    /// Window starts are seconds after this.
    origin: Instant,
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    /// Keyed hash of (app, device) -> its window.
    by_device: HashMap<u64, Window, BuildHasherDefault<HashedKey>>,
    /// Map size after the last sweep of expired windows.
    swept_len: usize,
}

/// A device's current window: its start (seconds after [`LoginLimit`]'s origin) and the
/// attempts in it.
#[derive(Clone, Copy)]
struct Window {
    start_s: u32,
    attempts: u32,
}

/// The map's hasher: its keys are keyed hashes already, so it passes them through.
#[derive(Default)]
struct HashedKey(u64);

impl Hasher for HashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are `u64`); fold anything else in.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

const WINDOW_S: u32 = WINDOW.as_secs() as u32;

impl LoginLimit {
    pub(crate) fn new(inner: Arc<dyn Authenticator>, max_per_minute: u32) -> LoginLimit {
        LoginLimit {
            inner,
            max_per_minute,
            keys: RandomState::new(),
            origin: Instant::now(),
            windows: Mutex::default(),
        }
    }

    /// Counts an attempt at `now`; `false` when it is over the limit.
    fn allow(&self, app: &str, device: &str, now: Instant) -> bool {
        let key = self.keys.hash_one((app, device));
        let now_s =
            u32::try_from(now.saturating_duration_since(self.origin).as_secs()).unwrap_or(u32::MAX);
        let expired = |window: &Window| now_s.saturating_sub(window.start_s) >= WINDOW_S;
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        // Forget expired windows once the map has doubled since the last sweep, so
        // memory follows the devices seen in the last minute.
        if windows.by_device.len() > 2 * windows.swept_len.max(1024) {
            windows.by_device.retain(|_, window| !expired(window));
            windows.swept_len = windows.by_device.len();
        }
        let window = windows.by_device.entry(key).or_insert(Window {
            start_s: now_s,
            attempts: 0,
        });
        if expired(window) {
            *window = Window {
                start_s: now_s,
                attempts: 0,
            };
        }
        window.attempts = window.attempts.saturating_add(1);
        window.attempts <= self.max_per_minute
    }
}

#[async_trait]
impl Authenticator for LoginLimit {
    async fn authenticate(&self, login: &LoginRequest, now_unix_s: u64) -> Result<AuthGrant, Code> {
        if !self.allow(login.app.as_str(), login.device.as_str(), Instant::now()) {
            return Err(Code::LoginRateLimited);
        }
        self.inner.authenticate(login, now_unix_s).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Accept;

    #[async_trait]
    impl Authenticator for Accept {
        async fn authenticate(&self, _: &LoginRequest, _: u64) -> Result<AuthGrant, Code> {
            Ok(AuthGrant {
                expires_unix_s: None,
            })
        }
    }

    #[test]
    fn attempts_over_the_limit_are_refused_until_the_window_ends() {
        let limit = LoginLimit::new(Arc::new(Accept), 3);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(limit.allow("a", "d1", t));
        }
        assert!(!limit.allow("a", "d1", t + Duration::from_secs(59)));
        assert!(limit.allow("a", "d2", t), "per device");
        assert!(limit.allow("b", "d1", t), "per app");
        assert!(limit.allow("a", "d1", t + WINDOW), "a new window");
    }

    #[tokio::test]
    async fn a_refused_attempt_names_its_code() {
        let limit = LoginLimit::new(Arc::new(Accept), 1);
        let login = LoginRequest {
            app: "a".into(),
            device: "d".into(),
            token: bytes::Bytes::new(),
            meta: Default::default(),
        };
        assert!(limit.authenticate(&login, 0).await.is_ok());
        assert_eq!(
            limit.authenticate(&login, 0).await,
            Err(Code::LoginRateLimited)
        );
        assert_eq!(Code::LoginRateLimited.as_u16(), 203);
    }
}
