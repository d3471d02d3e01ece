//! A bulk enqueue spread over several connections.
//!
//! One backend does all of a connection's work on the server, so a bulk enqueue over one
//! connection keeps one of the database's cores busy and leaves the others idle. A
//! [`BulkLoad`] over N connections gives each the tasks whose key hashes to it, which it
//! sends as one connection would ([`insert_rows`]), in a transaction of its own; the
//! transactions commit together once every task was sent. Because a key always goes to
//! the same connection, a key repeated in the input meets itself in one transaction,
//! where the first stays as it would over one connection, and the load's transactions
//! never wait on each other's keys (two that did, in opposite orders, would deadlock).
//!
//! They may still wait on other transactions' keys, and those on theirs: another load's,
//! or a host's commit spawning the same keys. Say load A's first connection waits for a
//! key that load B's first wrote; B cannot commit before its second is done, which
//! waits for a key that A's second wrote; A cannot commit before its first is done.
//! Were a finished connection to wait for its siblings in the client, PostgreSQL would
//! not see half of that cycle, and both loads would wait for ever. So the siblings wait
//! for each other where PostgreSQL sees it: each holds an advisory lock until it has
//! sent its share, then waits to share each sibling's. PostgreSQL then finds such a
//! cycle and fails one of its transactions with a deadlock.
//!
//! A connection that fails rolls its whole transaction back at once, so nothing keeps
//! waiting on its keys while its siblings finish. Rolling back to the share's savepoint
//! would not do: its keys were written in savepoints it had released (one per batch,
//! see copy.rs), and PostgreSQL ends a released savepoint's own lock, so a writer of the
//! same key waits for the top-level transaction instead, which a rollback to a savepoint
//! does not end. Were the failed connection the one a deadlock check chose, that writer
//! would wait for the whole load, the load for a sibling, and the sibling for that
//! writer, in a cycle PostgreSQL cannot see (the load's wait is in the client).
//!
//! All or nothing, as over one connection, but for one case: the database failing
//! between the commits. Then the shares committed before it stay, and loading the same
//! input again adds the rest (their keys absorb the tasks already in).

use std::hash::{DefaultHasher, Hash, Hasher};

use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::mpsc;

use super::copy::{PIECE_BYTES, RowFormat, Rows, insert_rows};
use super::{EnqueueError, NewTask};

/// Most connections one bulk enqueue may use. Past the database's cores more only
/// contend; this bounds what a typo can ask of a server.
pub const MAX_CONNECTIONS: usize = 16;

/// The transactions of a bulk enqueue, one per connection.
pub struct BulkLoad {
    txs: Vec<Transaction<'static, Postgres>>,
    format: RowFormat,
    /// Whether row-level security applies to the role connected: a tenant's role
    /// (migrations/0011), which may not COPY FROM (PostgreSQL does not support it there)
    /// nor insert rows itself (migrations/0015), so every batch goes through the
    /// database's enqueue door, on one connection.
    secured: bool,
}

/// Whether row-level security applies to the role connected on the tables a load writes.
const ROW_SECURITY_SQL: &str =
    "SELECT row_security_active('tasks') OR row_security_active('task_keys')";

impl BulkLoad {
    /// Begins a transaction on each of `connections` connections from `pool`, which must
    /// allow that many; on one only for a tenant's role, whose door counts its tenant's
    /// task quota under a lock each of several transactions would wait on for the others.
    pub async fn begin(pool: &PgPool, connections: usize) -> Result<BulkLoad, EnqueueError> {
        check_connections(pool, connections)?;
        let mut first = pool.begin().await?;
        // Tasks without a first run are due at the first transaction's now(), which
        // the others' differ from by the few milliseconds their begins took.
        let format = RowFormat::of(&mut first).await?;
        let secured: bool = sqlx::query_scalar(ROW_SECURITY_SQL)
            .fetch_one(&mut *first)
            .await?;
        let mut txs = vec![first];
        while !secured && txs.len() < connections {
            txs.push(pool.begin().await?);
        }
        Ok(BulkLoad {
            txs,
            format,
            secured,
        })
    }

    /// Refuses tenants that do not exist ([`crate::tenants::require`]), in the first
    /// connection's transaction: before the tasks go in, or after, but before
    /// [`BulkLoad::commit`].
    pub async fn require_tenants(&mut self, names: &[&str]) -> Result<(), EnqueueError> {
        crate::tenants::require(&mut self.txs[0], names).await?;
        Ok(())
    }

    /// The first connection, for checks made in its transaction.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.txs[0]
    }

    /// A writer that shares tasks out among the connections, and the pieces of rows
    /// each connection receives, for [`BulkLoad::insert`]. `pieces_in_flight` per
    /// connection may wait between the two.
    pub fn writer(&self, pieces_in_flight: usize) -> (ShardWriter, Vec<mpsc::Receiver<Rows>>) {
        let (senders, receivers) = (0..self.txs.len())
            .map(|_| mpsc::channel(pieces_in_flight))
            .unzip();
        let writer = ShardWriter {
            format: self.format.clone(),
            rows: (0..self.txs.len()).map(|_| Rows::default()).collect(),
            pieces: senders,
        };
        (writer, receivers)
    }

    /// Sends what each connection receives from its source in `sources` (from
    /// [`BulkLoad::writer`]) until the sources close; returns how many tasks were new.
    /// The connections send at once, each on a task of its own. After an error the
    /// load can only be rolled back, which dropping it does (a connection that failed
    /// has rolled its own transaction back already).
    pub async fn insert(
        &mut self,
        sources: Vec<mpsc::Receiver<Rows>>,
    ) -> Result<u64, EnqueueError> {
        // Every share's lock is held before any starts, so none can finish before a
        // sibling has begun and find nothing to wait for.
        let mut shares = Vec::with_capacity(self.txs.len());
        for tx in &mut self.txs {
            match sqlx::query_scalar(LOCK_SHARE_SQL)
                .bind(SHARE_LOCK_CLASS)
                .fetch_one(&mut **tx)
                .await
            {
                Ok(share) => shares.push(share),
                Err(e) => {
                    // The locks taken so far would stay on their pooled connections.
                    for tx in &mut self.txs[..shares.len()] {
                        sqlx::query(UNLOCK_ALL_SQL).execute(&mut **tx).await.ok();
                    }
                    return Err(e.into());
                }
            }
        }
        let secured = self.secured;
        let running: Vec<_> = self
            .txs
            .drain(..)
            .zip(sources)
            .zip(&shares)
            .map(|((mut tx, source), &own)| {
                let siblings: Vec<i32> = shares.iter().copied().filter(|&s| s != own).collect();
                tokio::spawn(async move {
                    match send_share(&mut tx, source, &siblings, secured).await {
                        Ok(sent) => (Some(tx), Ok(sent)),
                        // The whole transaction goes at once, not only the share's
                        // savepoint: see "A connection that fails" at the top.
                        Err(e) => {
                            tx.rollback().await.ok();
                            (None, Err(e))
                        }
                    }
                })
            })
            .collect();
        // Every connection is waited for, so none is cut off in the middle of a COPY:
        // one that fails drops its source, the writer stops at its next piece for it,
        // and the others' sources close.
        let mut new = 0;
        let mut failed = None;
        for handle in running {
            let (tx, sent) = match handle.await {
                Ok(done) => done,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            self.txs.extend(tx);
            match sent {
                Ok(sent) => new += sent,
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(new),
        }
    }

    /// Commits every connection's transaction, one after the other.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        for tx in self.txs {
            tx.commit().await?;
        }
        Ok(())
    }

    /// Rolls every connection's transaction back.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        for tx in self.txs {
            tx.rollback().await?;
        }
        Ok(())
    }
}

/// The first key of the advisory locks a load's connections hold while they send, in
/// the two-key form ("recu"); the second is the connection's backend pid, unique among
/// live sessions.
const SHARE_LOCK_CLASS: i32 = 0x7265_6375;
/// Takes a connection's lock and returns its second key.
const LOCK_SHARE_SQL: &str = include_str!("../sql/share_lock.sql");
/// Waits until every sibling has released its lock: sharing a lock blocks while another
/// session holds it alone.
const WAIT_FOR_SIBLINGS_SQL: &str = include_str!("../sql/share_wait.sql");
/// Drops what the statements above take, once the share is sent and again once the
/// siblings are waited for, or after an error: session locks outlive a rolled-back
/// transaction and would stay on the pooled connection, and a lock left there would
/// make its next load's unlock one short. Only session-level advisory locks go; recur
/// takes none on a pool's connections but these.
const UNLOCK_ALL_SQL: &str = include_str!("../sql/share_unlock.sql");

/// Sends one connection's share of a load, then waits for its `siblings` (their locks'
/// second keys), all in a savepoint. On an error the savepoint is rolled back before
/// returning, which releases the share's keys, and the locks are dropped, which lets the
/// siblings go on; the transaction is left open, for the load to roll back.
async fn send_share(
    tx: &mut PgConnection,
    source: mpsc::Receiver<Rows>,
    siblings: &[i32],
    secured: bool,
) -> Result<u64, sqlx::Error> {
    let mut share = tx.begin().await?;
    let sent = async {
        let new = insert_rows(&mut share, source, secured).await?;
        // Its own lock is all the session holds now.
        sqlx::query(UNLOCK_ALL_SQL).execute(&mut *share).await?;
        if !siblings.is_empty() {
            sqlx::query(WAIT_FOR_SIBLINGS_SQL)
                .bind(SHARE_LOCK_CLASS)
                .bind(siblings)
                .execute(&mut *share)
                .await?;
        }
        Ok(new)
    }
    .await;
    match sent {
        Ok(new) => {
            share.commit().await?;
            sqlx::query(UNLOCK_ALL_SQL).execute(&mut *tx).await?;
            Ok(new)
        }
        Err(e) => {
            // Best effort: on a connection that broke, the session's end did both.
            if share.rollback().await.is_ok() {
                sqlx::query(UNLOCK_ALL_SQL).execute(&mut *tx).await.ok();
            }
            Err(e)
        }
    }
}

/// Fails unless `connections` is at least one, at most [`MAX_CONNECTIONS`] and at most
/// what `pool` allows: a load waiting for a connection that its own others hold would
/// wait out the pool's acquire timeout and fail.
pub(super) fn check_connections(pool: &PgPool, connections: usize) -> Result<(), EnqueueError> {
    let allowed = MAX_CONNECTIONS.min(pool.options().get_max_connections() as usize);
    if connections == 0 || connections > allowed {
        return Err(EnqueueError::Connections {
            asked: connections,
            allowed,
        });
    }
    Ok(())
}

/// Turns checked tasks into rows and sends each to its connection's share, in pieces of
/// about `PIECE_BYTES`. Each method that sends returns false once that connection has
/// stopped (its error is [`BulkLoad::insert`]'s); nothing more should be written then.
pub struct ShardWriter {
    format: RowFormat,
    /// Per connection, the piece being filled.
    rows: Vec<Rows>,
    pieces: Vec<mpsc::Sender<Rows>>,
}

impl ShardWriter {
    /// Appends `task`, which must have passed [`NewTask::check`], to its share, and
    /// returns that share's piece once it is full.
    fn append(&mut self, task: &NewTask) -> Option<(usize, Rows)> {
        let share = share_of(task, self.rows.len());
        let rows = &mut self.rows[share];
        self.format.write(task, rows);
        (rows.bytes() >= PIECE_BYTES).then(|| (share, std::mem::take(rows)))
    }

    /// Writes `task`; from async code.
    pub async fn write(&mut self, task: &NewTask) -> bool {
        match self.append(task) {
            Some((share, rows)) => self.pieces[share].send(rows).await.is_ok(),
            None => true,
        }
    }

    /// Writes `task`; from a thread outside the runtime, which it blocks while the
    /// connection's pieces in flight are full.
    pub fn write_blocking(&mut self, task: &NewTask) -> bool {
        match self.append(task) {
            Some((share, rows)) => self.pieces[share].blocking_send(rows).is_ok(),
            None => true,
        }
    }

    /// Sends what is left; dropping the writer then closes the sources.
    pub async fn finish(mut self) {
        for (rows, pieces) in self.rows.drain(..).zip(&self.pieces) {
            if pieces.send(rows).await.is_err() {
                return;
            }
        }
    }

    /// [`ShardWriter::finish`] from a thread outside the runtime.
    pub fn finish_blocking(mut self) {
        for (rows, pieces) in self.rows.drain(..).zip(&self.pieces) {
            if pieces.blocking_send(rows).is_err() {
                return;
            }
        }
    }
}

/// Which of `shares` connections writes `task`: by a hash of its tenant, type and key,
/// the key's identity, so every task with one key goes to one connection.
fn share_of(task: &NewTask, shares: usize) -> usize {
    if shares == 1 {
        return 0;
    }
    let mut hasher = DefaultHasher::new();
    (&task.tenant, &task.task_type, &task.key).hash(&mut hasher);
    (hasher.finish() % shares as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_goes_to_the_same_share_and_keys_spread_over_all() {
        let task = |key: &str| NewTask::new("noop", key);
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let key = format!("k{i}");
            let share = share_of(&task(&key), 3);
            assert_eq!(share_of(&task(&key), 3), share);
            counts[share] += 1;
        }
        assert!(counts.iter().all(|&n| n > 800), "{counts:?}");
        // The tenant and type are part of the identity: the same key elsewhere may go
        // elsewhere, and one share takes everything when there is one.
        assert_eq!(share_of(&task("k1"), 1), 0);
    }
}
