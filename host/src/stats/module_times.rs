//! How long each module version's runs take, shared by every worker: the measure that
//! tells a short module from a long one, which the execute stage's fair queue and the
//! claim stage's choice of claim kind both read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Below this recent mean run time a module counts as short: it may use every worker,
/// and a host whose runs are short claims under row locks in `--claim auto`.
pub const SHORT_RUN: Duration = Duration::from_millis(20);
/// Runs of a module measured before it counts as short.
pub const PROVEN_RUNS: u64 = 20;
/// The newest run's weight in the recent mean is 1 / `RECENT_WEIGHT`: a module that turns
/// long stops counting as short after its first long run, and one that turns short
/// counts as short again after a few dozen quick ones. A lifetime mean would let a
/// module prove itself short once and then take every worker with long runs.
const RECENT_WEIGHT: u64 = 8;

/// Run times of one module version, shared by every worker.
#[derive(Debug, Default)]
pub struct ModuleTimes {
    runs: AtomicU64,
    /// An exponentially weighted mean of the run times, in nanoseconds.
    recent_nanos: AtomicU64,
}

impl ModuleTimes {
    /// Adds one run.
    pub fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let first = self.runs.fetch_add(1, Relaxed) == 0;
        // Never fails: the closure always returns Some.
        let _ = self
            .recent_nanos
            .fetch_update(Relaxed, Relaxed, |mean| match first {
                true => Some(took),
                false => Some(mean - mean / RECENT_WEIGHT + took / RECENT_WEIGHT),
            });
    }

    /// Whether the module has proven its runs short, and its recent runs still are.
    pub fn is_short(&self) -> bool {
        self.runs.load(Relaxed) >= PROVEN_RUNS
            && self.recent_nanos.load(Relaxed) < SHORT_RUN.as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_is_short_only_once_enough_quick_runs_prove_it() {
        let times = ModuleTimes::default();
        for _ in 1..PROVEN_RUNS {
            times.record(Duration::from_millis(1));
        }
        assert!(!times.is_short(), "one run short of proof");
        times.record(Duration::from_millis(1));
        assert!(times.is_short());
        let slow = ModuleTimes::default();
        for _ in 0..PROVEN_RUNS {
            slow.record(SHORT_RUN);
        }
        assert!(!slow.is_short(), "a mean of SHORT_RUN is not under it");
    }

    #[test]
    fn a_short_module_that_turns_long_is_no_longer_short_after_one_long_run() {
        let times = ModuleTimes::default();
        for _ in 0..10_000 {
            times.record(Duration::from_millis(1));
        }
        assert!(times.is_short());
        times.record(Duration::from_secs(1));
        assert!(!times.is_short(), "one long run after 10,000 quick ones");
        let mut quick = 0;
        while !times.is_short() {
            times.record(Duration::from_millis(1));
            quick += 1;
        }
        assert!(
            (10..=60).contains(&quick),
            "short again after {quick} quick runs"
        );
    }
}
