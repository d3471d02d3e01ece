//! Time at the boundary: the WIT `timestamp` (milliseconds since the Unix epoch) and
//! `when` on one side, `SystemTime` and `Duration` on the other, and [`now`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(target_arch = "wasm32")]
use crate::bindings::recur::task::host;
use crate::bindings::recur::task::types;

/// Returns the host's current time.
///
/// Modules should use this rather than `SystemTime::now()`: the host decides what "now"
/// is for a run, and it is the clock the host compares `reschedule_at` times against.
/// Compiled for a target other than wasm, as in a module's unit tests, it reads the
/// system clock.
///
/// ```
/// use std::time::Duration;
///
/// let tomorrow = recur_guest::now() + Duration::from_secs(24 * 60 * 60);
/// let outcome = recur_guest::reschedule_at(tomorrow);
/// ```
pub fn now() -> SystemTime {
    #[cfg(target_arch = "wasm32")]
    return from_millis(host::now());
    // Off wasm there is no host to ask (the generated import is a stub that panics); the
    // system clock lets a module's unit tests run its handler natively.
    #[cfg(not(target_arch = "wasm32"))]
    SystemTime::now()
}

/// When a task runs: the friendly side of the WIT `when` variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    /// At an absolute time.
    At(SystemTime),
    /// This long after the host records the outcome.
    After(Duration),
}

impl When {
    /// Converts to the generated variant.
    pub(crate) fn to_wit(self) -> types::When {
        match self {
            When::At(time) => types::When::At(to_millis(time)),
            When::After(delay) => types::When::AfterMs(to_after_ms(delay)),
        }
    }
}

/// Converts a WIT timestamp to a `SystemTime`.
///
/// Times before the epoch read as the epoch itself: on wasm32-wasip2 a `SystemTime`
/// cannot hold them, and the host never hands them out.
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    let after_epoch = u64::try_from(ms).unwrap_or(0);
    UNIX_EPOCH
        .checked_add(Duration::from_millis(after_epoch))
        .unwrap_or(UNIX_EPOCH)
}

/// Converts a `SystemTime` to a WIT timestamp, saturating at the ends of `i64`.
pub(crate) fn to_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// Converts a `Duration` to whole milliseconds (rounded down), saturating at `u64::MAX`.
pub(crate) fn to_after_ms(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip() {
        for ms in [0, 1, 1_700_000_000_123] {
            assert_eq!(to_millis(from_millis(ms)), ms);
        }
    }

    #[test]
    fn times_before_the_epoch() {
        assert_eq!(from_millis(-5), UNIX_EPOCH);
        assert_eq!(to_millis(UNIX_EPOCH - Duration::from_millis(5)), -5);
    }

    #[test]
    fn durations_round_down_and_saturate() {
        assert_eq!(to_after_ms(Duration::from_micros(1_999)), 1);
        assert_eq!(to_after_ms(Duration::MAX), u64::MAX);
    }
}
