//! A claim is bounded in bytes as well as in tasks: it takes as many tasks as keep its
//! payloads and states under its budget, and always its first, so that a batch of large
//! tasks can neither pass the 1 GB a PostgreSQL value holds nor stay unclaimable.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::claim::{ClaimCursor, ClaimRequest, claim_locked, claim_timed};
use crate::enqueue::{self, NewTask};

use super::support::TestDb;

const PAYLOAD_BYTES: usize = 100 << 10;

/// Ten due tasks of 100 KiB payload each.
async fn ten_large_tasks() -> TestDb {
    let db = TestDb::new().await;
    let tasks: Vec<NewTask> = (0..10)
        .map(|i| NewTask {
            payload: vec![b'x'; PAYLOAD_BYTES],
            ..NewTask::new("large", format!("t{i}"))
        })
        .collect();
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    db
}

fn request(max_bytes: i64) -> ClaimRequest {
    ClaimRequest {
        max_bytes,
        ..super::claim_request(100)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_takes_what_fits_its_byte_budget_and_always_its_first_task() {
    let db = ten_large_tasks().await;
    let budget = (PAYLOAD_BYTES * 7 / 2) as i64;

    let timed = claim_timed(&db.pool, &request(budget)).await.unwrap();
    assert_eq!(timed.len(), 3, "three 100 KiB tasks fit 350 KiB");
    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
    let mut cursor = ClaimCursor::default();
    let locked = claim_locked(&db.pool, &request(budget), &mut cursor, permit)
        .await
        .unwrap();
    assert_eq!(locked.len(), 3, "and so under row locks");
    assert!(locked.iter().all(|t| t.payload.len() == PAYLOAD_BYTES));
    // The rows the locked claim left stay locked until its batch ends; then they are due.
    let lock = locked[0].lock.clone().unwrap();
    lock.take().await.unwrap().rollback().await.unwrap();

    let alone = claim_timed(&db.pool, &request(1)).await.unwrap();
    assert_eq!(
        alone.len(),
        1,
        "a task over the whole budget is claimed alone"
    );
    let rest = claim_timed(&db.pool, &request(i64::MAX)).await.unwrap();
    assert_eq!(rest.len(), 6, "the rest, once no batch holds them");
}
