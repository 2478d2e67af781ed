//! [`SessionConfig`]: every per-connection limit and timer, with documented defaults,
//! validated once when built.

use std::time::Duration;

use crate::error::ConfigError;
use crate::protocol::HEADER_LEN;

/// What a session does when its queue of unsent pushes is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Refuse the new push and count it as dropped; the connection stays up.
    #[default]
    DropNewest,
    /// Close the connection with code `slow_consumer` (queued pushes are discarded).
    Disconnect,
}

/// Limits and timers of one session. Build with [`SessionConfig::builder`];
/// `SessionConfig::default()` holds the documented defaults.
///
/// Share one config between sessions behind an `Arc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    max_frame_size: usize,
    login_timeout: Duration,
    heartbeat_interval: Duration,
    idle_timeout: Duration,
    token_refresh_grace: Duration,
    drain_timeout: Duration,
    max_queued_pushes: usize,
    slow_consumer_policy: SlowConsumerPolicy,
    max_inflight_requests: u32,
    max_requests_per_second: u32,
    max_login_meta_size: usize,
}

/// Smallest allowed [`SessionConfig::max_frame_size`].
pub const MIN_FRAME_SIZE: usize = 256;
/// Largest allowed [`SessionConfig::max_frame_size`].
pub const MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_frame_size: 64 * 1024,
            login_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            token_refresh_grace: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            max_queued_pushes: 256,
            slow_consumer_policy: SlowConsumerPolicy::DropNewest,
            max_inflight_requests: 64,
            max_requests_per_second: 1000,
            max_login_meta_size: 4096,
        }
    }
}

impl SessionConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> SessionConfigBuilder {
        SessionConfigBuilder {
            config: SessionConfig::default(),
        }
    }

    /// Largest frame accepted or sent, header included. Default 65,536; range
    /// [`MIN_FRAME_SIZE`]..=[`MAX_FRAME_SIZE`].
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Time from connection start to a completed login. Default 10 s.
    pub fn login_timeout(&self) -> Duration {
        self.login_timeout
    }

    /// Ping interval the server advertises in `LoginAck`. Default 30 s.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// A logged-in session that receives nothing for this long closes with
    /// `idle_timeout`. Default 75 s (2.5 heartbeats); must exceed the heartbeat interval.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Time a client has to send a valid `TokenRefresh` after its token expired. Default
    /// 30 s.
    pub fn token_refresh_grace(&self) -> Duration {
        self.token_refresh_grace
    }

    /// How long a draining session may keep flushing after `GoAway` before it is closed
    /// with `going_away`. Default 10 s.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// Pushes that may wait unsent in one session before the slow-consumer policy applies.
    /// Default 256; at least 1.
    pub fn max_queued_pushes(&self) -> usize {
        self.max_queued_pushes
    }

    /// What happens to a push that finds the queue full. Default
    /// [`SlowConsumerPolicy::DropNewest`].
    pub fn slow_consumer_policy(&self) -> SlowConsumerPolicy {
        self.slow_consumer_policy
    }

    /// Requests one connection may have waiting for a backend; more get `Error(busy)`.
    /// Default 64; at least 1.
    pub fn max_inflight_requests(&self) -> u32 {
        self.max_inflight_requests
    }

    /// Upstream requests one connection may send per second, as a token bucket that
    /// holds one second's worth (so a burst of this many is fine after a quiet second);
    /// more get `Error(rate_limited)` (330) and the connection goes on. Default 1,000; at
    /// least 1.
    pub fn max_requests_per_second(&self) -> u32 {
        self.max_requests_per_second
    }

    /// Largest `Login` metadata, bytes of the META field (keys, values and their
    /// length prefixes); a larger one is refused with `Close(metadata_too_large)` (331).
    /// Default 4,096.
    pub fn max_login_meta_size(&self) -> usize {
        self.max_login_meta_size
    }
}

/// Builder for [`SessionConfig`]; [`SessionConfigBuilder::build`] validates.
#[derive(Debug, Clone)]
pub struct SessionConfigBuilder {
    config: SessionConfig,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value;
                self
            }
        )*
    };
}

impl SessionConfigBuilder {
    setters! {
        /// See [`SessionConfig::max_frame_size`].
        max_frame_size: usize,
        /// See [`SessionConfig::login_timeout`].
        login_timeout: Duration,
        /// See [`SessionConfig::heartbeat_interval`].
        heartbeat_interval: Duration,
        /// See [`SessionConfig::idle_timeout`].
        idle_timeout: Duration,
        /// See [`SessionConfig::token_refresh_grace`].
        token_refresh_grace: Duration,
        /// See [`SessionConfig::drain_timeout`].
        drain_timeout: Duration,
        /// See [`SessionConfig::max_queued_pushes`].
        max_queued_pushes: usize,
        /// See [`SessionConfig::slow_consumer_policy`].
        slow_consumer_policy: SlowConsumerPolicy,
        /// See [`SessionConfig::max_inflight_requests`].
        max_inflight_requests: u32,
        /// See [`SessionConfig::max_requests_per_second`].
        max_requests_per_second: u32,
        /// See [`SessionConfig::max_login_meta_size`].
        max_login_meta_size: usize,
    }

    /// Checks every value against its documented range.
    pub fn build(self) -> Result<SessionConfig, ConfigError> {
        let c = self.config;
        let invalid = |field, reason| Err(ConfigError { field, reason });
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&c.max_frame_size) {
            return invalid("max_frame_size", "must be 256..=16777216 bytes");
        }
        const { assert!(MIN_FRAME_SIZE > HEADER_LEN) };
        for (field, value) in [
            ("login_timeout", c.login_timeout),
            ("heartbeat_interval", c.heartbeat_interval),
            ("token_refresh_grace", c.token_refresh_grace),
            ("drain_timeout", c.drain_timeout),
        ] {
            if value.is_zero() {
                return invalid(field, "must be greater than zero");
            }
        }
        if c.heartbeat_interval.as_millis() > u32::MAX as u128 {
            return invalid("heartbeat_interval", "must fit in u32 milliseconds");
        }
        if c.idle_timeout <= c.heartbeat_interval {
            return invalid("idle_timeout", "must be longer than heartbeat_interval");
        }
        if c.max_queued_pushes == 0 {
            return invalid("max_queued_pushes", "must be at least 1");
        }
        if c.max_inflight_requests == 0 {
            return invalid("max_inflight_requests", "must be at least 1");
        }
        if c.max_requests_per_second == 0 {
            return invalid("max_requests_per_second", "must be at least 1");
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        let built = SessionConfig::builder().build().unwrap();
        assert_eq!(built, SessionConfig::default());

        let err = SessionConfig::builder()
            .heartbeat_interval(Duration::from_secs(60))
            .idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError {
                field: "idle_timeout",
                ..
            }
        ));
        for bad in [
            SessionConfig::builder().max_frame_size(16),
            SessionConfig::builder().login_timeout(Duration::ZERO),
            SessionConfig::builder().max_queued_pushes(0),
            SessionConfig::builder().max_inflight_requests(0),
            SessionConfig::builder().max_requests_per_second(0),
        ] {
            assert!(bad.build().is_err());
        }
    }
}
