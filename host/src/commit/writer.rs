//! The commit stage's writes: a locked batch in its own transaction, outcomes of timed
//! leases through the pool with retries, and tasks handed back unrun.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::budget;
use super::gathered::LockedBatch;
use super::rows::{self, Write};
use super::statement::commit;
use crate::claim;
use crate::stats::Stats;
use crate::task::ClaimedTask;

const KEEP_LOST_RUNS_SQL: &str = include_str!("../sql/keep_lost_runs.sql");

/// What the commit stage's writes need, shared with the tasks that commit locked
/// batches.
pub(crate) struct Writer {
    /// The pool writes run on when not in a claim's transaction.
    pub pool: PgPool,
    /// How long to keep retrying a failed write (the lease timeout).
    pub give_up_after: Duration,
    pub stats: Arc<Stats>,
}

impl Writer {
    /// Writes a locked batch in its own transaction and commits it, which also deletes
    /// the claim's `claims` row and releases the locks. If that fails (the connection
    /// was cut, the database restarted), the locks are gone and the tasks are due again;
    /// the outcomes are then written through the pool instead, fenced by the row
    /// versions the claim saw, so that every run no other host has taken over since
    /// still counts. (The lost tries of tasks given back need nothing then: the
    /// rollback put back the dead batches' claims rows that hold them.)
    pub(super) async fn write_locked(&self, batch: LockedBatch) {
        let Some(mut tx) = batch.lock.take().await else {
            return;
        };
        let started = Instant::now();
        // Runs end a quarter of the lease before the session does (`ClaimedTask::run_by`),
        // so a commit that starts this late was held up between the last run and here:
        // say where, since its runs will be repeated if it misses the deadline.
        let left = batch.lock.deadline.saturating_duration_since(started);
        if left < self.give_up_after / 8 {
            tracing::warn!(
                tasks = batch.lock.size,
                left_ms = left.as_millis() as u64,
                waited_since_complete_ms = batch.completed.map(|c| c.elapsed().as_millis() as u64),
                "a locked batch starts its commit close to the end of its claim"
            );
        }
        let key = Some(batch.lock.key);
        let rationed = budget::ration(&self.pool, &batch.writes).await;
        let writes = rationed.as_deref().unwrap_or(&batch.writes);
        let result = async {
            if !batch.lost_runs.is_empty() {
                let (ids, tries): (Vec<i64>, Vec<i32>) = batch.lost_runs.iter().copied().unzip();
                sqlx::query(KEEP_LOST_RUNS_SQL)
                    .bind(ids)
                    .bind(tries)
                    .execute(&mut *tx)
                    .await?;
            }
            let done = commit(&mut *tx, writes, key, false).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done)
        }
        .await;
        match result {
            Ok(done) => self.stats.commit_done(
                writes.len(),
                done.committed,
                done.spawned,
                started.elapsed(),
            ),
            Err(err) => {
                tracing::warn!(error = %err, outcomes = writes.len(),
                    "committing a locked batch failed; writing its outcomes where no other host has run them since");
                self.write_fenced(writes, key).await;
            }
        }
    }

    pub async fn write(&self, writes: &[Write]) {
        if !writes.is_empty() {
            let rationed = budget::ration(&self.pool, writes).await;
            self.write_fenced(rationed.as_deref().unwrap_or(writes), None)
                .await;
        }
    }

    /// Writes through the pool. A statement PostgreSQL refuses for what an outcome holds
    /// is split in halves until the outcome it refuses stands alone, so that every other
    /// outcome is written at once; that one is replaced by the task's failure.
    async fn write_fenced(&self, writes: &[Write], claim: Option<i64>) {
        let mut parts = vec![writes];
        while let Some(part) = parts.pop() {
            let Err(refused) = self.write_retrying(part, claim).await else {
                continue;
            };
            if part.len() > 1 {
                let (first, second) = part.split_at(part.len() / 2);
                parts.extend([second, first]);
                continue;
            }
            tracing::warn!(task = part[0].row.id, error = %refused,
                "the database refused a task's outcome; parking the task as failed");
            let failed = [rows::refused(&part[0], &refused)];
            if let Err(err) = self.write_retrying(&failed, claim).await {
                tracing::error!(task = part[0].row.id, error = %err,
                    "the database refused a task's failure too; it runs again when its claim runs out");
            }
        }
    }

    /// Writes `writes` in one statement, retrying with backoff until the leases would
    /// have run out (after that the fences would skip every row anyway). An error that
    /// says what the statement carries is wrong is returned at once: writing the same
    /// again cannot succeed.
    async fn write_retrying(
        &self,
        writes: &[Write],
        claim: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        let first_try = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            match commit(&self.pool, writes, claim, claim.is_some()).await {
                Ok(done) => {
                    self.stats.commit_done(
                        writes.len(),
                        done.committed,
                        done.spawned,
                        started.elapsed(),
                    );
                    return Ok(());
                }
                Err(err) if refused_for_its_data(&err) => return Err(err),
                Err(err) if first_try.elapsed() + backoff < self.give_up_after => {
                    tracing::warn!(error = %err, outcomes = writes.len(), retry_in = ?backoff, "commit failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(err) => {
                    tracing::error!(error = %err, outcomes = writes.len(),
                        "commit failed until the leases ran out; these tasks will run again on any host");
                    return Ok(());
                }
            }
        }
    }

    pub async fn give_back(&self, tasks: &[ClaimedTask]) {
        if tasks.is_empty() {
            return;
        }
        match claim::give_back(&self.pool, tasks).await {
            Ok(n) => self.stats.given_back(n),
            Err(err) => tracing::warn!(error = %err, tasks = tasks.len(),
                "could not give tasks back; they run again when their lease runs out"),
        }
    }
}

/// Whether PostgreSQL refused a statement for the values it carries (SQLSTATE class 22,
/// data exception, such as a NUL byte in text; or 54, a program limit such as a value
/// too large), or the values could not be encoded at all: the same statement fails the
/// same way on every try.
fn refused_for_its_data(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("54")),
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}
