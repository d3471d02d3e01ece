//! Writes outcomes back in bulk: one statement per flush carries every finished task's
//! update (fenced by its lease token) and every task they spawned. Outcomes from several
//! leases flush together; whatever arrives while a commit is in flight forms the next
//! one, so the batch grows with the load and a lone task is never held back waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{PgPool, Row};
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

use crate::execute::Finished;
use crate::lease;
use crate::outcome::{self, Write};
use crate::sandbox::now_ms;
use crate::stats::Stats;
use crate::task::LeasedTask;

const COMMIT_SQL: &str = include_str!("sql/commit.sql");

/// What one commit statement changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// Outcomes applied (their lease token still matched).
    pub committed: u64,
    /// New tasks created by spawns; spawns of existing keys are not counted.
    pub spawned: u64,
}

/// Writes `writes` in one statement. A row whose task no longer holds the lease token it
/// ran under is skipped, and so are its spawns.
pub async fn commit(pool: &PgPool, writes: &[Write]) -> Result<Committed, sqlx::Error> {
    let n = writes.len();
    let mut ids = Vec::with_capacity(n);
    let mut tokens: Vec<Uuid> = Vec::with_capacity(n);
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
    let row = sqlx::query(COMMIT_SQL)
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
        .fetch_one(pool)
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
    /// Finished tasks from the execute stage; the loop ends when every sender is gone.
    pub finished: mpsc::UnboundedReceiver<Finished>,
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

impl Committer {
    /// Commits until the execute stage closes its side and everything sent is written.
    pub async fn run(mut self) {
        let mut writes = Vec::with_capacity(self.max_rows);
        let mut unrun = Vec::new();
        while let Some(first) = self.finished.recv().await {
            self.sort(first, &mut writes, &mut unrun);
            while writes.len() + unrun.len() < self.max_rows {
                match self.finished.try_recv() {
                    Ok(next) => self.sort(next, &mut writes, &mut unrun),
                    Err(_) => break,
                }
            }
            let freed = writes.len() + unrun.len();
            self.write(&writes).await;
            self.give_back(&unrun).await;
            writes.clear();
            unrun.clear();
            self.slots.add_permits(freed);
        }
    }

    /// Turns a finished task into its write, or sets it aside to give back.
    fn sort(&self, finished: Finished, writes: &mut Vec<Write>, unrun: &mut Vec<LeasedTask>) {
        let write = match finished {
            Finished::Ran {
                task,
                result,
                max_attempts,
            } => outcome::decide(&task, result, max_attempts, now_ms()),
            Finished::NoModule(task, error) => outcome::no_module(&task, error),
            Finished::NotRun(task) => return unrun.push(task),
        };
        self.stats.decided(write.kind);
        writes.push(write);
    }

    async fn write(&self, writes: &[Write]) {
        if writes.is_empty() {
            return;
        }
        let first_try = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            match commit(&self.pool, writes).await {
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
