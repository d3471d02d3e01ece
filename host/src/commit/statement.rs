//! The commit statement: one round trip that writes many outcomes and their spawns,
//! each fenced (see `Fence`), bound as parallel arrays.

use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use super::rows::Write;

/// Finds each task's row by id: for outcomes of timed leases.
const COMMIT_TIMED_SQL: &str = include_str!("../sql/commit_timed.sql");
/// The same statement, but finds each row where its claim saw it (its ctid) instead of
/// through the primary key's index: for outcomes that all know where their row lies,
/// a locked claim's.
const COMMIT_LOCKED_SQL: &str = include_str!("../sql/commit_locked.sql");

/// What one commit statement changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// Outcomes applied (their lease token still matched).
    pub committed: u64,
    /// New tasks created by spawns; spawns of existing keys are not counted.
    pub spawned: u64,
}

/// Writes `writes` in one statement. A row whose task no longer holds the lease token it
/// ran under (or, for a locked claim, is no longer the version claimed) is skipped, and
/// so are its spawns. `claim` is the key of the locked claim the writes belong to: its
/// `claims` row is deleted by the same statement. `salvage` skips rows other
/// transactions hold locked (see the statements).
pub async fn commit<'e>(
    db: impl PgExecutor<'e>,
    writes: &[Write],
    claim: Option<i64>,
    salvage: bool,
) -> Result<Committed, sqlx::Error> {
    let n = writes.len();
    let mut ids = Vec::with_capacity(n);
    let mut tokens: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut versions: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut row_ats = Vec::with_capacity(n);
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
    let mut slotted = Vec::new();
    for write in writes {
        let row = &write.row;
        ids.push(row.id);
        if row.fence.slot {
            slotted.push(row.id);
        }
        tokens.push(row.fence.token);
        versions.push(row.fence.version);
        row_ats.push(row.fence.row_at);
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
    let sql = if row_ats.iter().all(Option::is_some) {
        COMMIT_LOCKED_SQL
    } else {
        COMMIT_TIMED_SQL
    };
    let row = sqlx::query(sql)
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
        .bind(versions)
        .bind(claim)
        .bind(salvage)
        .bind(row_ats)
        .bind(slotted)
        .fetch_one(db)
        .await?;
    Ok(Committed {
        committed: row.try_get::<i64, _>("committed")? as u64,
        spawned: row.try_get::<i64, _>("spawned")? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two statements must not drift apart: they differ only in how they find a row.
    #[test]
    fn the_locked_commit_differs_from_the_timed_only_in_how_it_finds_rows() {
        fn find(sql: &str) -> Vec<&str> {
            sql.lines()
                .filter(|line| line.trim_start().starts_with("WHERE t."))
                .map(str::trim)
                .collect()
        }
        assert_eq!(find(COMMIT_TIMED_SQL), ["WHERE t.id = o.id"]);
        assert_eq!(
            find(COMMIT_LOCKED_SQL),
            ["WHERE t.ctid = o.row_at AND t.id = o.id"]
        );
        fn code(sql: &str) -> Vec<&str> {
            sql.lines()
                .filter(|line| !line.trim_start().starts_with("--"))
                .filter(|line| !line.trim_start().starts_with("WHERE t."))
                .collect()
        }
        assert_eq!(code(COMMIT_TIMED_SQL), code(COMMIT_LOCKED_SQL));
    }
}
