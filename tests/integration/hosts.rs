//! Many hosts, one table: disjoint claims, every due task run, and crashes that lose
//! nothing.
//!
//! Longer than most files: each behaviour is tested under both kinds of claim, and the
//! pairs stay side by side.

use std::time::Duration;

use recur_host::ClaimMode;
use recur_host::Host;
use recur_host::enqueue::{self, NewTask};
use recur_host::examples::artifacts::NOOP_COMPONENT;

use crate::support::{TestDb, test_config, wait};

const DONE: &str = "SELECT count(*) FILTER (WHERE status = 1) = count(*) FROM tasks";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_split_the_work_and_never_run_a_task_twice() {
    two_hosts_share(ClaimMode::Timed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_claiming_under_row_locks_never_run_a_task_twice() {
    two_hosts_share(ClaimMode::Locked).await;
}

async fn two_hosts_share(claim: ClaimMode) {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    assert_eq!(db.enqueue_n("noop", 3000, "").await, 3000);

    let config = recur_host::HostConfig {
        lease_timeout: Duration::from_secs(60),
        claim,
        ..test_config()
    };
    let a = Host::start(db.pool.clone(), config.clone()).unwrap();
    let b = Host::start(db.another_pool().await, config).unwrap();
    db.wait_for(DONE, Duration::from_secs(60)).await;
    let (a, b) = (a.stop().await, b.stop().await);

    assert!(
        a.executed > 0 && b.executed > 0,
        "both hosts worked: {a:?} {b:?}"
    );
    assert_eq!(a.executed + b.executed, 3000, "every task ran exactly once");
    assert_eq!(a.committed + b.committed, 3000);
    assert_eq!(a.fenced_out + b.fenced_out, 0);
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE runs = 1 AND lease_token IS NULL")
            .await,
        3000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_dropped_mid_batch_loses_nothing() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    db.enqueue_n("noop", 2000, "").await;

    let mut config = test_config();
    config.lease_timeout = Duration::from_secs(1);
    let doomed = Host::start(db.pool.clone(), config.clone()).unwrap();
    wait(Duration::from_secs(20), "the first host to lease", || {
        let leased = doomed.stats().claimed;
        async move { leased > 0 }
    })
    .await;
    drop(doomed); // a crash: nothing committed or given back from here on

    let survivor = Host::start(db.another_pool().await, config).unwrap();
    db.wait_for(DONE, Duration::from_secs(60)).await;
    survivor.stop().await;
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE status = 1 AND runs = 1")
            .await,
        2000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_gives_back_what_it_did_not_run() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    db.enqueue_n("noop", 5000, "").await;

    let mut config = test_config();
    config.lease_timeout = Duration::from_secs(600);
    let host = Host::start(db.pool.clone(), config).unwrap();
    wait(Duration::from_secs(20), "some executions", || {
        let executed = host.stats().executed;
        async move { executed > 100 }
    })
    .await;
    let stats = host.stop().await;
    // Nothing is left leased: every task is done or due again, none waits for its lease.
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE lease_token IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE status = 1")
            .await,
        stats.committed as i64
    );
    assert_eq!(
        db.scalar::<i64>(
            "SELECT count(*) FROM tasks WHERE status = 0 AND next_run_at <= now() AND attempt = 0"
        )
        .await,
        5000 - stats.committed as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_limited_to_some_types_leaves_the_others_alone() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    db.deploy("other", NOOP_COMPONENT).await;
    db.enqueue(&[("noop", "mine", ""), ("other", "not-mine", "")])
        .await;
    let config = recur_host::HostConfig {
        types: Some(vec!["noop".into()]),
        ..test_config()
    };
    let host = Host::start(db.pool.clone(), config).unwrap();
    db.wait_for(
        "SELECT status = 1 FROM tasks WHERE key = 'mine'",
        Duration::from_secs(10),
    )
    .await;
    let stats = host.stop().await;
    assert_eq!(stats.claimed, 1);
    let other = db.task("not-mine").await;
    assert_eq!((other.status, other.runs, other.attempt), (0, 0, 0));
}

/// Through both claim paths: a timed lease and row locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_limited_to_some_tenants_leaves_the_others_alone() {
    for claim in [ClaimMode::Timed, ClaimMode::Locked] {
        let db = TestDb::new().await;
        for tenant in ["acme", "globex", "initech"] {
            db.deploy_for(tenant, "noop", NOOP_COMPONENT).await;
        }
        let tasks = ["acme", "globex", "initech"].map(|tenant| NewTask {
            tenant: tenant.into(),
            ..NewTask::new("noop", tenant)
        });
        enqueue::enqueue(&db.pool, &tasks).await.unwrap();
        let config = recur_host::HostConfig {
            tenants: Some(vec!["acme".into(), "initech".into()]),
            claim,
            ..test_config()
        };
        let host = Host::start(db.pool.clone(), config).unwrap();
        db.wait_for(
            "SELECT bool_and(status = 1) FROM tasks WHERE tenant IN ('acme', 'initech')",
            Duration::from_secs(10),
        )
        .await;
        let stats = host.stop().await;
        // (Leased may count a task twice: a locked claim gives back what it took while
        // the module compiled.)
        assert_eq!(stats.executed, 2, "{claim:?}");
        let other = db.task("globex").await;
        assert_eq!(
            (other.status, other.runs, other.attempt),
            (0, 0, 0),
            "{claim:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_host_s_locked_claims_are_due_again_at_once() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    db.enqueue_n("noop", 2000, "").await;
    // A lease timeout far beyond the test's deadline: only released row locks, not an
    // expired lease, can let the survivor finish in time.
    let config = recur_host::HostConfig {
        lease_timeout: Duration::from_secs(600),
        claim: ClaimMode::Locked,
        ..test_config()
    };
    let doomed = Host::start(db.another_pool().await, config.clone()).unwrap();
    wait(Duration::from_secs(20), "the first host to claim", || {
        let leased = doomed.stats().claimed;
        async move { leased > 0 }
    })
    .await;
    drop(doomed);

    let survivor = Host::start(db.another_pool().await, config).unwrap();
    db.wait_for(DONE, Duration::from_secs(30)).await;
    survivor.stop().await;
    assert_eq!(
        db.scalar::<i64>(
            "SELECT count(*) FROM tasks WHERE status = 1 AND runs = 1 AND lease_token IS NULL"
        )
        .await,
        2000
    );
}
