//! The quota on a tenant's spawns per minute, kept across the fleet: before outcomes
//! that spawn for a tenant with the quota are committed, their spawns are drawn from the
//! tenant's budget for the current minute in the database (spawn_rate.sql), one draw
//! per tenant per commit. Outcomes are granted in the order they came while the grant
//! holds their spawns; one it does not hold is replaced by a retry of its task in the
//! next minute (or, past its last attempt, a failure), with the quota in its error, and
//! nothing it returned is written. A draw whose outcomes then do not apply (their lease
//! was lost) stays drawn: the quota errs towards fewer spawns, never more.

use std::collections::HashMap;

use sqlx::{PgPool, Row};

use super::rows::{CommitRow, SpawnRate, Write, storable};
use crate::stats::Decided;
use crate::task::Status;

const SPAWN_RATE_SQL: &str = include_str!("../sql/spawn_rate.sql");

/// `writes` with every outcome whose spawns its tenant's budget does not hold replaced
/// as above; `None` when no write spawns under the quota (nothing is read then).
pub(super) async fn ration(pool: &PgPool, writes: &[Write]) -> Option<Vec<Write>> {
    let mut wanted: HashMap<&str, i64> = HashMap::new();
    for write in writes {
        if let Some(rate) = &write.rate {
            *wanted.entry(rate.tenant.as_str()).or_default() += write.spawns.len() as i64;
        }
    }
    if wanted.is_empty() {
        return None;
    }
    let mut left = match draw(pool, &wanted).await {
        Ok(granted) => granted,
        Err(err) => {
            tracing::warn!(error = %err, "could not draw from the tenants' spawn budgets; the outcomes that spawn under the quota are retried");
            HashMap::new()
        }
    };
    Some(
        writes
            .iter()
            .map(|write| {
                let Some(rate) = &write.rate else {
                    return write.clone();
                };
                let left = left.entry(rate.tenant.clone()).or_default();
                let n = write.spawns.len() as i64;
                if n <= *left {
                    *left -= n;
                    write.clone()
                } else {
                    refused(write, rate)
                }
            })
            .collect(),
    )
}

/// Draws `wanted` spawns per tenant; returns what each tenant was granted.
async fn draw(
    pool: &PgPool,
    wanted: &HashMap<&str, i64>,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let (tenants, counts): (Vec<&str>, Vec<i64>) = wanted.iter().map(|(t, n)| (*t, *n)).unzip();
    let rows = sqlx::query(SPAWN_RATE_SQL)
        .bind(tenants)
        .bind(counts)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("tenant")?, row.try_get("granted")?)))
        .collect()
}

/// What replaces `write` when the budget does not hold its spawns: its task is tried
/// again at the start of the next minute by the host's clock, or parked once it has used
/// its attempts; nothing the run returned is kept.
fn refused(write: &Write, rate: &SpawnRate) -> Write {
    let message = format!(
        "this run's {} spawns were not written: tenant \"{}\" may spawn at most {} tasks a minute (its max_spawns_per_minute), and this minute's are spent",
        write.spawns.len(),
        rate.tenant,
        rate.per_minute
    );
    let last = rate.attempt >= rate.max_attempts;
    let now_ms = chrono::Utc::now().timestamp_millis();
    Write {
        kind: if last {
            Decided::Failed
        } else {
            Decided::Retried
        },
        row: CommitRow {
            status: if last {
                Status::Failed
            } else {
                Status::Scheduled
            },
            at_ms: None,
            delay_ms: Some(if last {
                0
            } else {
                60_000 - now_ms.rem_euclid(60_000)
            }),
            state: None,
            attempt: rate.attempt,
            runs_inc: 0,
            error: Some(storable(if last {
                format!("{message} (gave up after {} attempts)", rate.attempt)
            } else {
                message
            })),
            ..write.row.clone()
        },
        spawns: Vec::new(),
        rate: None,
    }
}
