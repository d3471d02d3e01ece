//! The producer API: enqueue one task or many. Uniqueness is the database's job: every
//! insert is `ON CONFLICT (tenant, task_type, key) DO NOTHING`, so enqueueing a key
//! that exists leaves the existing task alone and is reported as not new.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::names::check_name;
use crate::outcome::{MAX_FUTURE, MAX_KEY_BYTES};

/// The tenant used when none is given.
pub const DEFAULT_TENANT: &str = "default";
/// Largest payload accepted at enqueue.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Tasks per insert statement in a bulk enqueue: large enough that round trips stop
/// mattering, small enough to keep each statement's parameters a few megabytes.
pub const BULK_CHUNK: usize = 5000;

const INSERT_SQL: &str = "
    INSERT INTO tasks (tenant, task_type, key, payload, next_run_at)
    SELECT tenant, task_type, key, payload, coalesce(run_at, now())
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::timestamptz[])
         AS n(tenant, task_type, key, payload, run_at)
    ON CONFLICT ON CONSTRAINT tasks_unique_key DO NOTHING";

/// A task to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// Owning tenant.
    pub tenant: String,
    /// Task type (names the module).
    pub task_type: String,
    /// Unique key within (tenant, task_type).
    pub key: String,
    /// Payload handed to every run.
    pub payload: Vec<u8>,
    /// First run; `None` means now (by the database's clock).
    pub run_at: Option<DateTime<Utc>>,
}

impl NewTask {
    /// A task of `task_type` with `key` in the default tenant, due now, empty payload.
    pub fn new(task_type: impl Into<String>, key: impl Into<String>) -> Self {
        NewTask {
            tenant: DEFAULT_TENANT.into(),
            task_type: task_type.into(),
            key: key.into(),
            payload: Vec::new(),
            run_at: None,
        }
    }

    /// Checks the fields against the rules the schema enforces, with a clear message.
    pub fn check(&self) -> Result<(), String> {
        check_name("tenant", &self.tenant)?;
        check_name("task type", &self.task_type)?;
        if self.key.is_empty() || self.key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "the key must be 1 to {MAX_KEY_BYTES} bytes, not {}",
                self.key.len()
            ));
        }
        if self.key.contains('\0') {
            return Err(
                "the key contains a NUL character, which PostgreSQL text cannot store".into(),
            );
        }
        if let Some(at) = self.run_at
            && at > Utc::now() + MAX_FUTURE
        {
            return Err(format!(
                "the first run at {at} is more than ten years ahead; a module could not reschedule that far either"
            ));
        }
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(format!(
                "the payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
                self.payload.len()
            ));
        }
        Ok(())
    }
}

/// Why an enqueue wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// A task breaks a rule; `index` is its position in the input (0-based).
    #[error("task {index}: {message}")]
    Invalid {
        /// Position in the input.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// The database failed; nothing was written.
    #[error("database error while enqueueing: {0}")]
    Database(#[from] sqlx::Error),
}

/// Enqueues `tasks` atomically (all or none), in statements of [`BULK_CHUNK`] tasks.
/// Returns how many were new; the rest had keys that existed already.
pub async fn enqueue(pool: &PgPool, tasks: &[NewTask]) -> Result<u64, EnqueueError> {
    for (index, task) in tasks.iter().enumerate() {
        task.check()
            .map_err(|message| EnqueueError::Invalid { index, message })?;
    }
    let mut tx = pool.begin().await?;
    let mut new = 0;
    for chunk in tasks.chunks(BULK_CHUNK) {
        new += insert_chunk(&mut tx, chunk).await?;
    }
    tx.commit().await?;
    Ok(new)
}

/// Inserts one chunk of already-checked tasks inside `tx`; returns how many were new.
pub async fn insert_chunk(
    tx: &mut Transaction<'_, Postgres>,
    chunk: &[NewTask],
) -> Result<u64, sqlx::Error> {
    let tenants: Vec<&str> = chunk.iter().map(|t| t.tenant.as_str()).collect();
    let types: Vec<&str> = chunk.iter().map(|t| t.task_type.as_str()).collect();
    let keys: Vec<&str> = chunk.iter().map(|t| t.key.as_str()).collect();
    let payloads: Vec<&[u8]> = chunk.iter().map(|t| t.payload.as_slice()).collect();
    let run_at: Vec<Option<DateTime<Utc>>> = chunk.iter().map(|t| t.run_at).collect();
    let done = sqlx::query(INSERT_SQL)
        .bind(tenants)
        .bind(types)
        .bind(keys)
        .bind(payloads)
        .bind(run_at)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}
