//! Many hosts, one table: disjoint claims, every due task run, and crashes that lose
//! nothing.
//!
//! Longer than most files: each behaviour is tested under both kinds of claim, and the
//! pairs stay side by side.

use std::sync::Arc;
use std::time::Duration;

use recur_host::ClaimMode;
use recur_host::Host;
use recur_host::claim::Compiling;
use recur_host::claim::{ClaimCursor, ClaimRequest, claim_locked, claim_timed};
use recur_host::commit;
use recur_host::enqueue::{self, NewTask};
use recur_host::examples::artifacts::NOOP_COMPONENT;
use recur_host::maintain::Vacuumed;
use recur_host::sandbox::{Decision, Outcome};
use recur_host::task::ClaimedTask;
use tokio::sync::Semaphore;

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
async fn a_lease_that_is_never_committed_runs_again_and_its_late_commit_changes_nothing() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    db.enqueue(&[("noop", "a", ""), ("noop", "b", ""), ("noop", "c", "")])
        .await;

    // A "host" leases two tasks and dies before committing.
    let request = ClaimRequest {
        limit: 2,
        lease_timeout: Duration::from_millis(800),
        types: None,
        tenants: None,
        skip: None,
        host: 0,
    };
    let crashed = claim_timed(&db.pool, &request).await.unwrap();
    assert_eq!(crashed.len(), 2);
    // While the lease holds, nobody else gets those tasks.
    let others = claim_timed(
        &db.pool,
        &ClaimRequest {
            limit: 10,
            ..request.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(others.len(), 1);
    assert!(crashed.iter().all(|c| c.id != others[0].id));

    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(DONE, Duration::from_secs(20)).await;
    host.stop().await;
    for task in &crashed {
        let row = db.task(&task.key).await;
        assert_eq!((row.status, row.runs), (1, 1), "{}: {row:?}", task.key);
    }

    // The dead host's late commit (old token) must not touch the newer result.
    let stale = Outcome {
        decision: Decision::Fail("stale".into()),
        spawns: vec![],
    };
    let writes: Vec<_> = crashed
        .iter()
        .map(|t| commit::decide(t, Ok(stale.clone()), 5, 0))
        .collect();
    let done = commit::commit(&db.pool, &writes, None, false)
        .await
        .unwrap();
    assert_eq!(done.committed, 0);
    for task in &crashed {
        let row = db.task(&task.key).await;
        assert_eq!((row.status, row.error), (1, None));
    }
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

/// Both claim statements leave alone the (tenant, task type) pairs the host is compiling
/// a module for, and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_leave_the_tasks_of_modules_being_compiled_alone() {
    let db = TestDb::new().await;
    let tasks =
        [("acme", "noop"), ("acme", "ticker"), ("globex", "noop")].map(|(tenant, task_type)| {
            NewTask {
                tenant: tenant.into(),
                ..NewTask::new(task_type, format!("{tenant}-{task_type}"))
            }
        });
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    let request = ClaimRequest {
        limit: 10,
        lease_timeout: Duration::from_secs(60),
        types: None,
        tenants: None,
        skip: Some(Arc::new(Compiling {
            tenants: vec!["acme".into()],
            types: vec!["noop".into()],
        })),
        host: 0,
    };
    let keys = |claimed: &[ClaimedTask]| {
        let mut keys: Vec<String> = claimed.iter().map(|t| t.key.clone()).collect();
        keys.sort();
        keys
    };
    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
    let locked = claim_locked(&db.pool, &request, &mut ClaimCursor::default(), permit)
        .await
        .unwrap();
    assert_eq!(keys(&locked), ["acme-ticker", "globex-noop"], "row locks");
    locked[0]
        .lock
        .clone()
        .unwrap()
        .take()
        .await
        .unwrap()
        .rollback()
        .await
        .unwrap();
    let timed = claim_timed(&db.pool, &request).await.unwrap();
    assert_eq!(keys(&timed), ["acme-ticker", "globex-noop"], "timed lease");
    let rest = claim_timed(
        &db.pool,
        &ClaimRequest {
            skip: None,
            ..request
        },
    )
    .await
    .unwrap();
    assert_eq!(keys(&rest), ["acme-noop"], "unclaimed, and due");
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

/// With autovacuum off (or behind), a host vacuums the tasks table itself once dead row
/// versions pass the threshold, so the due index does not fill with dead entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_vacuums_the_tasks_table_when_dead_rows_pile_up() {
    let db = TestDb::new().await;
    sqlx::query("ALTER TABLE tasks SET (autovacuum_enabled = false)")
        .execute(&db.pool)
        .await
        .unwrap();
    dead_task_rows(&db).await;
    let found = recur_host::maintain::vacuum_if_needed(&db.pool, Vacuumed::Tasks)
        .await
        .unwrap();
    assert!(found.is_some_and(|d| d >= 50_000), "{found:?}");
    let vacuums: i64 = db
        .scalar("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'tasks'")
        .await;
    assert_eq!(vacuums, 1);
    assert_eq!(
        recur_host::maintain::vacuum_if_needed(&db.pool, Vacuumed::Tasks)
            .await
            .unwrap(),
        None,
        "nothing left to vacuum"
    );
}

/// Every locked batch leaves a dead row in `claims`, which every locked claim scans: a
/// host vacuums it too once they pile up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_vacuums_the_claims_table_when_dead_rows_pile_up() {
    let db = TestDb::new().await;
    let dead = recur_host::maintain::CLAIMS_DEAD_MIN;
    dead_claims(&db, dead * 2).await;
    dead_rows_counted(&db, "claims", dead * 2).await;
    assert_eq!(
        recur_host::maintain::vacuum_if_needed(&db.pool, Vacuumed::Tasks)
            .await
            .unwrap(),
        None,
        "the tasks table has nothing to vacuum"
    );
    let found = recur_host::maintain::vacuum_if_needed(&db.pool, Vacuumed::Claims)
        .await
        .unwrap();
    assert!(found.is_some_and(|d| d >= dead), "{found:?}");
    let vacuums: i64 = db
        .scalar("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'claims'")
        .await;
    assert_eq!(vacuums, 1);
}

/// `task_keys` gains a row per new task and loses almost none, so no dead rows ever call
/// for a vacuum; yet until one has seen its pages, a probe of its index must read the
/// key's row too. A host vacuums it once new keys pile up, as autovacuum does for
/// tables only inserted into.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_vacuums_the_keys_table_once_new_keys_pile_up() {
    let db = TestDb::new().await;
    sqlx::query("ALTER TABLE task_keys SET (autovacuum_enabled = false)")
        .execute(&db.pool)
        .await
        .unwrap();
    db.deploy("noop", NOOP_COMPONENT).await;
    let keys = 120_000;
    assert_eq!(db.enqueue_n("noop", keys, "").await, keys as u64);
    db.wait_for(
        &format!(
            "SELECT n_ins_since_vacuum >= {keys} FROM pg_stat_user_tables WHERE relname = 'task_keys'"
        ),
        Duration::from_secs(10),
    )
    .await;
    let vacuum = |table| recur_host::maintain::vacuum_if_needed(&db.pool, table);
    // New tasks are no dead rows: `tasks` waits for none.
    assert_eq!(vacuum(Vacuumed::Tasks).await.unwrap(), None);
    let found = vacuum(Vacuumed::TaskKeys).await.unwrap();
    assert!(found.is_some_and(|n| n >= keys as i64), "{found:?}");
    let visible: bool = db
        .scalar("SELECT relallvisible > 0 FROM pg_class WHERE relname = 'task_keys'")
        .await;
    assert!(visible, "the vacuum marked the keys' pages all-visible");
    assert_eq!(
        vacuum(Vacuumed::TaskKeys).await.unwrap(),
        None,
        "nothing left to vacuum"
    );
}

/// A vacuum of `tasks` can take hours at billions of rows. Each table has a vacuum loop
/// of its own, so `claims`, which every locked claim scans whole, is still vacuumed
/// meanwhile, and a host that stops leaves a vacuum still running to the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_vacuum_of_tasks_holds_up_neither_the_claims_vacuum_nor_a_stop() {
    let db = TestDb::new().await;
    dead_task_rows(&db).await;
    // A lock VACUUM must wait for, which row reads and writes do not: the hosts' vacuum
    // of `tasks` then lasts as long as this transaction.
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE tasks IN SHARE UPDATE EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let every = Duration::from_millis(100);
    let loops: Vec<_> = [Vacuumed::Tasks, Vacuumed::Claims]
        .map(|table| {
            tokio::spawn(recur_host::maintain::vacuum(
                db.pool.clone(),
                table,
                every,
                stopped.clone(),
            ))
        })
        .into();
    db.wait_for(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                        WHERE query LIKE 'VACUUM%tasks' AND wait_event_type = 'Lock')",
        Duration::from_secs(10),
    )
    .await;

    // Dead claims rows, only now that the vacuum of tasks waits.
    dead_claims(&db, recur_host::maintain::CLAIMS_DEAD_MIN * 2).await;
    db.wait_for(
        "SELECT vacuum_count >= 1 FROM pg_stat_user_tables WHERE relname = 'claims'",
        Duration::from_secs(15),
    )
    .await;

    // The vacuum of tasks still waits, and stopping does not.
    stop.send(true).unwrap();
    for stopping in loops {
        tokio::time::timeout(Duration::from_secs(5), stopping)
            .await
            .expect("a vacuum loop stops without waiting for its vacuum")
            .unwrap();
    }
    assert_eq!(
        db.scalar::<i64>("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'tasks'")
            .await,
        0
    );
    holder.rollback().await.unwrap();
}

/// 20,000 tasks, each updated until their dead versions pass the hosts' threshold for
/// vacuuming `tasks`, and counted in its statistics.
async fn dead_task_rows(db: &TestDb) {
    db.enqueue_n("noop", 20_000, "").await;
    let dead = recur_host::maintain::VACUUM_DEAD_MIN as usize;
    for _ in 0..(dead / 20_000 + 2) {
        sqlx::query("UPDATE tasks SET updated_at = now()")
            .execute(&db.pool)
            .await
            .unwrap();
    }
    dead_rows_counted(db, "tasks", 50_000).await;
}

/// `dead` dead rows in `claims`, as many locked batches leave. One transaction, so that
/// its backend reports the inserts and the deletes together, at its commit: reported
/// apart, the live rows could still count while the dead ones do, and a tenth of them
/// raises the threshold.
async fn dead_claims(db: &TestDb, dead: i64) {
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO claims (key, task_ids) SELECT g, '{1}' FROM generate_series(1, $1) g")
        .bind(dead)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM claims")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Waits until `table` shows at least `dead` dead row versions in its statistics, which
/// reach `pg_stat_user_tables` only when the backend reports them.
async fn dead_rows_counted(db: &TestDb, table: &str, dead: i64) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&db.pool)
        .await
        .unwrap();
    db.wait_for(
        &format!("SELECT n_dead_tup >= {dead} FROM pg_stat_user_tables WHERE relname = '{table}'"),
        Duration::from_secs(10),
    )
    .await;
}
