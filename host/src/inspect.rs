//! Inspecting tasks one at a time, as an operator reads them: one task by id or by key, with its
//! payload and state (`recur task show`), and a list filtered by status, tenant and type
//! with each task's last error (`recur task list`). A tenant's role sees its own tenant's
//! tasks only (row-level security, migrations/0011).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::task::Status;

const LIST_SQL: &str = include_str!("sql/tasks_list.sql");
const SHOW_SQL: &str = include_str!("sql/tasks_show.sql");

/// Most tasks one list returns.
pub const MAX_LIST: i64 = 10_000;

/// A task as `recur task` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskView {
    pub id: i64,
    pub tenant: String,
    pub task_type: String,
    pub key: String,
    /// `scheduled`, `running` (held by a live timed lease), `done` or `failed`.
    pub status: &'static str,
    /// When it is due next (for a running task: when its lease runs out).
    pub next_run_at: DateTime<Utc>,
    pub attempt: i32,
    pub runs: i64,
    /// Why its last try failed, or why it was parked.
    pub last_error: Option<String>,
    pub payload_bytes: i32,
    pub state_bytes: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Its payload and state, as text where they are UTF-8 (else base 16): only in
    /// [`show`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Which task [`show`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which<'a> {
    Id(i64),
    Key {
        tenant: &'a str,
        task_type: &'a str,
        key: &'a str,
    },
}

/// What [`list`] keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter<'a> {
    pub status: Option<Status>,
    pub tenant: Option<&'a str>,
    pub task_type: Option<&'a str>,
    /// At most this many, 1 to [`MAX_LIST`].
    pub limit: i64,
}

/// The task `which` names, if there is one the role connected can see.
pub async fn show(pool: &PgPool, which: &Which<'_>) -> Result<Option<TaskView>, sqlx::Error> {
    let (id, tenant, task_type, key) = match which {
        Which::Id(id) => (Some(*id), None, None, None),
        Which::Key {
            tenant,
            task_type,
            key,
        } => (None, Some(*tenant), Some(*task_type), Some(*key)),
    };
    let row = sqlx::query(SHOW_SQL)
        .bind(id)
        .bind(tenant)
        .bind(task_type)
        .bind(key)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut task = view(&row)?;
    task.payload = Some(readable(&row.try_get::<Vec<u8>, _>("payload")?));
    task.state = row
        .try_get::<Option<Vec<u8>>, _>("state")?
        .map(|state| readable(&state));
    Ok(Some(task))
}

/// The tasks `filter` keeps: failed ones latest failure first, others newest first.
pub async fn list(pool: &PgPool, filter: &Filter<'_>) -> Result<Vec<TaskView>, sqlx::Error> {
    let rows = sqlx::query(LIST_SQL)
        .bind(filter.status.map(|s| s as i16))
        .bind(filter.tenant)
        .bind(filter.task_type)
        .bind(filter.limit.clamp(1, MAX_LIST))
        .fetch_all(pool)
        .await?;
    rows.iter().map(view).collect()
}

fn view(row: &PgRow) -> Result<TaskView, sqlx::Error> {
    // Running: held by a live timed lease, by the database's clock, as `recur status`
    // and run_now.sql judge it.
    let running: bool = row.try_get("running")?;
    let status = match row.try_get::<i16, _>("status")? {
        1 => "done",
        2 => "failed",
        _ if running => "running",
        _ => "scheduled",
    };
    Ok(TaskView {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        task_type: row.try_get("task_type")?,
        key: row.try_get("key")?,
        status,
        next_run_at: row.try_get("next_run_at")?,
        attempt: row.try_get("attempt")?,
        runs: row.try_get("runs")?,
        last_error: row.try_get("last_error")?,
        payload_bytes: row.try_get("payload_bytes")?,
        state_bytes: row.try_get("state_bytes")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        payload: None,
        state: None,
    })
}

/// Bytes as text where they are UTF-8, else in base 16 after `\x`, as psql shows bytea.
fn readable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("\\x{hex}")
        }
    }
}
