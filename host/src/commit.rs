//! Writes outcomes back in bulk: one statement per flush carries every finished task's
//! update (fenced by its lease token) and every task they spawned. Outcomes of timed
//! leases flush together, whatever their batch; whatever arrives while a commit is in
//! flight forms the next one, so the batch grows with the load and a lone task is never
//! held back waiting. Outcomes of a locked claim wait for the rest of their batch and are
//! written in the claim's own transaction, which then commits and releases the locks.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use sqlx::{PgExecutor, PgPool, Row};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::execute::Finished;
use crate::lease;
use crate::outcome::{self, Write};
use crate::sandbox::now_ms;
use crate::stats::Stats;
use crate::task::LeasedTask;

const COMMIT_SQL: &str = include_str!("sql/commit.sql");
/// How commit.sql finds a task's row, and how it finds a locked claim's rows instead:
/// where the claim saw them (see the statement).
const BY_ID: &str = "WHERE t.id = o.id\n";
const BY_ROW: &str = "WHERE t.ctid = o.row_at AND t.id = o.id\n";
/// commit.sql for outcomes that all know where their row lies: a locked claim's.
/// Measured, this took 5–7% off the database's CPU per execution (BENCHMARKS.md,
/// nineteenth measurement).
static COMMIT_BY_ROW_SQL: LazyLock<String> =
    LazyLock::new(|| COMMIT_SQL.replacen(BY_ID, BY_ROW, 1));
const KEEP_LOST_RUNS_SQL: &str = include_str!("sql/keep_lost_runs.sql");

/// What one commit statement changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// Outcomes applied (their lease token still matched).
    pub committed: u64,
    /// New tasks created by spawns; spawns of existing keys are not counted.
    pub spawned: u64,
}

/// Writes `writes` in one statement. A row whose task no longer holds the lease token it
/// ran under (or, for a locked claim, is no longer the version claimed) is skipped, and
/// so are its spawns. `claim` is the key of the locked claim the writes belong to: its
/// `claims` row is deleted by the same statement. `salvage` skips rows other
/// transactions hold locked (see commit.sql).
pub async fn commit<'e>(
    db: impl PgExecutor<'e>,
    writes: &[Write],
    claim: Option<i64>,
    salvage: bool,
) -> Result<Committed, sqlx::Error> {
    let n = writes.len();
    let mut ids = Vec::with_capacity(n);
    let mut tokens: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut versions: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut row_ats = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut at_ms = Vec::with_capacity(n);
    let mut delay_ms = Vec::with_capacity(n);
    let mut set_state = Vec::with_capacity(n);
    let mut states: Vec<Option<&[u8]>> = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut runs_inc = Vec::with_capacity(n);
    let mut errors: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut parents = Vec::new();
    let mut types: Vec<&str> = Vec::new();
    let mut keys: Vec<&str> = Vec::new();
    let mut payloads: Vec<&[u8]> = Vec::new();
    let mut spawn_at: Vec<Option<i64>> = Vec::new();
    let mut spawn_delay: Vec<Option<i64>> = Vec::new();
    for write in writes {
        let row = &write.row;
        ids.push(row.id);
        tokens.push(row.token);
        versions.push(row.version);
        row_ats.push(row.row_at);
        statuses.push(row.status as i16);
        at_ms.push(row.at_ms);
        delay_ms.push(row.delay_ms);
        set_state.push(row.state.is_some());
        states.push(row.state.as_deref());
        attempts.push(row.attempt);
        runs_inc.push(row.runs_inc);
        errors.push(row.error.as_deref());
        for spawn in &write.spawns {
            parents.push(spawn.parent);
            types.push(spawn.task_type.as_str());
            keys.push(spawn.key.as_str());
            payloads.push(spawn.payload.as_slice());
            spawn_at.push(spawn.at_ms);
            spawn_delay.push(spawn.delay_ms);
        }
    }
    let sql = if row_ats.iter().all(Option::is_some) {
        COMMIT_BY_ROW_SQL.as_str()
    } else {
        COMMIT_SQL
    };
    let row = sqlx::query(sql)
        .bind(ids)
        .bind(tokens)
        .bind(statuses)
        .bind(at_ms)
        .bind(delay_ms)
        .bind(set_state)
        .bind(states)
        .bind(attempts)
        .bind(runs_inc)
        .bind(errors)
        .bind(parents)
        .bind(types)
        .bind(keys)
        .bind(payloads)
        .bind(spawn_at)
        .bind(spawn_delay)
        .bind(versions)
        .bind(claim)
        .bind(salvage)
        .bind(row_ats)
        .fetch_one(db)
        .await?;
    Ok(Committed {
        committed: row.try_get::<i64, _>("committed")? as u64,
        spawned: row.try_get::<i64, _>("spawned")? as u64,
    })
}

/// The commit stage: drains finished tasks, writes them, and frees their slots.
pub struct Committer {
    /// The pool commits run on.
    pub pool: PgPool,
    /// Finished tasks from the execute stage, a few at a time; the loop ends when every
    /// sender is gone.
    pub finished: mpsc::UnboundedReceiver<Vec<Finished>>,
    /// Most outcomes in one statement.
    pub max_rows: usize,
    /// How long to keep retrying a failed write: after the lease timeout the tasks are
    /// someone else's, and the fenced write would change nothing anyway.
    pub give_up_after: Duration,
    /// Freed once a task's outcome is written or the task is given back.
    pub slots: Arc<Semaphore>,
    /// Shared counters.
    pub stats: Arc<Stats>,
}

/// A locked claim's outcomes, gathered until every task of the batch has finished.
struct LockedBatch {
    lock: Arc<lease::BatchLock>,
    writes: Vec<Write>,
    /// Tasks given back unrun that carry dead hosts' tries: (id, tries).
    lost_runs: Vec<(i64, i32)>,
    finished: usize,
    /// When its last task arrived.
    completed: Option<Instant>,
}

impl Committer {
    /// Commits until the execute stage closes its side and everything sent is written.
    ///
    /// Locked batches commit on tasks of their own, side by side and beside the timed
    /// writes: each is its own transaction on rows only it holds, so none waits for
    /// another, and one at a time made the commit round trip the cap on throughput
    /// (BENCHMARKS.md). The lease stage's slots bound how many there are. Timed outcomes
    /// are written by one task at a time, and what arrives meanwhile forms the next
    /// write; that task is apart from this loop too, because a timed write that retries
    /// (a cut connection, a full pool) may take up to the lease timeout, and a locked
    /// batch held up behind it that long would lose its claim and be run again.
    pub async fn run(mut self) {
        let writer = Arc::new(Writer {
            pool: self.pool.clone(),
            give_up_after: self.give_up_after,
            stats: self.stats.clone(),
        });
        let mut writes = Vec::with_capacity(self.max_rows);
        let mut unrun = Vec::new();
        let mut locked: HashMap<u64, LockedBatch> = HashMap::new();
        let mut complete = Vec::new();
        let mut committing = JoinSet::new();
        // Holds at most one task: the timed write in flight.
        let mut timed = JoinSet::new();
        let mut open = true;
        loop {
            tokio::select! {
                received = self.finished.recv(), if open => match received {
                    Some(first) => {
                        // One reading of the clock for what arrived together: it only
                        // bounds how far off an outcome's times may be (an hour, years).
                        let now = now_ms();
                        for finished in first {
                            self.sort(finished, now, &mut writes, &mut unrun, &mut locked, &mut complete);
                        }
                        while let Ok(next) = self.finished.try_recv() {
                            for finished in next {
                                self.sort(finished, now, &mut writes, &mut unrun, &mut locked, &mut complete);
                            }
                        }
                    }
                    None => open = false,
                },
                Some(_) = timed.join_next(), if !timed.is_empty() => {}
                Some(_) = committing.join_next(), if !committing.is_empty() => {}
                else => {}
            }
            for batch in complete.drain(..) {
                let (writer, slots) = (writer.clone(), self.slots.clone());
                committing.spawn(async move {
                    let size = batch.lock.size;
                    writer.write_locked(batch).await;
                    slots.add_permits(size);
                });
            }
            if timed.is_empty() && !(writes.is_empty() && unrun.is_empty()) {
                let (writes, unrun) = (std::mem::take(&mut writes), std::mem::take(&mut unrun));
                let (writer, slots, max_rows) = (writer.clone(), self.slots.clone(), self.max_rows);
                timed.spawn(async move {
                    for chunk in writes.chunks(max_rows) {
                        writer.write(chunk).await;
                        slots.add_permits(chunk.len());
                    }
                    writer.give_back(&unrun).await;
                    slots.add_permits(unrun.len());
                });
            }
            if !open && timed.is_empty() && writes.is_empty() && unrun.is_empty() {
                break;
            }
        }
        while committing.join_next().await.is_some() {}
    }

    /// Turns a finished task into its write: into `writes` (or `unrun`, to give back)
    /// for a timed lease, into its batch for a locked claim, which moves to `complete`
    /// when its last task arrives. `now_ms` is the host's clock, for the outcome's checks.
    fn sort(
        &self,
        finished: Finished,
        now_ms: i64,
        writes: &mut Vec<Write>,
        unrun: &mut Vec<LeasedTask>,
        locked: &mut HashMap<u64, LockedBatch>,
        complete: &mut Vec<LockedBatch>,
    ) {
        let (task, write) = match finished {
            Finished::Ran {
                task,
                result,
                max_attempts,
            } => {
                let write = outcome::decide(&task, result, max_attempts, now_ms);
                (task, Some(write))
            }
            Finished::NoModule(task, error) => {
                let write = outcome::no_module(&task, error);
                (task, Some(write))
            }
            Finished::Lost { task, max_attempts } => {
                let write = outcome::lost(&task, max_attempts);
                (task, Some(write))
            }
            // A locked task that never ran needs no write: the commit of its batch
            // releases its lock and leaves it due, as it was, with any tries of dead
            // hosts its claim took over added (see `write_locked`).
            Finished::NotRun(task) => (task, None),
        };
        if let Some(write) = &write {
            self.stats.decided(write.kind);
        }
        let Some(lock) = task.lock.clone() else {
            match write {
                Some(write) => writes.push(write),
                None => unrun.push(task),
            }
            return;
        };
        let batch = locked.entry(lock.id).or_insert_with(|| LockedBatch {
            lock: lock.clone(),
            writes: Vec::new(),
            lost_runs: Vec::new(),
            finished: 0,
            completed: None,
        });
        if write.is_none() && task.lost_runs > 0 {
            batch.lost_runs.push((task.id, task.lost_runs));
        }
        batch.writes.extend(write);
        batch.finished += 1;
        if batch.finished == lock.size
            && let Some(mut batch) = locked.remove(&lock.id)
        {
            batch.completed = Some(Instant::now());
            complete.push(batch);
        }
    }
}

/// What the commit stage's writes need, shared with the tasks that commit locked
/// batches.
struct Writer {
    pool: PgPool,
    give_up_after: Duration,
    stats: Arc<Stats>,
}

impl Writer {
    /// Writes a locked batch in its own transaction and commits it, which also deletes
    /// the claim's `claims` row and releases the locks. If that fails (the connection
    /// was cut, the database restarted), the locks are gone and the tasks are due again;
    /// the outcomes are then written through the pool instead, fenced by the row
    /// versions the claim saw, so that every run no other host has taken over since
    /// still counts. (The lost tries of tasks given back need nothing then: the
    /// rollback put back the dead batches' claims rows that hold them.)
    async fn write_locked(&self, batch: LockedBatch) {
        let Some(mut tx) = batch.lock.take().await else {
            return;
        };
        let started = Instant::now();
        // Runs end a quarter of the lease before the session does (`LeasedTask::run_by`),
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
        let result = async {
            if !batch.lost_runs.is_empty() {
                let (ids, tries): (Vec<i64>, Vec<i32>) = batch.lost_runs.iter().copied().unzip();
                sqlx::query(KEEP_LOST_RUNS_SQL)
                    .bind(ids)
                    .bind(tries)
                    .execute(&mut *tx)
                    .await?;
            }
            let done = commit(&mut *tx, &batch.writes, key, false).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done)
        }
        .await;
        match result {
            Ok(done) => self.stats.commit_done(
                batch.writes.len(),
                done.committed,
                done.spawned,
                started.elapsed(),
            ),
            Err(err) => {
                tracing::warn!(error = %err, outcomes = batch.writes.len(),
                    "committing a locked batch failed; writing its outcomes where no other host has run them since");
                self.write_fenced(&batch.writes, key).await;
            }
        }
    }

    async fn write(&self, writes: &[Write]) {
        if !writes.is_empty() {
            self.write_fenced(writes, None).await;
        }
    }

    /// Writes through the pool, retrying with backoff until the leases would have run
    /// out (after that the fences would skip every row anyway).
    async fn write_fenced(&self, writes: &[Write], claim: Option<i64>) {
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
                    return;
                }
                Err(err) if first_try.elapsed() + backoff < self.give_up_after => {
                    tracing::warn!(error = %err, outcomes = writes.len(), retry_in = ?backoff, "commit failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(err) => {
                    tracing::error!(error = %err, outcomes = writes.len(),
                        "commit failed until the leases ran out; these tasks will run again on any host");
                    return;
                }
            }
        }
    }

    async fn give_back(&self, tasks: &[LeasedTask]) {
        if tasks.is_empty() {
            return;
        }
        match lease::give_back(&self.pool, tasks).await {
            Ok(n) => self.stats.given_back(n),
            Err(err) => tracing::warn!(error = %err, tasks = tasks.len(),
                "could not give tasks back; they run again when their lease runs out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_claims_commit_finds_its_rows_where_they_lie_and_only_there() {
        assert_eq!(COMMIT_SQL.matches(BY_ID).count(), 1);
        assert_eq!(COMMIT_BY_ROW_SQL.matches(BY_ROW).count(), 1);
        assert_eq!(COMMIT_BY_ROW_SQL.replacen(BY_ROW, BY_ID, 1), COMMIT_SQL);
    }
}
