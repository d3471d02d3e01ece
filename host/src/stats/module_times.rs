//! How long each module version's runs take, shared by every worker: the measure that
//! tells a short module from a long one, which the execute stage's fair queue and the
//! claim stage's choice of claim kind both read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Below this mean run time a module counts as short: it may use every worker, and a
/// host whose runs are short claims under row locks in `--claim auto`.
pub const SHORT_RUN: Duration = Duration::from_millis(20);
/// Runs of a module measured before it counts as short.
pub const PROVEN_RUNS: u64 = 20;

/// Run times of one module version, shared by every worker.
#[derive(Debug, Default)]
pub struct ModuleTimes {
    runs: AtomicU64,
    nanos: AtomicU64,
}

impl ModuleTimes {
    /// Adds one run.
    pub fn record(&self, took: Duration) {
        self.runs.fetch_add(1, Relaxed);
        self.nanos.fetch_add(took.as_nanos() as u64, Relaxed);
    }

    /// Whether the module has proven its runs short.
    pub fn is_short(&self) -> bool {
        let runs = self.runs.load(Relaxed);
        runs >= PROVEN_RUNS && self.nanos.load(Relaxed) / runs < SHORT_RUN.as_nanos() as u64
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
}
