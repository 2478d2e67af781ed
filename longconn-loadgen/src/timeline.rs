//! The (re)connect timeline of a connect phase: per 100 ms bucket, how many clients
//! logged in (first logins and reconnects), how many connections were lost, and how
//! many connects the gateway refused with `Close {try_later}` (over its accept rate).
//!
//! Each process counts into a [`LiveTimeline`]; buckets are aligned on absolute
//! 100 ms boundaries of the wall clock, so the [`Timeline`]s of several worker
//! processes add up bucket by bucket ([`Timeline::merge`]). From the merged counts,
//! [`Timeline::recovery`] finds the first loss (a gateway killed under its clients)
//! and how long it took until as many clients were logged in again as before it.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Width of a bucket, milliseconds.
pub const BUCKET_MS: u64 = 100;
/// Buckets per second.
const PER_S: usize = (1000 / BUCKET_MS) as usize;
/// Longest timeline kept: one day of buckets (later events are dropped).
const MAX_BUCKETS: usize = 24 * 3600 * PER_S;

/// What happened to one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Logged in (the first time, or again after a loss).
    Login,
    /// A logged-in connection was lost.
    Drop,
    /// A connect was refused with `Close {try_later}`.
    TryLater,
}

/// Counts of one process while a phase runs; off until [`LiveTimeline::start`].
#[derive(Debug, Default)]
pub struct LiveTimeline {
    inner: Mutex<Option<Timeline>>,
}

impl LiveTimeline {
    /// Starts counting at `origin_ms` (ms since the Unix epoch), dropping anything
    /// counted before.
    pub fn start(&self, origin_ms: u64) {
        *self.lock() = Some(Timeline {
            bucket_ms: BUCKET_MS,
            origin_unix_ms: origin_ms - origin_ms % BUCKET_MS,
            ..Timeline::default()
        });
    }

    /// Whether it counts.
    pub fn is_on(&self) -> bool {
        self.lock().is_some()
    }

    /// Counts `n` events of kind `event` at `at_ms` (ms since the Unix epoch); nothing
    /// when off or before the origin.
    pub fn record(&self, event: Event, at_ms: u64, n: u64) {
        if let Some(t) = self.lock().as_mut() {
            t.add(event, at_ms, n);
        }
    }

    /// The counts so far, turning counting off.
    pub fn take(&self) -> Option<Timeline> {
        self.lock().take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Timeline>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts per bucket from `origin_unix_ms` on. The three series have the same length.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// Width of a bucket, milliseconds (100).
    pub bucket_ms: u64,
    /// Start of the first bucket, ms since the Unix epoch.
    pub origin_unix_ms: u64,
    /// Logins (first ones and reconnects) per bucket.
    pub logins: Vec<u64>,
    /// Logged-in connections lost per bucket.
    pub drops: Vec<u64>,
    /// Connects refused with `Close {try_later}` per bucket.
    pub try_later: Vec<u64>,
}

/// The first loss of connections in a timeline, and the way back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// Clients logged in just before the loss (logins in its bucket included).
    pub before: u64,
    /// The most that were missing at once.
    pub lost: u64,
    /// Start of the bucket of the first loss, seconds from the timeline's origin.
    pub drop_at_s: f64,
    /// End of the bucket in which `before` clients were logged in again (seconds from
    /// the origin); `None` when they never were.
    pub all_back_at_s: Option<f64>,
    /// `all_back_at_s - drop_at_s`.
    pub all_back_after_s: Option<f64>,
    /// Most logins in one second (a sliding window of buckets) from the loss on.
    pub peak_connects_per_s: u64,
    /// Most logins in one bucket from the loss on, scaled to a second.
    pub peak_bucket_per_s: u64,
    /// Connects refused with `try_later` from the loss on.
    pub try_later: u64,
}

impl Timeline {
    fn add(&mut self, event: Event, at_ms: u64, n: u64) {
        let Some(since) = at_ms.checked_sub(self.origin_unix_ms) else {
            return;
        };
        let i = (since / self.bucket_ms.max(1)) as usize;
        if i >= MAX_BUCKETS {
            return;
        }
        if self.logins.len() <= i {
            self.logins.resize(i + 1, 0);
            self.drops.resize(i + 1, 0);
            self.try_later.resize(i + 1, 0);
        }
        match event {
            Event::Login => self.logins[i] += n,
            Event::Drop => self.drops[i] += n,
            Event::TryLater => self.try_later[i] += n,
        }
    }

    /// The timelines of several processes added bucket by bucket (aligned on the wall
    /// clock); `None` when there are none.
    ///
    /// # Errors
    /// They have different bucket widths.
    pub fn merge<'a>(
        parts: impl IntoIterator<Item = &'a Timeline>,
    ) -> Result<Option<Timeline>, String> {
        let parts: Vec<&Timeline> = parts.into_iter().collect();
        let Some(origin) = parts.iter().map(|t| t.origin_unix_ms).min() else {
            return Ok(None);
        };
        let bucket_ms = parts[0].bucket_ms;
        let mut out = Timeline {
            bucket_ms,
            origin_unix_ms: origin,
            ..Timeline::default()
        };
        for part in parts {
            if part.bucket_ms != bucket_ms || bucket_ms == 0 {
                return Err(format!(
                    "timelines with buckets of {} and {} ms",
                    bucket_ms, part.bucket_ms
                ));
            }
            let shift = ((part.origin_unix_ms - origin) / bucket_ms) as usize;
            for (i, ((l, d), t)) in part
                .logins
                .iter()
                .zip(&part.drops)
                .zip(&part.try_later)
                .enumerate()
            {
                let at = origin + (shift + i) as u64 * bucket_ms;
                out.add(Event::Login, at, *l);
                out.add(Event::Drop, at, *d);
                out.add(Event::TryLater, at, *t);
            }
        }
        Ok(Some(out))
    }

    /// Clients logged in at the end of each bucket.
    pub fn connected(&self) -> Vec<u64> {
        let mut now = 0u64;
        self.logins
            .iter()
            .zip(&self.drops)
            .map(|(l, d)| {
                now = (now + l).saturating_sub(*d);
                now
            })
            .collect()
    }

    /// Logins per whole second from the origin.
    pub fn logins_per_s(&self) -> Vec<u64> {
        self.logins.chunks(PER_S).map(|c| c.iter().sum()).collect()
    }

    /// The first loss and the way back; `None` without any loss.
    pub fn recovery(&self) -> Option<Recovery> {
        let first = self.drops.iter().position(|&d| d > 0)?;
        let connected = self.connected();
        // Logins in the loss's own bucket count as before it (a bucket is 100 ms).
        let before = connected[first] + self.drops[first];
        let bucket_s = self.bucket_ms as f64 / 1000.0;
        let mut lowest = before;
        let mut back = None;
        for (i, &c) in connected.iter().enumerate().skip(first) {
            lowest = lowest.min(c);
            if c >= before {
                back = Some(i);
                break;
            }
        }
        let drop_at_s = first as f64 * bucket_s;
        let all_back_at_s = back.map(|i| (i + 1) as f64 * bucket_s);
        let tail = &self.logins[first..];
        let peak_window = if tail.len() <= PER_S {
            tail.iter().sum()
        } else {
            tail.windows(PER_S)
                .map(|w| w.iter().sum::<u64>())
                .max()
                .unwrap_or(0)
        };
        Some(Recovery {
            before,
            lost: before - lowest,
            drop_at_s,
            all_back_at_s,
            all_back_after_s: all_back_at_s.map(|b| b - drop_at_s),
            peak_connects_per_s: peak_window,
            peak_bucket_per_s: tail.iter().copied().max().unwrap_or(0) * PER_S as u64,
            try_later: self.try_later[first..].iter().sum(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn events_land_in_their_bucket_from_an_aligned_origin() {
        let live = LiveTimeline::default();
        live.record(Event::Login, T0, 1);
        assert!(!live.is_on() && live.take().is_none(), "off until started");
        live.start(T0 + 42);
        live.record(Event::Login, T0 + 10, 1); // the origin is rounded down to T0
        live.record(Event::Login, T0 + 99, 2);
        live.record(Event::Login, T0 + 100, 1);
        live.record(Event::TryLater, T0 + 350, 4);
        live.record(Event::Drop, T0 - 1, 7); // before the origin: dropped
        let t = live.take().unwrap();
        assert_eq!(t.origin_unix_ms, T0);
        assert_eq!(t.logins, [3, 1, 0, 0]);
        assert_eq!(t.try_later, [0, 0, 0, 4]);
        assert_eq!(t.drops, [0, 0, 0, 0]);
        assert!(!live.is_on(), "taking turns it off");
    }

    #[test]
    fn processes_merge_on_the_wall_clock() {
        let a = LiveTimeline::default();
        a.start(T0);
        a.record(Event::Login, T0 + 50, 2);
        a.record(Event::Login, T0 + 250, 1);
        let b = LiveTimeline::default();
        b.start(T0 + 200); // started later: its bucket 0 is the merged bucket 2
        b.record(Event::Login, T0 + 210, 5);
        b.record(Event::TryLater, T0 + 420, 1);
        let (a, b) = (a.take().unwrap(), b.take().unwrap());
        let m = Timeline::merge([&b, &a]).unwrap().unwrap();
        assert_eq!(m.origin_unix_ms, T0);
        assert_eq!(m.logins, [2, 0, 6, 0, 0]);
        assert_eq!(m.try_later, [0, 0, 0, 0, 1]);
        assert_eq!(m.logins_per_s(), [8]);
        // Through JSON, as workers hand it over.
        let back: Timeline = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(Timeline::merge([]).unwrap(), None);
        let odd = Timeline {
            bucket_ms: 1000,
            ..m.clone()
        };
        assert!(Timeline::merge([&m, &odd]).is_err());
    }

    #[test]
    fn recovery_finds_the_loss_and_the_way_back() {
        let mut t = Timeline {
            bucket_ms: BUCKET_MS,
            origin_unix_ms: T0,
            ..Timeline::default()
        };
        let at = |i: u64| T0 + i * BUCKET_MS;
        // Ramp: 10 clients in buckets 0-1, then all lost in bucket 20.
        t.add(Event::Login, at(0), 6);
        t.add(Event::Login, at(1), 4);
        t.add(Event::Drop, at(20), 10);
        // Back over buckets 21..=33, with refusals on the way.
        t.add(Event::TryLater, at(21), 3);
        t.add(Event::Login, at(22), 1);
        t.add(Event::Login, at(25), 4);
        t.add(Event::Login, at(30), 2);
        t.add(Event::Login, at(33), 3);
        t.add(Event::Login, at(40), 0);
        let r = t.recovery().unwrap();
        assert_eq!(r.before, 10);
        assert_eq!(r.lost, 10);
        assert!((r.drop_at_s - 2.0).abs() < 1e-9, "{r:?}");
        assert!((r.all_back_at_s.unwrap() - 3.4).abs() < 1e-9, "{r:?}");
        assert!((r.all_back_after_s.unwrap() - 1.4).abs() < 1e-9, "{r:?}");
        // Buckets 25..=33 hold 9 logins within one second; one bucket at most 4.
        assert_eq!(r.peak_connects_per_s, 9);
        assert_eq!(r.peak_bucket_per_s, 40);
        assert_eq!(r.try_later, 3);

        // One client never comes back.
        let mut short = t.clone();
        short.drops[33] += 0;
        short.logins[33] -= 1;
        let r = short.recovery().unwrap();
        assert_eq!(r.all_back_at_s, None);
        assert_eq!(r.all_back_after_s, None);

        // The last first login lands in the bucket of the loss: it counts as before.
        let mut late = t.clone();
        late.logins[1] -= 1;
        late.logins[20] += 1;
        let r = late.recovery().unwrap();
        assert_eq!((r.before, r.lost), (10, 10), "{r:?}");

        let mut calm = t;
        calm.drops[20] = 0;
        assert_eq!(calm.recovery(), None, "no loss, no recovery");
    }
}
