//! Locked claims: a batch claimed under row locks in a transaction that stays open
//! until the batch's outcomes are committed in it (claim_locked.sql), and the `claims`
//! row that records it ([`PendingClaim`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgRow;
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

use super::ClaimRequest;
use super::arrays::{Array, Element};
use super::cursor::ClaimCursor;
use super::rows::TaskArrays;
use crate::task::{BatchLock, ClaimedTask, Fence, RowAt};

const CLAIM_LOCKED_SQL: &str = include_str!("../sql/claim_locked.sql");
const RECORD_CLAIM_SQL: &str = include_str!("../sql/record_claim.sql");

/// A locked claim whose tasks may not run yet: its `claims` row is not on record.
///
/// The row is written outside the claim's transaction, so that it outlives a crash, and
/// before any of the claim's tasks runs, so that a run that takes the host down has its
/// attempt counted. Writing it takes a connection and a round trip of its own; the claim
/// stage does it beside its next claim ([`Claimer`](super::Claimer)) rather than in its
/// way.
#[derive(Debug)]
pub struct PendingClaim {
    tasks: Vec<ClaimedTask>,
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
    pub async fn record(self, pool: &PgPool) -> Result<Vec<ClaimedTask>, sqlx::Error> {
        if self.tasks.is_empty() {
            return Ok(self.tasks);
        }
        let ids: Vec<i64> = self.tasks.iter().map(|task| task.id).collect();
        sqlx::query(RECORD_CLAIM_SQL)
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
/// The claim stage records a claim only once its compiling modules' tasks are given back
/// ([`claim_locked_pending`]); the engine's tests claim in one step.
#[cfg(test)]
pub async fn claim_locked(
    pool: &PgPool,
    request: &ClaimRequest,
    cursor: &mut ClaimCursor,
    permit: OwnedSemaphorePermit,
) -> Result<Vec<ClaimedTask>, sqlx::Error> {
    claim_locked_pending(pool, request, cursor, permit)
        .await?
        .record(pool)
        .await
}

/// [`claim_locked`] without recording the claim: its tasks must not run before
/// [`PendingClaim::record`] has returned them.
pub async fn claim_locked_pending(
    pool: &PgPool,
    request: &ClaimRequest,
    cursor: &mut ClaimCursor,
    permit: OwnedSemaphorePermit,
) -> Result<PendingClaim, sqlx::Error> {
    let claimed = Instant::now();
    let key = Uuid::new_v4().as_u64_pair().0 as i64;
    // The lease timeout bounds a locked claim too: a host that stalls (paused, hung)
    // with the transaction open loses its session and its locks after it, instead of
    // holding the rows for as long as the process lives. The advisory lock says that
    // this claim is alive for as long as its transaction is. Both go with the BEGIN, in
    // one round trip. BEGIN goes as a simple query, which takes no bind parameters, so
    // the two integers are written into it (nothing to quote).
    let mut tx = pool
        .begin_with(format!(
            "BEGIN; SELECT set_config('idle_in_transaction_session_timeout', '{}ms', true), \
                    pg_advisory_xact_lock({key})",
            request.lease_timeout.as_millis()
        ))
        .await?;
    let after = cursor.start();
    let row = sqlx::query(CLAIM_LOCKED_SQL)
        .bind(request.limit)
        .bind(request.types.as_deref())
        .bind(&after.tenants)
        .bind(request.tenants.as_deref())
        .bind(request.skip.as_ref().map(|skip| &skip.tenants))
        .bind(request.skip.as_ref().map(|skip| &skip.types))
        .bind(&after.due)
        .bind(request.max_bytes)
        .bind(&after.at)
        .bind(&request.held_back[..])
        .fetch_one(&mut *tx)
        .await?;
    let claim = ClaimArrays::of(&row)?;
    // The claim returns its tasks in no set order (claim_locked.sql): here they go in the due
    // index's order, due first, then by where they lie.
    let mut order = (0..claim.tasks.len())
        .map(|i| Ok(((claim.next_run_at.time(i)?, claim.row_at.row_at(i)?), i)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    order.sort_unstable_by_key(|(at, _)| *at);
    let mut pending = PendingClaim {
        tasks: Vec::new(),
        key,
        host: request.host,
    };
    if order.is_empty() {
        cursor.advance(request.limit, 0, HashMap::new());
        tx.rollback().await?;
        return Ok(pending);
    }
    let deadline = claimed + request.lease_timeout;
    let lock = Arc::new(BatchLock::new(tx, key, order.len(), deadline, permit));
    pending.tasks = order
        .iter()
        .map(|&((_, row_at), i)| claim.task(i, row_at, &lock, claimed, request.lease_timeout))
        .collect::<Result<_, sqlx::Error>>()?;
    // In due order, so each tenant's last entry is the last row taken from its queue.
    let last = pending
        .tasks
        .iter()
        .zip(&order)
        .map(|(task, (at, _))| (task.tenant.clone(), *at))
        .collect();
    cursor.advance(request.limit, order.len(), last);
    Ok(pending)
}

/// A locked claim's result: its tasks' columns and its own, an array each
/// (claim_locked.sql).
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
        lease_timeout: Duration,
    ) -> Result<ClaimedTask, sqlx::Error> {
        Ok(ClaimedTask {
            fence: Fence {
                token: self.lease_token.optional_uuid(i)?,
                version: Some(self.row_version.i64(i)?),
                row_at: Some(row_at),
                slot: false,
            },
            lost_runs: self.lost_runs.i32(i)?,
            lock: Some(lock.clone()),
            ..self.tasks.task(i, claimed, lease_timeout)?
        })
    }
}
