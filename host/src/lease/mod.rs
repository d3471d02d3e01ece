//! Claims due tasks in atomic batches (`FOR UPDATE SKIP LOCKED`) and hands them to the
//! execute stage, leasing the next batch while the current one runs.
//!
//! How many tasks a lease asks for is the number of free slots, capped by the batch
//! size. A slot is taken when a task is leased and freed when its outcome is committed
//! or the task is given back, so the host never holds more than `max_in_flight` tasks:
//! with three batches' worth, one batch runs while the next waits and the last is being
//! committed, so the workers never wait on a round trip.
//!
//! A deep local queue is only safe while it drains quickly: a task that waits longer
//! than its lease behind slow ones would be run twice. So the lease stage also caps what
//! it holds by time: no more tasks than the workers can run in a quarter of the lease
//! timeout, at the mean run time measured so far. Fast tasks get the full pipeline; slow
//! ones get a short queue and a little less throughput. Slow commits cap it the same way:
//! outcomes queue behind the commits ahead of them.
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
//! names them, see `registry/mod.rs`): they would only wait in the host, holding slots.

mod locked;
mod timed;

pub use locked::{BatchLock, ClaimCursor, PendingClaim, claim_locked, claim_locked_pending};
pub use timed::{give_back, lease};

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::execute::{PROVEN_RUNS, SHORT_RUN};
use crate::registry::Compiling;
use crate::stats::Stats;
use crate::task::LeasedTask;

/// How a host claims due tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Claim {
    /// Row locks while runs are short (a mean under 20 ms, `SHORT_RUN`, the same measure the
    /// execute stage uses for fairness), timed leases otherwise.
    #[default]
    Auto,
    /// Always a timed lease: two row writes per execution, safe for runs of any length;
    /// a crashed host's tasks wait for the lease timeout.
    Timed,
    /// Always row locks held in a transaction until the batch is committed: one row
    /// write per execution, a crashed host's tasks are due again at once, but each
    /// batch in flight holds a connection and a transaction open while it runs.
    Locked,
}
/// Longest wait between two attempts after the database failed a lease.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// What one lease statement asks for.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// Most tasks to claim.
    pub limit: i64,
    /// How long the claimed tasks stay out of other hosts' way.
    pub lease_timeout: Duration,
    /// Task types to claim; `None` claims every type.
    pub types: Option<Vec<String>>,
    /// Tenants whose tasks to claim; `None` claims every tenant's.
    pub tenants: Option<Vec<String>>,
    /// (tenant, task type) pairs not to claim: those whose module the host is compiling
    /// ([`Registry::watch_compiling`](crate::registry::Registry::watch_compiling)).
    pub skip: Option<Arc<Compiling>>,
    /// The claiming host's liveness key ([`crate::liveness`]), recorded with each claim
    /// so that a claim that never commits is charged to its tasks only if its host died.
    /// 0 outside a host: such claims always count.
    pub host: i64,
}
/// What one claim took.
enum Claimed {
    /// Tasks under a timed lease, ready to run.
    Leased(Vec<LeasedTask>),
    /// Tasks under row locks, to run once the claim is recorded.
    Pending(PendingClaim),
}

impl Claimed {
    fn len(&self) -> usize {
        match self {
            Claimed::Leased(tasks) => tasks.len(),
            Claimed::Pending(pending) => pending.len(),
        }
    }
}

/// Records a locked claim, then sends its tasks to the execute stage. The lease stage
/// runs this beside its next claim: waiting for the `claims` row before claiming again
/// kept the serial lease loop a round trip longer per batch (with the two other round
/// trips taken off it, lease p50 −11%: BENCHMARKS.md, fourteenth measurement). If the
/// row cannot be written, the tasks never run: dropping them rolls their claim back,
/// and their slots are freed here.
async fn record_and_send(
    pending: PendingClaim,
    pool: PgPool,
    batches: mpsc::Sender<Vec<LeasedTask>>,
    slots: Arc<Semaphore>,
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
            slots.add_permits(size);
        }
    }
}

/// The lease stage: a loop that claims batches while slots are free.
pub struct Leaser {
    /// The pool leases run on.
    pub pool: PgPool,
    /// Batch size, timeout and type filter; `limit` is the largest batch.
    pub request: LeaseRequest,
    /// While the host keeps up with what falls due (a claim came back with fewer tasks
    /// than it asked for), at most one claim per this long.
    pub idle_wait: Duration,
    /// Free slots; the committer returns them.
    pub slots: Arc<Semaphore>,
    /// The number of slots in all.
    pub max_in_flight: usize,
    /// Worker threads, for the time-based cap.
    pub workers: usize,
    /// Timed leases, row locks, or either by measured run time.
    pub claim: Claim,
    /// Connections locked claims may hold at once (each keeps one until committed);
    /// when none is free, the stage takes a timed lease instead of waiting.
    pub locks: Arc<Semaphore>,
    /// Where leased batches go: the execute stage.
    pub batches: mpsc::Sender<Vec<LeasedTask>>,
    /// Whether the host holds its liveness lock; the first lease waits for it, so that
    /// no claim of a live host is ever taken for a dead one's.
    pub alive: watch::Receiver<bool>,
    /// Flips to true when the host shuts down; the loop stops leasing at once.
    pub shutdown: watch::Receiver<bool>,
    /// Shared counters.
    pub stats: Arc<Stats>,
    /// Where the next locked claim starts.
    pub cursor: ClaimCursor,
    /// What the host is compiling, left unclaimed until it is ready.
    pub compiling: watch::Receiver<Option<Arc<Compiling>>>,
}

impl Leaser {
    /// A connection permit when this lease should claim under row locks.
    fn lock_permit(&self) -> Option<OwnedSemaphorePermit> {
        let locked = match self.claim {
            Claim::Timed => false,
            Claim::Locked => true,
            Claim::Auto => {
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

    /// How many tasks the host may hold, by time: what the workers run in a quarter of
    /// the lease timeout at the mean run time so far, and what commits can write in half
    /// of it at the mean commit time (a batch's outcomes wait for the commits ahead of
    /// it, and a locked batch's transaction must end before the lease timeout ends its
    /// session). No cap before the first run and commit.
    fn time_cap(&self) -> usize {
        let stats = self.stats.snapshot();
        let lease_us = self.request.lease_timeout.as_micros() as u64;
        let by_runs =
            (lease_us / 4 / stats.exec_us_mean.max(1)).saturating_mul(self.workers as u64);
        let by_commits = match stats.commit_us_mean {
            0 => u64::MAX,
            mean => (lease_us / 2 / mean).saturating_mul(self.request.limit.max(1) as u64),
        };
        by_runs.min(by_commits).min(usize::MAX as u64) as usize
    }

    /// Leases until shutdown. Database errors are logged and retried with backoff; they
    /// never end the loop.
    pub async fn run(mut self) {
        let mut recording = JoinSet::new();
        self.lease_until_shutdown(&mut recording).await;
        // Claims still being recorded go on to the execute stage, which gives them back.
        while recording.join_next().await.is_some() {}
    }

    /// The loop of [`Leaser::run`]; `recording` holds the locked claims whose `claims` row
    /// is being written (see [`record_and_send`]).
    async fn lease_until_shutdown(&mut self, recording: &mut JoinSet<()>) {
        tokio::select! {
            _ = self.alive.wait_for(|held| *held) => {}
            _ = self.shutdown.changed() => return,
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            // Wait for at least one free slot, then take as many more as are free, up to
            // a batch.
            let first = tokio::select! {
                permit = self.slots.clone().acquire_owned() => permit,
                _ = self.shutdown.changed() => return,
            };
            let Ok(first) = first else { return };
            first.forget();
            let free = self.slots.available_permits() + 1;
            let holding = self.max_in_flight.saturating_sub(free);
            let room = self.time_cap().saturating_sub(holding).max(1);
            let extra = (free.min(room) as i64 - 1).min(self.request.limit - 1);
            if extra > 0 {
                // Cannot fail: the permits are there and only this loop takes them.
                if let Ok(p) = self.slots.clone().try_acquire_many_owned(extra as u32) {
                    p.forget();
                }
            }
            let wanted = 1 + extra.max(0);
            if *self.shutdown.borrow() {
                self.slots.add_permits(wanted as usize);
                return;
            }
            let request = LeaseRequest {
                limit: wanted,
                skip: self.compiling.borrow().clone(),
                ..self.request.clone()
            };
            let started = Instant::now();
            let claimed = match self.lock_permit() {
                Some(permit) => {
                    claim_locked_pending(&self.pool, &request, &mut self.cursor, permit)
                        .await
                        .map(Claimed::Pending)
                }
                None => lease(&self.pool, &request).await.map(Claimed::Leased),
            };
            match claimed {
                Ok(claimed) => {
                    backoff = Duration::from_millis(100);
                    let took = claimed.len();
                    self.stats.lease_done(took, started.elapsed());
                    let unused = wanted as usize - took;
                    if unused > 0 {
                        self.slots.add_permits(unused);
                    }
                    // Fewer than asked for: the host has caught up with what is due.
                    // Claiming again at once would take the few tasks that fell due
                    // during this claim, each claim paying its round trips, transaction
                    // and `claims` row for a handful of tasks; waiting lets them gather.
                    let caught_up = unused > 0;
                    match claimed {
                        Claimed::Leased(tasks) if !tasks.is_empty() => {
                            if let Err(mpsc::error::SendError(tasks)) =
                                self.batches.send(tasks).await
                            {
                                // The execute stage is gone (the host is stopping): nobody
                                // will run these, so hand them straight back.
                                let _ = give_back(&self.pool, &tasks).await;
                                return;
                            }
                        }
                        Claimed::Pending(pending) if !pending.is_empty() => {
                            recording.spawn(record_and_send(
                                pending,
                                self.pool.clone(),
                                self.batches.clone(),
                                self.slots.clone(),
                            ));
                        }
                        _ => {}
                    }
                    while recording.try_join_next().is_some() {}
                    if caught_up {
                        tokio::select! {
                            _ = tokio::time::sleep_until((started + self.idle_wait).into()) => {}
                            _ = self.shutdown.changed() => return,
                        }
                    }
                }
                Err(err) => {
                    self.slots.add_permits(wanted as usize);
                    tracing::warn!(error = %err, retry_in = ?backoff, "lease failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
                }
            }
        }
    }
}
