//! Misbehaving modules fail their own tasks, each with a clear error, while the
//! well-behaved tasks of the same batch succeed; a module gets nothing the contract does
//! not grant.

use std::time::Duration;

use recur_host::Host;
use recur_host::examples::artifacts::*;

use crate::support::{TestDb, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misbehaving_module_fails_only_its_own_task() {
    let db = TestDb::new().await;
    for (task_type, path) in [
        ("noop", NOOP_COMPONENT),
        ("spin", SPIN_COMPONENT),
        ("memory-bomb", MEMORY_BOMB_COMPONENT),
        ("trap", TRAP_COMPONENT),
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
        ("stack-overflow", "deep", ""),
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
        ("deep", "stack overflow"),
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
