//! The producer API: enqueue one task or many. Uniqueness is the database's job: a key
//! that exists leaves the existing task alone and is reported as not new.
//!
//! A key lives in `task_keys`, apart from its task (migrations/0005): each new task draws
//! its id from the tasks' sequence, its key goes into `task_keys` with that id, and the
//! task is created only if its key was new. Tasks are written by one of two paths. The
//! array insert (`sql/enqueue.sql`) does all of it in one statement and absorbs existing
//! and repeated keys, but checks every row for a conflict before inserting it, one row
//! at a time. COPY does neither, as it streams rows in, and is much faster, but a single
//! existing or repeated key fails the whole COPY with a unique violation. So a few tasks
//! go by one array insert, and many go in batches by `insert_rows` (in `copy.rs`): each
//! batch's keys are first sent by COPY inside a savepoint, which succeeds whenever every
//! key in it is new, and then its tasks; a batch whose keys meet an existing one is
//! rolled back to its savepoint and sent again by array inserts. A load of new keys then
//! runs at the speed of COPY, and a load of keys that exist costs what the array inserts
//! cost, plus a COPY of keys that fails at its first row.
//!
//! One backend does all of a connection's work, so [`enqueue_parallel`] spreads a bulk
//! enqueue over several connections, each writing the tasks whose keys hash to it
//! (`parallel.rs`). [`enqueue`] does all of this for tasks in memory over one connection.
//! The CLI, which parses JSON lines on another thread while the connections send, uses
//! the parts: a [`BulkLoad`] and its [`ShardWriter`].

mod copy;
mod parallel;

pub use copy::{BATCH_BYTES, Rows};
pub use parallel::{BulkLoad, MAX_CONNECTIONS, ShardWriter};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row as _};

use crate::contract::check_name;
use crate::contract::{MAX_FUTURE, MAX_KEY_BYTES};
use crate::tenants;

/// The tenant used when none is given.
pub const DEFAULT_TENANT: &str = "default";
/// Largest payload accepted at enqueue.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// From this many tasks on, [`enqueue`] uses COPY. Below it one array insert saves
/// COPY's extra round trips (now, ids, savepoint, release) and, when a key exists, the
/// failed COPY. Those cost the same for any batch, while the array insert's conflict
/// checks grow with every row, so the array insert is the cheaper for a few tasks and
/// COPY for many. Existing keys cost the array inserts either way: a COPY that meets one
/// fails at its first row and its batch goes by array inserts.
pub const COPY_FROM_TASKS: usize = 500;
/// Tasks per array insert: large enough that round trips stop mattering, small enough
/// to keep each statement's parameters a few megabytes and its run well under a second.
const ARRAY_CHUNK: usize = 5000;

const INSERT_SQL: &str = include_str!("../sql/enqueue.sql");
/// The database's enqueue door (migrations/0015): the same insert, after the checks a
/// tenant's role cannot be trusted to make (its tenant, payloads, task quota).
const DOOR_SQL: &str = "SELECT recur_enqueue_many($1, $2, $3, $4, $5, $6)";

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
    /// A parallel enqueue was asked for more connections than it may use.
    #[error(
        "a bulk enqueue cannot use {asked} connections; give 1 to {allowed} (at most {MAX_CONNECTIONS}, and at most the pool's size)"
    )]
    Connections {
        /// Connections asked for.
        asked: usize,
        /// The most it may use.
        allowed: usize,
    },
    /// Another transaction was writing some of the same keys, in an order that made
    /// each wait for the other, and PostgreSQL rolled this enqueue back so the other
    /// could finish; nothing was written.
    #[error(
        "deadlock: another enqueue or commit was writing some of the same keys, and this enqueue was rolled back so it could finish; nothing was enqueued, so run it again (keys already in are absorbed)"
    )]
    Deadlock(#[source] sqlx::Error),
    /// The database refused a task's tenant ([`crate::tenants::require`]): it does not
    /// exist and the fleet does not create tenants on enqueue, or the role connected acts
    /// for another tenant; nothing was written.
    #[error("{0}")]
    Refused(String),
    /// The database failed; nothing was written.
    #[error("database error while enqueueing: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for EnqueueError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(message) = tenants::refusal(&e) {
            return EnqueueError::Refused(message);
        }
        match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some(DEADLOCK) => {
                EnqueueError::Deadlock(e)
            }
            _ => EnqueueError::Database(e),
        }
    }
}

/// PostgreSQL's code for a transaction it rolled back to break a deadlock.
const DEADLOCK: &str = "40P01";

/// Enqueues `tasks` atomically (all or none): checks them all first, then writes them in
/// one transaction. Returns how many were new; the rest had keys that existed already,
/// in the table or earlier in `tasks`.
pub async fn enqueue(pool: &PgPool, tasks: &[NewTask]) -> Result<u64, EnqueueError> {
    enqueue_parallel(pool, tasks, 1).await
}

/// [`enqueue`] over `connections` connections at once (from `pool`, which must allow
/// that many), each writing in a transaction of its own the tasks whose keys hash to
/// it; the transactions commit together at the end. All or none as [`enqueue`] is, but
/// for a database failure between those commits, which leaves the shares committed
/// before it (enqueueing the same tasks again adds the rest). Below [`COPY_FROM_TASKS`]
/// tasks, one connection does it all. Its connections hold session-level advisory
/// locks while they send (see `enqueue::parallel`) and drop every such lock their
/// sessions hold before they go back to `pool`.
pub async fn enqueue_parallel(
    pool: &PgPool,
    tasks: &[NewTask],
    connections: usize,
) -> Result<u64, EnqueueError> {
    parallel::check_connections(pool, connections)?;
    for (index, task) in tasks.iter().enumerate() {
        task.check()
            .map_err(|message| EnqueueError::Invalid { index, message })?;
    }
    let (names, counts) = per_tenant(tasks);
    if tasks.len() < COPY_FROM_TASKS {
        let rows: Vec<Row> = tasks
            .iter()
            .map(|task| Row {
                tenant: &task.tenant,
                task_type: &task.task_type,
                key: &task.key,
                payload: &task.payload,
                run_at: task.run_at,
                id: None,
            })
            .collect();
        // The door checks the tenants and their task quotas in the same round trip as
        // the insert; the payloads are checked first for an error that names the task.
        let mut tx = pool.begin().await?;
        check_payloads(&mut tx, &names, tasks).await?;
        let new = insert_arrays(&mut tx, &rows, Through::Door).await?;
        tx.commit().await?;
        return Ok(new);
    }
    // A bulk load's tasks go in over several transactions, which no one count sees
    // together: the quota is checked first, as if every task were new.
    let mut conn = pool.acquire().await?;
    tenants::check_task_quotas(&mut conn, &names, &counts).await?;
    drop(conn);
    let mut load = BulkLoad::begin(pool, connections).await?;
    load.require_tenants(&names).await?;
    check_payloads(load.connection(), &names, tasks).await?;
    let (mut writer, sources) = load.writer(2);
    // Formatting runs while the connections wait on the server.
    let produce = async move {
        for task in tasks {
            if !writer.write(task).await {
                return;
            }
        }
        writer.finish().await;
    };
    let (_, new) = tokio::join!(produce, load.insert(sources));
    let new = new?;
    load.commit().await?;
    Ok(new)
}

/// Refuses the first task whose payload is over its tenant's quota (`max_payload_bytes`);
/// `names` are the tenants `tasks` name.
async fn check_payloads(
    conn: &mut PgConnection,
    names: &[&str],
    tasks: &[NewTask],
) -> Result<(), EnqueueError> {
    let quotas = tenants::payload_quotas(conn, Some(names)).await?;
    for (index, task) in tasks.iter().enumerate() {
        tenants::check_payload(&quotas, &task.tenant, task.payload.len())
            .map_err(|message| EnqueueError::Invalid { index, message })?;
    }
    Ok(())
}

/// The distinct tenants `tasks` name, and how many tasks each, side by side.
fn per_tenant(tasks: &[NewTask]) -> (Vec<&str>, Vec<i64>) {
    let mut counts = std::collections::BTreeMap::new();
    for task in tasks {
        *counts.entry(task.tenant.as_str()).or_insert(0i64) += 1;
    }
    counts.into_iter().unzip()
}

/// One checked task, borrowed, as the array insert takes it.
struct Row<'a> {
    tenant: &'a str,
    task_type: &'a str,
    key: &'a str,
    payload: &'a [u8],
    /// `None`: the transaction's now().
    run_at: Option<DateTime<Utc>>,
    /// The id drawn for it beforehand; `None`: drawn as it is inserted.
    id: Option<i64>,
}

impl Row<'_> {
    /// The order keys go into `task_keys` in when one statement or one batch writes
    /// several: every writer of keys takes them in this order, so two that write some of
    /// the same keys cannot each wait for a key the other wrote (commit_timed.sql). By bytes, as
    /// `COLLATE "C"` orders them there; a repeated key's first id first.
    fn key_order(&self, other: &Row<'_>) -> std::cmp::Ordering {
        (self.tenant, self.task_type, self.key, self.id).cmp(&(
            other.tenant,
            other.task_type,
            other.key,
            other.id,
        ))
    }
}

/// How array inserts go in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Through {
    /// The insert statement itself, for a load whose checks were made before it.
    Statement,
    /// The database's door, `recur_enqueue_many()`, which makes them itself: the only
    /// way in for a tenant's role.
    Door,
}

/// Inserts checked tasks by array inserts of [`ARRAY_CHUNK`], `through` the statement or
/// the door; returns how many were new. A slice, not an iterator: an iterator built from
/// closures held across the awaits would keep the caller's future from being provably
/// `Send`, so it could not be spawned.
async fn insert_arrays(
    conn: &mut PgConnection,
    rows: &[Row<'_>],
    through: Through,
) -> Result<u64, sqlx::Error> {
    let mut new = 0;
    for chunk in rows.chunks(ARRAY_CHUNK) {
        let (mut tenants, mut types, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        let (mut payloads, mut run_at, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for row in chunk {
            tenants.push(row.tenant);
            types.push(row.task_type);
            keys.push(row.key);
            payloads.push(row.payload);
            run_at.push(row.run_at);
            ids.push(row.id);
        }
        let sql = match through {
            Through::Statement => INSERT_SQL,
            Through::Door => DOOR_SQL,
        };
        let query = sqlx::query(sql)
            .bind(tenants)
            .bind(types)
            .bind(keys)
            .bind(payloads)
            .bind(run_at)
            .bind(ids);
        new += match through {
            Through::Statement => query.execute(&mut *conn).await?.rows_affected(),
            Through::Door => query.fetch_one(&mut *conn).await?.try_get::<i64, _>(0)? as u64,
        };
    }
    Ok(new)
}
