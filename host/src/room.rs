//! Each tenant's room under its `max_tasks`, counted every few seconds by every host
//! (task_room.sql, migrations/0017), for the commits that draw spawns from it
//! (commit/budget.rs). A count reads up to a quota's worth of index entries, so it is
//! kept off the commits' path, where it would hold up every tenant's outcomes; counting
//! twice changes nothing.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

const TASK_ROOM_SQL: &str = include_str!("sql/task_room.sql");

/// How often a host counts: spawns the last count has not seen may pass a quota by
/// what a few seconds of them add.
pub const COUNT_EVERY: Duration = Duration::from_secs(2);

/// Counts the room of every tenant with a `max_tasks`; returns how many were counted.
pub async fn count(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(TASK_ROOM_SQL)
        .execute(pool)
        .await?
        .rows_affected())
}

/// Counts every `every` until shutdown. An error is logged at debug level and the next
/// round tries again: until then the draws use the last count.
pub async fn run(pool: PgPool, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(err) = count(&pool).await {
            tracing::debug!(error = %err, "could not count the tenants' room under max_tasks");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
