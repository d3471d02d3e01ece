//! Misbehaving modules fail their own tasks, each with a clear error, while the
//! well-behaved tasks of the same batch succeed; a module gets nothing the contract does
//! not grant; an instance reused between tasks gives the same results as fresh ones,
//! serves one tenant only and ends after a trap, a growth or a number of runs. (The
//! sandbox run on its own, without a host, is tested in the engine: host/src/tests/.)
//!
//! Longer than most files: one test per way a module can misbehave, each standing alone,
//! so that the list of what the sandbox holds against reads in one place.

use std::time::Duration;

use recur_host::ClaimMode;
use recur_host::deploy::{self, DeployOptions};
use recur_host::enqueue::{self, NewTask};
use recur_host::examples::artifacts::*;
use recur_host::sandbox::{REUSE_MAX_RUNS, Sandbox, SandboxConfig};
use recur_host::{Host, HostConfig};

use crate::support::{TestDb, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misbehaving_module_fails_only_its_own_task() {
    let db = TestDb::new().await;
    for (task_type, path) in [
        ("noop", NOOP_COMPONENT),
        ("spin", SPIN_COMPONENT),
        ("memory-bomb", MEMORY_BOMB_COMPONENT),
        ("trap", TRAP_COMPONENT),
        ("lean-trap", LEAN_TRAP_COMPONENT),
        ("stack-overflow", STACK_OVERFLOW_COMPONENT),
        ("bad-time", BAD_TIME_COMPONENT),
        ("huge-output", HUGE_OUTPUT_COMPONENT),
        ("log-flood", LOG_FLOOD_COMPONENT),
    ] {
        db.deploy(task_type, path).await;
    }
    // One attempt, so a sandbox fault parks the task at once; a short timeout for spin.
    db.limits("default", 300, 1).await;
    let mut tasks = vec![
        ("spin", "spin", ""),
        ("memory-bomb", "bomb", ""),
        ("trap", "trap", ""),
        ("lean-trap", "lean-trap", ""),
        ("stack-overflow", "deep", ""),
        ("stack-overflow", "deep-in-memory", r#"{"in": "memory"}"#),
        ("bad-time", "past", r#"{"when": "past"}"#),
        ("bad-time", "future", r#"{"when": "future"}"#),
        ("huge-output", "big-state", r#"{"state_bytes": 1048576}"#),
        ("huge-output", "many-spawns", r#"{"spawns": 5000}"#),
        ("log-flood", "chatty", ""),
    ];
    let good: Vec<String> = (0..40).map(|i| format!("good-{i}")).collect();
    tasks.extend(good.iter().map(|k| ("noop", k.as_str(), "")));
    db.enqueue(&tasks).await;

    let mut config = test_config();
    config.batch = 100; // everything in one batch
    let host = Host::start(db.pool.clone(), config).unwrap();
    db.wait_for(
        "SELECT count(*) = 0 FROM tasks WHERE status = 0",
        Duration::from_secs(60),
    )
    .await;
    host.stop().await;

    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE key LIKE 'good-%' AND status = 1")
            .await,
        40
    );
    assert_eq!(
        db.task("chatty").await.status,
        1,
        "a log flood is cut, not fatal"
    );
    for (key, expected) in [
        ("spin", "timed out after 300 ms"),
        ("bomb", "memory limit of 64 MiB exceeded"),
        ("trap", "deliberate trap"),
        ("lean-trap", "the module logged: panicked at"),
        ("lean-trap", "deliberate trap without WASI"),
        ("deep", "stack overflow"),
        ("deep-in-memory", "out of bounds memory access"),
        ("deep-in-memory", "outgrows its stack"),
        ("past", "more than an hour in the past"),
        ("future", "more than ten years ahead"),
        ("big-state", "state of 1048576 bytes is over the limit"),
        (
            "many-spawns",
            "5000 spawns in one run is over the limit of 1000",
        ),
    ] {
        let row = db.task(key).await;
        let error = row.error.unwrap_or_default();
        assert_eq!(row.status, 2, "{key} should be parked: {error}");
        assert!(
            error.contains(expected),
            "{key}: expected {expected:?} in {error:?}"
        );
    }
    // Nothing the invalid outcomes asked for was written.
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE key LIKE 'child-%'")
            .await,
        0
    );
    assert_eq!(
        db.scalar::<i64>(
            "SELECT count(*) FROM tasks WHERE state IS NOT NULL AND key = 'big-state'"
        )
        .await,
        0
    );
}

/// A tenant's timeout longer than the hosts' lease does not let a run outlive its claim:
/// it is stopped at three quarters of the lease, with an error that says so, under both
/// claims. Left running, it would be run again elsewhere, over and over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_stopped_before_its_claim_runs_out() {
    for claim in [ClaimMode::Timed, ClaimMode::Locked] {
        let db = TestDb::new().await;
        db.deploy("spin", SPIN_COMPONENT).await;
        db.limits("default", 60_000, 1).await;
        db.enqueue(&[("spin", "long", "")]).await;
        let config = HostConfig {
            lease_timeout: Duration::from_secs(2),
            claim,
            ..test_config()
        };
        let host = Host::start(db.pool.clone(), config).unwrap();
        db.wait_for(
            "SELECT status = 2 FROM tasks WHERE key = 'long'",
            Duration::from_secs(30),
        )
        .await;
        let stats = host.stop().await;
        let row = db.task("long").await;
        let error = row.error.unwrap_or_default();
        assert!(
            error.contains("at the end of its lease") && error.contains("--lease-timeout"),
            "{claim:?}: {error}"
        );
        assert_eq!((row.runs, stats.executed), (0, 1), "{claim:?}: ran once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_sees_no_files_environment_or_network() {
    let db = TestDb::new().await;
    db.deploy("escape", ESCAPE_COMPONENT).await;
    db.enqueue(&[("escape", "try", "")]).await;
    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(
        "SELECT status = 1 FROM tasks WHERE key = 'try'",
        Duration::from_secs(20),
    )
    .await;
    host.stop().await;

    let state: serde_json::Value =
        serde_json::from_str(&db.task("try").await.state.unwrap()).unwrap();
    assert_eq!(state["env"], 0, "{state}");
    assert_eq!(state["args"], 0, "{state}");
    for denied in ["fs_read", "fs_list", "tcp", "dns"] {
        let result = state[denied].as_str().unwrap_or_default();
        assert!(
            !result.is_empty() && result != "ok",
            "{denied} was not denied: {state}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_a_module_stays_visible_with_an_error() {
    let db = TestDb::new().await;
    db.enqueue(&[("ghost", "boo", "")]).await;
    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(
        "SELECT last_error IS NOT NULL FROM tasks WHERE key = 'boo'",
        Duration::from_secs(10),
    )
    .await;
    host.stop().await;
    let row = db.task("boo").await;
    assert_eq!((row.status, row.attempt, row.runs), (0, 0, 0));
    assert!(
        row.error
            .unwrap()
            .contains("no module is deployed for task type 'ghost'")
    );
    assert!(row.due_in_secs > 20.0, "it waits before trying again");
}

// Instance reuse (`recur module deploy --reuse-instance`). The `call-count` module counts
// the calls its instance served in a static and completes with `{"calls": n}`, so each
// task's state says whether it ran in a fresh instance (1) or a reused one (more).

/// Deploys the component at `path` for `tenant`, reusing instances.
async fn deploy_reusing(db: &TestDb, tenant: &str, task_type: &str, path: &str) {
    let sandbox = Sandbox::new(&SandboxConfig {
        concurrent_runs: 1,
        ..SandboxConfig::default()
    })
    .unwrap();
    let options = DeployOptions {
        reuse_instance: true,
    };
    let bytes = std::fs::read(path).unwrap();
    deploy::deploy_with(&db.pool, &sandbox, tenant, task_type, &bytes, options)
        .await
        .unwrap();
}

/// A host with one worker, so that tasks run one after another on one thread.
fn one_worker() -> HostConfig {
    let mut config = test_config();
    config.concurrency = 1;
    config.sandbox.concurrent_runs = 1;
    config
}

/// Enqueues and runs `(tenant, key, payload)` tasks of type `calls` one at a time, in
/// order, each once the one before has finished, and returns the calls each saw
/// (0 for a task that failed).
async fn calls_in_order(db: &TestDb, tasks: &[(&str, &str, &str)]) -> Vec<u64> {
    let host = Host::start(db.pool.clone(), one_worker()).unwrap();
    let mut calls = Vec::new();
    for (tenant, key, payload) in tasks {
        let task = NewTask {
            tenant: (*tenant).into(),
            payload: payload.as_bytes().to_vec(),
            ..NewTask::new("calls", *key)
        };
        enqueue::enqueue(&db.pool, &[task]).await.unwrap();
        db.wait_for(
            &format!("SELECT status <> 0 FROM tasks WHERE tenant = '{tenant}' AND key = '{key}'"),
            Duration::from_secs(20),
        )
        .await;
        calls.push(calls_of(db, tenant, key).await);
    }
    host.stop().await;
    calls
}

/// The calls a finished task's instance had served, from its state; 0 without one.
async fn calls_of(db: &TestDb, tenant: &str, key: &str) -> u64 {
    let state: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT state FROM tasks WHERE tenant = $1 AND key = $2")
            .bind(tenant)
            .bind(key)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    state.map_or(0, |state| {
        serde_json::from_slice::<serde_json::Value>(&state).unwrap()["calls"]
            .as_u64()
            .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_instances_gives_the_same_results_as_fresh_ones() {
    let db = TestDb::new().await;
    // `counter` keeps its count in the state it returns, never in memory.
    db.deploy("fresh", COUNTER_COMPONENT).await;
    deploy_reusing(&db, "default", "reused", COUNTER_COMPONENT).await;
    let payload = r#"{"runs": 5, "every_ms": 0}"#;
    db.enqueue_n("fresh", 30, payload).await;
    db.enqueue_n("reused", 30, payload).await;
    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(
        "SELECT count(*) = 60 FROM tasks WHERE status = 1",
        Duration::from_secs(60),
    )
    .await;
    host.stop().await;

    let rows = |task_type: &'static str| {
        sqlx::query_as::<_, (String, i16, i64, i32, Option<Vec<u8>>, Option<String>)>(
            "SELECT key, status, runs, attempt, state, last_error FROM tasks
             WHERE task_type = $1 ORDER BY key",
        )
        .bind(task_type)
        .fetch_all(&db.pool)
    };
    let (fresh, reused) = (rows("fresh").await.unwrap(), rows("reused").await.unwrap());
    assert_eq!(fresh, reused);
    assert_eq!(fresh[0].4.as_deref(), Some(&br#"{"count":5}"#[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_serves_one_tenant_only() {
    let db = TestDb::new().await;
    deploy_reusing(&db, "acme", "calls", CALL_COUNT_COMPONENT).await;
    deploy_reusing(&db, "globex", "calls", CALL_COUNT_COMPONENT).await;
    let calls = calls_in_order(
        &db,
        &[
            ("acme", "a1", ""),
            ("acme", "a2", ""),
            ("acme", "a3", ""),
            ("globex", "g1", ""),
            ("globex", "g2", ""),
            ("acme", "a4", ""),
        ],
    )
    .await;
    // globex's first task gets an instance of its own, and acme's next one a fresh one.
    assert_eq!(calls, [1, 2, 3, 1, 2, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_ends_a_reused_instance() {
    let db = TestDb::new().await;
    deploy_reusing(&db, "default", "calls", CALL_COUNT_COMPONENT).await;
    db.limits("default", 5000, 1).await;
    let trap = r#"{"trap": true}"#;
    let calls = calls_in_order(
        &db,
        &[
            ("default", "k1", ""),
            ("default", "k2", ""),
            ("default", "trap", trap),
            ("default", "k3", ""),
            ("default", "k4", ""),
        ],
    )
    .await;
    assert_eq!(calls, [1, 2, 0, 1, 2]);
    let error = db.task("trap").await.error.unwrap();
    assert!(error.contains("deliberate trap on call 3"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_that_keeps_growing_is_replaced() {
    let db = TestDb::new().await;
    deploy_reusing(&db, "default", "calls", CALL_COUNT_COMPONENT).await;
    // Each call leaks 1 MiB (a little more, with the allocator's rounding): the instance
    // is dropped after the run that takes it 4 MiB past its size after its first run.
    let leak = r#"{"leak_kib": 1024}"#;
    let keys: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    let tasks: Vec<_> = keys.iter().map(|k| ("default", k.as_str(), leak)).collect();
    let calls = calls_in_order(&db, &tasks).await;
    // The first instance served the tasks before the first that saw 1 again.
    let served = 1 + calls[1..].iter().position(|&c| c == 1).expect("replaced");
    assert!((5..=6).contains(&served), "{calls:?}");
    assert!(
        calls[..served].iter().copied().eq(1..=served as u64),
        "{calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_serves_at_most_reuse_max_runs() {
    let db = TestDb::new().await;
    deploy_reusing(&db, "default", "calls", CALL_COUNT_COMPONENT).await;
    let tasks = REUSE_MAX_RUNS as usize + 10;
    db.enqueue_n("calls", tasks, "").await;
    let host = Host::start(db.pool.clone(), one_worker()).unwrap();
    db.wait_for(
        &format!("SELECT count(*) = {tasks} FROM tasks WHERE status = 1"),
        Duration::from_secs(120),
    )
    .await;
    host.stop().await;
    let calls: Vec<i64> = sqlx::query_scalar(
        "SELECT (convert_from(state, 'UTF8')::jsonb ->> 'calls')::bigint FROM tasks",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(calls.iter().max(), Some(&(REUSE_MAX_RUNS as i64)));
    assert_eq!(calls.iter().filter(|&&c| c == 1).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reuse_every_task_gets_a_fresh_instance() {
    let db = TestDb::new().await;
    db.deploy("calls", CALL_COUNT_COMPONENT).await;
    db.enqueue_n("calls", 20, "").await;
    let host = Host::start(db.pool.clone(), one_worker()).unwrap();
    db.wait_for(
        "SELECT count(*) = 20 FROM tasks WHERE status = 1",
        Duration::from_secs(30),
    )
    .await;
    host.stop().await;
    assert_eq!(
        db.scalar::<i64>(
            "SELECT count(*) FROM tasks WHERE convert_from(state, 'UTF8')::jsonb ->> 'calls' = '1'"
        )
        .await,
        20
    );
}

/// Modules can be built without WASI (`[package.metadata.recur] target`, host/build.rs):
/// noop is, and imports the task world's interfaces only; a module built for
/// wasm32-wasip2 imports WASI besides.
#[test]
fn noop_is_built_without_wasi() {
    let engine = wasmtime::Engine::new(wasmtime::Config::new().wasm_component_model(true))
        .expect("a default engine");
    let imports = |path: &str| -> Vec<String> {
        let component = wasmtime::component::Component::from_file(&engine, path)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        component
            .component_type()
            .imports(&engine)
            .map(|(name, _)| name.to_owned())
            .collect()
    };
    let noop = imports(NOOP_COMPONENT);
    assert!(
        noop.contains(&"recur:task/host@0.1.0".to_owned())
            && noop.iter().all(|name| name.starts_with("recur:task/")),
        "{noop:?}"
    );
    let trap = imports(TRAP_COMPONENT);
    assert!(
        trap.iter().any(|name| name.starts_with("wasi:")),
        "{trap:?}"
    );
}
