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
    let (others, tasks) = first_and_others();
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

/// A share of a parallel bulk load that fails while another transaction waits for one
/// of its keys lets go of the key at once, not when the load ends: the load waits for
/// its other share, which waits for that other transaction. PostgreSQL releases the
/// lock of a savepoint once it is released, so the waiter waits for the share's whole
/// transaction, which a rollback to the share's savepoint would leave running; the
/// three would wait for ever, the load's part of the cycle in the client where no
/// deadlock check sees it. A deadlock check that picks the share finds exactly this;
/// here nothing checks (every session's `deadlock_timeout` is ten minutes), and the
/// share is cancelled instead.
#[tokio::test]
async fn a_failed_share_of_a_parallel_bulk_load_lets_go_of_its_keys_at_once() {
    let db = TestDb::new().await;
    sqlx::query(&format!(
        "ALTER DATABASE {} SET deadlock_timeout = '10min'",
        db.name()
    ))
    .execute(&mut db.admin().await)
    .await
    .unwrap();
    // Its connections are new, so they take the setting.
    let pool = db.another_pool().await;
    let (others, tasks) = first_and_others();
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT recur_enqueue('default', 'noop', 'first')")
        .execute(&mut *other)
        .await
        .unwrap();
    let load = tokio::spawn({
        let pool = pool.clone();
        async move { enqueue::enqueue_parallel(&pool, &tasks, 2).await }
    });
    // One share waits for the other transaction's key, the other for its sibling.
    let waits = |event: &str, n: i64| {
        format!(
            "SELECT count(*) >= {n} FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event = '{event}'"
        )
    };
    db.wait_for(&waits("transactionid", 1), Duration::from_secs(10))
        .await;
    db.wait_for(&waits("advisory", 1), Duration::from_secs(10))
        .await;
    let rest =
        sqlx::query("SELECT recur_enqueue('default', 'noop', key) FROM unnest($1::text[]) AS key")
            .bind(&others)
            .execute(&mut *other);
    // Once the other transaction waits for the finished share's keys, that share fails.
    let cancel = async {
        db.wait_for(&waits("transactionid", 2), Duration::from_secs(10))
            .await;
        let cancelled: bool = sqlx::query_scalar(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event = 'advisory'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(cancelled);
    };
    let (rest, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(20), rest), cancel);
    rest.expect("the other transaction waited for the load's end")
        .unwrap();
    other.commit().await.unwrap();
    let load = tokio::time::timeout(Duration::from_secs(20), load)
        .await
        .expect("the load waited for ever")
        .unwrap();
    let e = load.expect_err("the load went in with a share cancelled");
    assert!(e.to_string().contains("canceling statement"), "{e}");
    // The other transaction has every key; the load left nothing.
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks").await,
        others.len() as i64 + 1
    );
    db.assert_keys_match_tasks().await;
    db.assert_no_advisory_locks().await;
}

/// A bulk load large enough to go by COPY: the key `first`, then the keys returned on
/// their own, which another transaction writes after it took `first`.
fn first_and_others() -> (Vec<String>, Vec<NewTask>) {
    let others: Vec<String> = (0..enqueue::COPY_FROM_TASKS)
        .map(|i| format!("key-{i:04}"))
        .collect();
    let tasks = std::iter::once("first".to_string())
        .chain(others.iter().cloned())
        .map(|key| NewTask::new("noop", key))
        .collect();
    (others, tasks)
}
