//! Writers of the same keys at once: enqueues that race for one key, enqueues and bulk
//! loads of the same keys in opposite orders, and a bulk load over several connections
//! caught in a cycle of waits with another transaction. Every writer of `task_keys`
//! takes its keys in one order, and a load's connections wait for each other where
//! PostgreSQL sees it, so these end: one waits for the other, or PostgreSQL rolls one
//! back and it says so.

use std::time::Duration;

use recur_host::enqueue::{self, NewTask};

use crate::support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_of_one_key_create_one_task() {
    let db = TestDb::new().await;
    let waiting = "SELECT count(*) > 0 FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    // Whether the first enqueue commits or rolls back, the second, which waits for it,
    // creates the task exactly when the first did not.
    for (commit, second_new) in [(false, 1), (true, 0)] {
        let key = format!("race-{commit}");
        let mut first = db.pool.begin().await.unwrap();
        let id: Option<i64> = sqlx::query_scalar("SELECT recur_enqueue('default', 'noop', $1)")
            .bind(&key)
            .fetch_one(&mut *first)
            .await
            .unwrap();
        assert!(id.is_some());
        // Spawned, which also shows that an enqueue's future can be.
        let pool = db.pool.clone();
        let second = tokio::spawn({
            let key = key.clone();
            async move { enqueue::enqueue(&pool, &[NewTask::new("noop", key)]).await }
        });
        db.wait_for(waiting, Duration::from_secs(10)).await;
        if commit {
            first.commit().await.unwrap();
        } else {
            first.rollback().await.unwrap();
        }
        assert_eq!(second.await.unwrap().unwrap(), second_new, "{key}");
        let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE key = $1")
            .bind(&key)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(tasks, 1, "{key}");
    }
    db.assert_keys_match_tasks().await;
}

/// Two enqueues at once of the same keys in opposite orders, each in its transaction:
/// each waits for the keys the other inserted and has not committed, so inserted in
/// different orders, each would hold a key the other waits for, and PostgreSQL would
/// abort one as a deadlock. Keys go in in key order, so one waits for the other and
/// then finds them all taken. By every path a load takes: one array insert, COPY, and
/// the array inserts that a batch meeting existing keys falls back to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_of_the_same_keys_in_opposite_orders_do_not_deadlock() {
    let db = TestDb::new().await;
    // By one array insert; by COPY; and, where some keys exist, by array inserts of
    // several statements.
    for (n, existing) in [
        (enqueue::COPY_FROM_TASKS - 1, 0),
        (20 * enqueue::COPY_FROM_TASKS, 0),
        (20 * enqueue::COPY_FROM_TASKS, 10),
    ] {
        sqlx::query("TRUNCATE tasks, task_keys")
            .execute(&db.pool)
            .await
            .unwrap();
        let forward: Vec<NewTask> = (0..n)
            .map(|i| NewTask::new("noop", format!("key-{i:05}")))
            .collect();
        let backward: Vec<NewTask> = forward.iter().rev().cloned().collect();
        let some: Vec<NewTask> = forward
            .iter()
            .step_by(n.max(1) / existing.max(1))
            .take(existing)
            .cloned()
            .collect();
        enqueue::enqueue(&db.pool, &some).await.unwrap();
        let (a, b) = tokio::join!(
            enqueue::enqueue(&db.pool, &forward),
            enqueue::enqueue(&db.pool, &backward)
        );
        let (a, b) = (a.expect("no deadlock"), b.expect("no deadlock"));
        assert_eq!(a + b, (n - existing) as u64, "{n} tasks");
        db.assert_keys_match_tasks().await;
    }
}

/// A bulk load over two connections meeting another transaction that writes some of
/// its keys. The load's connections commit together, so one that has sent its share
/// waits for the other; were that wait in the client, PostgreSQL could not see it, and
/// here the other transaction would wait for the finished share's keys, the unfinished
/// share for the other transaction's key, and all of them for ever. The shares wait for
/// each other where PostgreSQL sees it, so it finds the deadlock and rolls one back:
/// either the other transaction, and the load goes in, or the load, which says so and
/// leaves nothing.
#[tokio::test]
async fn a_parallel_bulk_load_caught_in_a_deadlock_is_not_stuck() {
    let db = TestDb::new().await;
    let others: Vec<String> = (0..enqueue::COPY_FROM_TASKS)
        .map(|i| format!("key-{i:04}"))
        .collect();
    let tasks: Vec<NewTask> = std::iter::once("first".to_string())
        .chain(others.iter().cloned())
        .map(|key| NewTask::new("noop", key))
        .collect();
    // Another transaction takes the load's first key, so whichever share has it waits.
    let mut other = db.pool.begin().await.unwrap();
    sqlx::query("SELECT recur_enqueue('default', 'noop', 'first')")
        .execute(&mut *other)
        .await
        .unwrap();
    let load = tokio::spawn({
        let pool = db.pool.clone();
        async move { enqueue::enqueue_parallel(&pool, &tasks, 2).await }
    });
    // In this test's database: other tests' backends wait on theirs meanwhile.
    db.wait_for(
        "SELECT count(*) > 0 FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event = 'transactionid'",
        Duration::from_secs(10),
    )
    .await;
    // The other share sends its half of the keys, then waits for the first share to
    // finish (an advisory lock). Waiting for that, not for a while, keeps a slow machine
    // from starting the rest before the load is in place.
    db.wait_for(
        "SELECT count(*) > 0 FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event = 'advisory'",
        Duration::from_secs(10),
    )
    .await;
    // Now it takes the rest: it waits on the keys of the share that has finished.
    let rest =
        sqlx::query("SELECT recur_enqueue('default', 'noop', key) FROM unnest($1::text[]) AS key")
            .bind(&others)
            .execute(&mut *other);
    let rest = tokio::time::timeout(Duration::from_secs(20), rest)
        .await
        .expect("the other transaction waited for ever");
    let other_won = rest.is_ok();
    if other_won {
        other.commit().await.unwrap();
    } else {
        other.rollback().await.unwrap();
    }
    let load = tokio::time::timeout(Duration::from_secs(20), load)
        .await
        .expect("the load waited for ever")
        .unwrap();
    match load {
        // The load gave way: the other transaction has every key.
        Err(e) => {
            assert!(other_won, "both were rolled back");
            let e = e.to_string();
            assert!(
                e.starts_with("deadlock: ") && e.contains("run it again"),
                "{e}"
            );
        }
        // The other transaction gave way: the load has every key.
        Ok(new) => {
            assert!(!other_won, "both went through");
            assert_eq!(new, others.len() as u64 + 1);
        }
    }
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks").await,
        others.len() as i64 + 1
    );
    db.assert_keys_match_tasks().await;
    db.assert_no_advisory_locks().await;
}
