//! Per-IP token buckets for `/v1/access`: each client IP may make `burst` requests at
//! once and `per_second` more every second. The clock is the caller's (`now`), so the
//! limiter is tested without sleeping.
//!
//! Memory is bounded: at most `max_tracked_ips` buckets (in 16 shards). A full shard
//! first forgets buckets that have refilled completely (those IPs lose nothing); if none
//! has, the new IP is charged to one shared overflow bucket of the shard, so a flood of
//! fresh addresses cannot grow the table or escape the limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Shard {
    buckets: HashMap<IpAddr, Bucket>,
    overflow: Option<Bucket>,
}

/// The limiter.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    per_shard: usize,
    shards: [Mutex<Shard>; SHARDS],
}

impl RateLimiter {
    /// A limiter refilling `per_second` (0 turns it off) up to `burst`, tracking at most
    /// `max_tracked_ips` addresses.
    pub fn new(per_second: f64, burst: u32, max_tracked_ips: usize) -> RateLimiter {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            per_shard: (max_tracked_ips / SHARDS).max(1),
            shards: std::array::from_fn(|_| {
                Mutex::new(Shard {
                    buckets: HashMap::new(),
                    overflow: None,
                })
            }),
        }
    }

    /// Takes one token for `ip` at `now`; `Err(retry_after)` when it has none.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let shard = &self.shards[shard_of(ip)];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if !shard.buckets.contains_key(&ip) && shard.buckets.len() >= self.per_shard {
            let (rate, burst) = (self.per_second, self.burst);
            shard
                .buckets
                .retain(|_, b| refilled(b, now, rate, burst) < burst);
        }
        let fresh = Bucket {
            tokens: self.burst,
            at: now,
        };
        let bucket = if shard.buckets.len() < self.per_shard || shard.buckets.contains_key(&ip) {
            shard.buckets.entry(ip).or_insert(fresh)
        } else {
            shard.overflow.get_or_insert(fresh)
        };
        bucket.tokens = refilled(bucket, now, self.per_second, self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).buckets.len())
            .sum()
    }
}

fn refilled(bucket: &Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

fn shard_of(ip: IpAddr) -> usize {
    let folded = match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            (n as u64) ^ ((n >> 64) as u64)
        }
    };
    (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(n))
    }

    #[test]
    fn burst_then_refill_then_retry_after() {
        let limiter = RateLimiter::new(10.0, 3, 1_000);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ip(1), t0).is_ok());
        }
        let retry = limiter.check(ip(1), t0).unwrap_err();
        assert!(retry > Duration::from_millis(90) && retry <= Duration::from_millis(100));
        assert!(
            limiter.check(ip(2), t0).is_ok(),
            "another IP has its own bucket"
        );
        assert!(
            limiter
                .check(ip(1), t0 + Duration::from_millis(100))
                .is_ok()
        );
        assert!(
            limiter
                .check(ip(1), t0 + Duration::from_millis(100))
                .is_err()
        );
    }

    #[test]
    fn memory_stays_bounded_and_floods_stay_limited() {
        let limiter = RateLimiter::new(1.0, 1, 16 * 4);
        let t0 = Instant::now();
        let mut allowed = 0;
        for n in 0..10_000 {
            if limiter.check(ip(n), t0).is_ok() {
                allowed += 1;
            }
        }
        assert!(limiter.tracked() <= 64, "{}", limiter.tracked());
        // 64 tracked addresses plus one overflow token per shard.
        assert!(allowed <= 64 + 16, "{allowed}");
        // Once buckets refill they are forgotten to make room.
        assert!(
            limiter
                .check(ip(20_000), t0 + Duration::from_secs(2))
                .is_ok()
        );
    }

    #[test]
    fn zero_rate_is_off() {
        let limiter = RateLimiter::new(0.0, 1, 16);
        let t0 = Instant::now();
        assert!((0..100).all(|_| limiter.check(ip(1), t0).is_ok()));
    }
}
