//! The commit stage: writes outcomes back in bulk. One statement per flush carries
//! every finished task's commit row (fenced, see `Fence`) and every task they spawned
//! (`statement.rs`); `rows.rs` decides each row from what the run returned, and
//! `writer.rs` writes them, once `budget.rs` has drawn their spawns from the budgets of
//! tenants with a quota on spawns per minute or on scheduled tasks. Outcomes of timed
//! leases flush together, whatever their batch; whatever arrives while a commit is in
//! flight forms the next one, so the batch grows with the load and a lone task is never
//! held back waiting. Outcomes of a locked claim wait for the rest of their batch and are
//! written in the claim's own transaction, which then commits and releases the locks.

mod budget;
mod gathered;
mod limits;
mod rows;
mod statement;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

// The engine's tests write outcomes the way the commit stage does, one step at a time.
#[cfg(test)]
pub(crate) use rows::decide;
#[cfg(test)]
pub(crate) use statement::commit;
pub(crate) use writer::Writer;

use crate::execute::Finished;
use crate::sandbox::now_ms;
use crate::stats::Stats;
use gathered::{Gathered, LockedBatch};

/// The commit stage: drains finished tasks, writes them, and frees their in-flight
/// permits.
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
    /// The host's in-flight permits: one freed once a task's outcome is written or the
    /// task is given back.
    pub in_flight: Arc<Semaphore>,
    /// Shared counters.
    pub stats: Arc<Stats>,
}

impl Committer {
    /// Commits until the execute stage closes its side and everything sent is written.
    ///
    /// Locked batches commit on tasks of their own, side by side and beside the timed
    /// writes: each is its own transaction on rows only it holds, so none waits for
    /// another, and one at a time would make the commit round trip the cap on
    /// throughput. The in-flight limit bounds how many there are. Timed outcomes are
    /// written by one task at a time, and what arrives meanwhile forms the next write;
    /// that task is apart from this loop too, because a timed write that retries (a cut
    /// connection, a full pool) may take up to the lease timeout, and a locked batch held
    /// up behind it that long would lose its claim and be run again.
    pub async fn run(mut self) {
        let writer = Arc::new(Writer {
            pool: self.pool.clone(),
            give_up_after: self.give_up_after,
            stats: self.stats.clone(),
        });
        let mut gathered = Gathered::new(self.max_rows);
        let mut committing = JoinSet::new();
        // Holds at most one task: the timed write in flight.
        let mut timed = JoinSet::new();
        let mut open = true;
        loop {
            tokio::select! {
                received = self.finished.recv(), if open => match received {
                    Some(first) => self.gather(first, &mut gathered),
                    None => open = false,
                },
                Some(_) = timed.join_next(), if !timed.is_empty() => {}
                Some(_) = committing.join_next(), if !committing.is_empty() => {}
                else => {}
            }
            for batch in gathered.complete.drain(..) {
                committing.spawn(self.write_locked(&writer, batch));
            }
            if timed.is_empty() && gathered.has_timed() {
                timed.spawn(self.write_timed(&writer, &mut gathered));
            }
            if !open && timed.is_empty() && !gathered.has_timed() {
                break;
            }
        }
        while committing.join_next().await.is_some() {}
    }

    /// Sorts `first` and whatever else has arrived into `gathered`.
    fn gather(&mut self, first: Vec<Finished>, gathered: &mut Gathered) {
        // One reading of the clock for what arrived together: it only bounds how far off
        // an outcome's times may be (an hour, years).
        let now = now_ms();
        for finished in first {
            gathered.add(finished, now, &self.stats);
        }
        while let Ok(next) = self.finished.try_recv() {
            for finished in next {
                gathered.add(finished, now, &self.stats);
            }
        }
    }

    /// Writes a complete locked batch, then frees its tasks' in-flight permits.
    fn write_locked(
        &self,
        writer: &Arc<Writer>,
        batch: LockedBatch,
    ) -> impl Future<Output = ()> + use<> {
        let (writer, in_flight) = (writer.clone(), self.in_flight.clone());
        async move {
            let size = batch.lock.size;
            writer.write_locked(batch).await;
            in_flight.add_permits(size);
        }
    }

    /// Writes what timed leases gathered, and gives back their tasks that did not run,
    /// freeing the in-flight permits as it goes.
    fn write_timed(
        &self,
        writer: &Arc<Writer>,
        gathered: &mut Gathered,
    ) -> impl Future<Output = ()> + use<> {
        let (writes, unrun) = gathered.take_timed();
        let (writer, in_flight, max_rows) = (writer.clone(), self.in_flight.clone(), self.max_rows);
        async move {
            for chunk in writes.chunks(max_rows) {
                writer.write(chunk).await;
                in_flight.add_permits(chunk.len());
            }
            writer.give_back(&unrun).await;
            in_flight.add_permits(unrun.len());
        }
    }
}
