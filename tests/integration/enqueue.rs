//! Enqueue: unique keys, bulk loads, and the SQL function for other languages.

use recur_host::enqueue::{self, NewTask};

use crate::support::TestDb;

#[tokio::test]
async fn an_existing_key_is_not_enqueued_twice() {
    let db = TestDb::new().await;
    assert_eq!(db.enqueue(&[("noop", "same", "")]).await, 1);
    assert_eq!(
        db.enqueue(&[("noop", "same", r#"{"every_ms": 5}"#)]).await,
        0
    );
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM tasks").await, 1);
    assert_eq!(db.task("same").await.state, None);
    // The same key in another tenant or type is another task.
    let other_tenant = NewTask {
        tenant: "acme".into(),
        ..NewTask::new("noop", "same")
    };
    assert_eq!(
        enqueue::enqueue(&db.pool, &[other_tenant, NewTask::new("counter", "same")])
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn the_sql_function_enqueues_once_per_key() {
    let db = TestDb::new().await;
    let first: Option<i64> = db
        .scalar("SELECT recur_enqueue('default', 'noop', 'sql-key', '{\"every_ms\": 100}')")
        .await;
    let second: Option<i64> = db
        .scalar("SELECT recur_enqueue('default', 'noop', 'sql-key')")
        .await;
    assert!(first.is_some());
    assert_eq!(second, None);
    let payload: Vec<u8> = db
        .scalar("SELECT payload FROM tasks WHERE key = 'sql-key'")
        .await;
    assert_eq!(String::from_utf8(payload).unwrap(), r#"{"every_ms": 100}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_of_100_000_tasks_completes_and_absorbs_duplicates() {
    let db = TestDb::new().await;
    let tasks: Vec<NewTask> = (0..100_000)
        .map(|i| NewTask::new("noop", format!("bulk-{i}")))
        .collect();
    assert_eq!(enqueue::enqueue(&db.pool, &tasks).await.unwrap(), 100_000);
    assert_eq!(
        enqueue::enqueue(&db.pool, &tasks[..10_000]).await.unwrap(),
        0
    );
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks").await,
        100_000
    );
}

#[tokio::test]
async fn an_invalid_task_in_a_batch_writes_nothing() {
    let db = TestDb::new().await;
    let tasks = vec![
        NewTask::new("noop", "fine"),
        NewTask::new("no spaces", "x"),
        NewTask::new("noop", ""),
    ];
    let err = enqueue::enqueue(&db.pool, &tasks)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("task 1: task type \"no spaces\" is not valid"),
        "{err}"
    );
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM tasks").await, 0);
}
