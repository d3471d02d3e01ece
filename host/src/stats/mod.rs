//! Counters and latency histograms a host keeps while it runs: what it claimed, ran,
//! committed and gave back, and how long claims, commits, runs and due tasks took, and
//! the run times of each module version (`module_times.rs`). The demo prints them,
//! tests read them, `recur bench` reports them. The stages all write here, and nothing
//! here imports a stage.

mod module_times;

pub use module_times::{ModuleTimes, PROVEN_RUNS, SHORT_RUN};

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Live counters, shared by the stages of one host. Relaxed atomics: each counter is
/// independent, and a snapshot only needs to be roughly simultaneous.
#[derive(Debug, Default)]
pub struct Stats {
    claims: AtomicU64,
    claimed: AtomicU64,
    claim_micros: AtomicU64,
    executed: AtomicU64,
    exec_micros: AtomicU64,
    rescheduled: AtomicU64,
    completed: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    no_module: AtomicU64,
    spawned: AtomicU64,
    committed: AtomicU64,
    fenced_out: AtomicU64,
    commits: AtomicU64,
    commit_micros: AtomicU64,
    given_back: AtomicU64,
    expired: AtomicU64,
    idle_micros: AtomicU64,
    /// Latency histograms. A std Mutex, not tokio's: it is held for a few hundred
    /// nanoseconds, never across an await, and worker threads (not async tasks) take it.
    latencies: Mutex<Latencies>,
}

/// Latency distributions, in the unit each name ends with.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Claim statements, of either kind.
    pub claim_us: Histogram<u64>,
    /// Commit statements.
    pub commit_us: Histogram<u64>,
    /// One run in the sandbox: store, instantiate, call, drop.
    pub exec_ns: Histogram<u64>,
    /// From a task's due time to the start of its run.
    pub lag_ms: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        let histogram = || Histogram::new(2).expect("2 significant digits is a valid precision");
        Latencies {
            claim_us: histogram(),
            commit_us: histogram(),
            exec_ns: histogram(),
            lag_ms: histogram(),
        }
    }
}

impl Latencies {
    fn add(&mut self, other: &Latencies) {
        // Auto-resizing histograms accept any value, so adding cannot fail.
        let _ = self.claim_us.add(&other.claim_us);
        let _ = self.commit_us.add(&other.commit_us);
        let _ = self.exec_ns.add(&other.exec_ns);
        let _ = self.lag_ms.add(&other.lag_ms);
    }

    fn clear(&mut self) {
        self.claim_us.reset();
        self.commit_us.reset();
        self.exec_ns.reset();
        self.lag_ms.reset();
    }
}

/// A worker thread's own run and lag histograms, merged into the shared ones every
/// [`RunTimes::FLUSH_EVERY`] runs, so the hot path takes no lock.
pub(crate) struct RunTimes {
    local: Latencies,
    pending: u32,
}

impl RunTimes {
    const FLUSH_EVERY: u32 = 256;

    pub(crate) fn new() -> Self {
        RunTimes {
            local: Latencies::default(),
            pending: 0,
        }
    }

    pub(crate) fn record(&mut self, stats: &Stats, exec: Duration, lag_ms: i64) {
        stats.executed(exec);
        let _ = self.local.exec_ns.record(exec.as_nanos().max(1) as u64);
        let _ = self.local.lag_ms.record(lag_ms.max(0) as u64);
        self.pending += 1;
        if self.pending >= Self::FLUSH_EVERY {
            self.flush(stats);
        }
    }

    pub(crate) fn flush(&mut self, stats: &Stats) {
        if self.pending > 0 {
            stats
                .latencies
                .lock()
                .expect("latency lock poisoned")
                .add(&self.local);
            self.local.clear();
            self.pending = 0;
        }
    }
}

/// What a commit row does to its task, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// Runs again later.
    Rescheduled,
    /// Finished.
    Completed,
    /// Tried again after a backoff.
    Retried,
    /// Parked as failed.
    Failed,
    /// Waits for a module to be deployed.
    NoModule,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Claim statements that ran, of either kind.
    pub claims: u64,
    /// Tasks those claims took.
    pub claimed: u64,
    /// Executions in the sandbox (successful or not).
    pub executed: u64,
    /// Mean time one execution spent in the sandbox, in microseconds.
    pub exec_us_mean: u64,
    /// Mean time of one claim statement, in microseconds.
    pub claim_us_mean: u64,
    /// Mean time of one commit statement, in microseconds.
    pub commit_us_mean: u64,
    /// Outcomes that rescheduled their task.
    pub rescheduled: u64,
    /// Outcomes that completed their task.
    pub completed: u64,
    /// Outcomes that asked for a retry, and sandbox faults that will be retried.
    pub retried: u64,
    /// Outcomes that parked their task as failed.
    pub failed: u64,
    /// Tasks claimed for a type no module is deployed for.
    pub no_module: u64,
    /// New tasks created by spawns (duplicates absorbed are not counted).
    pub spawned: u64,
    /// Outcomes written to the database.
    pub committed: u64,
    /// Outcomes dropped because the task's claim had passed to another host.
    pub fenced_out: u64,
    /// Commit statements that ran.
    pub commits: u64,
    /// Claimed tasks returned unrun at shutdown.
    pub given_back: u64,
    /// Queued tasks not started because their claim had run out.
    pub expired: u64,
    /// Time the worker threads spent with nothing to run, summed over the workers, in
    /// microseconds: how long the pipeline kept the sandbox waiting.
    pub idle_us: u64,
}

impl Stats {
    pub(crate) fn claim_done(&self, tasks: usize, took: Duration) {
        self.claims.fetch_add(1, Relaxed);
        self.claimed.fetch_add(tasks as u64, Relaxed);
        self.claim_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
        let _ = self
            .latencies
            .lock()
            .expect("latency lock poisoned")
            .claim_us
            .record(took.as_micros().max(1) as u64);
    }

    fn executed(&self, took: Duration) {
        self.executed.fetch_add(1, Relaxed);
        self.exec_micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub(crate) fn decided(&self, decided: Decided) {
        let counter = match decided {
            Decided::Rescheduled => &self.rescheduled,
            Decided::Completed => &self.completed,
            Decided::Retried => &self.retried,
            Decided::Failed => &self.failed,
            Decided::NoModule => &self.no_module,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn commit_done(
        &self,
        outcomes: usize,
        committed: u64,
        spawned: u64,
        took: Duration,
    ) {
        self.commits.fetch_add(1, Relaxed);
        self.commit_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
        self.committed.fetch_add(committed, Relaxed);
        self.fenced_out
            .fetch_add(outcomes as u64 - committed.min(outcomes as u64), Relaxed);
        self.spawned.fetch_add(spawned, Relaxed);
        let _ = self
            .latencies
            .lock()
            .expect("latency lock poisoned")
            .commit_us
            .record(took.as_micros().max(1) as u64);
    }

    pub(crate) fn idle(&self, took: Duration) {
        self.idle_micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub(crate) fn expired(&self) {
        self.expired.fetch_add(1, Relaxed);
    }

    pub(crate) fn given_back(&self, tasks: u64) {
        self.given_back.fetch_add(tasks, Relaxed);
    }

    /// A copy of the latency histograms (runs still buffered in a worker's own
    /// histograms since its last flush are not in it yet).
    pub fn latencies(&self) -> Latencies {
        self.latencies
            .lock()
            .expect("latency lock poisoned")
            .clone()
    }

    /// Empties the latency histograms, to measure a steady state after a warm-up.
    pub fn reset_latencies(&self) {
        self.latencies
            .lock()
            .expect("latency lock poisoned")
            .clear();
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mean = |total: &AtomicU64, count: &AtomicU64| {
            total
                .load(Relaxed)
                .checked_div(count.load(Relaxed))
                .unwrap_or(0)
        };
        StatsSnapshot {
            claims: self.claims.load(Relaxed),
            claimed: self.claimed.load(Relaxed),
            executed: self.executed.load(Relaxed),
            exec_us_mean: mean(&self.exec_micros, &self.executed),
            claim_us_mean: mean(&self.claim_micros, &self.claims),
            commit_us_mean: mean(&self.commit_micros, &self.commits),
            rescheduled: self.rescheduled.load(Relaxed),
            completed: self.completed.load(Relaxed),
            retried: self.retried.load(Relaxed),
            failed: self.failed.load(Relaxed),
            no_module: self.no_module.load(Relaxed),
            spawned: self.spawned.load(Relaxed),
            committed: self.committed.load(Relaxed),
            fenced_out: self.fenced_out.load(Relaxed),
            commits: self.commits.load(Relaxed),
            given_back: self.given_back.load(Relaxed),
            expired: self.expired.load(Relaxed),
            idle_us: self.idle_micros.load(Relaxed),
        }
    }
}
