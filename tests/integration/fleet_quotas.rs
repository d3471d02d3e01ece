//! The quotas hosts keep together, through the database: a tenant's runs in flight
//! (`max_running`) and its spawns per minute (`max_spawns_per_minute`). Two hosts, each
//! with room for more, together never run more of its tasks at once than the quota,
//! under either kind of claim, nor write more of its spawns in a minute, while another
//! tenant's tasks keep running beside them. The quotas are set from the command line,
//! and a bad value is a one-line error that changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use recur_host::enqueue::{self, NewTask};
use recur_host::examples::artifacts::*;
use recur_host::{ClaimMode, Host, HostConfig};

use crate::support::{self, TestDb, one_line_error, stdout, test_config};

/// Runs of the capped tenant: each waits this long inside the sandbox.
const RUN_MS: i64 = 250;
/// Its tasks, each run once.
const TASKS: i64 = 16;
/// Its quota.
const QUOTA: i64 = 2;

fn host_config(claim: ClaimMode) -> HostConfig {
    let config = test_config();
    HostConfig {
        claim,
        concurrency: 4,
        sandbox: recur_host::sandbox::SandboxConfig {
            concurrent_runs: 4,
            ..config.sandbox.clone()
        },
        ..config
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_together_keep_a_tenants_runs_in_flight_under_its_quota_timed() {
    runs_in_flight_stay_under_the_quota(ClaimMode::Timed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_together_keep_a_tenants_runs_in_flight_under_its_quota_locked() {
    runs_in_flight_stay_under_the_quota(ClaimMode::Locked).await;
}

async fn runs_in_flight_stay_under_the_quota(claim: ClaimMode) {
    let _serial = crate::faults::SERIAL.lock().await;
    let db = TestDb::strict().await;
    let created = support::recur(
        &db.url,
        &[
            "tenant",
            "create",
            "capped",
            "--max-running",
            &QUOTA.to_string(),
        ],
        b"",
    );
    assert!(stdout(&created).contains("running 2"), "{created:?}");
    assert!(
        stdout(&support::recur(&db.url, &["tenant", "create", "free"], b"")).contains("created")
    );
    db.deploy_for("capped", "sleeper", SLEEPER_COMPONENT).await;
    db.deploy_for("free", "noop", NOOP_COMPONENT).await;
    let payload = format!(r#"{{"wait": "sleep", "ms": {RUN_MS}}}"#);
    let mut tasks: Vec<NewTask> = (0..TASKS)
        .map(|i| NewTask {
            tenant: "capped".into(),
            payload: payload.clone().into_bytes(),
            ..NewTask::new("sleeper", format!("s{i}"))
        })
        .collect();
    tasks.extend((0..20).map(|i| NewTask {
        tenant: "free".into(),
        payload: br#"{"every_ms": 50}"#.to_vec(),
        ..NewTask::new("noop", format!("n{i}"))
    }));
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();

    // Under timed leases a run in flight is a leased row: watch them all along.
    let peak = Arc::new(AtomicI64::new(0));
    let watcher = {
        let (pool, peak) = (db.pool.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                let Ok(leased) = sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM tasks
                     WHERE tenant = 'capped' AND lease_token IS NOT NULL AND next_run_at > now()",
                )
                .fetch_one(&pool)
                .await
                else {
                    return;
                };
                peak.fetch_max(leased, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let hosts = [
        Host::start(db.pool.clone(), host_config(claim)).unwrap(),
        Host::start(db.another_pool().await, host_config(claim)).unwrap(),
    ];
    db.wait_for(
        "SELECT count(*) = 16 FROM tasks WHERE tenant = 'capped' AND status = 1",
        Duration::from_secs(60),
    )
    .await;
    let free_runs: i64 = db
        .scalar("SELECT coalesce(sum(runs), 0)::bigint FROM tasks WHERE tenant = 'free'")
        .await;
    watcher.abort();
    for host in hosts {
        host.stop().await;
    }

    // Runs write their row as they commit (a timed lease) or as their batch began (a
    // locked claim, whose now() is its transaction's start): with at most two in flight
    // those times spread over at least seven run lengths, where eight hosts' workers
    // would take them all in two waves.
    let spread_ms: f64 = db
        .scalar(
            "SELECT (extract(epoch FROM max(updated_at) - min(updated_at)) * 1000)::float8
             FROM tasks WHERE tenant = 'capped'",
        )
        .await;
    let least = ((TASKS / QUOTA - 1) * RUN_MS) as f64 * 0.9;
    assert!(
        spread_ms >= least,
        "{claim:?}: the capped tenant's runs spread over {spread_ms:.0} ms, under the {least:.0} ms two at a time take"
    );
    if claim == ClaimMode::Timed {
        let peak = peak.load(Ordering::Relaxed);
        assert!(peak <= QUOTA, "{peak} runs were leased at once");
        assert!(peak >= 1, "the watcher saw the runs");
    }
    assert!(
        free_runs >= 20,
        "the other tenant ran meanwhile: {free_runs} runs"
    );
    let slots: i64 = db
        .scalar("SELECT count(*) FROM run_slots WHERE tenant = 'capped'")
        .await;
    assert_eq!(slots, QUOTA);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_quota_is_set_and_lifted_from_the_command_line() {
    let db = TestDb::strict().await;
    let recur = |args: &[&str]| support::recur(&db.url, args, b"");
    assert!(stdout(&recur(&["tenant", "create", "t"])).contains("running unlimited"));
    assert!(stdout(&recur(&["tenant", "set", "t", "--max-running", "3"])).contains("running 3"));
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM run_slots").await, 3);
    for (value, says) in [
        ("0", "max running 0 is out of range; give 1 to 100000"),
        ("lots", "\"lots\" is not a count; give a number, or none"),
    ] {
        let error = one_line_error(&recur(&["tenant", "set", "t", "--max-running", value]));
        assert!(error.contains(says), "{error}");
    }
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM run_slots").await, 3);
    let json = support::json_report(&recur(&["tenant", "show", "t", "--json"]));
    assert_eq!(json["max_running"], 3);
    assert!(
        stdout(&recur(&["tenant", "set", "t", "--max-running", "none"]))
            .contains("running unlimited")
    );
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM run_slots").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_together_write_no_more_of_a_tenants_spawns_a_minute_than_its_quota() {
    let _serial = crate::faults::SERIAL.lock().await;
    let db = TestDb::strict().await;
    let recur = |args: &[&str]| support::recur(&db.url, args, b"");
    let created = recur(&[
        "tenant",
        "create",
        "spawny",
        "--max-spawns-per-minute",
        "10",
    ]);
    assert!(
        stdout(&created).contains("spawns per minute 10"),
        "{created:?}"
    );
    assert!(stdout(&recur(&["tenant", "create", "calm"])).contains("created"));
    for tenant in ["spawny", "calm"] {
        db.deploy_for(tenant, "parent", HUGE_OUTPUT_COMPONENT).await;
        db.deploy_for(tenant, "noop", NOOP_COMPONENT).await;
    }
    // The budget is the database's minute: start well inside one, so that the test's
    // few seconds of spawns fall in it.
    let second: f64 = db.scalar("SELECT extract(second FROM now())::float8").await;
    if second > 40.0 {
        tokio::time::sleep(Duration::from_secs_f64(61.0 - second)).await;
    }
    let parents: Vec<NewTask> = ["spawny", "calm"]
        .iter()
        .flat_map(|tenant| {
            (0..10).map(move |i| NewTask {
                tenant: (*tenant).into(),
                payload: format!(r#"{{"spawns": 3, "prefix": "p{i}-"}}"#).into_bytes(),
                ..NewTask::new("parent", format!("p{i}"))
            })
        })
        .collect();
    enqueue::enqueue(&db.pool, &parents).await.unwrap();
    let hosts = [
        Host::start(db.pool.clone(), test_config()).unwrap(),
        Host::start(db.another_pool().await, test_config()).unwrap(),
    ];
    db.wait_for(
        "SELECT count(*) = 20 FROM tasks
         WHERE task_type = 'parent' AND (status = 1 OR last_error LIKE '%max_spawns_per_minute%')",
        Duration::from_secs(30),
    )
    .await;
    for host in hosts {
        host.stop().await;
    }

    let children = |tenant: &str| {
        format!("SELECT count(*) FROM tasks WHERE tenant = '{tenant}' AND task_type = 'noop'")
    };
    let spawny: i64 = db.scalar(&children("spawny")).await;
    assert!(
        (3..=10).contains(&spawny),
        "{spawny} spawns of spawny's were written"
    );
    let done: i64 = db
        .scalar("SELECT count(*) FROM tasks WHERE tenant = 'spawny' AND task_type = 'parent' AND status = 1")
        .await;
    assert_eq!(
        spawny,
        done * 3,
        "a run's spawns are written whole or not at all"
    );
    let refused: Vec<(i16, String, bool)> = sqlx::query_as(
        "SELECT status, last_error, next_run_at >= date_trunc('minute', now()) + interval '1 minute'
         FROM tasks WHERE tenant = 'spawny' AND task_type = 'parent' AND status <> 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(refused.len() as i64, 10 - done);
    for (status, error, next_minute) in refused {
        assert_eq!(status, 0, "retried, not parked: {error}");
        assert!(next_minute, "retried in the next minute");
        assert!(
            error.contains(
                "tenant \"spawny\" may spawn at most 10 tasks a minute (its max_spawns_per_minute)"
            ),
            "{error}"
        );
    }
    assert_eq!(
        db.scalar::<i64>(&children("calm")).await,
        30,
        "calm's spawns all went in"
    );
}

/// Spawns count against a tenant's `max_tasks` as enqueues do: with room for three more
/// tasks, of two runs that spawn three each, one's spawns go in and the other's task is
/// retried with the quota in its error, while another tenant's spawns all go in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_count_against_a_tenants_task_quota() {
    let db = TestDb::strict().await;
    let recur = |args: &[&str]| support::recur(&db.url, args, b"");
    assert!(stdout(&recur(&["tenant", "create", "full", "--max-tasks", "5"])).contains("tasks 5"));
    assert!(stdout(&recur(&["tenant", "create", "roomy"])).contains("created"));
    // Their children's type has no module, so they stay scheduled, and counted.
    for tenant in ["full", "roomy"] {
        db.deploy_for(tenant, "parent", HUGE_OUTPUT_COMPONENT).await;
    }
    let parents: Vec<NewTask> = ["full", "roomy"]
        .iter()
        .flat_map(|tenant| {
            (0..2).map(move |i| NewTask {
                tenant: (*tenant).into(),
                payload: format!(r#"{{"spawns": 3, "prefix": "p{i}-"}}"#).into_bytes(),
                ..NewTask::new("parent", format!("p{i}"))
            })
        })
        .collect();
    enqueue::enqueue(&db.pool, &parents).await.unwrap();
    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(
        "SELECT count(*) = 4 FROM tasks
         WHERE task_type = 'parent' AND (status = 1 OR last_error LIKE '%max_tasks%')",
        Duration::from_secs(30),
    )
    .await;
    host.stop().await;
    let children = |tenant: &str| {
        format!("SELECT count(*) FROM tasks WHERE tenant = '{tenant}' AND task_type = 'noop'")
    };
    assert_eq!(db.scalar::<i64>(&children("full")).await, 3);
    let refused: (i16, String) = sqlx::query_as(
        "SELECT status, last_error FROM tasks WHERE tenant = 'full' AND task_type = 'parent' AND status <> 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(refused.0, 0, "retried, not parked");
    assert!(
        refused
            .1
            .contains("tenant \"full\" may have at most 5 scheduled tasks (its max_tasks)"),
        "{}",
        refused.1
    );
    assert_eq!(db.scalar::<i64>(&children("roomy")).await, 6);
}
