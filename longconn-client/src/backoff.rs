//! Reconnect delays: exponential backoff with full jitter.
//!
//! Attempt `n` (from 0) waits a uniformly random time in `[0, min(cap, base * 2^n)]`.
//! Full jitter spreads clients that lost the same gateway at the same moment over the
//! whole window, instead of bringing them back in waves (the reconnect storms that
//! EMQX, Phoenix and NATS clients had to fix). The rule lives in longconn-core, where the
//! client state machine ([`longconn_core::ClientSession`]) applies it; the SDK seeds the
//! session's jitter with a random number.

pub use longconn_core::Backoff;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// 10,000 clients losing the gateway at once: their first reconnect delays must
    /// fill the window evenly (chi-square over 10 buckets), not cluster.
    #[test]
    fn full_jitter_spreads_simultaneous_reconnects_evenly() {
        let b = Backoff {
            base: Duration::from_millis(1000),
            cap: Duration::from_secs(30),
            max_attempts: None,
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let mut buckets = [0u32; 10];
        let n = 10_000;
        for _ in 0..n {
            let d = b.delay(0, rng.u64(..)).as_millis() as usize;
            assert!(d <= 1000);
            buckets[(d * 10 / 1001).min(9)] += 1;
        }
        let expected = n as f64 / 10.0;
        let chi2: f64 = buckets
            .iter()
            .map(|&o| (o as f64 - expected).powi(2) / expected)
            .sum();
        // 9 degrees of freedom: 27.88 is the 0.1 % critical value.
        assert!(chi2 < 27.88, "not uniform: {buckets:?}, chi2 {chi2}");
        // And no lockstep: the busiest bucket holds well under a fifth of the clients.
        assert!(*buckets.iter().max().unwrap() < n / 5);
    }
}
