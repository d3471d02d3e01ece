//! Charging lost runs: a claim that ended without a commit counts as an attempt on its
//! tasks only when its host is gone, which the host's liveness lock tells. Here the
//! "hosts" are liveness keys held (or not) on connections of the test's own, and the
//! claims are made with the library's lease functions, so each case is exact; the
//! same with real host processes is in `faults::crashing`.

use std::sync::Arc;
use std::time::Duration;

use crate::claim::{ClaimCursor, ClaimRequest, claim_locked, claim_timed};
use crate::examples::artifacts::NOOP_COMPONENT;
use crate::liveness;
use crate::task::ClaimedTask;
use sqlx::{Connection, PgConnection};
use tokio::sync::Semaphore;

use super::support::TestDb;

/// A live host, as far as the database can tell: its liveness lock, held.
async fn live_host(db: &TestDb) -> (i64, PgConnection) {
    let key = liveness::new_key();
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key)
        .execute(&mut conn)
        .await
        .unwrap();
    (key, conn)
}

fn request(host: i64, lease_timeout: Duration) -> ClaimRequest {
    ClaimRequest {
        lease_timeout,
        host,
        ..super::claim_request(10)
    }
}

/// Claims every due task under row locks for `host`, then ends the claim without
/// writing any outcome, as a cut connection or a claim that outlived its lease does. It
/// commits, not rolls back, so that what it took over stays taken over and each step of
/// a test starts from a known set of `claims` rows. Returns the attempts it handed out.
async fn abandon_locked_claim(db: &TestDb, host: i64) -> Vec<i32> {
    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
    let request = request(host, Duration::from_secs(60));
    let tasks = claim_locked(&db.pool, &request, &mut ClaimCursor::default(), permit)
        .await
        .unwrap();
    let attempts = attempts(&tasks);
    let lock = tasks[0].lock.clone().unwrap();
    lock.take().await.unwrap().commit().await.unwrap();
    attempts
}

/// Waits until the server has ended a closed connection's session and with it the
/// host's liveness lock (it notices the closed socket on its own time).
async fn wait_gone(db: &TestDb, host: i64) {
    db.wait_for(
        &format!(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
                AND ((classid::bigint << 32) | objid::bigint) = {host})"
        ),
        Duration::from_secs(10),
    )
    .await;
}

/// The claims sweep, for claims of any age; returns the tasks it charged.
async fn sweep(db: &TestDb) -> u64 {
    crate::maintain::count_lost_claims(&db.pool, Duration::ZERO)
        .await
        .unwrap()
}

fn attempts(tasks: &[ClaimedTask]) -> Vec<i32> {
    let mut attempts: Vec<i32> = tasks.iter().map(|t| t.attempt).collect();
    attempts.sort();
    attempts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_locked_claim_is_charged_only_if_its_host_is_gone() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    db.enqueue(&[("noop", "a", ""), ("noop", "b", "")]).await;
    let (alive, alive_conn) = live_host(&db).await;
    let (other, other_conn) = live_host(&db).await;

    assert_eq!(abandon_locked_claim(&db, alive).await, [1, 1]);
    // Its host lives: the next claim repeats the runs under the same attempt.
    assert_eq!(abandon_locked_claim(&db, other).await, [1, 1]);
    // That claim's host dies: the next claim is charged for its lost runs.
    drop(other_conn);
    wait_gone(&db, other).await;
    assert_eq!(abandon_locked_claim(&db, alive).await, [2, 2]);
    // The sweep deletes a live host's lost claim without charging it...
    assert_eq!(
        sweep(&db).await,
        0,
        "the sweep charged a live host's lost claim"
    );
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM claims").await, 0);
    // ...and charges a dead host's.
    assert_eq!(abandon_locked_claim(&db, alive).await, [1, 1]);
    drop(alive_conn);
    wait_gone(&db, alive).await;
    assert_eq!(
        sweep(&db).await,
        2,
        "the sweep let a dead host's lost claim go"
    );
    assert_eq!(db.task("a").await.attempt, 1);
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM claims").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_out_timed_lease_is_charged_only_if_its_host_is_gone() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    db.enqueue(&[("noop", "a", "")]).await;
    let short = Duration::from_millis(200);
    let (alive, alive_conn) = live_host(&db).await;
    let (other, other_conn) = live_host(&db).await;

    let first = claim_timed(&db.pool, &request(alive, short)).await.unwrap();
    assert_eq!(attempts(&first), [1]);
    tokio::time::sleep(short * 2).await;
    // Its host lives: the repeat keeps the attempt number, under a token of its own.
    let repeat = claim_timed(&db.pool, &request(other, short)).await.unwrap();
    assert_eq!(attempts(&repeat), [1]);
    assert_ne!(repeat[0].fence.token, first[0].fence.token);
    // Its host dies: the next lease is a new attempt.
    drop(other_conn);
    wait_gone(&db, other).await;
    tokio::time::sleep(short * 2).await;
    let after_death = claim_timed(&db.pool, &request(alive, short)).await.unwrap();
    assert_eq!(attempts(&after_death), [2]);
    // A locked claim taking over from a live host's lease keeps the attempt too.
    tokio::time::sleep(short * 2).await;
    assert_eq!(abandon_locked_claim(&db, alive).await, [2]);
    drop(alive_conn);
    assert_eq!(db.task("a").await.attempt, 2);
}
