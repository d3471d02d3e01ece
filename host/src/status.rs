//! What the tasks table holds, per tenant and task type: how many tasks wait, are due,
//! run, failed or finished, and how late the oldest due task is.

use serde::Serialize;
use sqlx::{PgPool, Row};

/// One tenant and task type. The first three counts are disjoint: together they are
/// every scheduled task.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TypeStatus {
    /// Owning tenant.
    pub tenant: String,
    /// Task type.
    pub task_type: String,
    /// Waiting for a future time, not leased.
    pub scheduled: i64,
    /// Due now and not held by a live lease (an expired lease counts here).
    pub due: i64,
    /// Held by a live lease.
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
}

const STATUS_SQL: &str = "
    SELECT tenant, task_type,
           count(*) FILTER (WHERE status = 0 AND next_run_at > now() AND lease_token IS NULL) AS scheduled,
           count(*) FILTER (WHERE status = 0 AND next_run_at <= now())                        AS due,
           count(*) FILTER (WHERE status = 0 AND next_run_at > now() AND lease_token IS NOT NULL) AS running,
           count(*) FILTER (WHERE status = 2) AS failed,
           count(*) FILTER (WHERE status = 1) AS done,
           coalesce((extract(epoch FROM now() - min(next_run_at) FILTER (WHERE status = 0 AND next_run_at <= now())) * 1000)::bigint, 0) AS lag_ms,
           count(*) FILTER (WHERE status = 0 AND last_error IS NOT NULL) AS erroring
    FROM tasks
    GROUP BY tenant, task_type
    ORDER BY tenant, task_type";

/// Counts every task. This scans the table: fine for operators and tests, not
/// something to poll at high rate on billions of rows.
pub async fn status(pool: &PgPool) -> Result<Status, sqlx::Error> {
    let rows = sqlx::query(STATUS_SQL).fetch_all(pool).await?;
    let types = rows
        .iter()
        .map(|row| {
            Ok(TypeStatus {
                tenant: row.try_get("tenant")?,
                task_type: row.try_get("task_type")?,
                scheduled: row.try_get("scheduled")?,
                due: row.try_get("due")?,
                running: row.try_get("running")?,
                failed: row.try_get("failed")?,
                done: row.try_get("done")?,
                lag_ms: row.try_get("lag_ms")?,
                erroring: row.try_get("erroring")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Status { types })
}
