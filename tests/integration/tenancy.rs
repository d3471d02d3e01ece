//! Tenants and neighbours: one tenant's module cannot read or change another tenant's
//! tasks, a well-behaved module keeps its pace on a host that is also running every
//! kind of misbehaving module, and on one that is compiling other tenants' modules.

use std::time::{Duration, Instant};

use recur_host::ClaimMode;
use recur_host::enqueue::{self, NewTask};
use recur_host::examples::artifacts::*;
use recur_host::sandbox::{Sandbox, SandboxConfig};
use recur_host::{Host, HostConfig, deploy};

use crate::faults::{Fleet, audit};
use crate::support::{TestDb, test_config};

fn task(tenant: &str, task_type: &str, key: &str, payload: &str) -> NewTask {
    NewTask {
        tenant: tenant.into(),
        payload: payload.as_bytes().to_vec(),
        ..NewTask::new(task_type, key)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_runs_its_own_module_and_spawns_stay_in_the_spawners_tenant() {
    let db = TestDb::new().await;
    // One task type, two tenants, two different modules.
    db.deploy_for("alpha", "job", LEDGER_COMPONENT).await;
    db.deploy_for("beta", "job", HUGE_OUTPUT_COMPONENT).await;
    db.deploy_for("alpha", "noop", NOOP_COMPONENT).await;
    db.deploy_for("beta", "noop", COUNTER_COMPONENT).await;
    let tasks = [
        task(
            "alpha",
            "job",
            "same",
            r#"{"iterations": 2, "every_ms": 10}"#,
        ),
        task("beta", "job", "same", r#"{"spawns": 3}"#),
        // Alpha owns a task with the key beta's spawn will use: it must stay alpha's,
        // untouched, and beta must still get its own child.
        task("alpha", "noop", "child-0", r#"{"every_ms": 3600000}"#),
    ];
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    let host = recur_host::Host::start(db.pool.clone(), crate::support::test_config()).unwrap();
    db.wait_for(
        "SELECT count(*) FILTER (WHERE task_type = 'job' AND status = 1) = 2
            AND count(*) FILTER (WHERE tenant = 'beta' AND task_type = 'noop' AND runs > 0) = 3
         FROM tasks",
        Duration::from_secs(30),
    )
    .await;
    host.stop().await;

    let rows: Vec<(String, i16, i64, String)> = sqlx::query_as(
        "SELECT tenant || '/' || task_type || '/' || key, status, runs,
                coalesce(convert_from(state, 'UTF8'), '')
         FROM tasks ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        keys,
        [
            "alpha/job/same",
            "alpha/noop/child-0",
            "beta/job/same",
            "beta/noop/child-0",
            "beta/noop/child-1",
            "beta/noop/child-2"
        ],
        "beta's spawns landed in beta, and nowhere else"
    );
    // Alpha's job ran the ledger (twice, then done); beta's ran huge-output (done at
    // once, no state).
    assert_eq!(
        (rows[0].1, rows[0].2, rows[0].3.as_str()),
        (1, 2, r#"{"n":2}"#)
    );
    assert_eq!((rows[2].1, rows[2].2, rows[2].3.as_str()), (1, 1, ""));
    // Alpha's task with the colliding key: run once by alpha's noop (which keeps no
    // state), due again in an hour; beta's spawn did not touch it.
    assert_eq!((rows[1].1, rows[1].2, rows[1].3.as_str()), (0, 1, ""));
    // Beta's children ran beta's "noop", which is the counter module.
    for child in &rows[3..] {
        assert!(child.3.starts_with(r#"{"count":"#), "{child:?}");
    }
}

/// A host with two workers runs a good tenant's ledger tasks while a bad tenant's
/// modules spin to their timeout, bomb their memory, trap, overflow their stack, return
/// impossible outcomes and flood the log. The good tasks lose nothing and keep running;
/// how late they get is printed (the figure in RELIABILITY.md), not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_tenant_keeps_running_beside_misbehaving_modules() {
    let _serial = crate::faults::SERIAL.lock().await;
    let db = TestDb::new().await;
    db.deploy_for("good", "ledger", LEDGER_COMPONENT).await;
    let bad = [
        ("spin", SPIN_COMPONENT, ""),
        ("memory-bomb", MEMORY_BOMB_COMPONENT, ""),
        ("trap", TRAP_COMPONENT, ""),
        ("stack-overflow", STACK_OVERFLOW_COMPONENT, ""),
        ("bad-time", BAD_TIME_COMPONENT, r#"{"when": "past"}"#),
        ("huge-output", HUGE_OUTPUT_COMPONENT, r#"{"spawns": 5000}"#),
        ("log-flood", LOG_FLOOD_COMPONENT, ""),
    ];
    let mut tasks = Vec::new();
    for (task_type, path, payload) in bad {
        db.deploy_for("bad", task_type, path).await;
        tasks.extend((0..4).map(|i| task("bad", task_type, &format!("{task_type}-{i}"), payload)));
    }
    tasks.extend((0..50).map(|i| {
        task(
            "good",
            "ledger",
            &format!("g{i}"),
            r#"{"every_ms": 200, "iterations": 25}"#,
        )
    }));
    // The bad tenant's runs may take a second each before the deadline stops them, and
    // get three tries.
    db.limits("bad", 1000, 3).await;
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();

    let mut fleet = Fleet::new(
        &db,
        "neighbours",
        &["--concurrency", "2", "--lease-timeout", "30s"],
    );
    fleet.start();
    db.wait_for(
        "SELECT count(*) FILTER (WHERE tenant = 'good' AND status = 1) = 50
            AND count(*) FILTER (WHERE tenant = 'bad' AND task_type <> 'log-flood' AND status = 0) = 0
         FROM tasks",
        Duration::from_secs(90),
    )
    .await;
    fleet.assert_alive();
    fleet.stop_all(Duration::from_secs(30)).await;
    let audit = audit(&db, &fleet, &[], 200).await;
    crate::faults::report(
        "neighbours",
        "28 misbehaving tasks of 7 kinds on the same 2-worker host",
        &audit,
        "",
    );
    audit.assert_clean();
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE tenant = 'bad' AND status = 2")
            .await,
        24,
        "every misbehaving task but the log flood is parked"
    );
}

/// A tenant whose module runs to a long deadline must not take every worker of the
/// host: the fair queue holds back a tenant's runs of a module not proven short to
/// `workers - 1`, so the other tenants' due tasks keep running. The margin is wide (a
/// 10 s deadline against a 200 ms interval), so this is no timing test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_a_long_deadline_cannot_take_every_worker() {
    let _serial = crate::faults::SERIAL.lock().await;
    let db = TestDb::new().await;
    db.deploy_for("good", "ledger", LEDGER_COMPONENT).await;
    db.deploy_for("bad", "spin", SPIN_COMPONENT).await;
    db.limits("bad", 10_000, 1).await;
    let mut tasks: Vec<_> = (0..10)
        .map(|i| task("good", "ledger", &format!("g{i}"), r#"{"every_ms": 200}"#))
        .collect();
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    let mut fleet = Fleet::new(
        &db,
        "starve",
        &["--concurrency", "2", "--lease-timeout", "60s"],
    );
    fleet.start();
    db.wait_for("SELECT min(runs) >= 3 FROM tasks", Duration::from_secs(30))
        .await;
    tasks = (0..4)
        .map(|i| task("bad", "spin", &format!("s{i}"), ""))
        .collect();
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    db.wait_for(
        "SELECT count(*) = 4 FROM tasks WHERE tenant = 'bad' AND status = 2",
        Duration::from_secs(60),
    )
    .await;
    fleet.stop_all(Duration::from_secs(30)).await;
    let audit = audit(&db, &fleet, &[], 200).await;
    audit.assert_clean();
    assert!(
        audit.max_gap_ms < 10_000,
        "the good tenant stood still for {} ms while the bad one spun",
        audit.max_gap_ms
    );
}

/// Thirty tenants `new-0` to `new-29`, each with noop made distinct, so that a host
/// compiles each; returns their names.
async fn deploy_newcomers(db: &TestDb) -> Vec<String> {
    let noop = std::fs::read(NOOP_COMPONENT).unwrap();
    let sandbox = Sandbox::new(&SandboxConfig::default()).unwrap();
    let newcomers: Vec<String> = (0..30).map(|i| format!("new-{i}")).collect();
    for tenant in &newcomers {
        let bytes = recur_host::examples::marked(&noop, tenant);
        deploy::deploy(&db.pool, &sandbox, tenant, "noop", &bytes)
            .await
            .unwrap();
    }
    newcomers
}

/// While a host compiles the modules of 30 tenants it meets at once (one after another,
/// seconds in all), a tenant whose module it has ready keeps running on schedule: only
/// the tasks that need a module wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_keeps_running_while_the_host_compiles_other_tenants_modules() {
    const EVERY_MS: u64 = 50;
    let db = TestDb::new().await;
    db.deploy_for("steady", "noop", NOOP_COMPONENT).await;
    let payload = format!(r#"{{"every_ms": {EVERY_MS}}}"#);
    enqueue::enqueue(&db.pool, &[task("steady", "noop", "tick", &payload)])
        .await
        .unwrap();
    let newcomers = deploy_newcomers(&db).await;
    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(
        "SELECT runs >= 3 FROM tasks WHERE key = 'tick'",
        Duration::from_secs(20),
    )
    .await;

    let before = db.task("tick").await.runs;
    let started = Instant::now();
    let tasks: Vec<NewTask> = newcomers
        .iter()
        .map(|tenant| task(tenant, "noop", "once", ""))
        .collect();
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    db.wait_for(
        "SELECT bool_and(status = 1) FROM tasks WHERE tenant LIKE 'new-%'",
        Duration::from_secs(120),
    )
    .await;
    let window = started.elapsed();
    let during = db.task("tick").await.runs - before;
    host.stop().await;
    // On schedule it would run window / EVERY_MS times; a host that stopped everything
    // to compile runs it about once. A quarter leaves room for a slow machine.
    let on_schedule = (window.as_millis() as u64 / EVERY_MS) as i64;
    assert!(
        during >= (on_schedule / 4).max(3),
        "tick ran {during} times in {window:?} of compiling ({on_schedule} on schedule)"
    );
}

/// Under row locks, a claim that takes tasks whose modules are still compiling gives them
/// back at once rather than holding its batch, and every other outcome in it, until they
/// are ready; the claims after it leave them alone until they are. Held, the batch here
/// would outlive its claim (the tests' 2 s lease) while 30 modules compile, and its runs
/// would be stopped or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_batch_gives_back_the_tasks_of_modules_being_compiled() {
    let db = TestDb::new().await;
    let newcomers = deploy_newcomers(&db).await;
    let config = HostConfig {
        claim: ClaimMode::Locked,
        ..test_config()
    };
    let host = Host::start(db.pool.clone(), config).unwrap();
    let tasks: Vec<NewTask> = newcomers
        .iter()
        .map(|tenant| task(tenant, "noop", "once", ""))
        .collect();
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();

    // The host compiles only what a claim brought it: once one module is ready, the
    // tasks have been claimed.
    let started = Instant::now();
    while host.compilations().compiled == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing compiled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A batch held for its modules would keep every task not run yet locked.
    db.wait_for(
        "SELECT count(*) > 0 FROM (SELECT 1 FROM tasks
            WHERE tenant LIKE 'new-%' AND status = 0 FOR UPDATE SKIP LOCKED) AS free",
        Duration::from_secs(30),
    )
    .await;
    let compiled = host.compilations().compiled;
    assert!(
        compiled < 30,
        "no task was free before all 30 modules were compiled"
    );
    db.wait_for(
        "SELECT bool_and(status = 1) FROM tasks WHERE tenant LIKE 'new-%'",
        Duration::from_secs(120),
    )
    .await;
    let stats = host.stop().await;
    assert_eq!(
        (stats.executed, stats.expired, stats.fenced_out),
        (30, 0, 0),
        "each task should run once, in time, its outcome kept: {stats:?}"
    );
}
