//! The bulk path of an enqueue: tasks as tuples of COPY's binary format, sent in batches.
//! Each batch draws its tasks' ids from the sequence in one query, COPYs their keys into
//! `task_keys` inside a savepoint and then the tasks into `tasks`; a batch whose keys
//! meet one that exists (or repeats) is rolled back to its savepoint and sent again by
//! the array insert, which absorbs those keys. Either way a batch's keys go in in key
//! order, as every writer of keys writes them, so two loads of the same keys in other
//! orders wait for each other rather than deadlock, as long as each is one batch. While
//! one batch is sent, the next is received, so whoever formats the rows (the CLI's
//! parser, [`super::enqueue`]) keeps working while the database does.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::error::DatabaseError;
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;

use super::{NewTask, Row, Through, insert_arrays};

const DATABASE_NOW_SQL: &str = include_str!("../sql/database_now.sql");

/// COPY data per batch, and so per savepoint. A batch that fails late has been sent for
/// nothing, so this bounds the work a conflict can waste; a bulk enqueue keeps two in
/// memory, the one it sends and the next.
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

const COPY_KEYS_SQL: &str = include_str!("../sql/enqueue_copy_keys.sql");
const COPY_TASKS_SQL: &str = include_str!("../sql/enqueue_copy.sql");
/// Ids for a batch, in one round trip.
const IDS_SQL: &str = include_str!("../sql/next_ids.sql");
/// The unique index a key conflict names.
const KEYS_INDEX: &str = "task_keys_pkey";

/// Fields of a task's tuple, in the order of [`COPY_TASKS_SQL`]'s columns.
const TASK_FIELDS: i16 = 6;
/// Fields of a key's tuple, in the order of [`COPY_KEYS_SQL`]'s columns.
const KEY_FIELDS: i16 = 4;

/// Checked tasks as tuples of COPY's binary format, ready for `insert_rows`. Binary
/// rather than text: PostgreSQL reads a time as eight bytes instead of parsing it, a
/// payload as its bytes instead of hex, and no field needs escaping, so every byte of a
/// key arrives as it was.
#[derive(Debug, Default)]
pub struct Rows {
    /// Per task: the field count, then each field as its length and its bytes, in the
    /// order of [`COPY_TASKS_SQL`]'s columns. The id is a placeholder until
    /// [`Rows::assign_ids`]. Without the header and trailer of a whole COPY, which
    /// [`insert_rows`] adds, so pieces can be joined into batches.
    data: Vec<u8>,
    /// Tasks written.
    tasks: usize,
}

impl Rows {
    /// Size of the data so far.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Whether no task was written.
    pub fn is_empty(&self) -> bool {
        self.tasks == 0
    }

    /// The tasks written, with the ids [`Rows::assign_ids`] gave them, read back for
    /// the keys' COPY and the array insert. The data was written by [`RowFormat::write`]
    /// from checked tasks, so it is well formed.
    fn read(&self) -> impl Iterator<Item = Row<'_>> {
        let mut data = self.data.as_slice();
        std::iter::from_fn(move || {
            if data.is_empty() {
                return None;
            }
            // The field count, then the id.
            data = &data[2..];
            let id = field_of(&mut data).try_into().expect("an id is 8 bytes");
            let (tenant, task_type, key) = (text(&mut data), text(&mut data), text(&mut data));
            let payload = field_of(&mut data);
            let micros = field_of(&mut data).try_into().expect("a time is 8 bytes");
            Some(Row {
                tenant,
                task_type,
                key,
                payload,
                run_at: Some(pg_epoch() + TimeDelta::microseconds(i64::from_be_bytes(micros))),
                id: Some(i64::from_be_bytes(id)),
            })
        })
    }

    /// Gives each task the next id of `ids`, in place.
    fn assign_ids(&mut self, ids: &mut impl Iterator<Item = i64>) {
        let mut at = 0;
        while at < self.data.len() {
            let id = ids.next().expect("one id was drawn per task");
            // The field count, then the id's length; its value follows.
            at += 2 + 4;
            self.data[at..at + 8].copy_from_slice(&id.to_be_bytes());
            at += 8;
            // Then tenant, type, key, payload and the first run.
            let mut rest = &self.data[at..];
            for _ in 0..5 {
                field_of(&mut rest);
            }
            at = self.data.len() - rest.len();
        }
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
        let now: DateTime<Utc> = sqlx::query_scalar(DATABASE_NOW_SQL).fetch_one(conn).await?;
        Ok(RowFormat {
            now: timestamptz(now),
        })
    }

    /// Appends `task`, which must have passed [`NewTask::check`], to `rows`.
    pub fn write(&self, task: &NewTask, rows: &mut Rows) {
        let out = &mut rows.data;
        out.extend_from_slice(&TASK_FIELDS.to_be_bytes());
        // The id, drawn when the batch is sent.
        field(out, &0i64.to_be_bytes());
        field(out, task.tenant.as_bytes());
        field(out, task.task_type.as_bytes());
        field(out, task.key.as_bytes());
        field(out, &task.payload);
        let run_at = task.run_at.map_or(self.now, timestamptz);
        field(out, &run_at.to_be_bytes());
        rows.tasks += 1;
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
/// again by array inserts (see the module's doc); the next batch is received while one
/// is sent; with `secured` (a tenant's role, see `BulkLoad`), every batch through the
/// database's enqueue door. `source` is dropped on return, so a sender still sending
/// learns that nobody listens; after an error the transaction is aborted and can only
/// be rolled back.
pub async fn insert_rows(
    conn: &mut PgConnection,
    mut source: mpsc::Receiver<Rows>,
    secured: bool,
) -> Result<u64, sqlx::Error> {
    let mut new = 0;
    let mut copy_tries = if secured { 0 } else { COPY_TRIES };
    let mut next = Vec::new();
    receive_batch(&mut source, &mut next).await;
    while !next.is_empty() {
        let batch = std::mem::take(&mut next);
        let copy = copy_tries > 0;
        copy_tries = copy_tries.saturating_sub(1);
        let receive = async {
            receive_batch(&mut source, &mut next).await;
            Ok(())
        };
        // On an error the receiving stops with the sending.
        let through = if secured {
            Through::Door
        } else {
            Through::Statement
        };
        let (sent, ()) = tokio::try_join!(send_batch(conn, batch, copy, through), receive)?;
        new += sent;
    }
    Ok(new)
}

/// Sends one batch: by COPY if `copy` and every key in it is new, else by array
/// inserts `through` the statement or the door. Returns how many tasks were new. Either
/// way its keys go in in key order ([`Row::key_order`]), while its ids follow the
/// input's order.
async fn send_batch(
    conn: &mut PgConnection,
    mut batch: Vec<Rows>,
    copy: bool,
    through: Through,
) -> Result<u64, sqlx::Error> {
    let tasks: usize = batch.iter().map(|rows| rows.tasks).sum();
    let ids: Vec<i64> = sqlx::query_scalar(IDS_SQL)
        .bind(tasks as i64)
        .fetch_one(&mut *conn)
        .await?;
    let mut ids = ids.into_iter();
    for rows in &mut batch {
        rows.assign_ids(&mut ids);
    }
    let mut rows: Vec<Row> = batch.iter().flat_map(Rows::read).collect();
    rows.sort_unstable_by(Row::key_order);
    if copy {
        let mut keys = Vec::with_capacity(COPY_HEADER.len() + tasks * 64);
        keys.extend_from_slice(COPY_HEADER);
        for row in &rows {
            keys.extend_from_slice(&KEY_FIELDS.to_be_bytes());
            field(&mut keys, row.tenant.as_bytes());
            field(&mut keys, row.task_type.as_bytes());
            field(&mut keys, row.key.as_bytes());
            field(&mut keys, &row.id.expect("assigned above").to_be_bytes());
        }
        keys.extend_from_slice(COPY_TRAILER);
        if copy_keys(conn, &keys).await? {
            let mut copy = conn.copy_in_raw(COPY_TASKS_SQL).await?;
            copy.send(COPY_HEADER).await?;
            for rows in &batch {
                copy.send(rows.data.as_slice()).await?;
            }
            copy.send(COPY_TRAILER).await?;
            let inserted = copy.finish().await?;
            tracing::debug!(inserted, "bulk enqueue: a batch went in by COPY");
            return Ok(inserted);
        }
    }
    insert_arrays(conn, &rows, through).await
}

/// COPYs a batch's keys into `task_keys`, in a savepoint. False when a key existed or
/// repeated: then the savepoint is rolled back, and nothing of the batch stayed.
async fn copy_keys(conn: &mut PgConnection, keys: &[u8]) -> Result<bool, sqlx::Error> {
    // Inside the caller's transaction, begin() makes a savepoint.
    let mut savepoint = conn.begin().await?;
    let mut copy = savepoint.copy_in_raw(COPY_KEYS_SQL).await?;
    copy.send(keys).await?;
    match copy.finish().await {
        Ok(_) => {
            savepoint.commit().await?;
            Ok(true)
        }
        Err(sqlx::Error::Database(e)) if is_key_conflict(e.as_ref()) => {
            savepoint.rollback().await?;
            tracing::debug!("bulk enqueue: a key of the batch exists or repeats");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Receives up to [`BATCH_BYTES`] of rows from `source` into `batch`, leaving out empty
/// pieces; stops early when the source closes.
async fn receive_batch(source: &mut mpsc::Receiver<Rows>, batch: &mut Vec<Rows>) {
    let mut bytes = 0;
    while bytes < BATCH_BYTES {
        let Some(rows) = source.recv().await else {
            break;
        };
        if rows.is_empty() {
            continue;
        }
        bytes += rows.bytes();
        batch.push(rows);
    }
}

/// Whether COPY failed because a key existed or repeated.
fn is_key_conflict(e: &dyn DatabaseError) -> bool {
    e.code().as_deref() == Some("23505") && e.constraint() == Some(KEYS_INDEX)
}
