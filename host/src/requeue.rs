//! Putting parked tasks back to work: the operator's answer to a task parked as failed
//! (a permanent failure, its attempts used up, or its runs taking hosts down) once the
//! cause is fixed, typically by deploying a new module version. A requeued task is due
//! now, with its attempts reset and its state kept, as if its last run had asked for a
//! retry at once. And making one scheduled task due now (`recur task run-now`).

use sqlx::PgPool;

use crate::contract::check_name;
use crate::task::Status;
use crate::tenants;

const REQUEUE_SQL: &str = include_str!("sql/requeue.sql");

const NOT_FAILED_SQL: &str = include_str!("sql/requeue_not_failed.sql");

const RUN_NOW_SQL: &str = include_str!("sql/run_now.sql");

/// Which parked tasks to requeue.
#[derive(Debug, Clone)]
pub struct Requeue<'a> {
    /// Their tenant.
    pub tenant: &'a str,
    /// Their task type.
    pub task_type: &'a str,
    /// Their keys; `None` means every failed task of the type.
    pub keys: Option<&'a [String]>,
}

/// Why a requeue changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    /// The tenant or type breaks the naming rules.
    #[error("{0}")]
    Invalid(String),
    /// The role connected acts for another tenant ([`crate::tenants::require_own`]).
    #[error("{0}")]
    Refused(String),
    /// Some of the named keys are not failed tasks.
    #[error("{0}; nothing was requeued")]
    NotFailed(String),
    /// The database failed; nothing was requeued.
    #[error("database error while requeueing: {0}")]
    Database(#[from] sqlx::Error),
}

/// Requeues the failed tasks `which` names, all or none: if a named key is missing or not
/// failed, nothing changes. Returns how many were requeued.
pub async fn requeue(pool: &PgPool, which: &Requeue<'_>) -> Result<u64, RequeueError> {
    check_name("tenant", which.tenant).map_err(RequeueError::Invalid)?;
    check_name("task type", which.task_type).map_err(RequeueError::Invalid)?;
    let mut tx = pool.begin().await?;
    tenants::require_own(&mut tx, &[which.tenant])
        .await
        .map_err(|e| match tenants::refusal(&e) {
            Some(message) => RequeueError::Refused(message),
            None => RequeueError::Database(e),
        })?;
    if let Some(keys) = which.keys {
        let wrong: Vec<(String, Option<i16>)> = sqlx::query_as(NOT_FAILED_SQL)
            .bind(which.tenant)
            .bind(which.task_type)
            .bind(keys)
            .fetch_all(&mut *tx)
            .await?;
        if !wrong.is_empty() {
            let named: Vec<String> = wrong
                .iter()
                .map(|(key, status)| match status {
                    None => format!("{key:?} does not exist"),
                    Some(s) if *s == Status::Done as i16 => format!("{key:?} is done"),
                    Some(_) => format!("{key:?} is scheduled"),
                })
                .collect();
            return Err(RequeueError::NotFailed(format!(
                "only failed tasks can be requeued, and in tenant {:?}, type {:?}: {}",
                which.tenant,
                which.task_type,
                named.join(", ")
            )));
        }
    }
    let done = sqlx::query(REQUEUE_SQL)
        .bind(which.tenant)
        .bind(which.task_type)
        .bind(which.keys)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// Why a task could not be made due now.
#[derive(Debug, thiserror::Error)]
pub enum RunNowError {
    /// No task of that id that the role connected can see.
    #[error("no such task with id {0}; `recur task list` lists tasks")]
    Unknown(i64),
    /// The task is done or failed, or a timed lease holds it.
    #[error("task {id} is {status}, so it was not made due; {hint}")]
    NotScheduled {
        id: i64,
        status: &'static str,
        hint: &'static str,
    },
    /// The database failed; nothing changed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Makes the scheduled task `id` due now, whatever its next run time.
pub async fn run_now(pool: &PgPool, id: i64) -> Result<(), RunNowError> {
    let made: Option<i64> = sqlx::query_scalar(RUN_NOW_SQL)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    if made.is_some() {
        return Ok(());
    }
    let found: Option<(i16, bool)> = sqlx::query_as(
        "SELECT status, lease_token IS NOT NULL AND next_run_at > now() FROM tasks WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let (status, hint) = match found {
        None => return Err(RunNowError::Unknown(id)),
        Some((s, _)) if s == Status::Failed as i16 => (
            "failed",
            "`recur task retry` puts a failed task back to work",
        ),
        Some((s, _)) if s == Status::Done as i16 => ("done", "a done task never runs again"),
        Some(_) => ("running", "it is running now"),
    };
    Err(RunNowError::NotScheduled { id, status, hint })
}
