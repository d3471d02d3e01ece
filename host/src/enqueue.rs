//! The producer API: enqueue one task or many. Uniqueness is the database's job: a key
//! that exists leaves the existing task alone and is reported as not new.
//!
//! Tasks are written by one of two statements. The array insert, `INSERT ... SELECT
//! FROM unnest(...) ON CONFLICT DO NOTHING`, absorbs existing and repeated keys, but
//! checks every row for a conflict before inserting it, one row at a time. COPY
//! straight into `tasks` does neither and is about twice as fast (see BENCHMARKS.md),
//! but a single existing or repeated key fails the whole COPY with a unique violation.
//! So a few tasks go by one array insert, and many go in batches: each batch is first
//! sent by COPY inside a savepoint, which succeeds whenever every key in it is new; a
//! batch that fails with a unique violation is rolled back to its savepoint and sent
//! again by array inserts. A load of new keys then runs at the speed of COPY, and a load
//! of keys that exist costs what the array inserts cost, plus a COPY that fails at its
//! first row.
//!
//! [`enqueue`] does all of this for tasks in memory. The CLI, which parses JSON lines on
//! another thread while the connection sends, uses the parts: [`RowFormat`] to turn
//! tasks into [`Rows`] and [`insert_rows`] to send them.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::error::DatabaseError;
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;

use crate::names::check_name;
use crate::outcome::{MAX_FUTURE, MAX_KEY_BYTES};

/// The tenant used when none is given.
pub const DEFAULT_TENANT: &str = "default";
/// Largest payload accepted at enqueue.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// From this many tasks on, [`enqueue`] uses COPY. Below it one array insert saves
/// COPY's extra round trips (now, savepoint, release) and, when a key exists, the failed
/// COPY: measured, the array insert is as fast up to a few hundred tasks, while at 1,000
/// new ones COPY takes half the time (and as long for existing ones).
pub const COPY_FROM_TASKS: usize = 500;
/// Tasks per array insert: large enough that round trips stop mattering, small enough
/// to keep each statement's parameters a few megabytes and its run well under a second.
const ARRAY_CHUNK: usize = 5000;
/// COPY data per batch, and so per savepoint. A batch that fails late has been sent for
/// nothing, so this bounds the work a conflict can waste; it is also what a bulk
/// enqueue keeps in memory to send again.
pub const BATCH_BYTES: usize = 16 << 20;
/// COPY data in one [`Rows`] handed to [`insert_rows`]: small enough that formatting and
/// sending overlap, large enough that the channel between them costs nothing.
pub const PIECE_BYTES: usize = 256 << 10;
/// Batches tried by COPY in one transaction; later batches go by array inserts. Each try
/// is a subtransaction, and PostgreSQL keeps the ids of only 64 per session where other
/// sessions' snapshots look: past that, every snapshot taken anywhere must search
/// pg_subtrans until this transaction ends. 32 batches of [`BATCH_BYTES`] is some ten
/// million small tasks.
const COPY_TRIES: u32 = 32;

const INSERT_SQL: &str = include_str!("sql/enqueue.sql");
const COPY_SQL: &str = include_str!("sql/enqueue_copy.sql");

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

/// Enqueues `tasks` atomically (all or none): checks them all first, then writes them in
/// one transaction. Returns how many were new; the rest had keys that existed already,
/// in the table or earlier in `tasks`.
pub async fn enqueue(pool: &PgPool, tasks: &[NewTask]) -> Result<u64, EnqueueError> {
    for (index, task) in tasks.iter().enumerate() {
        task.check()
            .map_err(|message| EnqueueError::Invalid { index, message })?;
    }
    let mut tx = pool.begin().await?;
    let new = if tasks.len() < COPY_FROM_TASKS {
        let rows = tasks.iter().map(|task| Row {
            tenant: &task.tenant,
            task_type: &task.task_type,
            key: &task.key,
            payload: &task.payload,
            run_at: task.run_at,
        });
        insert_arrays(&mut tx, rows).await?
    } else {
        let format = RowFormat::of(&mut tx).await?;
        let (pieces, received) = mpsc::channel(2);
        // Formatting runs while the connection waits on the server: both futures share
        // this task, and `tasks` is borrowed, so nothing needs spawning.
        let produce = async move {
            let mut rows = Rows::default();
            for task in tasks {
                format.write(task, &mut rows);
                if rows.bytes() >= PIECE_BYTES
                    && pieces.send(std::mem::take(&mut rows)).await.is_err()
                {
                    return;
                }
            }
            let _ = pieces.send(rows).await;
        };
        let (_, new) = tokio::join!(produce, insert_rows(&mut tx, received));
        new?
    };
    tx.commit().await?;
    Ok(new)
}

/// One checked task, borrowed, as the array insert takes it.
struct Row<'a> {
    tenant: &'a str,
    task_type: &'a str,
    key: &'a str,
    payload: &'a [u8],
    /// `None`: the transaction's now().
    run_at: Option<DateTime<Utc>>,
}

/// Inserts checked tasks by array inserts of [`ARRAY_CHUNK`]; returns how many were new.
async fn insert_arrays<'a>(
    conn: &mut PgConnection,
    rows: impl Iterator<Item = Row<'a>>,
) -> Result<u64, sqlx::Error> {
    let mut rows = rows.peekable();
    let mut new = 0;
    while rows.peek().is_some() {
        let (mut tenants, mut types, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        let (mut payloads, mut run_at) = (Vec::new(), Vec::new());
        for row in rows.by_ref().take(ARRAY_CHUNK) {
            tenants.push(row.tenant);
            types.push(row.task_type);
            keys.push(row.key);
            payloads.push(row.payload);
            run_at.push(row.run_at);
        }
        new += sqlx::query(INSERT_SQL)
            .bind(tenants)
            .bind(types)
            .bind(keys)
            .bind(payloads)
            .bind(run_at)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(new)
}

/// Checked tasks as tuples of COPY's binary format, ready for [`insert_rows`]. Binary
/// rather than text: PostgreSQL reads a time as eight bytes instead of parsing it, a
/// payload as its bytes instead of hex, and no field needs escaping, so every byte of a
/// key arrives as it was.
#[derive(Debug, Default)]
pub struct Rows {
    /// Per task: the field count, then each field as its length and its bytes, in the
    /// order of [`COPY_SQL`]'s columns. Without the header and trailer of a whole COPY,
    /// which [`insert_rows`] adds, so pieces can be joined into batches.
    data: Vec<u8>,
}

impl Rows {
    /// Size of the data so far.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Whether no task was written.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The tasks written, read back for the array insert. The data was written by
    /// [`RowFormat::write`] from checked tasks, so it is well formed.
    fn read(&self) -> impl Iterator<Item = Row<'_>> {
        let mut data = self.data.as_slice();
        std::iter::from_fn(move || {
            if data.is_empty() {
                return None;
            }
            // The field count, always 5.
            data = &data[2..];
            let (tenant, task_type, key) = (text(&mut data), text(&mut data), text(&mut data));
            let payload = field_of(&mut data);
            let micros = field_of(&mut data).try_into().expect("a time is 8 bytes");
            Some(Row {
                tenant,
                task_type,
                key,
                payload,
                run_at: Some(pg_epoch() + TimeDelta::microseconds(i64::from_be_bytes(micros))),
            })
        })
    }
}

/// Takes the next field of a binary COPY tuple off the front of `data`.
fn field_of<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let (length, rest) = data.split_at(4);
    let length = i32::from_be_bytes(length.try_into().expect("4 bytes"));
    let (value, rest) = rest.split_at(length as usize);
    *data = rest;
    value
}

/// Takes the next field, a text one, off the front of `data`.
fn text<'a>(data: &mut &'a [u8]) -> &'a str {
    std::str::from_utf8(field_of(data)).expect("written from a str")
}

/// What starts a COPY in binary format: the signature, no flags, no header extension.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// What ends one: a field count of -1.
const COPY_TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// Turns tasks into [`Rows`] for one transaction. It carries that transaction's `now()`,
/// because COPY cannot compute `coalesce(run_at, now())` itself. `Send` and cheap to
/// clone, so another thread can format while the connection sends.
#[derive(Debug, Clone)]
pub struct RowFormat {
    /// The transaction's `now()`, for tasks without a first run time, in microseconds
    /// since 2000-01-01 UTC (timestamptz's binary form).
    now: i64,
}

impl RowFormat {
    /// The format for the transaction open on `conn`: now() is the same for the whole
    /// transaction, so this is the value `coalesce(run_at, now())` would give.
    pub async fn of(conn: &mut PgConnection) -> Result<RowFormat, sqlx::Error> {
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(conn).await?;
        Ok(RowFormat {
            now: timestamptz(now),
        })
    }

    /// Appends `task`, which must have passed [`NewTask::check`], to `rows`.
    pub fn write(&self, task: &NewTask, rows: &mut Rows) {
        let out = &mut rows.data;
        out.extend_from_slice(&5i16.to_be_bytes());
        field(out, task.tenant.as_bytes());
        field(out, task.task_type.as_bytes());
        field(out, task.key.as_bytes());
        field(out, &task.payload);
        let run_at = task.run_at.map_or(self.now, timestamptz);
        field(out, &run_at.to_be_bytes());
    }
}

/// Appends one field of a binary COPY tuple: its length, then its bytes. The checks cap
/// every field far below i32's range.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    let length = i32::try_from(bytes.len()).expect("checked fields are at most a few MiB");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// 2000-01-01 UTC, where PostgreSQL counts time from.
fn pg_epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(946_684_800, 0).expect("2000-01-01 is a valid time")
}

/// `at` as timestamptz's binary form: microseconds since 2000-01-01 UTC, cut towards
/// that epoch as the driver cuts a bound time, so a time is stored the same whichever
/// statement wrote it.
fn timestamptz(at: DateTime<Utc>) -> i64 {
    (at - pg_epoch())
        .num_microseconds()
        .expect("chrono's dates lie within i64 microseconds of 2000")
}

/// Inserts the rows received from `source` until it closes, inside the transaction open
/// on `conn`; returns how many tasks were new. Rows are grouped in batches of about
/// [`BATCH_BYTES`], each tried by COPY and, when a key in it exists or repeats, sent
/// again by array inserts (see the module's doc). `source` is dropped on return, so a
/// sender still sending learns that nobody listens; after an error the transaction is
/// aborted and can only be rolled back.
pub async fn insert_rows(
    conn: &mut PgConnection,
    mut source: mpsc::Receiver<Rows>,
) -> Result<u64, sqlx::Error> {
    let mut new = 0;
    let mut copy_tries = COPY_TRIES;
    loop {
        let mut batch = Vec::new();
        if copy_tries > 0 {
            copy_tries -= 1;
            match copy_batch(conn, &mut source, &mut batch).await? {
                Copied::Done => return Ok(new),
                Copied::Inserted(inserted) => {
                    new += inserted;
                    continue;
                }
                Copied::Conflict => {}
            }
        } else if !receive_batch(&mut source, &mut batch).await {
            return Ok(new);
        }
        new += insert_arrays(conn, batch.iter().flat_map(Rows::read)).await?;
    }
}

/// What became of a batch sent by COPY.
enum Copied {
    /// The source closed before the batch had a row; nothing was sent.
    Done,
    /// Every key was new: this many rows are in `tasks`.
    Inserted(u64),
    /// A key existed or repeated; nothing of the batch stayed, and the batch is kept.
    Conflict,
}

/// Receives one batch from `source` and sends it by COPY as it comes, in a savepoint.
/// On a conflict the savepoint is rolled back and `batch` holds the whole batch.
async fn copy_batch(
    conn: &mut PgConnection,
    source: &mut mpsc::Receiver<Rows>,
    batch: &mut Vec<Rows>,
) -> Result<Copied, sqlx::Error> {
    // No savepoint and no COPY until there is something to send.
    let first = loop {
        match source.recv().await {
            Some(rows) if rows.is_empty() => {}
            Some(rows) => break rows,
            None => return Ok(Copied::Done),
        }
    };
    sqlx::raw_sql("SAVEPOINT recur_enqueue_copy")
        .execute(&mut *conn)
        .await?;
    let mut copy = conn.copy_in_raw(COPY_SQL).await?;
    copy.send(COPY_HEADER).await?;
    let mut bytes = first.bytes();
    copy.send(first.data.as_slice()).await?;
    batch.push(first);
    while bytes < BATCH_BYTES {
        let Some(rows) = source.recv().await else {
            break;
        };
        bytes += rows.bytes();
        copy.send(rows.data.as_slice()).await?;
        batch.push(rows);
    }
    copy.send(COPY_TRAILER).await?;
    match copy.finish().await {
        Ok(inserted) => {
            sqlx::raw_sql("RELEASE SAVEPOINT recur_enqueue_copy")
                .execute(&mut *conn)
                .await?;
            tracing::debug!(inserted, bytes, "bulk enqueue: a batch went in by COPY");
            batch.clear();
            Ok(Copied::Inserted(inserted))
        }
        Err(sqlx::Error::Database(e)) if is_key_conflict(e.as_ref()) => {
            sqlx::raw_sql(
                "ROLLBACK TO SAVEPOINT recur_enqueue_copy; RELEASE SAVEPOINT recur_enqueue_copy",
            )
            .execute(&mut *conn)
            .await?;
            tracing::debug!(bytes, "bulk enqueue: a key of the batch exists or repeats");
            Ok(Copied::Conflict)
        }
        Err(e) => Err(e),
    }
}

/// Receives up to [`BATCH_BYTES`] of rows from `source` into `batch`; false when the
/// source closed before a row came.
async fn receive_batch(source: &mut mpsc::Receiver<Rows>, batch: &mut Vec<Rows>) -> bool {
    let mut bytes = 0;
    while bytes < BATCH_BYTES {
        let Some(rows) = source.recv().await else {
            break;
        };
        bytes += rows.bytes();
        batch.push(rows);
    }
    bytes > 0
}

/// Whether COPY failed because a key existed or repeated.
fn is_key_conflict(e: &dyn DatabaseError) -> bool {
    e.code().as_deref() == Some("23505") && e.constraint() == Some("tasks_unique_key")
}
