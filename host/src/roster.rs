//! The roster of running hosts: each host's row in `hosts` (migrations/0018), written
//! when it starts and every [`BEAT_EVERY`] after by [`keep`], deleted when it stops, and
//! the door that lists the live ones (`recur hosts`). Live means holding the liveness
//! lock (liveness.rs), not a fresh row: a host that died is gone at once, however recent
//! its last heartbeat, and a host that is stalled but alive shows how long it has been
//! silent.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use tokio::sync::{Semaphore, watch};

const BEAT_SQL: &str = include_str!("sql/roster_beat.sql");
const LIST_SQL: &str = include_str!("sql/roster_list.sql");
const LEAVE_SQL: &str = "DELETE FROM hosts WHERE id = $1";

/// How often a host writes its row.
pub const BEAT_EVERY: Duration = Duration::from_secs(2);

/// A live host, as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostEntry {
    /// Its liveness key, which its lease tokens and claims rows carry.
    pub id: i64,
    /// The recur version it runs.
    pub version: String,
    /// The machine it runs on, and its process id there.
    pub hostname: String,
    pub pid: i32,
    /// How it claims: auto, timed or locked.
    pub claim_mode: String,
    /// Its worker threads, and the most tasks it holds at once.
    pub workers: i32,
    pub max_in_flight: i32,
    /// Tasks it had claimed and not yet committed or given back.
    pub in_flight: i32,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// How long ago it last wrote its row: a live host past a few heartbeats is stalled.
    pub seen_ms_ago: i64,
}

/// What a host says of itself in its row, but for what changes.
#[derive(Debug, Clone)]
pub(crate) struct Describe {
    pub id: i64,
    pub claim_mode: String,
    pub workers: usize,
    pub max_in_flight: usize,
}

/// Every live host, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<HostEntry>, sqlx::Error> {
    let rows = sqlx::query(LIST_SQL).fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            Ok(HostEntry {
                id: row.try_get("id")?,
                version: row.try_get("version")?,
                hostname: row.try_get("hostname")?,
                pid: row.try_get("pid")?,
                claim_mode: row.try_get("claim_mode")?,
                workers: row.try_get("workers")?,
                max_in_flight: row.try_get("max_in_flight")?,
                in_flight: row.try_get("in_flight")?,
                started_at: row.try_get("started_at")?,
                last_seen: row.try_get("last_seen")?,
                seen_ms_ago: row.try_get("seen_ms_ago")?,
            })
        })
        .collect()
}

/// Writes the host's row every [`BEAT_EVERY`] until shutdown, its tasks in flight read
/// off `in_flight`'s free permits. A heartbeat that fails is logged at debug level and
/// the next one tries again.
pub(crate) async fn keep(
    pool: PgPool,
    host: Describe,
    in_flight: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let hostname = hostname();
    loop {
        let held = host
            .max_in_flight
            .saturating_sub(in_flight.available_permits());
        let beat = sqlx::query(BEAT_SQL)
            .bind(host.id)
            .bind(env!("CARGO_PKG_VERSION"))
            .bind(&hostname)
            .bind(std::process::id() as i32)
            .bind(&host.claim_mode)
            .bind(host.workers as i32)
            .bind(host.max_in_flight as i32)
            .bind(held as i32)
            .execute(&pool)
            .await;
        if let Err(err) = beat {
            tracing::debug!(error = %err, "could not write this host's row in the roster");
        }
        tokio::select! {
            _ = tokio::time::sleep(BEAT_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Deletes the host's row: it has stopped.
pub(crate) async fn leave(pool: &PgPool, id: i64) {
    if let Err(err) = sqlx::query(LEAVE_SQL).bind(id).execute(pool).await {
        tracing::debug!(error = %err, "could not delete this host's row from the roster");
    }
}

/// The machine's name, as the kernel has it.
fn hostname() -> String {
    let mut name = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let done = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
    if done != 0 {
        return "unknown".to_owned();
    }
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}
