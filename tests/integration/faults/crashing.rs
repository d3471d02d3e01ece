//! A task whose runs take their host down. Each time a host starts running it, the test
//! SIGKILLs that host, as a runtime bug or the kernel's OOM killer would, so no run ever
//! returns. The attempts must be counted all the same (by the lease for timed claims, by
//! the claims left behind for locked ones), and once they pass the tenant's
//! `max_attempts` by the allowance for lost runs, the next host parks the task without
//! running it: the crashes stop. Every re-run must also be told when the task was really
//! due, not when a lease ran out.
//!
//! And the contrast: a task whose hosts only stall (SIGSTOP, as an overloaded or frozen
//! machine does) past its claim is run again elsewhere, but not charged for it: the
//! stalled host still holds its liveness lock. Only when a host dies does the next run
//! count as a new attempt.

use std::time::Duration;

use recur_host::LOST_RUN_ALLOWANCE;
use recur_host::examples::artifacts::SPIN_COMPONENT;

use super::SERIAL;
use super::fleet::Fleet;
use crate::support::{TestDb, wait};

const MAX_ATTEMPTS: i32 = 2;
/// Runs the task gets before it is parked: all of them end with their host.
const RUNS: i32 = MAX_ATTEMPTS + LOST_RUN_ALLOWANCE;

/// The `spinning attempt=N scheduled_ms=T` lines the hosts logged, as (N, T).
fn runs(fleet: &Fleet) -> Vec<(i64, i64)> {
    fleet
        .all_logs()
        .lines()
        .filter_map(|line| {
            let rest = &line[line.find("spinning attempt=")? + "spinning attempt=".len()..];
            let (attempt, rest) = rest.split_once(" scheduled_ms=")?;
            let scheduled: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((attempt.parse().ok()?, scheduled.parse().ok()?))
        })
        .collect()
}

/// Waits until the fleet's hosts have logged more than `seen` runs (or parked the task);
/// returns the runs logged.
async fn wait_for_run(db: &TestDb, fleet: &Fleet, seen: usize, key: &str) -> Vec<(i64, i64)> {
    let pool = db.pool.clone();
    let parked = format!("SELECT status = 2 FROM tasks WHERE key = '{key}'");
    wait(
        Duration::from_secs(30),
        "a host to start the run or park the task",
        || {
            let (pool, parked) = (pool.clone(), parked.clone());
            let started = runs(fleet).len() > seen;
            async move {
                started
                    || sqlx::query_scalar::<_, bool>(&parked)
                        .fetch_one(&pool)
                        .await
                        .unwrap_or(false)
            }
        },
    )
    .await;
    runs(fleet)
}

async fn a_task_that_kills_its_hosts_is_parked(claim: &str, lease_timeout: &str) {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    db.deploy("spin", SPIN_COMPONENT).await;
    // A run would spin for a minute: long past the moment the test kills its host.
    db.limits("default", 60_000, MAX_ATTEMPTS).await;
    db.enqueue(&[("spin", "killer", "")]).await;
    let due_ms: i64 = db
        .scalar("SELECT floor(extract(epoch FROM next_run_at) * 1000)::bigint FROM tasks")
        .await;
    let args = [
        "--claim",
        claim,
        "--lease-timeout",
        lease_timeout,
        "--concurrency",
        "1",
    ];
    let mut fleet = Fleet::new(&db, &format!("killer-{claim}"), &args);
    let mut kills = 0;
    loop {
        assert!(
            kills <= RUNS,
            "the task was run {kills} times and never parked; logs: {}",
            fleet.all_logs()
        );
        let seen = runs(&fleet).len();
        let host = fleet.start();
        wait_for_run(&db, &fleet, seen, "killer").await;
        if runs(&fleet).len() == seen {
            break;
        }
        fleet.kill9(host);
        kills += 1;
    }

    let task = db.task("killer").await;
    assert_eq!(task.status, 2, "{task:?}");
    let error = task.error.unwrap_or_default();
    assert!(error.contains("parked without running"), "{error}");
    let runs = runs(&fleet);
    println!(
        "FIGURES killer ({claim} claims): {kills} hosts killed by one task, then parked: {error}"
    );
    assert_eq!(kills, RUNS, "runs: {runs:?}");
    let attempts: Vec<i64> = runs.iter().map(|r| r.0).collect();
    assert_eq!(attempts, (1..=RUNS as i64).collect::<Vec<_>>());
    for (attempt, scheduled_ms) in runs {
        assert_eq!(
            scheduled_ms, due_ms,
            "attempt {attempt} was told it was due at {scheduled_ms}, not {due_ms}"
        );
    }
    fleet.stop_all(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_kills_its_hosts_under_timed_leases_is_parked() {
    a_task_that_kills_its_hosts_is_parked("timed", "1s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_kills_its_hosts_under_row_locks_is_parked() {
    // The lease timeout also ends an idle claim's session; keep it well past the kill.
    a_task_that_kills_its_hosts_is_parked("locked", "20s").await;
}

/// Hosts that stall mid-run are not charged; one that dies is. With `max_attempts` 2,
/// four stalls in a row would have parked the task when every lost claim counted.
async fn a_task_whose_hosts_stall_is_not_charged(claim: &str) {
    const STALLS: usize = 4;
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    db.deploy("spin", SPIN_COMPONENT).await;
    db.limits("default", 60_000, MAX_ATTEMPTS).await;
    db.enqueue(&[("spin", "staller", "")]).await;
    // Short, so that each stall outlives the claim quickly; a run is stopped at three
    // quarters of it (2.25 s), and the test stalls each host well before that.
    let args = [
        "--claim",
        claim,
        "--lease-timeout",
        "3s",
        "--concurrency",
        "1",
    ];
    let mut fleet = Fleet::new(&db, &format!("staller-{claim}"), &args);
    let mut stalled = Vec::new();
    for _ in 0..STALLS {
        let seen = runs(&fleet).len();
        let host = fleet.start();
        let runs = wait_for_run(&db, &fleet, seen, "staller").await;
        fleet.signal(host, libc::SIGSTOP);
        stalled.push(host);
        assert_eq!(runs.len(), seen + 1, "the task was parked: {runs:?}");
    }
    // Now a host dies mid-run: the next run is charged.
    let seen = runs(&fleet).len();
    let host = fleet.start();
    wait_for_run(&db, &fleet, seen, "staller").await;
    fleet.kill9(host);
    let seen = seen + 1;
    let host = fleet.start();
    let runs = wait_for_run(&db, &fleet, seen, "staller").await;
    let attempts: Vec<i64> = runs.iter().map(|r| r.0).collect();
    println!(
        "FIGURES staller ({claim} claims): {STALLS} hosts stalled past the claim, then one killed; attempts told: {attempts:?}"
    );
    let mut expected = vec![1; STALLS + 1];
    expected.push(2);
    assert_eq!(attempts, expected, "logs: {}", fleet.all_logs());
    assert_eq!(db.task("staller").await.status, 0);
    fleet.kill9(host);
    for host in stalled {
        fleet.kill9(host);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_hosts_stall_under_timed_leases_is_not_charged() {
    a_task_whose_hosts_stall_is_not_charged("timed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_hosts_stall_under_row_locks_is_not_charged() {
    a_task_whose_hosts_stall_is_not_charged("locked").await;
}
