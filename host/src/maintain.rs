//! Background duties that keep the tables honest, run by every host: any one of them
//! may do the work, and doing it twice changes nothing.
//!
//! Today one duty: counting the attempts of locked batches that never committed. A
//! locked claim writes nothing to its tasks, so a host that dies while running one
//! leaves no trace on them; its `claims` row (see migrations/0002) is the trace. Counting
//! it is what lets `max_attempts` park a task whose runs keep taking hosts down, instead
//! of letting it take down every host in turn. The next locked claim of such a task
//! counts it itself (claim.sql); this sweep counts what no claim took over, such as
//! tasks run since under timed leases.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

const LOST_SQL: &str = include_str!("sql/lost.sql");

/// How often a host looks for lost claims.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How old a lost claim must be before the sweep counts it: until then it is left to
/// the next locked claim of its tasks, which counts it in step with its own commit.
pub const LOST_CLAIM_AGE: Duration = Duration::from_secs(30);

/// Counts an attempt on every task of each locked batch whose claim ended without a
/// commit at least `age` ago; returns how many tasks were counted.
pub async fn count_lost_claims(pool: &PgPool, age: Duration) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(LOST_SQL)
        .bind(age.as_millis() as i64)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Runs the duties every [`SWEEP_EVERY`] until shutdown. Errors are logged and the loop
/// carries on: the duties catch up on the next round.
pub async fn run(pool: PgPool, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        match count_lost_claims(&pool, LOST_CLAIM_AGE).await {
            Ok(0) => {}
            Ok(tasks) => tracing::info!(
                tasks,
                "counted an attempt on tasks whose locked batch never committed (its host died or lost its connection)"
            ),
            Err(err) => tracing::debug!(error = %err, "could not look for lost claims"),
        }
    }
}
