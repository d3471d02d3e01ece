//! A task whose runs take their host down. Each time a host starts running it, the test
//! SIGKILLs that host, as a runtime bug or the kernel's OOM killer would, so no run ever
//! returns. The attempts must be counted all the same (by the lease for timed claims, by
//! the claims left behind for locked ones), and once they pass the tenant's
//! `max_attempts` by the allowance for lost runs, the next host parks the task without
//! running it: the crashes stop. Every
//! re-run must also be told when the task was really due, not when a lease ran out.

use std::time::Duration;

use recur_host::examples::artifacts::SPIN_COMPONENT;
use recur_host::outcome::LOST_RUN_ALLOWANCE;

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
        let host = fleet.start();
        let seen = runs(&fleet).len();
        let pool = db.pool.clone();
        let fleet_ref = &fleet;
        wait(
            Duration::from_secs(30),
            "the host to start the run or park the task",
            || {
                let pool = pool.clone();
                let started = runs(fleet_ref).len() > seen;
                async move {
                    started
                        || sqlx::query_scalar::<_, bool>(
                            "SELECT status = 2 FROM tasks WHERE key = 'killer'",
                        )
                        .fetch_one(&pool)
                        .await
                        .unwrap_or(false)
                }
            },
        )
        .await;
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
