//! A host's liveness lock: for as long as a host process lives, it holds a session
//! advisory lock, keyed by a number drawn at start, on a connection of its own.
//!
//! Its locked claims record that key (`claims.host`, migrations/0004) and its timed lease
//! tokens carry it in their first eight bytes. Whoever later finds a claim that ended
//! without a commit can then tell why. If the key's lock is free, the host is gone, and
//! the run may be what took it down: it counts as an attempt, so a task that keeps
//! killing hosts is parked. If the lock is held, the host lives, and its claim was cut
//! from the database or outlived its lease on a slow machine. The task runs again, told
//! the same attempt number, and is not charged for it: an overloaded fleet must not park
//! innocent tasks.
//!
//! SQL asks `recur_host_gone(key)` and reads a token's host with `recur_token_host`
//! (both in migrations/0004).

use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

const LIVENESS_LOCK_SQL: &str = include_str!("sql/liveness_lock.sql");

/// How often the lock's connection is checked. A connection cut in between is found
/// here and the lock taken again; until then the host's lost claims count as a dead
/// host's, as they did before hosts held this lock.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Longest wait between two attempts to take the lock again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A fresh host key. Random, so two processes (or a restarted one) never share one, and
/// never 0, which stands for "no host" in lease tokens made outside a host.
pub fn new_key() -> i64 {
    loop {
        let key = Uuid::new_v4().as_u64_pair().0 as i64;
        if key != 0 {
            return key;
        }
    }
}

/// A lease token that names its host: the host key, then 64 random bits that make each
/// lease's token its own (the token is what fences a late commit).
pub fn lease_token(host: i64) -> Uuid {
    Uuid::from_u64_pair(host as u64, Uuid::new_v4().as_u64_pair().1)
}

/// Holds the host's liveness lock on a connection of its own until the task is dropped
/// (the host aborts it after its last commit). `held` says whether the lock is held
/// now. Errors are logged and retried with backoff; they never end the loop.
pub async fn hold(pool: PgPool, key: i64, held: watch::Sender<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match lock(&pool, key).await {
            Ok(mut conn) => {
                backoff = Duration::from_millis(100);
                held.send_replace(true);
                loop {
                    tokio::time::sleep(CHECK_EVERY).await;
                    if let Err(err) = conn.ping().await {
                        held.send_replace(false);
                        tracing::warn!(error = %err, "lost the connection that holds this host's liveness lock; taking it again");
                        break;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "could not take this host's liveness lock");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// A new connection holding the session lock `key`. It waits if the key is held: only
/// by a claim checking, for the length of its transaction, whether this host was gone
/// while the lock's previous connection was down.
async fn lock(pool: &PgPool, key: i64) -> Result<PgConnection, sqlx::Error> {
    let mut conn = PgConnection::connect_with(pool.connect_options().as_ref()).await?;
    sqlx::query(LIVENESS_LOCK_SQL)
        .bind(key)
        .execute(&mut conn)
        .await?;
    Ok(conn)
}
