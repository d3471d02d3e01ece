//! The task as the host holds it between lease and commit, and the status codes the
//! `tasks` table stores.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
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
