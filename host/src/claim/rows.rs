//! Reading a claim's result into [`ClaimedTask`]s: a timed lease's rows through
//! [`Columns`], a locked claim's one row of arrays through [`TaskArrays`].

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Column, Postgres, Row, Type};

use super::arrays::{Array, Element};
use crate::task::{ClaimedTask, Fence};

/// Where the rows of one timed lease hold a task's fields, with each column's type
/// checked against the field it fills. Both are looked up once per lease, on its first
/// row: the rows of one result share their columns, and a lookup by name hashes the
/// name, which per row and per column would cost more than reading the values. A
/// timed lease returns rows, not arrays as a locked claim does: its `UPDATE ...
/// RETURNING` would have to gather them into arrays in a second step.
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
        Ok(Columns {
            id: position::<i64>(row, "id")?,
            tenant: position::<String>(row, "tenant")?,
            task_type: position::<String>(row, "task_type")?,
            key: position::<String>(row, "key")?,
            payload: position::<Vec<u8>>(row, "payload")?,
            state: position::<Vec<u8>>(row, "state")?,
            attempt: position::<i32>(row, "attempt")?,
            runs: position::<i64>(row, "runs")?,
            scheduled_at: position::<DateTime<Utc>>(row, "scheduled_at")?,
        })
    }

    /// The task in `row`, a row of the result these columns were found in, claimed at
    /// `claimed` for `lease_timeout` (fence and lock left for the caller to fill in).
    pub fn task(
        &self,
        row: &PgRow,
        claimed: Instant,
        lease_timeout: Duration,
    ) -> Result<ClaimedTask, sqlx::Error> {
        Ok(ClaimedTask {
            id: row.try_get_unchecked(self.id)?,
            tenant: row.try_get_unchecked(self.tenant)?,
            task_type: row.try_get_unchecked(self.task_type)?,
            key: row.try_get_unchecked(self.key)?,
            payload: row.try_get_unchecked(self.payload)?,
            state: row.try_get_unchecked(self.state)?,
            attempt: row.try_get_unchecked(self.attempt)?,
            lost_runs: 0,
            runs: row.try_get_unchecked(self.runs)?,
            scheduled_at: row.try_get_unchecked(self.scheduled_at)?,
            fence: Fence::default(),
            lock: None,
            deadline: claimed + lease_timeout,
            run_by: claimed + lease_timeout * 3 / 4,
        })
    }
}

/// The position of the column `name` in `row`'s result, once its type is checked to
/// decode as `T`: its rows can then be read with `try_get_unchecked`.
pub fn position<T: Type<Postgres>>(row: &PgRow, name: &str) -> Result<usize, sqlx::Error> {
    let column = row.try_column(name)?;
    let ty = column.type_info();
    if !T::compatible(ty) {
        return Err(sqlx::Error::ColumnDecode {
            index: format!("{name:?}"),
            source: sqlx::error::mismatched_types::<Postgres, T>(ty),
        });
    }
    Ok(column.ordinal())
}

/// A locked claim's tasks as its statement returns them: one row of arrays, a column
/// each (claim_locked.sql). A row per task would cost the host, for each of them, a
/// message to parse, a row to allocate and a value to wrap per column; read in place
/// from the arrays, a task costs a few slices and the copies of its strings.
pub struct TaskArrays<'r> {
    id: Array<'r>,
    tenant: Array<'r>,
    task_type: Array<'r>,
    key: Array<'r>,
    payload: Array<'r>,
    state: Array<'r>,
    attempt: Array<'r>,
    runs: Array<'r>,
    scheduled_at: Array<'r>,
}

impl<'r> TaskArrays<'r> {
    /// The tasks in `row`, with each column's type checked against the field it fills.
    pub fn of(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let tasks = TaskArrays {
            id: Array::of(row, "id", Element::Int8)?,
            tenant: Array::of(row, "tenant", Element::Text)?,
            task_type: Array::of(row, "task_type", Element::Text)?,
            key: Array::of(row, "key", Element::Text)?,
            payload: Array::of(row, "payload", Element::Bytea)?,
            state: Array::of(row, "state", Element::Bytea)?,
            attempt: Array::of(row, "attempt", Element::Int4)?,
            runs: Array::of(row, "runs", Element::Int8)?,
            scheduled_at: Array::of(row, "scheduled_at", Element::Timestamptz)?,
        };
        tasks.check_lengths(&[
            &tasks.tenant,
            &tasks.task_type,
            &tasks.key,
            &tasks.payload,
            &tasks.state,
            &tasks.attempt,
            &tasks.runs,
            &tasks.scheduled_at,
        ])?;
        Ok(tasks)
    }

    /// How many tasks there are.
    pub fn len(&self) -> usize {
        self.id.len()
    }

    /// Refuses columns that do not hold one element per task.
    pub(crate) fn check_lengths(&self, columns: &[&Array<'_>]) -> Result<(), sqlx::Error> {
        match columns.iter().find(|column| column.len() != self.len()) {
            Some(column) => Err(sqlx::Error::ColumnDecode {
                index: format!("{:?}", column.name()),
                source: format!(
                    "it holds {} where the claim has {} tasks",
                    column.len(),
                    self.len()
                )
                .into(),
            }),
            None => Ok(()),
        }
    }

    /// Task `i`, claimed at `claimed` for `lease_timeout` (fence and lock left for the caller to
    /// fill in).
    pub fn task(
        &self,
        i: usize,
        claimed: Instant,
        lease_timeout: Duration,
    ) -> Result<ClaimedTask, sqlx::Error> {
        Ok(ClaimedTask {
            id: self.id.i64(i)?,
            tenant: self.tenant.string(i)?,
            task_type: self.task_type.string(i)?,
            key: self.key.string(i)?,
            payload: self.payload.bytes(i)?,
            state: self.state.optional_bytes(i),
            attempt: self.attempt.i32(i)?,
            lost_runs: 0,
            runs: self.runs.i64(i)?,
            scheduled_at: self.scheduled_at.time(i)?,
            fence: Fence::default(),
            lock: None,
            deadline: claimed + lease_timeout,
            run_by: claimed + lease_timeout * 3 / 4,
        })
    }
}

/// Decoding is checked against what a real PostgreSQL returns for literal rows; no
/// database of recur's is needed, only a server (the tests' DATABASE_URL).
#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use sqlx::PgPool;

    use super::*;

    async fn server() -> PgPool {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        PgPool::connect(&url)
            .await
            .expect("the tests need a PostgreSQL at DATABASE_URL")
    }

    /// A timed lease finds its columns and checks their types once, on its first row, and
    /// decodes the rest unchecked: a column of another type must be refused there, by name, rather
    /// than decoded as something it is not.
    #[tokio::test]
    async fn a_timed_lease_column_of_the_wrong_type_is_refused_by_name() {
        let pool = server().await;
        let row = sqlx::query("SELECT 7::bigint AS id, 3::integer AS attempt")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(position::<i64>(&row, "id").unwrap(), 0);
        assert_eq!(position::<i32>(&row, "attempt").unwrap(), 1);
        let wrong = position::<i32>(&row, "id").unwrap_err().to_string();
        assert!(
            wrong.contains("\"id\"") && wrong.contains("mismatched types"),
            "{wrong}"
        );
        let missing = Columns::of(&row)
            .err()
            .expect("a row without a task's columns is refused")
            .to_string();
        assert!(missing.contains("tenant"), "{missing}");
    }

    /// A locked claim's tasks come as one row of arrays, read from their binary form by hand: a
    /// column of another type, a missing one, or one of another length must be refused, by
    /// name, rather than read as something it is not.
    #[tokio::test]
    async fn a_locked_claim_column_of_the_wrong_type_or_length_is_refused_by_name() {
        let pool = server().await;
        let columns = "ARRAY['acme'] AS tenant, ARRAY['noop'] AS task_type, ARRAY['k'] AS key, \
                       ARRAY['{}'::bytea] AS payload, ARRAY[NULL::bytea] AS state, \
                       ARRAY[1] AS attempt, ARRAY[0::bigint] AS runs";
        let read = |sql: String| {
            let pool = pool.clone();
            async move {
                let row = sqlx::query(&sql).fetch_one(&pool).await.unwrap();
                TaskArrays::of(&row).map(|tasks| {
                    (0..tasks.len())
                        .map(|i| tasks.task(i, Instant::now(), Duration::from_secs(60)))
                        .collect::<Result<Vec<_>, _>>()
                })
            }
        };
        let good = read(format!(
            "SELECT ARRAY[7::bigint] AS id, {columns}, ARRAY[now()] AS scheduled_at"
        ))
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            (good[0].id, good[0].tenant.as_str(), good[0].state.clone()),
            (7, "acme", None)
        );
        let wrong = read(format!(
            "SELECT ARRAY[7::integer] AS id, {columns}, ARRAY[now()] AS scheduled_at"
        ))
        .await
        .expect_err("an id of another type is refused")
        .to_string();
        assert!(
            wrong.contains("\"id\"") && wrong.contains("Int8"),
            "{wrong}"
        );
        let missing = read(format!("SELECT ARRAY[7::bigint] AS id, {columns}"))
            .await
            .expect_err("a claim without its tasks' due times is refused")
            .to_string();
        assert!(missing.contains("scheduled_at"), "{missing}");
        let short = read(format!(
            "SELECT ARRAY[7::bigint, 8] AS id, {columns}, ARRAY[now(), now()] AS scheduled_at"
        ))
        .await
        .expect_err("columns of different lengths are refused")
        .to_string();
        assert!(
            short.contains("\"tenant\"") && short.contains("holds 1 where"),
            "{short}"
        );
    }
}
