//! What the tasks table holds, per tenant and task type: how many tasks wait, are due,
//! run, failed or finished, and how late the oldest due task is; and how the table lies
//! on disk: its size, dead rows, fillfactor, and how many of the next due tasks share a
//! page, which decides how much of the table each claim touches.

use serde::Serialize;
use sqlx::PgPool;

/// One tenant and task type. The first three counts are disjoint: together they are
/// every scheduled task.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct TypeStatus {
    /// Owning tenant.
    pub tenant: String,
    /// Task type.
    pub task_type: String,
    /// Waiting for a future time, not under a timed lease.
    pub scheduled: i64,
    /// Due now and not held by a live timed lease (an expired one counts here).
    pub due: i64,
    /// Held by a live timed lease.
    pub running: i64,
    /// Parked as failed.
    pub failed: i64,
    /// Completed.
    pub done: i64,
    /// How long the oldest due task has been due, in ms (0 when none is due).
    pub lag_ms: i64,
    /// Scheduled tasks whose last try recorded an error (retrying, or no module).
    pub erroring: i64,
}

/// `recur status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// One entry per tenant and type, sorted.
    pub types: Vec<TypeStatus>,
    /// The tasks table itself.
    pub table: TableStatus,
}

/// How the tasks table lies on disk. A claim takes the next due tasks, and the server
/// reads, locks, rewrites and later prunes each heap page they lie on: tasks that fall
/// due with their page neighbours share that work per page, where tasks scattered one
/// to a page each pay for a page of their own.
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
pub struct TableStatus {
    /// The heap (main fork) of `tasks`, in bytes.
    pub heap_bytes: i64,
    /// All indexes of `tasks`, in bytes.
    pub index_bytes: i64,
    /// Row versions vacuum has yet to free, as PostgreSQL's statistics count them.
    pub dead_tuples: i64,
    /// The table's fillfactor: the migrations set 90, an operator may set 50 (README).
    pub fillfactor: i32,
    /// How many of the next [`DUE_SAMPLE`] scheduled tasks by due time share a heap page,
    /// on average: about 1 when due tasks are scattered over the table, tens when they lie
    /// together. `None` when no task is scheduled.
    pub due_per_page: Option<f64>,
}

/// The due tasks [`TableStatus::due_per_page`] looks at in `recur status`: a claim's
/// worth at the host's default batch.
pub const DUE_SAMPLE: i64 = crate::host::DEFAULT_BATCH as i64;

const STATUS_SQL: &str = include_str!("sql/status.sql");

/// Counts every task. This scans the table: fine for operators and tests, not
/// something to poll at high rate on billions of rows.
pub async fn status(pool: &PgPool) -> Result<Status, sqlx::Error> {
    let types = sqlx::query_as(STATUS_SQL).fetch_all(pool).await?;
    Ok(Status {
        types,
        table: table(pool, DUE_SAMPLE).await?,
    })
}

/// Reads how the tasks table lies, looking at the next `due_sample` scheduled tasks for
/// [`TableStatus::due_per_page`]. Cheap at any size: sizes and counters come from the
/// catalog, and the due tasks from the front of the due index. Reading `ctid` takes no
/// lock, so this never waits on a host's claims.
pub async fn table(pool: &PgPool, due_sample: i64) -> Result<TableStatus, sqlx::Error> {
    sqlx::query_as(TABLE_SQL)
        .bind(due_sample)
        .fetch_one(pool)
        .await
}

// A heap page is the first number of a row's ctid, `(page,item)`, read as a point.
const TABLE_SQL: &str = include_str!("sql/status_table.sql");
