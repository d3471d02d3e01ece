//! The bench over time: with `--report-every S`, one line per interval with that
//! interval's throughput and its own claim, commit and lag latencies (not the run's totals),
//! and the tasks table's dead tuples, index size and due tasks per heap page. A long
//! recurring run shows whether latency creeps up as the table bloats, or the layout
//! drifts, which a single average would hide.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use sqlx::PgPool;

use super::probe;
use recur_host::Host;
use recur_host::Latencies;
use recur_host::status;

/// One interval's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    /// Seconds since the measured window began, at the end of the interval.
    pub at_secs: f64,
    pub tasks_per_sec: f64,
    /// New tasks created by spawns per second (with `--spawns`): whether the run is
    /// still creating its spawned tasks or absorbing spawns of keys that exist.
    pub spawned_per_sec: f64,
    pub claim_ms_p50: f64,
    pub claim_ms_p99: f64,
    pub commit_ms_p50: f64,
    pub commit_ms_p99: f64,
    /// From due time to start of run, for the runs that started in the interval.
    pub lag_ms_p99: f64,
    pub dead_tuples: i64,
    pub index_mb: f64,
    pub heap_mb: f64,
    /// How many of the next batch of tasks by due time share a heap page (see
    /// status::TableStatus): whether a layout drifts as the run goes on.
    pub due_per_page: Option<f64>,
}

/// Samples a running host every `every`.
pub struct Trend {
    every: Duration,
    /// The batch size, the number of due tasks `due_per_page` looks at.
    batch: i64,
    started: Instant,
    last_at: Instant,
    last: Latencies,
    last_committed: u64,
    last_spawned: u64,
    /// The intervals so far.
    pub intervals: Vec<Interval>,
}

impl Trend {
    /// Starts the first interval now.
    pub fn new(every: Duration, batch: i64, host: &Host) -> Trend {
        let now = Instant::now();
        Trend {
            every,
            batch,
            started: now,
            last_at: now,
            last: host.latencies(),
            last_committed: host.stats().committed,
            last_spawned: host.stats().spawned,
            intervals: Vec::new(),
        }
    }

    /// Closes the current interval if it is due: records it and prints it to stderr.
    pub async fn tick(&mut self, host: &Host, db: &PgPool) -> Result<(), sqlx::Error> {
        let now = Instant::now();
        if now.duration_since(self.last_at) < self.every {
            return Ok(());
        }
        let (latencies, stats) = (host.latencies(), host.stats());
        let (committed, spawned) = (stats.committed, stats.spawned);
        let seconds = now.duration_since(self.last_at).as_secs_f64();
        let claim = since(&latencies.claim_us, &self.last.claim_us);
        let commit = since(&latencies.commit_us, &self.last.commit_us);
        let lag = since(&latencies.lag_ms, &self.last.lag_ms);
        let table = status::table(db, self.batch).await?;
        let ms =
            |h: &Histogram<u64>, q: f64| (h.value_at_quantile(q) as f64 / 10.0).round() / 100.0;
        let interval = Interval {
            at_secs: (now.duration_since(self.started).as_secs_f64() * 10.0).round() / 10.0,
            tasks_per_sec: ((committed - self.last_committed) as f64 / seconds).round(),
            spawned_per_sec: ((spawned - self.last_spawned) as f64 / seconds).round(),
            claim_ms_p50: ms(&claim, 0.5),
            claim_ms_p99: ms(&claim, 0.99),
            commit_ms_p50: ms(&commit, 0.5),
            commit_ms_p99: ms(&commit, 0.99),
            lag_ms_p99: lag.value_at_quantile(0.99) as f64,
            dead_tuples: table.dead_tuples,
            index_mb: (table.index_bytes as f64 / 1e5).round() / 10.0,
            heap_mb: (table.heap_bytes as f64 / 1e5).round() / 10.0,
            due_per_page: table.due_per_page.map(|x| (x * 10.0).round() / 10.0),
        };
        let spawning = if interval.spawned_per_sec > 0.0 {
            format!("  spawned {:.0}/s", interval.spawned_per_sec)
        } else {
            String::new()
        };
        eprintln!(
            "  {:>7.1} s  {:>9.0} tasks/s  claim p50 {:>6.2} p99 {:>7.2} ms  commit p50 {:>6.2} p99 {:>7.2} ms  lag p99 {:>6.0} ms  dead tuples {:>10}  index {:>8.1} MB  heap {:>8.1} MB  due per page {:>5}{spawning}",
            interval.at_secs,
            interval.tasks_per_sec,
            interval.claim_ms_p50,
            interval.claim_ms_p99,
            interval.commit_ms_p50,
            interval.commit_ms_p99,
            interval.lag_ms_p99,
            interval.dead_tuples,
            interval.index_mb,
            interval.heap_mb,
            probe::show_per_page(interval.due_per_page)
        );
        self.intervals.push(interval);
        (self.last_at, self.last) = (now, latencies);
        (self.last_committed, self.last_spawned) = (committed, spawned);
        Ok(())
    }
}

/// What `now` recorded since `before` (both cumulative histograms of the same run).
fn since(now: &Histogram<u64>, before: &Histogram<u64>) -> Histogram<u64> {
    let mut delta = now.clone();
    // Cannot fail: `before` is an earlier state of the same histogram, so every count
    // in it is also in `now`, and their ranges are the same.
    let _ = delta.subtract(before);
    delta
}
