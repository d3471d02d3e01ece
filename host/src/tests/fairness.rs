//! Fair claims: a claim shares its batch between the tenants with due work by their
//! weights, whatever each one's backlog, gives what one tenant leaves to those with more,
//! and, where tenants outnumber the batch, serves the longest waiting first. Both kinds
//! of claim, and the locked claim's cursor, which keeps a place in each tenant's queue.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::claim::{ClaimCursor, ClaimRequest, claim_locked, claim_timed};
use crate::enqueue::{self, NewTask};
use crate::task::ClaimedTask;

use super::claim_request;
use super::support::TestDb;

/// Enqueues `n` tasks for `tenant`, due `late_secs` ago, keys `<tenant>-0`...
async fn backlog(db: &TestDb, tenant: &str, n: usize, late_secs: i64) {
    let run_at = chrono::Utc::now() - chrono::Duration::seconds(late_secs);
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| NewTask {
            tenant: tenant.into(),
            run_at: Some(run_at),
            ..NewTask::new("noop", format!("{tenant}-{i}"))
        })
        .collect();
    assert_eq!(enqueue::enqueue(&db.pool, &tasks).await.unwrap(), n as u64);
}

async fn weigh(db: &TestDb, tenant: &str, weight: i32) {
    sqlx::query("UPDATE tenants SET weight = $2 WHERE name = $1")
        .bind(tenant)
        .bind(weight)
        .execute(&db.pool)
        .await
        .unwrap();
}

/// How many of `tasks` each tenant got.
fn per_tenant(tasks: &[ClaimedTask]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for task in tasks {
        *counts.entry(task.tenant.clone()).or_default() += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

async fn claim_locked_once(db: &TestDb, limit: i64, cursor: &mut ClaimCursor) -> Vec<ClaimedTask> {
    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
    claim_locked(&db.pool, &claim_request(limit), cursor, permit)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tenant_with_a_backlog_leaves_a_small_one_its_due_tasks() {
    let db = TestDb::new().await;
    // `big`'s tasks are a minute late, `small`'s due just now: a claim in due order
    // would give every task to `big`.
    backlog(&db, "big", 100, 60).await;
    backlog(&db, "small", 5, 0).await;
    let timed = claim_timed(&db.pool, &claim_request(20)).await.unwrap();
    assert_eq!(
        per_tenant(&timed),
        counts(&[("big", 15), ("small", 5)]),
        "small takes its 5 of its share of 10; big takes its 10 and the 5 small left"
    );
    // Put back, then the same claim under row locks.
    sqlx::query(
        "UPDATE tasks SET next_run_at = due_at, due_at = NULL, lease_token = NULL, attempt = 0
         WHERE lease_token IS NOT NULL",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut cursor = ClaimCursor::default();
    let locked = claim_locked_once(&db, 20, &mut cursor).await;
    assert_eq!(per_tenant(&locked), counts(&[("big", 15), ("small", 5)]));
    // `small` has nothing more; the next claim goes on in `big`'s queue past the rows the
    // first one holds.
    let next = claim_locked_once(&db, 20, &mut cursor).await;
    assert_eq!(per_tenant(&next), counts(&[("big", 20)]));
    let mut keys: Vec<&str> = locked.iter().chain(&next).map(|t| t.key.as_str()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 40, "no task claimed twice");
}

#[tokio::test]
async fn tenants_with_backlogs_share_a_claim_by_weight() {
    let db = TestDb::new().await;
    backlog(&db, "light", 100, 60).await;
    backlog(&db, "heavy", 100, 30).await;
    weigh(&db, "heavy", 3).await;
    let timed = claim_timed(&db.pool, &claim_request(20)).await.unwrap();
    assert_eq!(per_tenant(&timed), counts(&[("heavy", 15), ("light", 5)]));
    let mut cursor = ClaimCursor::default();
    let locked = claim_locked_once(&db, 40, &mut cursor).await;
    assert_eq!(per_tenant(&locked), counts(&[("heavy", 30), ("light", 10)]));
}

#[tokio::test]
async fn where_tenants_outnumber_the_batch_the_longest_waiting_go_first() {
    let db = TestDb::new().await;
    for i in 0..12 {
        // t0 is the latest, t11 the longest waiting.
        backlog(&db, &format!("t{i:02}"), 2, 10 + i).await;
    }
    let timed = claim_timed(&db.pool, &claim_request(4)).await.unwrap();
    assert_eq!(
        per_tenant(&timed),
        counts(&[("t08", 1), ("t09", 1), ("t10", 1), ("t11", 1)])
    );
    let mut cursor = ClaimCursor::default();
    let locked = claim_locked_once(&db, 30, &mut cursor).await;
    assert_eq!(
        locked.len(),
        20,
        "the 20 tasks left, whatever their tenants' shares"
    );
    assert!(per_tenant(&locked).values().all(|n| *n <= 2));
}

#[tokio::test]
async fn a_claim_takes_nothing_for_the_tenants_the_host_holds_back() {
    let db = TestDb::new().await;
    backlog(&db, "slow", 10, 60).await;
    backlog(&db, "other", 10, 0).await;
    let request = ClaimRequest {
        held_back: Arc::from(["slow".to_string()]),
        ..claim_request(20)
    };
    let timed = claim_timed(&db.pool, &request).await.unwrap();
    assert_eq!(per_tenant(&timed), counts(&[("other", 10)]));
    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
    let locked = claim_locked(&db.pool, &request, &mut ClaimCursor::default(), permit)
        .await
        .unwrap();
    assert!(
        locked.is_empty(),
        "only `slow` has due tasks left: {locked:?}"
    );
}
