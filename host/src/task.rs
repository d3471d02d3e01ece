//! What a claimed task is and how its commit is fenced: plain data at the bottom of the
//! pipeline. The claim stage makes a [`ClaimedTask`], the execute stage runs it, the
//! commit stage writes its outcome where its [`Fence`] still holds. This file imports
//! nothing from the stages above it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Transaction, Type};
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

/// The `tasks.status` codes. They are part of the schema (see `migrations/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum Status {
    /// Waiting for `next_run_at`, or claimed and running.
    Scheduled = 0,
    /// Completed by its module; never runs again.
    Done = 1,
    /// Parked after a permanent failure or the last allowed attempt.
    Failed = 2,
}

/// How many attempts past its tenant's `max_attempts` a task may reach through runs that
/// ended without a result before it is parked unrun. A run that returns is parked at
/// `max_attempts`; only claims lost with their host (or its connection) go further.
/// Every task a dead host held loses its claim, not only the one it was running, so a
/// burst of crashes must not park healthy tasks, while a task whose runs take their host
/// down is still stopped after a bounded number of hosts.
pub const LOST_RUN_ALLOWANCE: i32 = 5;

/// What keeps a commit from overwriting a newer result: the row must still hold the
/// claim's token, and, for a locked claim committed after its locks were lost, still be
/// the version the claim saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fence {
    /// The lease token: the commit applies only while the row still holds it. A timed
    /// lease sets a fresh one; a locked claim keeps whatever the row held (often none),
    /// since the row lock is its fence.
    pub token: Option<Uuid>,
    /// For a locked claim, the row version (xmin) it claimed: a commit made after the
    /// claim's locks were lost applies only if nobody has written the row since.
    pub version: Option<i64>,
    /// For a locked claim, where the version it claimed lies (see [`RowAt`]).
    pub row_at: Option<RowAt>,
    /// For a timed lease of a tenant with a quota on its runs in flight: the task holds
    /// one of the tenant's run slots (migrations/0013), which its commit or give-back
    /// frees. A locked claim's slots are held by its transaction's row locks instead.
    pub slot: bool,
}

/// A task taken by a claim (a timed lease or a locked claim). It lives from the claim
/// until its outcome is committed or it is given back.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    /// The task's primary key.
    pub id: i64,
    /// The tenant that owns the task; it selects the module and the limits.
    pub tenant: String,
    /// The task type; it names the module.
    pub task_type: String,
    /// The task's unique key within (tenant, task_type).
    pub key: String,
    /// The payload given at enqueue.
    pub payload: Vec<u8>,
    /// The state the module returned last time.
    pub state: Option<Vec<u8>>,
    /// Tries of the current run, this one included (the claim raised it).
    pub attempt: i32,
    /// Of `attempt`, the tries of dead hosts' locked claims that this claim took over
    /// (claim_locked.sql); 0 for a timed lease. A locked task given back unrun keeps them.
    pub lost_runs: i32,
    /// Successful runs before this one.
    pub runs: i64,
    /// When this run was due: before the claim pushed `next_run_at` out, and before any
    /// earlier claim that ran out without a result.
    pub scheduled_at: DateTime<Utc>,
    /// What the commit of its outcome is fenced by.
    pub fence: Fence,
    /// For a locked claim: the claim's transaction, which the task's outcome must be
    /// committed in. `None` for a timed lease.
    pub lock: Option<Arc<BatchLock>>,
    /// When the claim runs out (the lease timeout after it was taken). A task still
    /// queued then belongs to whichever host claims it next, so it is not started here.
    pub deadline: Instant,
    /// When a run of this task must end: three quarters into the claim, which leaves
    /// time to commit its outcome while the claim holds. A run stopped there fails like
    /// one that timed out; one left running would be repeated by another host, over and
    /// over, without its host ever being charged for it (see `liveness`).
    pub run_by: Instant,
}

impl ClaimedTask {
    /// Whether the task has used up its attempts without a result and must be parked
    /// rather than run (see [`LOST_RUN_ALLOWANCE`]).
    pub fn lost_too_often(&self, max_attempts: i32) -> bool {
        self.attempt > max_attempts + LOST_RUN_ALLOWANCE
    }
}

#[cfg(test)]
impl ClaimedTask {
    /// A task of a timed lease, for tests that need no database.
    pub(crate) fn sample(id: i64, attempt: i32) -> ClaimedTask {
        let now = Instant::now();
        ClaimedTask {
            id,
            tenant: "t".into(),
            task_type: "noop".into(),
            key: String::new(),
            payload: Vec::new(),
            state: None,
            attempt,
            lost_runs: 0,
            runs: 0,
            scheduled_at: Utc::now(),
            fence: Fence::default(),
            lock: None,
            deadline: now,
            run_by: now,
        }
    }
}

/// The transaction that holds a locked claim's rows. Every task of the batch points to
/// it; the commit stage writes the batch's outcomes in it once all have finished.
pub struct BatchLock {
    /// Distinguishes batches in the commit stage.
    pub id: u64,
    /// The claim's advisory lock and `claims` row (see migrations/0002): the row stays
    /// behind if the transaction ends without committing, so the lost attempt is
    /// counted on the batch's tasks by their next locked claim (claim_locked.sql), or
    /// else by the sweep in `maintain.rs`.
    pub key: i64,
    /// Tasks claimed in it.
    pub size: usize,
    /// When the lease timeout ends the claim's session if it has not committed; a
    /// commit after it fails and the batch's runs are repeated.
    pub deadline: Instant,
    /// Taken by the commit stage. A tokio Mutex: it is held across the commit's awaits.
    tx: tokio::sync::Mutex<Option<Transaction<'static, Postgres>>>,
    /// The claim stage's connection permit, returned when the lock is dropped.
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
    /// The lock of a batch of `size` tasks claimed in `tx` under the advisory lock and
    /// `claims` row `key`, until `deadline`; it holds `permit` as long as it lives.
    pub fn new(
        tx: Transaction<'static, Postgres>,
        key: i64,
        size: usize,
        deadline: Instant,
        permit: OwnedSemaphorePermit,
    ) -> BatchLock {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        BatchLock {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            key,
            size,
            deadline,
            tx: tokio::sync::Mutex::new(Some(tx)),
            _permit: permit,
        }
    }

    /// The transaction, once (the commit stage takes it to commit or roll back).
    pub async fn take(&self) -> Option<Transaction<'static, Postgres>> {
        self.tx.lock().await.take()
    }
}

/// Where a row version lies in the table: its `ctid`, a page and a slot on it. A locked
/// claim's rows cannot move while its transaction holds them, so its commit finds each
/// row by where it lies instead of through the primary key's index
/// (commit_locked.sql). Ordered as PostgreSQL orders `tid`s: by page, then line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowAt {
    page: u32,
    line: u16,
}

/// PostgreSQL's `tid` and `tid[]` types.
const TID: Oid = Oid(27);
const TID_ARRAY: Oid = Oid(1010);

impl Type<Postgres> for RowAt {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(TID)
    }
}

impl PgHasArrayType for RowAt {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(TID_ARRAY)
    }
}

impl RowAt {
    /// A `tid` in binary: the page as four bytes, then the line as two, big-endian.
    pub fn from_bytes(bytes: [u8; 6]) -> RowAt {
        RowAt {
            page: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            line: u16::from_be_bytes([bytes[4], bytes[5]]),
        }
    }
}

impl Decode<'_, Postgres> for RowAt {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(RowAt::from_bytes(value.as_bytes()?.try_into()?))
    }
}

impl Encode<'_, Postgres> for RowAt {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.extend_from_slice(&self.page.to_be_bytes());
        buf.extend_from_slice(&self.line.to_be_bytes());
        Ok(IsNull::No)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ats_order_by_page_then_line() {
        let at = |page: u32, line: u16| {
            let mut bytes = [0; 6];
            bytes[..4].copy_from_slice(&page.to_be_bytes());
            bytes[4..].copy_from_slice(&line.to_be_bytes());
            RowAt::from_bytes(bytes)
        };
        assert!(at(1, 9) < at(2, 1));
        assert!(at(2, 1) < at(2, 2));
        assert_eq!(at(7, 3), RowAt { page: 7, line: 3 });
    }
}
