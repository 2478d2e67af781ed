//! [`Moment`]: an optional [`Instant`] in 8 bytes, for the deadlines every session keeps.
//!
//! `Option<Instant>` takes 16 bytes on Linux; a session keeps five of them for its whole
//! life, and an idle connection's memory is mostly such fixed state. A moment is the
//! signed nanoseconds from one process-wide origin (taken at the first conversion), so
//! any instant within ±292 years of it converts both ways exactly.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// An optional instant in 8 bytes (see the [module docs](self)).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moment(i64);

/// The sentinel for "no instant".
const NONE: i64 = i64::MIN;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

impl Moment {
    /// No instant.
    pub(crate) const NONE: Moment = Moment(NONE);

    /// `instant`, or [`Moment::NONE`].
    pub(crate) fn new(instant: Option<Instant>) -> Moment {
        let Some(instant) = instant else {
            return Moment::NONE;
        };
        let origin = origin();
        Moment(match instant.checked_duration_since(origin) {
            Some(after) => nanos(after),
            // Never `NONE`: the earliest representable is one nanosecond above it.
            None => nanos(origin - instant).saturating_neg().max(NONE + 1),
        })
    }

    /// `instant` as a moment.
    pub(crate) fn at(instant: Instant) -> Moment {
        Moment::new(Some(instant))
    }

    /// The instant, if any.
    pub(crate) fn get(self) -> Option<Instant> {
        if self.0 == NONE {
            return None;
        }
        let origin = origin();
        let magnitude = Duration::from_nanos(self.0.unsigned_abs());
        Some(if self.0 >= 0 {
            origin + magnitude
        } else {
            origin - magnitude
        })
    }

    /// Whether there is an instant and it is at or before `now`.
    pub(crate) fn is_due(self, now: Instant) -> bool {
        self.get().is_some_and(|at| at <= now)
    }
}

impl std::fmt::Debug for Moment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways_exactly() {
        let now = Instant::now();
        for instant in [
            now,
            now + Duration::from_nanos(1),
            now + Duration::from_secs(86_400 * 365),
            origin() - Duration::from_millis(1_500),
            origin(),
        ] {
            assert_eq!(Moment::at(instant).get(), Some(instant));
        }
        assert_eq!(Moment::NONE.get(), None);
        assert_eq!(Moment::new(None), Moment::NONE);
        assert_eq!(size_of::<Moment>(), 8);
    }

    #[test]
    fn is_due_at_and_after_the_instant_only() {
        let at = Instant::now() + Duration::from_secs(5);
        let moment = Moment::at(at);
        assert!(!moment.is_due(at - Duration::from_nanos(1)));
        assert!(moment.is_due(at));
        assert!(moment.is_due(at + Duration::from_secs(1)));
        assert!(!Moment::NONE.is_due(at));
    }
}
