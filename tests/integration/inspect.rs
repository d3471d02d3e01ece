//! `recur task show|list|retry|run-now`: one task by id or by key with its payload and
//! state; the failed tasks with their last errors, filtered by tenant and type; a failed
//! task put back to work and a scheduled one made due now; a task that does not exist,
//! or is of the wrong status, is a one-line error that changes nothing.

use std::time::Duration;

use recur_host::enqueue::{self, NewTask};
use recur_host::examples::artifacts::{NOOP_COMPONENT, TRAP_COMPONENT};

use crate::support::{self, TestDb, one_line_error, stdout, test_config};

fn json(db: &TestDb, args: &[&str]) -> serde_json::Value {
    let output = support::recur(&db.url, args, b"");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_str(stdout(&output).trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recur_task_shows_lists_retries_and_runs_now_one_task_at_a_time() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    db.deploy_for("acme", "trap", TRAP_COMPONENT).await;
    db.limits("acme", 1000, 1).await;
    let tasks = [
        NewTask {
            payload: br#"{"note": "hello"}"#.to_vec(),
            ..NewTask::new("noop", "k1")
        },
        NewTask {
            tenant: "acme".into(),
            ..NewTask::new("trap", "t1")
        },
    ];
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    let host = recur_host::Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(
        "SELECT count(*) FILTER (WHERE key = 'k1' AND status = 1) = 1
            AND count(*) FILTER (WHERE key = 't1' AND status = 2) = 1 FROM tasks",
        Duration::from_secs(30),
    )
    .await;
    host.stop().await;

    let failed = json(&db, &["task", "list", "--failed", "--json"]);
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["key"], "t1");
    assert_eq!(failed[0]["status"], "failed");
    assert!(
        failed[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("deliberate trap"),
        "{failed:?}"
    );
    let none = support::recur(
        &db.url,
        &["task", "list", "--failed", "--tenant", "default"],
        b"",
    );
    assert!(stdout(&none).contains("no such tasks"), "{none:?}");
    let table = stdout(&support::recur(
        &db.url,
        &["task", "list", "--type", "trap"],
        b"",
    ));
    assert!(
        table.contains("t1") && table.contains("deliberate trap"),
        "{table}"
    );

    let shown = stdout(&support::recur(
        &db.url,
        &[
            "task", "show", "--type", "trap", "--key", "t1", "--tenant", "acme",
        ],
        b"",
    ));
    assert!(shown.contains("status      failed"), "{shown}");
    assert!(
        shown.contains("last error  ") && shown.contains("deliberate trap"),
        "{shown}"
    );
    let id: i64 = db.scalar("SELECT id FROM tasks WHERE key = 'k1'").await;
    let k1 = json(&db, &["task", "show", &id.to_string(), "--json"]);
    assert_eq!(k1["status"], "done");
    assert_eq!(k1["payload"], r#"{"note": "hello"}"#);
    assert_eq!(k1["runs"], 1);

    let missing = one_line_error(&support::recur(&db.url, &["task", "show", "999999"], b""));
    assert!(missing.contains("no such task with id 999999"), "{missing}");
    let wrong_tenant = one_line_error(&support::recur(
        &db.url,
        &["task", "show", "--type", "trap", "--key", "t1"],
        b"",
    ));
    assert!(
        wrong_tenant
            .contains("no such task with key \"t1\" of type \"trap\" in tenant \"default\""),
        "{wrong_tenant}"
    );

    // Back to work: run-now refuses a failed or a done task, retry takes the failed one.
    let t1: i64 = db.scalar("SELECT id FROM tasks WHERE key = 't1'").await;
    for (task, says) in [
        (
            t1,
            format!("task {t1} is failed, so it was not made due; `recur task retry`"),
        ),
        (id, format!("task {id} is done, so it was not made due")),
        (999_999, "no such task with id 999999".to_owned()),
    ] {
        let error = one_line_error(&support::recur(
            &db.url,
            &["task", "run-now", &task.to_string()],
            b"",
        ));
        assert!(error.contains(&says), "{error}");
    }
    let retried = support::recur(&db.url, &["task", "retry", &t1.to_string()], b"");
    assert!(stdout(&retried).contains("due now"), "{retried:?}");
    let t1_row = db.task("t1").await;
    assert_eq!((t1_row.status, t1_row.attempt), (0, 0));
    let later = NewTask {
        run_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        ..NewTask::new("noop", "later")
    };
    enqueue::enqueue(&db.pool, &[later]).await.unwrap();
    let later_id: i64 = db.scalar("SELECT id FROM tasks WHERE key = 'later'").await;
    let made = support::recur(&db.url, &["task", "run-now", &later_id.to_string()], b"");
    assert!(stdout(&made).contains("due now"), "{made:?}");
    assert!(
        db.scalar::<bool>("SELECT next_run_at <= now() FROM tasks WHERE key = 'later'")
            .await
    );
}
