//! Timed leases: a batch claimed by pushing its due time out by the lease timeout under
//! a fresh token (claim_timed.sql), and handed back unrun (give_back.sql).

use std::time::Instant;

use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::ClaimRequest;
use super::rows::{Columns, position};
use crate::liveness;
use crate::task::{ClaimedTask, Fence};

const CLAIM_TIMED_SQL: &str = include_str!("../sql/claim_timed.sql");
const GIVE_BACK_SQL: &str = include_str!("../sql/give_back.sql");

/// Claims up to `request.limit` due tasks under one fresh lease token, oldest due first.
pub async fn claim_timed(
    pool: &PgPool,
    request: &ClaimRequest,
) -> Result<Vec<ClaimedTask>, sqlx::Error> {
    let token = liveness::lease_token(request.host);
    let claimed = Instant::now();
    let rows = sqlx::query(CLAIM_TIMED_SQL)
        .bind(request.limit)
        .bind(request.lease_timeout.as_millis() as i64)
        .bind(request.types.as_deref())
        .bind(token)
        .bind(request.tenants.as_deref())
        .bind(request.skip.as_ref().map(|skip| &skip.tenants))
        .bind(request.skip.as_ref().map(|skip| &skip.types))
        .bind(request.max_bytes)
        .bind(&request.held_back[..])
        .fetch_all(pool)
        .await?;
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let columns = Columns::of(first)?;
    let slot = position::<bool>(first, "slot")?;
    rows.iter()
        .map(|row| {
            Ok(ClaimedTask {
                fence: Fence {
                    token: Some(token),
                    slot: row.try_get_unchecked(slot)?,
                    ..Fence::default()
                },
                ..columns.task(row, claimed, request.lease_timeout)?
            })
        })
        .collect()
}

/// Returns tasks of timed leases that never ran, as if they had not been claimed. Only
/// tasks that still hold their lease are touched; returns how many were given back.
pub async fn give_back(pool: &PgPool, tasks: &[ClaimedTask]) -> Result<u64, sqlx::Error> {
    if tasks.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
    let tokens: Vec<Option<Uuid>> = tasks.iter().map(|t| t.fence.token).collect();
    let due: Vec<_> = tasks.iter().map(|t| t.scheduled_at).collect();
    let done = sqlx::query(GIVE_BACK_SQL)
        .bind(ids)
        .bind(tokens)
        .bind(due)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
