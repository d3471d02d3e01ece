//! Each kind of outcome lands as the contract says: reschedule (time and state),
//! complete, retry with backoff then parked, fail, and spawns with duplicates absorbed.

use std::time::Duration;

use recur_host::Host;
use recur_host::examples::artifacts::{
    COUNTER_COMPONENT, CRAWLER_COMPONENT, FLAKY_COMPONENT, HUGE_OUTPUT_COMPONENT, NOOP_COMPONENT,
};

use crate::support::{TestDb, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_keeps_time_and_state_and_complete_finishes() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    db.deploy("counter", COUNTER_COMPONENT).await;
    db.enqueue(&[
        ("noop", "later", r#"{"every_ms": 60000}"#),
        ("noop", "once", ""),
        ("counter", "three", r#"{"runs": 3, "every_ms": 100}"#),
    ])
    .await;
    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(
        "SELECT status = 1 FROM tasks WHERE key = 'three'",
        Duration::from_secs(20),
    )
    .await;
    host.stop().await;

    let later = db.task("later").await;
    assert_eq!((later.status, later.runs, later.attempt), (0, 1, 0));
    assert!(
        (55.0..=61.0).contains(&later.due_in_secs),
        "next run in {} s",
        later.due_in_secs
    );
    let once = db.task("once").await;
    assert_eq!((once.status, once.runs), (1, 1));
    let three = db.task("three").await;
    assert_eq!((three.status, three.runs), (1, 3));
    assert_eq!(three.state.as_deref(), Some(r#"{"count":3}"#));
}

/// The bench relies on it: a schedule that keeps its phase offers the load it says,
/// even after a start with a backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_keeps_its_phase_and_starts_a_new_one_when_a_whole_interval_behind() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    // Due 20 s ago with a minute's interval: next due 40 s from now, on its phase.
    // Due two minutes ago: a whole interval behind, so a minute after this run.
    for (key, ago) in [("late", 20), ("behind", 120)] {
        let _: i64 = db
            .scalar(&format!(
                "SELECT recur_enqueue('default', 'noop', '{key}', '{{\"every_ms\": 60000}}',
                                      now() - interval '{ago} seconds')"
            ))
            .await;
    }
    // On its phase to the millisecond: the run is told its due time in whole
    // milliseconds, and the commit turns the next one back into a time exactly.
    let on_phase: String = db
        .scalar(
            "SELECT (date_trunc('milliseconds', next_run_at) + interval '60 s')::text
             FROM tasks WHERE key = 'late'",
        )
        .await;
    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(
        "SELECT bool_and(runs = 1) FROM tasks",
        Duration::from_secs(20),
    )
    .await;
    host.stop().await;

    let next: String = db
        .scalar("SELECT next_run_at::text FROM tasks WHERE key = 'late'")
        .await;
    assert_eq!(next, on_phase);
    let late = db.task("late").await;
    assert!(
        (35.0..=41.0).contains(&late.due_in_secs),
        "late: next run in {} s",
        late.due_in_secs
    );
    let behind = db.task("behind").await;
    assert!(
        (55.0..=61.0).contains(&behind.due_in_secs),
        "behind: next run in {} s",
        behind.due_in_secs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_backs_off_then_parks_and_fail_parks_at_once() {
    let db = TestDb::new().await;
    db.deploy("flaky", FLAKY_COMPONENT).await;
    db.limits("default", 5000, 3).await;
    db.enqueue(&[
        ("flaky", "recovers", r#"{"fail_times": 1, "mode": "retry"}"#),
        (
            "flaky",
            "gives-up",
            r#"{"fail_times": 10, "mode": "retry"}"#,
        ),
        ("flaky", "broken", r#"{"fail_times": 10, "mode": "fail"}"#),
    ])
    .await;
    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    // Backoff: ~1 s after the first failure, ~2 s after the second.
    db.wait_for(
        "SELECT status = 2 FROM tasks WHERE key = 'gives-up'",
        Duration::from_secs(20),
    )
    .await;
    db.wait_for(
        "SELECT status = 1 FROM tasks WHERE key = 'recovers'",
        Duration::from_secs(20),
    )
    .await;
    host.stop().await;

    let recovers = db.task("recovers").await;
    assert_eq!(
        (recovers.runs, recovers.attempt, recovers.error),
        (1, 0, None)
    );
    let gives_up = db.task("gives-up").await;
    assert_eq!((gives_up.runs, gives_up.attempt), (0, 3));
    let error = gives_up.error.unwrap();
    assert!(
        error.contains("flaky: attempt 3") && error.contains("gave up after 3 attempts"),
        "{error}"
    );
    let broken = db.task("broken").await;
    assert_eq!((broken.status, broken.attempt), (2, 1));
    assert!(broken.error.unwrap().contains("permanent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_waits_for_its_backoff() {
    let db = TestDb::new().await;
    db.deploy("flaky", FLAKY_COMPONENT).await;
    db.enqueue(&[("flaky", "once", r#"{"fail_times": 1, "mode": "retry"}"#)])
        .await;
    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(
        "SELECT attempt = 1 AND lease_token IS NULL FROM tasks WHERE key = 'once'",
        Duration::from_secs(10),
    )
    .await;
    let row = db.task("once").await;
    assert_eq!(row.status, 0);
    assert!(
        (0.5..=1.2).contains(&row.due_in_secs),
        "first backoff is about 1 s, got {}",
        row.due_in_secs
    );
    db.wait_for(
        "SELECT status = 1 FROM tasks WHERE key = 'once'",
        Duration::from_secs(10),
    )
    .await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_land_in_the_parents_tenant_and_duplicates_are_absorbed() {
    let db = TestDb::new().await;
    db.deploy("spawner", HUGE_OUTPUT_COMPONENT).await;
    db.deploy("crawler", CRAWLER_COMPONENT).await;
    db.deploy("noop", NOOP_COMPONENT).await;
    // Two parents spawn the same five children: five tasks, not ten.
    db.enqueue(&[
        ("spawner", "p1", r#"{"spawns": 5}"#),
        ("spawner", "p2", r#"{"spawns": 5}"#),
    ])
    .await;
    // A crawler over a key space of 2 sites x 3 pages can never exceed 6 tasks.
    db.enqueue(&[(
        "crawler",
        "https://site-0.example/page/0",
        r#"{"sites": 2, "pages": 3, "fanout": 3, "min_ms": 100, "max_ms": 200}"#,
    )])
    .await;
    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(
        "SELECT count(*) = 2 FROM tasks WHERE task_type = 'spawner' AND status = 1",
        Duration::from_secs(20),
    )
    .await;
    db.wait_for(
        "SELECT count(*) = 5 FROM tasks WHERE task_type = 'noop' AND status = 1",
        Duration::from_secs(20),
    )
    .await;
    db.wait_for(
        "SELECT sum(runs) >= 20 FROM tasks WHERE task_type = 'crawler'",
        Duration::from_secs(30),
    )
    .await;
    let stats = host.stop().await;

    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE task_type = 'noop'")
            .await,
        5
    );
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE tenant <> 'default'")
            .await,
        0
    );
    let crawled = db
        .scalar::<i64>("SELECT count(*) FROM tasks WHERE task_type = 'crawler'")
        .await;
    assert!((2..=6).contains(&crawled), "{crawled} crawler tasks");
    assert!(stats.spawned >= 5 + crawled as u64 - 1);
    db.assert_keys_match_tasks().await;
}
