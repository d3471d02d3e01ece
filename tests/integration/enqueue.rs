//! Enqueue: unique keys, bulk loads (the array insert and COPY alike, from the library
//! and the command line), and the SQL function for other languages. Keys live in
//! `task_keys` (migrations/0005), and every test checks that it agrees with `tasks`.
//!
//! Longer than most files: each door (library, command line, SQL) has its own tests of
//! the same key rules, kept together so that they stay alike.

use recur_host::db;
use recur_host::enqueue::{self, NewTask};

use crate::support::{self, TestDb};

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
    db.assert_keys_match_tasks().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_enqueue_shares_keys_out_and_keeps_the_first_of_a_repeated_one() {
    let db = TestDb::new().await;
    let existing = [NewTask::new("noop", "p7"), NewTask::new("noop", "p20000")];
    assert_eq!(enqueue::enqueue(&db.pool, &existing).await.unwrap(), 2);
    let mut tasks: Vec<NewTask> = (0..30_000)
        .map(|i| NewTask::new("noop", format!("p{i}")))
        .collect();
    // A repeat of a key earlier in the input, with a payload that marks it.
    tasks.push(NewTask {
        payload: b"repeat".to_vec(),
        ..NewTask::new("noop", "p12345")
    });
    assert_eq!(
        enqueue::enqueue_parallel(&db.pool, &tasks, 3)
            .await
            .unwrap(),
        29_998
    );
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM tasks").await, 30_000);
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE payload <> ''")
            .await,
        0
    );
    // Each connection wrote its share in a transaction of its own (one batch each, by
    // COPY in a savepoint or, where it met an existing key, by array inserts): three
    // transaction ids among the new rows.
    assert_eq!(
        db.scalar::<i64>(
            "SELECT count(DISTINCT xmin::text) FROM tasks WHERE key NOT IN ('p7', 'p20000')"
        )
        .await,
        3
    );
    db.assert_keys_match_tasks().await;
    assert_eq!(
        enqueue::enqueue_parallel(&db.pool, &tasks, 2)
            .await
            .unwrap(),
        0
    );
    db.assert_no_advisory_locks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_enqueue_that_fails_on_one_connection_writes_nothing_on_any() {
    let db = TestDb::new().await;
    // A task the database refuses, half-way through one connection's share.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.key = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON tasks
         FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut tasks: Vec<NewTask> = (0..20_000)
        .map(|i| NewTask::new("noop", format!("q{i}")))
        .collect();
    tasks.insert(10_000, NewTask::new("noop", "poison"));
    let err = enqueue::enqueue_parallel(&db.pool, &tasks, 4)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("poisoned"), "{err}");
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM tasks").await, 0);
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM task_keys").await, 0);
    db.assert_no_advisory_locks().await;

    // Asking for no connections, or more than the pool has, is refused up front.
    for connections in [0, 9] {
        let err = enqueue::enqueue_parallel(&db.pool, &tasks[..10], connections)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "a bulk enqueue cannot use {connections} connections; give 1 to 8 (at most 16, and at most the pool's size)"
            )
        );
    }
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM tasks").await, 0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_enqueue_of_several_batches_keeps_existing_tasks_and_the_first_of_a_repeated_key() {
    let db = TestDb::new().await;
    // Large payloads make a few thousand tasks fill several COPY batches.
    let payload_bytes = 8 << 10;
    let per_batch = enqueue::BATCH_BYTES / payload_bytes;
    let n = 3 * per_batch + 100;
    let marked = |key: String, mark: &[u8]| NewTask {
        payload: mark.to_vec(),
        ..NewTask::new("noop", key)
    };
    // Tasks that exist already, in the middle of the input: their batch meets them.
    let existing: Vec<NewTask> = [per_batch + 10, per_batch + 500, 2 * per_batch + 7]
        .map(|i| marked(format!("k{i}"), b"existing"))
        .to_vec();
    assert_eq!(enqueue::enqueue(&db.pool, &existing).await.unwrap(), 3);

    let mut tasks: Vec<NewTask> = (0..n)
        .map(|i| marked(format!("k{i}"), &vec![(i % 251) as u8; payload_bytes]))
        .collect();
    // Repeats: of a key from the first batch, and of one in the last batch.
    tasks.push(marked("k1".into(), b"repeat"));
    tasks.push(marked(format!("k{}", n - 1), b"repeat"));
    assert_eq!(
        enqueue::enqueue(&db.pool, &tasks).await.unwrap(),
        n as u64 - 3
    );
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks").await,
        n as i64
    );
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE payload = 'existing'")
            .await,
        3
    );
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE payload = 'repeat'")
            .await,
        0
    );
    let first: Vec<u8> = db
        .scalar("SELECT payload FROM tasks WHERE key = 'k1'")
        .await;
    assert_eq!(first, vec![1; payload_bytes]);

    // Enqueued again, every key exists: nothing is new and nothing changes.
    let again = &tasks[per_batch..2 * per_batch];
    assert_eq!(enqueue::enqueue(&db.pool, again).await.unwrap(), 0);
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks").await,
        n as i64
    );
    db.assert_keys_match_tasks().await;
}

#[tokio::test]
async fn copy_stores_keys_payloads_and_times_exactly_as_one_insert_does() {
    let db = TestDb::new().await;
    let keys = [
        "it's \"quoted\" \\ ключ 🔑",
        "tab\there",
        "new\nline\r\n",
        "\\N",
        "\\.",
        "ends with \\",
        "\\x00",
        " spaces, commas; 'quotes' ",
    ];
    let payload: Vec<u8> = (0..=255u8).chain(*b"\xff\x00'\"\\\n").collect();
    let at = |text: &str| Some(text.parse::<chrono::DateTime<chrono::Utc>>().unwrap());
    let times = [
        None,
        // Below a microsecond: cut towards 2000-01-01, after it and before it.
        at("2030-06-01T12:34:56.123456789Z"),
        at("1999-12-31T23:59:59.999999999Z"),
        at("0001-01-01T00:00:00Z"),
        at("1970-01-01T00:00:00Z"),
    ];
    let special: Vec<NewTask> = keys
        .iter()
        .zip(times.iter().cycle())
        .map(|(key, run_at)| NewTask {
            payload: payload.clone(),
            run_at: *run_at,
            ..NewTask::new("noop", *key)
        })
        .collect();
    let in_tenant = |tenant: &str, tasks: &[NewTask]| -> Vec<NewTask> {
        tasks
            .iter()
            .map(|t| NewTask {
                tenant: tenant.into(),
                ..t.clone()
            })
            .collect()
    };
    let plain: Vec<NewTask> = (0..enqueue::COPY_FROM_TASKS)
        .map(|i| NewTask::new("noop", format!("plain-{i}")))
        .collect();
    // The same tasks three ways. A few, by one array insert:
    let few = in_tenant("few", &special);
    assert!(few.len() < enqueue::COPY_FROM_TASKS);
    assert_eq!(
        enqueue::enqueue(&db.pool, &few).await.unwrap(),
        keys.len() as u64
    );
    // Enough to go by COPY:
    let many = in_tenant("many", &[special.clone(), plain.clone()].concat());
    assert_eq!(
        enqueue::enqueue(&db.pool, &many).await.unwrap(),
        many.len() as u64
    );
    // And with a key that exists, so the COPY fails and its rows go by array inserts:
    let again = in_tenant("again", &[special.clone(), plain].concat());
    let again = [again, few[..1].to_vec()].concat();
    assert_eq!(
        enqueue::enqueue(&db.pool, &again).await.unwrap(),
        again.len() as u64 - 1
    );

    // (key, payload, first run, whether due at the enqueue's now()), the first run
    // blanked when it is now(), which differs between enqueues.
    type Stored = (String, Vec<u8>, chrono::DateTime<chrono::Utc>, bool);
    let stored = async |tenant: &'static str| -> Vec<Stored> {
        sqlx::query_as::<_, Stored>(
            "SELECT key, payload, next_run_at, next_run_at = created_at FROM tasks
             WHERE tenant = $1 AND key NOT LIKE 'plain-%' ORDER BY id",
        )
        .bind(tenant)
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(key, payload, at, now)| {
            let at = if now {
                chrono::DateTime::UNIX_EPOCH
            } else {
                at
            };
            (key, payload, at, now)
        })
        .collect()
    };
    let few = stored("few").await;
    assert_eq!(few.len(), special.len());
    for (task, (key, bytes, _, now)) in special.iter().zip(&few) {
        assert_eq!((key.as_str(), bytes), (task.key.as_str(), &payload));
        assert_eq!(*now, task.run_at.is_none(), "{key:?}");
    }
    assert_eq!(few[1].2, at("2030-06-01T12:34:56.123456Z").unwrap());
    assert_eq!(stored("many").await, few);
    assert_eq!(stored("again").await, few);
    db.assert_keys_match_tasks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_bulk_enqueue_absorbs_existing_and_repeated_keys_and_keeps_escapes() {
    let db = TestDb::new().await;
    assert_eq!(db.enqueue(&[("noop", "b7", "")]).await, 1);
    let mut lines: String = (0..30_000)
        .map(|i| format!("{{\"type\": \"noop\", \"key\": \"b{i}\"}}\n"))
        .collect();
    lines.push_str("{\"type\": \"noop\", \"key\": \"b8\", \"payload\": {\"repeat\": true}}\n");
    lines.push_str("{\"type\": \"noop\", \"key\": \"tab\\there\\nand \\\\ \\r\"}\n");
    let output = support::recur(
        &db.url,
        &["enqueue", "--bulk", "--allow-undeployed"],
        lines.as_bytes(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.trim(),
        "enqueued 30000 new tasks (2 already existed)"
    );
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM tasks").await, 30_001);
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE key = 'b8' AND payload = ''")
            .await,
        1
    );
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE key = E'tab\\there\\nand \\\\ \\r'")
            .await,
        1
    );

    // A bad line after rows were sent: the transaction holding them is rolled back.
    let mut lines: String = (0..30_000)
        .map(|i| format!("{{\"type\": \"noop\", \"key\": \"c{i}\"}}\n"))
        .collect();
    lines.push_str("{\"type\": \"noop\", \"key\": \"\"}\n");
    let output = support::recur(
        &db.url,
        &["enqueue", "--bulk", "--allow-undeployed"],
        lines.as_bytes(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("line 30001: the key must be 1 to 2048 bytes, not 0")
            && stderr.trim_end().ends_with("nothing was enqueued"),
        "{stderr}"
    );
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM tasks").await, 30_001);
    db.assert_keys_match_tasks().await;
}

#[tokio::test]
async fn a_deleted_task_frees_its_key_and_no_task_changes_its_key() {
    let db = TestDb::new().await;
    assert_eq!(db.enqueue(&[("noop", "a", ""), ("noop", "b", "")]).await, 2);
    for change in [
        "UPDATE tasks SET key = 'c' WHERE key = 'a'",
        "UPDATE tasks SET tenant = 'acme' WHERE key = 'a'",
        "UPDATE tasks SET task_type = 'counter' WHERE key = 'a'",
        "UPDATE tasks SET id = id + 100 WHERE key = 'a'",
    ] {
        let err = sqlx::query(change)
            .execute(&db.pool)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a task's id, tenant, type and key cannot change")
                && err.contains("enqueue a new task instead"),
            "{change}: {err}"
        );
    }
    // Naming the columns without changing them is an ordinary update.
    sqlx::query("UPDATE tasks SET key = key, payload = 'x' WHERE key = 'a'")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM tasks WHERE key = 'a'")
        .execute(&db.pool)
        .await
        .unwrap();
    db.assert_keys_match_tasks().await;
    assert_eq!(
        db.enqueue(&[("noop", "a", "again"), ("noop", "b", "")])
            .await,
        1
    );
    assert_eq!(db.task("a").await.status, 0);
    db.assert_keys_match_tasks().await;
}

#[tokio::test]
async fn tasks_enqueued_before_the_keys_table_keep_their_keys() {
    // The schema before task_keys: the unique key was an index on tasks.
    let db = TestDb::at_version(4).await;
    sqlx::query(
        "SELECT recur_enqueue('default', 'noop', 'k' || g) FROM generate_series(1, 1000) AS g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    db::migrate(&db.pool).await.unwrap();
    db.assert_keys_match_tasks().await;
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM task_keys").await,
        1000
    );
    // The old keys are still taken, and new tasks draw ids after the old ones.
    assert_eq!(
        db.enqueue(&[("noop", "k5", ""), ("noop", "new", "")]).await,
        1
    );
    assert!(
        db.scalar::<bool>("SELECT (SELECT id FROM tasks WHERE key = 'new') > 1000")
            .await
    );
    db.assert_keys_match_tasks().await;
}
