//! Login attempts per device per minute ([`crate::ServerConfig::max_logins_per_device`]):
//! an [`Authenticator`] wrapper the server puts in front of the configured one. Attempts
//! are counted per (app, device) in fixed one-minute windows that start at a device's
//! first attempt; beyond the limit the login is refused with `login_rate_limited` (203)
//! without asking the inner authenticator (so a client in a login loop costs no token
//! checks or backend calls). Token refreshes count as attempts too (they are checked by
//! the same authenticator; a client refreshes about once per token lifetime).
//!
//! Each login costs one map entry and no allocation: a device is counted under a 64-bit
//! hash of (app, device) (seeded at random per server, [`MapHasher`]) rather than under
//! copies of its two ids, and windows are timed with the Unix seconds the driver passes
//! in rather than a clock read of their own. Two devices whose hashes collide would
//! share a count; that gives a client nothing it does not have already (attempts are
//! counted before the token check, so anyone can spend a device's attempts by sending
//! logins in its name).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use longconn_core::Code;

use crate::auth::{AuthGrant, Authenticator, LoginRequest};
use crate::shard::MapHasher;

/// Length of a window, seconds.
const WINDOW_S: u64 = 60;

/// Counts logins per device and refuses those over the limit.
pub(crate) struct LoginLimit {
    inner: Arc<dyn Authenticator>,
    max_per_minute: u32,
    /// Hashes (app, device) into the map's key.
    device_hasher: MapHasher,
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    /// Hash of (app, device) -> its window.
    by_device: HashMap<u64, Window, MapHasher>,
    /// Map size after the last sweep of expired windows.
    swept_len: usize,
}

/// One device's window: when it started (Unix seconds, `u32`: until 2106) and the
/// attempts in it. With its key a map entry is 16 bytes, and every device that logged
/// in keeps one until a later sweep: it is part of an idle connection's memory.
#[derive(Debug, Clone, Copy)]
struct Window {
    start_s: u32,
    attempts: u32,
}

impl Window {
    /// Whether the window has ended at `now_s`. A clock stepped back keeps it open
    /// (at most until the clock passes its start again plus a minute).
    fn ended(&self, now_s: u32) -> bool {
        u64::from(now_s.saturating_sub(self.start_s)) >= WINDOW_S
    }
}

impl LoginLimit {
    pub(crate) fn new(inner: Arc<dyn Authenticator>, max_per_minute: u32) -> LoginLimit {
        LoginLimit {
            inner,
            max_per_minute,
            device_hasher: MapHasher::default(),
            windows: Mutex::default(),
        }
    }

    /// Counts an attempt at `now_s` (Unix seconds); `false` when it is over the limit.
    fn allow(&self, app: &str, device: &str, now_s: u64) -> bool {
        let now_s = u32::try_from(now_s).unwrap_or(u32::MAX);
        // `(&str, &str)` hashes each id followed by a terminator, so ("ab", "c") and
        // ("a", "bc") are different keys.
        let key = self.device_hasher.hash_one((app, device));
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        // Forget expired windows once the map has doubled since the last sweep, so
        // memory follows the devices seen in the last minute.
        if windows.by_device.len() > 2 * windows.swept_len.max(1024) {
            windows.by_device.retain(|_, window| !window.ended(now_s));
            windows.swept_len = windows.by_device.len();
        }
        let window = windows.by_device.entry(key).or_insert(Window {
            start_s: now_s,
            attempts: 0,
        });
        if window.ended(now_s) {
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
        if !self.allow(login.app.as_str(), login.device.as_str(), now_unix_s) {
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
        let t = 1_800_000_000;
        for _ in 0..3 {
            assert!(limit.allow("a", "d1", t));
        }
        assert!(!limit.allow("a", "d1", t + 59));
        assert!(limit.allow("a", "d2", t), "per device");
        assert!(limit.allow("b", "d1", t), "per app");
        assert!(limit.allow("a", "d1", t + WINDOW_S), "a new window");
        // A clock stepped back keeps the new window open.
        assert!(limit.allow("a", "d1", t + WINDOW_S - 30));
        assert!(limit.allow("a", "d1", t + WINDOW_S - 30));
        assert!(!limit.allow("a", "d1", t + WINDOW_S - 30));
    }

    #[test]
    fn ids_split_differently_are_different_devices() {
        let limit = LoginLimit::new(Arc::new(Accept), 1);
        assert!(limit.allow("ab", "c", 0));
        assert!(limit.allow("a", "bc", 0));
        assert!(limit.allow("abc", "", 0));
        assert!(!limit.allow("ab", "c", 0));
    }

    #[test]
    fn expired_windows_are_swept_once_the_map_doubles() {
        let limit = LoginLimit::new(Arc::new(Accept), 1);
        assert!(limit.allow("a", "live", 100));
        for i in 0..2048 {
            assert!(limit.allow("a", &format!("old{i}"), 50));
        }
        // The next new device finds 2,049 windows (> 2 x 1024) and sweeps those that
        // ended by now (started at 50, ended at 110); "live" (100) stays.
        assert!(limit.allow("a", "new", 120));
        let len = limit.windows.lock().unwrap().by_device.len();
        assert_eq!(len, 2, "live and new");
        assert!(
            !limit.allow("a", "live", 120),
            "its count survived the sweep"
        );
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
