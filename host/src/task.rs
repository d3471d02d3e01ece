//! The task as the host holds it between lease and commit, how it is read from a
//! claim's rows, and the status codes the `tasks` table stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Column, Row};
use uuid::Uuid;

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

/// Where the rows of one claim hold a task's fields. Looked up by name once per claim:
/// a lookup by name hashes the name, and a dozen of them for every row were about a
/// twentieth of the host's CPU in `recur bench --sql-only` (BENCHMARKS.md, eighteenth
/// measurement).
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
        let at = |name: &str| row.try_column(name).map(Column::ordinal);
        Ok(Columns {
            id: at("id")?,
            tenant: at("tenant")?,
            task_type: at("task_type")?,
            key: at("key")?,
            payload: at("payload")?,
            state: at("state")?,
            attempt: at("attempt")?,
            runs: at("runs")?,
            scheduled_at: at("scheduled_at")?,
        })
    }

    /// The task in `row`, claimed at `claimed` for `lease` (token, version and lock
    /// left for the caller to fill in).
    pub fn task(
        &self,
        row: &PgRow,
        claimed: Instant,
        lease: Duration,
    ) -> Result<LeasedTask, sqlx::Error> {
        Ok(LeasedTask {
            id: row.try_get(self.id)?,
            tenant: row.try_get(self.tenant)?,
            task_type: row.try_get(self.task_type)?,
            key: row.try_get(self.key)?,
            payload: row.try_get(self.payload)?,
            state: row.try_get(self.state)?,
            attempt: row.try_get(self.attempt)?,
            lost_runs: 0,
            runs: row.try_get(self.runs)?,
            scheduled_at: row.try_get(self.scheduled_at)?,
            token: None,
            version: None,
            lock: None,
            deadline: claimed + lease,
            run_by: claimed + lease * 3 / 4,
        })
    }
}
