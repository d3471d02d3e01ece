//! Spawn budgets, kept across the fleet: before outcomes that spawn for a tenant with a
//! quota on its spawns per minute or on its scheduled tasks are committed, their spawns
//! are drawn from the tenant's budgets in the database (spawn_budget.sql), one draw per
//! tenant per commit: its room under `max_tasks`, as the hosts last counted it
//! (`room.rs`), and its spawns in the current minute. Outcomes are granted in the order
//! they came while the grant holds their spawns; one it does not hold is replaced by a
//! retry of its task in the next minute (or, at its last attempt, a failure), with the
//! quota in its error, and nothing it returned is written. A draw whose outcomes then do
//! not apply (their lease was lost) stays drawn: the budgets err towards fewer spawns,
//! never more.

use std::collections::HashMap;

use sqlx::{PgPool, Row};

use super::rows::{CommitRow, SpawnBudget, Write, storable};
use crate::stats::Decided;
use crate::task::Status;

const SPAWN_BUDGET_SQL: &str = include_str!("../sql/spawn_budget.sql");

/// What a tenant's draw was granted.
#[derive(Debug, Clone, Copy, Default)]
struct Grant {
    /// Spawns granted and not yet given to an outcome.
    left: i64,
    /// Whether its room under `max_tasks` was what fell short.
    short_of_room: bool,
}

/// `writes` with every outcome whose spawns its tenant's budgets do not hold replaced
/// as above; `None` when no write spawns under a budget (nothing is read then).
pub(super) async fn ration(pool: &PgPool, writes: &[Write]) -> Option<Vec<Write>> {
    let mut wanted: HashMap<&str, i64> = HashMap::new();
    for write in writes {
        if let Some(budget) = &write.budget {
            *wanted.entry(budget.tenant.as_str()).or_default() += write.spawns.len() as i64;
        }
    }
    if wanted.is_empty() {
        return None;
    }
    let mut grants = match draw(pool, &wanted).await {
        Ok(grants) => grants,
        Err(err) => {
            tracing::warn!(error = %err, "could not draw from the tenants' spawn budgets; the outcomes that spawn under them are retried");
            HashMap::new()
        }
    };
    Some(
        writes
            .iter()
            .map(|write| {
                let Some(budget) = &write.budget else {
                    return write.clone();
                };
                let grant = grants.entry(budget.tenant.clone()).or_default();
                let n = write.spawns.len() as i64;
                if n <= grant.left {
                    grant.left -= n;
                    write.clone()
                } else {
                    refused(write, budget, grant.short_of_room)
                }
            })
            .collect(),
    )
}

/// Draws `wanted` spawns per tenant; returns what each tenant was granted.
async fn draw(
    pool: &PgPool,
    wanted: &HashMap<&str, i64>,
) -> Result<HashMap<String, Grant>, sqlx::Error> {
    let (tenants, counts): (Vec<&str>, Vec<i64>) = wanted.iter().map(|(t, n)| (*t, *n)).unzip();
    let rows = sqlx::query(SPAWN_BUDGET_SQL)
        .bind(tenants)
        .bind(counts)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            let grant = Grant {
                left: row.try_get("granted")?,
                short_of_room: row.try_get("short_of_room")?,
            };
            Ok((row.try_get("tenant")?, grant))
        })
        .collect()
}

/// What replaces `write` when the budgets do not hold its spawns: its task is tried
/// again at the start of the next minute by the host's clock, or parked at its last
/// attempt; nothing the run returned is kept.
fn refused(write: &Write, budget: &SpawnBudget, short_of_room: bool) -> Write {
    let quota = match (short_of_room, budget.max_tasks, budget.per_minute) {
        (true, Some(max), _) | (false, Some(max), None) => {
            format!("may have at most {max} scheduled tasks (its max_tasks), and has no room left")
        }
        (_, _, Some(per_minute)) => format!(
            "may spawn at most {per_minute} tasks a minute (its max_spawns_per_minute), and this minute's are spent"
        ),
        (_, None, None) => "could not draw from its spawn budgets".to_owned(),
    };
    let message = format!(
        "this run's {} spawns were not written: tenant \"{}\" {quota}",
        write.spawns.len(),
        budget.tenant,
    );
    let last = budget.attempt >= budget.max_attempts;
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
            attempt: budget.attempt,
            runs_inc: 0,
            error: Some(storable(if last {
                format!("{message} (gave up after {} attempts)", budget.attempt)
            } else {
                message
            })),
            ..write.row.clone()
        },
        spawns: Vec::new(),
        budget: None,
    }
}
