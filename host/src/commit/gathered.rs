//! What the commit stage has gathered and not yet written: commit rows of timed leases,
//! tasks to give back, and locked claims' outcomes held until their batch is complete.
//! No I/O here: the stage's loop (mod.rs) writes what this hands it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::rows::{self, Write};
use crate::execute::Finished;
use crate::stats::Stats;
use crate::task::{BatchLock, ClaimedTask};

/// A locked claim's outcomes, gathered until every task of the batch has finished.
pub(super) struct LockedBatch {
    pub lock: Arc<BatchLock>,
    pub writes: Vec<Write>,
    /// Tasks given back unrun that carry dead hosts' tries: (id, tries).
    pub lost_runs: Vec<(i64, i32)>,
    finished: usize,
    /// When its last task arrived.
    pub completed: Option<Instant>,
}

/// What has arrived and is not written yet.
pub(super) struct Gathered {
    /// Commit rows of timed leases.
    writes: Vec<Write>,
    /// Tasks of timed leases that did not run, to give back.
    unrun: Vec<ClaimedTask>,
    /// Locked batches some of whose tasks are still running, by batch id.
    locked: HashMap<u64, LockedBatch>,
    /// Locked batches whose every task has finished, ready to commit.
    pub complete: Vec<LockedBatch>,
}

impl Gathered {
    /// Nothing gathered yet, with room for `rows` commit rows.
    pub fn new(rows: usize) -> Self {
        Gathered {
            writes: Vec::with_capacity(rows),
            unrun: Vec::new(),
            locked: HashMap::new(),
            complete: Vec::new(),
        }
    }

    /// Whether timed leases left anything to write or give back.
    pub fn has_timed(&self) -> bool {
        !(self.writes.is_empty() && self.unrun.is_empty())
    }

    /// The commit rows and unrun tasks of timed leases, leaving none.
    pub fn take_timed(&mut self) -> (Vec<Write>, Vec<ClaimedTask>) {
        (
            std::mem::take(&mut self.writes),
            std::mem::take(&mut self.unrun),
        )
    }

    /// Turns a finished task into its commit row, counted in `stats`: among the timed
    /// writes (or the tasks to give back), or into its locked batch, which moves to
    /// `complete` when its last task arrives. `now_ms` is the host's clock, for the
    /// outcome's checks.
    pub fn add(&mut self, finished: Finished, now_ms: i64, stats: &Stats) {
        let (task, write) = commit_row(finished, now_ms);
        if let Some(write) = &write {
            stats.decided(write.kind);
        }
        let Some(lock) = task.lock.clone() else {
            match write {
                Some(write) => self.writes.push(write),
                None => self.unrun.push(task),
            }
            return;
        };
        let batch = self.locked.entry(lock.id).or_insert_with(|| LockedBatch {
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
            && let Some(mut batch) = self.locked.remove(&lock.id)
        {
            batch.completed = Some(Instant::now());
            self.complete.push(batch);
        }
    }
}

/// The task and its commit row, or `None` for a task that never ran. A locked task that
/// never ran needs no row: the commit of its batch releases its lock and leaves it due,
/// as it was, with any tries of dead hosts its claim took over added (see
/// `Writer::write_locked`).
fn commit_row(finished: Finished, now_ms: i64) -> (ClaimedTask, Option<Write>) {
    match finished {
        Finished::Ran {
            task,
            result,
            max_attempts,
            quotas,
        } => {
            let write = rows::decide(&task, result, max_attempts, &quotas, now_ms);
            (task, Some(write))
        }
        Finished::NoModule(task, error) => {
            let write = rows::no_module(&task, error);
            (task, Some(write))
        }
        Finished::Lost { task, max_attempts } => {
            let write = rows::lost(&task, max_attempts);
            (task, Some(write))
        }
        Finished::NotRun(task) => (task, None),
    }
}
