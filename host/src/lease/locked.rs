//! Locked claims: a batch claimed under row locks in a transaction that stays open
//! until the batch's outcomes are committed in it (claim.sql), where the next claim
//! starts ([`ClaimCursor`]), and the `claims` row that records it ([`PendingClaim`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

use super::LeaseRequest;
use crate::arrays::{Array, Element};
use crate::task::{LeasedTask, RowAt, TaskArrays};

const CLAIM_SQL: &str = include_str!("../sql/claim.sql");

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
/// host has caught up, and at least every `CURSOR_RESET`, which bounds how late such a
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
/// stage does it beside its next claim ([`Leaser`](super::Leaser)) rather than in its way.
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
