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
//! makes the next claim ([`record_and_send`]).
//!
//! Tasks of a module the host is still compiling are not claimed at all (the registry
//! names them, see `registry/mod.rs`): they would only wait in the host, holding slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::arrays::{Array, Element};
use crate::execute::{PROVEN_RUNS, SHORT_RUN};
use crate::liveness;
use crate::registry::Compiling;
use crate::stats::Stats;
use crate::task::{Columns, LeasedTask, RowAt, TaskArrays};

const LEASE_SQL: &str = include_str!("sql/lease.sql");
const GIVE_BACK_SQL: &str = include_str!("sql/give_back.sql");
const CLAIM_SQL: &str = include_str!("sql/claim.sql");

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

/// The transaction that holds a locked claim's rows. Every task of the batch points to
/// it; the commit stage writes the batch's outcomes in it once all have finished.
pub struct BatchLock {
    /// Distinguishes batches in the commit stage.
    pub id: u64,
    /// The claim's advisory lock and `claims` row (see migrations/0002): the row stays
    /// behind if the transaction ends without committing, so the lost attempt is
    /// counted on the batch's tasks by their next locked claim (claim.sql), or else by
    /// the sweep in `maintain.rs`.
    pub key: i64,
    /// Tasks claimed in it.
    pub size: usize,
    /// When the lease timeout ends the claim's session if it has not committed (see
    /// `claim_locked`); a commit after it fails and the batch's runs are repeated.
    pub deadline: Instant,
    /// Taken by the commit stage. A tokio Mutex: it is held across the commit's awaits.
    tx: tokio::sync::Mutex<Option<Transaction<'static, Postgres>>>,
    /// One of the lease stage's connection permits, returned when the lock is dropped.
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for BatchLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchLock")
            .field("id", &self.id)
            .field("size", &self.size)
            .finish()
    }
}

impl BatchLock {
    /// The transaction, once (the commit stage takes it to commit or roll back).
    pub async fn take(&self) -> Option<Transaction<'static, Postgres>> {
        self.tx.lock().await.take()
    }
}

/// How long a claim cursor may stay ahead of the rows behind it.
const CURSOR_RESET: Duration = Duration::from_secs(1);

/// Where a host's next locked claim starts: just past the last row its previous claim
/// took, in the order of the due index (due time, then where the row lies).
///
/// A host's own batches in flight are the oldest due rows, and they stay locked until
/// they commit. A claim from the front of the due index fetches each of those rows and
/// tries its lock only to skip it: under load, three to five times the rows it claims.
/// Starting at the last claim's due time skips most of that work. Rows due at that very
/// time are many where one commit rescheduled a batch, or one statement enqueued many
/// tasks: the index keeps rows of one due time in the order they lie in the table
/// (`ctid`), so the claim also passes over those at the cursor's time that lie at or
/// before the last one it took, without trying their locks (they are still fetched: the
/// index does not hold `ctid` as a column, and a wider index would cost every write;
/// measured, not kept: BENCHMARKS.md). Rows behind the cursor can come free again (a
/// batch rolled back, a task given back, another host's claim that died), so the cursor
/// starts over from the front after a claim that came back short, which is when the
/// host has caught up, and at least every [`CURSOR_RESET`], which bounds how late such a
/// row runs while the host is behind.
#[derive(Debug, Default)]
pub struct ClaimCursor {
    /// The due time of the last row the previous claim took, and where that row lies.
    after: Option<(DateTime<Utc>, RowAt)>,
    /// When `after` was first set since the last start from the front.
    since: Option<Instant>,
}

impl ClaimCursor {
    /// Where the next claim starts: a due time and where the last row taken at it lies;
    /// `None` is the front.
    fn start(&mut self) -> Option<(DateTime<Utc>, RowAt)> {
        if self
            .since
            .is_some_and(|since| since.elapsed() >= CURSOR_RESET)
        {
            *self = Self::default();
        }
        self.after
    }

    /// Moves to a claim that asked for `wanted` rows and took `took`, the last of them
    /// (in the due index's order) due at and lying at `last`.
    fn advance(&mut self, wanted: i64, took: usize, last: Option<(DateTime<Utc>, RowAt)>) {
        match last {
            Some(last) if took as i64 >= wanted => {
                self.after = Some(last);
                self.since.get_or_insert_with(Instant::now);
            }
            _ => *self = Self::default(),
        }
    }
}

/// A locked claim whose tasks may not run yet: its `claims` row is not on record.
///
/// The row is written outside the claim's transaction, so that it outlives a crash, and
/// before any of the claim's tasks runs, so that a run that takes the host down has its
/// attempt counted. Writing it takes a connection and a round trip of its own; the lease
/// stage does it beside its next claim ([`Leaser`]) rather than in its way.
#[derive(Debug)]
pub struct PendingClaim {
    tasks: Vec<LeasedTask>,
    key: i64,
    host: i64,
}

impl PendingClaim {
    /// How many tasks the claim took.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether it took none.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Writes the claim's `claims` row (the batch's commit deletes it in its transaction);
    /// the tasks may run once this returns them. On an error the tasks are dropped, which
    /// rolls their transaction back, and they are due again.
    pub async fn record(self, pool: &PgPool) -> Result<Vec<LeasedTask>, sqlx::Error> {
        if self.tasks.is_empty() {
            return Ok(self.tasks);
        }
        let ids: Vec<i64> = self.tasks.iter().map(|task| task.id).collect();
        sqlx::query("INSERT INTO claims (key, task_ids, host) VALUES ($1, $2, $3)")
            .bind(self.key)
            .bind(&ids)
            .bind(self.host)
            .execute(pool)
            .await?;
        Ok(self.tasks)
    }
}

/// Claims up to `limit` due tasks under row locks in a new transaction, which stays open
/// in the returned tasks' [`BatchLock`] until their outcomes are committed in it, and
/// records the claim. The claim starts at `cursor` and moves it past the rows it took.
pub async fn claim_locked(
    pool: &PgPool,
    request: &LeaseRequest,
    cursor: &mut ClaimCursor,
    permit: OwnedSemaphorePermit,
) -> Result<Vec<LeasedTask>, sqlx::Error> {
    claim_locked_pending(pool, request, cursor, permit)
        .await?
        .record(pool)
        .await
}

/// [`claim_locked`] without recording the claim: its tasks must not run before
/// [`PendingClaim::record`] has returned them.
pub async fn claim_locked_pending(
    pool: &PgPool,
    request: &LeaseRequest,
    cursor: &mut ClaimCursor,
    permit: OwnedSemaphorePermit,
) -> Result<PendingClaim, sqlx::Error> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let claimed = Instant::now();
    let key = Uuid::new_v4().as_u64_pair().0 as i64;
    // The lease timeout bounds a locked claim too: a host that stalls (paused, hung)
    // with the transaction open loses its session and its locks after it, instead of
    // holding the rows for as long as the process lives. The advisory lock says that
    // this claim is alive for as long as its transaction is. Both go with the BEGIN, in
    // one round trip (integers only, so nothing to quote).
    let mut tx = pool
        .begin_with(format!(
            "BEGIN; SELECT set_config('idle_in_transaction_session_timeout', '{}ms', true), \
                    pg_advisory_xact_lock({key})",
            request.lease_timeout.as_millis()
        ))
        .await?;
    let after = cursor.start();
    let row = sqlx::query(CLAIM_SQL)
        .bind(request.limit)
        .bind(request.types.as_deref())
        .bind(after.map(|(due, _)| due))
        .bind(request.tenants.as_deref())
        .bind(request.skip.as_ref().map(|skip| &skip.tenants))
        .bind(request.skip.as_ref().map(|skip| &skip.types))
        .bind(after.map(|(_, row)| row))
        .fetch_one(&mut *tx)
        .await?;
    let claim = ClaimArrays::of(&row)?;
    // The claim returns its tasks in no set order (claim.sql): here they go in the due
    // index's order, due first, then by where they lie.
    let mut order = (0..claim.tasks.len())
        .map(|i| Ok(((claim.next_run_at.time(i)?, claim.row_at.row_at(i)?), i)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    order.sort_unstable_by_key(|(at, _)| *at);
    cursor.advance(request.limit, order.len(), order.last().map(|(at, _)| *at));
    let mut pending = PendingClaim {
        tasks: Vec::new(),
        key,
        host: request.host,
    };
    if order.is_empty() {
        tx.rollback().await?;
        return Ok(pending);
    }
    let lock = Arc::new(BatchLock {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        key,
        size: order.len(),
        deadline: claimed + request.lease_timeout,
        tx: tokio::sync::Mutex::new(Some(tx)),
        _permit: permit,
    });
    pending.tasks = order
        .into_iter()
        .map(|((_, row_at), i)| claim.task(i, row_at, &lock, claimed, request.lease_timeout))
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(pending)
}

/// A locked claim's result: its tasks' columns and its own, an array each (claim.sql).
struct ClaimArrays<'r> {
    tasks: TaskArrays<'r>,
    lost_runs: Array<'r>,
    lease_token: Array<'r>,
    row_version: Array<'r>,
    row_at: Array<'r>,
    next_run_at: Array<'r>,
}

impl<'r> ClaimArrays<'r> {
    fn of(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let claim = ClaimArrays {
            tasks: TaskArrays::of(row)?,
            lost_runs: Array::of(row, "lost_runs", Element::Int4)?,
            lease_token: Array::of(row, "lease_token", Element::Uuid)?,
            row_version: Array::of(row, "row_version", Element::Int8)?,
            row_at: Array::of(row, "row_at", Element::Tid)?,
            next_run_at: Array::of(row, "next_run_at", Element::Timestamptz)?,
        };
        claim.tasks.check_lengths(&[
            &claim.lost_runs,
            &claim.lease_token,
            &claim.row_version,
            &claim.row_at,
            &claim.next_run_at,
        ])?;
        Ok(claim)
    }

    /// Task `i` of the claim, which lies at `row_at`, under `lock`.
    fn task(
        &self,
        i: usize,
        row_at: RowAt,
        lock: &Arc<BatchLock>,
        claimed: Instant,
        lease: Duration,
    ) -> Result<LeasedTask, sqlx::Error> {
        Ok(LeasedTask {
            token: self.lease_token.optional_uuid(i)?,
            version: Some(self.row_version.i64(i)?),
            row_at: Some(row_at),
            lost_runs: self.lost_runs.i32(i)?,
            lock: Some(lock.clone()),
            ..self.tasks.task(i, claimed, lease)?
        })
    }
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

/// Claims up to `request.limit` due tasks under one fresh lease token, oldest due first.
pub async fn lease(pool: &PgPool, request: &LeaseRequest) -> Result<Vec<LeasedTask>, sqlx::Error> {
    let token = liveness::lease_token(request.host);
    let claimed = Instant::now();
    let rows = sqlx::query(LEASE_SQL)
        .bind(request.limit)
        .bind(request.lease_timeout.as_millis() as i64)
        .bind(request.types.as_deref())
        .bind(token)
        .bind(request.tenants.as_deref())
        .bind(request.skip.as_ref().map(|skip| &skip.tenants))
        .bind(request.skip.as_ref().map(|skip| &skip.types))
        .fetch_all(pool)
        .await?;
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let columns = Columns::of(first)?;
    rows.iter()
        .map(|row| {
            Ok(LeasedTask {
                token: Some(token),
                ..columns.task(row, claimed, request.lease_timeout)?
            })
        })
        .collect()
}

/// Returns tasks that were leased but never ran, as if they had not been leased. Only
/// tasks that still hold their lease are touched; returns how many were given back.
pub async fn give_back(pool: &PgPool, tasks: &[LeasedTask]) -> Result<u64, sqlx::Error> {
    if tasks.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
    let tokens: Vec<Option<Uuid>> = tasks.iter().map(|t| t.token).collect();
    let due: Vec<_> = tasks.iter().map(|t| t.scheduled_at).collect();
    let done = sqlx::query(GIVE_BACK_SQL)
        .bind(ids)
        .bind(tokens)
        .bind(due)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
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
