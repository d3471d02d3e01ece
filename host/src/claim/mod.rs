//! The claim stage: takes due tasks in atomic batches (`FOR UPDATE SKIP LOCKED`) and
//! hands them to the execute stage, claiming the next batch while the current one runs.
//! A claim is of one of two kinds: a timed lease (`timed.rs`), or a locked claim
//! (`locked.rs`, starting where `cursor.rs` says); `rows.rs` and `arrays.rs` read what
//! either returns.
//!
//! How many tasks a claim asks for is the number of free in-flight permits, capped by
//! the batch size. A permit is taken when a task is claimed and freed when its outcome
//! is committed or the task is given back, so the host never holds more than
//! `max_in_flight` tasks: with three batches' worth, one batch runs while the next waits
//! and the last is being committed, so the workers never wait on a round trip.
//!
//! A deep local queue is only safe while it drains quickly: a task that waits longer
//! than its claim behind slow ones would be run twice. So the stage also caps what it
//! holds by time ([`time_cap`]): no more tasks than the workers can run in a quarter of
//! the lease timeout, at the mean run time measured so far. Fast tasks get the full
//! pipeline; slow ones get a short queue and a little less throughput. Slow commits cap
//! it the same way: outcomes queue behind the commits ahead of them.
//!
//! A claim that comes back with fewer tasks than it asked for means the host has caught
//! up with what is due. Until the idle wait has passed since that claim began, the host
//! does not claim again: below its maximum rate it claims what gathered in that time at
//! once, instead of a few tasks per claim as fast as claims go, each paying for its
//! round trips, its transaction and its `claims` row. A task that falls due meanwhile
//! waits up to the idle wait to start.
//!
//! The loop itself is serial, so it keeps off its path what need not be there: a
//! locked claim's `claims` row, which its tasks must wait for, is written while the loop
//! makes the next claim (`record_and_send`).
//!
//! Tasks of a module the host is still compiling are not claimed at all (the registry
//! names them in [`Compiling`]): they would only wait in the host, holding permits.

mod arrays;
mod cursor;
mod locked;
mod rows;
mod timed;

pub use cursor::ClaimCursor;
#[cfg(test)]
pub use locked::claim_locked;
pub use locked::{PendingClaim, claim_locked_pending};
pub use timed::{claim_timed, give_back};

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::stats::{PROVEN_RUNS, SHORT_RUN, Stats, StatsSnapshot};
use crate::task::ClaimedTask;

/// Which kind of claim a host takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClaimMode {
    /// Locked claims while runs are short (a mean under [`SHORT_RUN`], the measure the
    /// execute stage's fair queue uses too), timed leases otherwise.
    #[default]
    Auto,
    /// Always a timed lease: two row writes per execution, safe for runs of any length;
    /// a crashed host's tasks wait for the lease timeout.
    Timed,
    /// Always a locked claim, its row locks held in a transaction until the batch is
    /// committed: one row write per execution, a crashed host's tasks are due again at
    /// once, but each batch in flight holds a connection and a transaction open while
    /// it runs.
    Locked,
}

/// The (tenant, task type) pairs whose component a host is compiling, as the claim
/// statements take them: side by side, a pair at each index. Their tasks are left
/// unclaimed meanwhile: claimed, they would only wait in the host, holding its
/// in-flight permits while other tenants' tasks could run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiling {
    /// Tenants.
    pub tenants: Vec<String>,
    /// Their task types.
    pub types: Vec<String>,
}

/// Longest wait between two attempts after the database failed a claim.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// What one claim statement asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Most tasks to claim.
    pub limit: i64,
    /// How long the claimed tasks stay out of other hosts' way.
    pub lease_timeout: Duration,
    /// Task types to claim; `None` claims every type.
    pub types: Option<Vec<String>>,
    /// Tenants whose tasks to claim; `None` claims every tenant's.
    pub tenants: Option<Vec<String>>,
    /// (tenant, task type) pairs not to claim: those whose module the host is compiling.
    pub skip: Option<Arc<Compiling>>,
    /// Tenants not to claim for: those whose jobs wait in the host's fair queue behind
    /// their cap of long runs (see execute/queue.rs).
    pub held_back: Arc<[String]>,
    /// The claiming host's liveness key ([`crate::liveness`]), recorded with each claim
    /// so that a claim that never commits is charged to its tasks only if its host died.
    /// 0 outside a host: such claims always count.
    pub host: i64,
    /// Most bytes of payload and state one claim takes (but its first task, whatever its
    /// size): [`CLAIM_MAX_BYTES`] in a host.
    pub max_bytes: i64,
}

/// Most bytes of payload and state a host claims at once. A locked claim returns its
/// batch as one row of arrays, and a PostgreSQL value holds at most 1 GB: without a bound
/// in bytes, a batch of large tasks would fail to claim, and stay at the front of the
/// queue, forever. Far below that, it also bounds what a batch holds in the host.
pub const CLAIM_MAX_BYTES: i64 = 64 << 20;

/// What one claim took.
enum Claimed {
    /// Tasks under a timed lease, ready to run.
    Timed(Vec<ClaimedTask>),
    /// Tasks under row locks, to run once the claim is recorded.
    Locked(PendingClaim),
}

impl Claimed {
    fn len(&self) -> usize {
        match self {
            Claimed::Timed(tasks) => tasks.len(),
            Claimed::Locked(pending) => pending.len(),
        }
    }
}

/// How many tasks a host may hold, by time: what `workers` run in a quarter of the lease
/// timeout at the mean run time so far, and what commits of `batch` outcomes write in
/// half of it at the mean commit time (a batch's outcomes wait for the commits ahead of
/// it, and a locked batch's transaction must end before the lease timeout ends its
/// session). No cap before the first run and commit.
pub fn time_cap(
    lease_timeout: Duration,
    stats: &StatsSnapshot,
    workers: usize,
    batch: i64,
) -> usize {
    let lease_us = lease_timeout.as_micros() as u64;
    let by_runs = (lease_us / 4 / stats.exec_us_mean.max(1)).saturating_mul(workers as u64);
    let by_commits = match stats.commit_us_mean {
        0 => u64::MAX,
        mean => (lease_us / 2 / mean).saturating_mul(batch.max(1) as u64),
    };
    by_runs.min(by_commits).min(usize::MAX as u64) as usize
}

/// Records a locked claim, then sends its tasks to the execute stage. The claim stage
/// runs this beside its next claim, so that the serial loop does not wait a round trip
/// for the `claims` row. If the row cannot be written, the tasks never run: dropping
/// them rolls their claim back, and their in-flight permits are freed here.
async fn record_and_send(
    pending: PendingClaim,
    pool: PgPool,
    batches: mpsc::Sender<Vec<ClaimedTask>>,
    in_flight: Arc<Semaphore>,
) {
    let size = pending.len();
    match pending.record(&pool).await {
        // If the execute stage is gone (the host is stopping), dropping the tasks rolls
        // their claim back, and they are due again.
        Ok(tasks) => {
            let _ = batches.send(tasks).await;
        }
        Err(err) => {
            tracing::warn!(error = %err, tasks = size, "recording a claim failed; its tasks are due again");
            in_flight.add_permits(size);
        }
    }
}

/// The claim stage: a loop that claims batches while in-flight permits are free.
pub struct Claimer {
    /// The pool claims run on.
    pub pool: PgPool,
    /// Batch size, timeout and filters; `limit` is the largest batch.
    pub request: ClaimRequest,
    /// While the host keeps up with what falls due (a claim came back with fewer tasks
    /// than it asked for), at most one claim per this long.
    pub idle_wait: Duration,
    /// Free in-flight permits; the commit stage returns them.
    pub in_flight: Arc<Semaphore>,
    /// The number of in-flight permits in all.
    pub max_in_flight: usize,
    /// Worker threads, for the time cap.
    pub workers: usize,
    /// Which kind of claim to take.
    pub mode: ClaimMode,
    /// Connections locked claims may hold at once (each keeps one until committed);
    /// when none is free, the stage takes a timed lease instead of waiting.
    pub locks: Arc<Semaphore>,
    /// Where claimed batches go: the execute stage.
    pub batches: mpsc::Sender<Vec<ClaimedTask>>,
    /// Whether the host holds its liveness lock; the first claim waits for it, so that
    /// no claim of a live host is ever taken for a dead one's.
    pub alive: watch::Receiver<bool>,
    /// Flips to true when the host shuts down; the loop stops claiming at once.
    pub shutdown: watch::Receiver<bool>,
    /// Shared counters.
    pub stats: Arc<Stats>,
    /// Where the next locked claim starts.
    pub cursor: ClaimCursor,
    /// What the host is compiling, left unclaimed until it is ready.
    pub compiling: watch::Receiver<Option<Arc<Compiling>>>,
    /// The tenants the execute stage holds back, left unclaimed meanwhile.
    pub held_back: watch::Receiver<Arc<[String]>>,
}

/// Why the claim loop stopped.
struct Stopped;

impl Claimer {
    /// Claims until shutdown. Database errors are logged and retried with backoff; they
    /// never end the loop.
    pub async fn run(mut self) {
        let mut recording = JoinSet::new();
        let _ = self.claim_until_shutdown(&mut recording).await;
        // Claims still being recorded go on to the execute stage, which gives them back.
        while recording.join_next().await.is_some() {}
    }

    /// The loop of [`Claimer::run`]; `recording` holds the locked claims whose `claims`
    /// row is being written (see [`record_and_send`]).
    async fn claim_until_shutdown(&mut self, recording: &mut JoinSet<()>) -> Result<(), Stopped> {
        tokio::select! {
            _ = self.alive.wait_for(|held| *held) => {}
            _ = self.shutdown.changed() => return Err(Stopped),
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let wanted = self.take_permits().await?;
            let request = ClaimRequest {
                limit: wanted as i64,
                skip: self.compiling.borrow().clone(),
                held_back: self.held_back.borrow().clone(),
                ..self.request.clone()
            };
            let started = Instant::now();
            match self.claim(&request).await {
                Ok(claimed) => {
                    backoff = Duration::from_millis(100);
                    let caught_up = self.hand_on(claimed, wanted, started, recording).await?;
                    while recording.try_join_next().is_some() {}
                    // Fewer than asked for: the host has caught up with what is due.
                    // Claiming again at once would take the few tasks that fell due
                    // during this claim, each claim paying its round trips, transaction
                    // and `claims` row for a handful of tasks; waiting lets them gather.
                    if caught_up {
                        self.sleep_until(started + self.idle_wait).await?;
                    }
                }
                Err(err) => {
                    self.in_flight.add_permits(wanted);
                    tracing::warn!(error = %err, retry_in = ?backoff, "claim failed");
                    self.sleep_until(Instant::now() + backoff).await?;
                    backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
                }
            }
        }
    }

    /// Waits for at least one free in-flight permit, then takes as many more as are
    /// free, up to a batch and the time cap; returns how many it took.
    async fn take_permits(&mut self) -> Result<usize, Stopped> {
        let first = tokio::select! {
            permit = self.in_flight.clone().acquire_owned() => permit,
            _ = self.shutdown.changed() => return Err(Stopped),
        };
        let Ok(first) = first else {
            return Err(Stopped);
        };
        first.forget();
        let free = self.in_flight.available_permits() + 1;
        let holding = self.max_in_flight.saturating_sub(free);
        let cap = time_cap(
            self.request.lease_timeout,
            &self.stats.snapshot(),
            self.workers,
            self.request.limit,
        );
        let room = cap.saturating_sub(holding).max(1);
        let extra = (free.min(room) as i64 - 1).min(self.request.limit - 1);
        // Cannot fail: the permits are there and only this loop takes them.
        if extra > 0
            && let Ok(permits) = self.in_flight.clone().try_acquire_many_owned(extra as u32)
        {
            permits.forget();
        }
        let wanted = 1 + extra.max(0) as usize;
        if *self.shutdown.borrow() {
            self.in_flight.add_permits(wanted);
            return Err(Stopped);
        }
        Ok(wanted)
    }

    /// A connection permit when this claim should be a locked claim.
    fn lock_permit(&self) -> Option<OwnedSemaphorePermit> {
        let locked = match self.mode {
            ClaimMode::Timed => false,
            ClaimMode::Locked => true,
            ClaimMode::Auto => {
                let stats = self.stats.snapshot();
                stats.executed >= PROVEN_RUNS && stats.exec_us_mean < SHORT_RUN.as_micros() as u64
            }
        };
        if locked {
            self.locks.clone().try_acquire_owned().ok()
        } else {
            None
        }
    }

    /// Takes one claim of the kind the mode and the free connections say.
    async fn claim(&mut self, request: &ClaimRequest) -> Result<Claimed, sqlx::Error> {
        match self.lock_permit() {
            Some(permit) => claim_locked_pending(&self.pool, request, &mut self.cursor, permit)
                .await
                .map(Claimed::Locked),
            None => claim_timed(&self.pool, request).await.map(Claimed::Timed),
        }
    }

    /// Counts a claim that asked for `wanted` tasks, frees the permits it did not use,
    /// and hands its tasks on; returns whether it came back short.
    async fn hand_on(
        &mut self,
        claimed: Claimed,
        wanted: usize,
        started: Instant,
        recording: &mut JoinSet<()>,
    ) -> Result<bool, Stopped> {
        let took = claimed.len();
        self.stats.claim_done(took, started.elapsed());
        let unused = wanted - took;
        if unused > 0 {
            self.in_flight.add_permits(unused);
        }
        match claimed {
            Claimed::Timed(tasks) if !tasks.is_empty() => {
                if let Err(mpsc::error::SendError(tasks)) = self.batches.send(tasks).await {
                    // The execute stage is gone (the host is stopping): nobody will run
                    // these, so hand them straight back.
                    let _ = give_back(&self.pool, &tasks).await;
                    return Err(Stopped);
                }
            }
            Claimed::Locked(pending) if !pending.is_empty() => {
                recording.spawn(record_and_send(
                    pending,
                    self.pool.clone(),
                    self.batches.clone(),
                    self.in_flight.clone(),
                ));
            }
            _ => {}
        }
        Ok(unused > 0)
    }

    /// Sleeps until `until`, or stops at shutdown.
    async fn sleep_until(&mut self, until: Instant) -> Result<(), Stopped> {
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => Ok(()),
            _ = self.shutdown.changed() => Err(Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(exec_us_mean: u64, commit_us_mean: u64) -> StatsSnapshot {
        StatsSnapshot {
            exec_us_mean,
            commit_us_mean,
            ..StatsSnapshot::default()
        }
    }

    #[test]
    fn the_time_cap_holds_what_runs_in_a_quarter_of_the_lease() {
        let lease = Duration::from_secs(60);
        // 15 s of runs of 1 s each, on 2 workers.
        assert_eq!(time_cap(lease, &stats(1_000_000, 0), 2, 1000), 30);
        // Commits of 10 s each: three of 1000 fit in 30 s, fewer than the runs allow.
        assert_eq!(time_cap(lease, &stats(1_000, 10_000_000), 2, 1000), 3000);
    }

    #[test]
    fn there_is_no_time_cap_before_the_first_run_and_commit() {
        let cap = time_cap(Duration::from_secs(60), &stats(0, 0), 2, 1000);
        assert!(cap >= 30_000_000, "{cap}");
    }
}
