//! The task as the host holds it between lease and commit, how it is read from a
//! claim's result (a locked claim's arrays, a timed lease's rows), where a locked
//! claim's row lies, and the status codes the `tasks` table stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgRow, PgTypeInfo, PgValueRef};
use sqlx::{Column, Decode, Encode, Postgres, Row, Type};
use uuid::Uuid;

use crate::arrays::{Array, Element};
use crate::lease::BatchLock;

/// The `tasks.status` codes. They are part of the schema (see `migrations/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum Status {
    /// Waiting for `next_run_at`, or leased and running.
    Scheduled = 0,
    /// Completed by its module; never runs again.
    Done = 1,
    /// Parked after a permanent failure or the last allowed attempt.
    Failed = 2,
}

/// A task claimed by a lease. It lives from the lease until its outcome is committed
/// or given back.
#[derive(Debug, Clone)]
pub struct LeasedTask {
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
    /// Tries of the current run, this one included (the lease raised it).
    pub attempt: i32,
    /// Of `attempt`, the tries of dead hosts' locked claims that this claim took over
    /// (claim.sql); 0 for a timed lease. A locked task given back unrun keeps them.
    pub lost_runs: i32,
    /// Successful runs before this one.
    pub runs: i64,
    /// When this run was due: before the lease pushed `next_run_at` out, and before any
    /// earlier lease that ran out without a result.
    pub scheduled_at: DateTime<Utc>,
    /// The fencing token: the commit applies only while the row still holds it. A timed
    /// lease sets a fresh one; a locked claim keeps whatever the row held (often none),
    /// since the row lock is its fence.
    pub token: Option<Uuid>,
    /// For a locked claim, the row version (xmin) it claimed: a commit made after the
    /// claim's locks were lost applies only if nobody has written the row since.
    pub version: Option<i64>,
    /// For a locked claim, where the version it claimed lies (see [`RowAt`]).
    pub row_at: Option<RowAt>,
    /// For a task claimed under a row lock: the claim's transaction, which the task's
    /// outcome must be committed in. `None` for a timed lease.
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

/// Where the rows of one timed lease hold a task's fields, with each column's type
/// checked against the field it fills. Both are looked up once per lease, on its first
/// row: the rows of one result share their columns, and by name a lookup hashes the
/// name, so a dozen lookups and type checks for every row were about a tenth of the
/// host's CPU in `recur bench --sql-only` (BENCHMARKS.md, eighteenth measurement). A
/// timed lease returns rows, not arrays as a locked claim does: its `UPDATE ...
/// RETURNING` gathered into arrays ran `--claim timed` burns 4-6% slower (twenty-fifth).
pub struct Columns {
    id: usize,
    tenant: usize,
    task_type: usize,
    key: usize,
    payload: usize,
    state: usize,
    attempt: usize,
    runs: usize,
    scheduled_at: usize,
}

impl Columns {
    /// The columns of the result `row` belongs to.
    pub fn of(row: &PgRow) -> Result<Columns, sqlx::Error> {
        Ok(Columns {
            id: position::<i64>(row, "id")?,
            tenant: position::<String>(row, "tenant")?,
            task_type: position::<String>(row, "task_type")?,
            key: position::<String>(row, "key")?,
            payload: position::<Vec<u8>>(row, "payload")?,
            state: position::<Vec<u8>>(row, "state")?,
            attempt: position::<i32>(row, "attempt")?,
            runs: position::<i64>(row, "runs")?,
            scheduled_at: position::<DateTime<Utc>>(row, "scheduled_at")?,
        })
    }

    /// The task in `row`, a row of the result these columns were found in, claimed at
    /// `claimed` for `lease` (token, version and lock left for the caller to fill in).
    pub fn task(
        &self,
        row: &PgRow,
        claimed: Instant,
        lease: Duration,
    ) -> Result<LeasedTask, sqlx::Error> {
        Ok(LeasedTask {
            id: row.try_get_unchecked(self.id)?,
            tenant: row.try_get_unchecked(self.tenant)?,
            task_type: row.try_get_unchecked(self.task_type)?,
            key: row.try_get_unchecked(self.key)?,
            payload: row.try_get_unchecked(self.payload)?,
            state: row.try_get_unchecked(self.state)?,
            attempt: row.try_get_unchecked(self.attempt)?,
            lost_runs: 0,
            runs: row.try_get_unchecked(self.runs)?,
            scheduled_at: row.try_get_unchecked(self.scheduled_at)?,
            token: None,
            version: None,
            row_at: None,
            lock: None,
            deadline: claimed + lease,
            run_by: claimed + lease * 3 / 4,
        })
    }
}

/// The position of the column `name` in `row`'s result, once its type is checked to
/// decode as `T`: its rows can then be read with `try_get_unchecked`.
pub fn position<T: Type<Postgres>>(row: &PgRow, name: &str) -> Result<usize, sqlx::Error> {
    let column = row.try_column(name)?;
    let ty = column.type_info();
    if !T::compatible(ty) {
        return Err(sqlx::Error::ColumnDecode {
            index: format!("{name:?}"),
            source: sqlx::error::mismatched_types::<Postgres, T>(ty),
        });
    }
    Ok(column.ordinal())
}

/// A locked claim's tasks as its statement returns them: one row of arrays, a column
/// each (claim.sql). A row per task cost the host, for each of them, a message to
/// parse, a row to allocate and a value to wrap per column, over half of what it spent
/// outside the sandbox (BENCHMARKS.md, twenty-fifth measurement); read in place, a task
/// costs a few slices and the copies of its strings.
pub struct TaskArrays<'r> {
    id: Array<'r>,
    tenant: Array<'r>,
    task_type: Array<'r>,
    key: Array<'r>,
    payload: Array<'r>,
    state: Array<'r>,
    attempt: Array<'r>,
    runs: Array<'r>,
    scheduled_at: Array<'r>,
}

impl<'r> TaskArrays<'r> {
    /// The tasks in `row`, with each column's type checked against the field it fills.
    pub fn of(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let tasks = TaskArrays {
            id: Array::of(row, "id", Element::Int8)?,
            tenant: Array::of(row, "tenant", Element::Text)?,
            task_type: Array::of(row, "task_type", Element::Text)?,
            key: Array::of(row, "key", Element::Text)?,
            payload: Array::of(row, "payload", Element::Bytea)?,
            state: Array::of(row, "state", Element::Bytea)?,
            attempt: Array::of(row, "attempt", Element::Int4)?,
            runs: Array::of(row, "runs", Element::Int8)?,
            scheduled_at: Array::of(row, "scheduled_at", Element::Timestamptz)?,
        };
        tasks.check_lengths(&[
            &tasks.tenant,
            &tasks.task_type,
            &tasks.key,
            &tasks.payload,
            &tasks.state,
            &tasks.attempt,
            &tasks.runs,
            &tasks.scheduled_at,
        ])?;
        Ok(tasks)
    }

    /// How many tasks there are.
    pub fn len(&self) -> usize {
        self.id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.id.len() == 0
    }

    /// Refuses columns that do not hold one element per task.
    pub(crate) fn check_lengths(&self, columns: &[&Array<'_>]) -> Result<(), sqlx::Error> {
        match columns.iter().find(|column| column.len() != self.len()) {
            Some(column) => Err(sqlx::Error::ColumnDecode {
                index: format!("{:?}", column.name()),
                source: format!(
                    "it holds {} where the claim has {} tasks",
                    column.len(),
                    self.len()
                )
                .into(),
            }),
            None => Ok(()),
        }
    }

    /// Task `i`, claimed at `claimed` for `lease` (token, version and lock left for the
    /// caller to fill in).
    pub fn task(
        &self,
        i: usize,
        claimed: Instant,
        lease: Duration,
    ) -> Result<LeasedTask, sqlx::Error> {
        Ok(LeasedTask {
            id: self.id.i64(i)?,
            tenant: self.tenant.string(i)?,
            task_type: self.task_type.string(i)?,
            key: self.key.string(i)?,
            payload: self.payload.bytes(i)?,
            state: self.state.optional_bytes(i),
            attempt: self.attempt.i32(i)?,
            lost_runs: 0,
            runs: self.runs.i64(i)?,
            scheduled_at: self.scheduled_at.time(i)?,
            token: None,
            version: None,
            row_at: None,
            lock: None,
            deadline: claimed + lease,
            run_by: claimed + lease * 3 / 4,
        })
    }
}

/// Where a row version lies in the table: its `ctid`, a page and a slot on it. A locked
/// claim's rows cannot move while its transaction holds them, so its commit finds each
/// row by where it lies instead of through the primary key's index (commit.sql). Ordered
/// as PostgreSQL orders `tid`s: by page, then slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowAt {
    page: u32,
    slot: u16,
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
    /// A `tid` in binary: the page as four bytes, then the slot as two, big-endian.
    pub fn from_bytes(bytes: [u8; 6]) -> RowAt {
        RowAt {
            page: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            slot: u16::from_be_bytes([bytes[4], bytes[5]]),
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
        buf.extend_from_slice(&self.slot.to_be_bytes());
        Ok(IsNull::No)
    }
}
