//! A host vacuums what autovacuum leaves behind: `tasks` once dead rows pile up, `claims`
//! (which every locked claim scans whole) likewise, and `task_keys` once new keys pile up;
//! each table in a loop of its own, so a long vacuum holds up neither the others nor a stop.

use std::time::Duration;

use crate::examples::artifacts::NOOP_COMPONENT;
use crate::maintain::{self, CLAIMS_DEAD_MIN, VACUUM_DEAD_MIN, Vacuumed};

use super::support::TestDb;

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
    let found = maintain::vacuum_if_needed(&db.pool, Vacuumed::Tasks)
        .await
        .unwrap();
    assert!(found.is_some_and(|d| d >= 50_000), "{found:?}");
    let vacuums: i64 = db
        .scalar("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'tasks'")
        .await;
    assert_eq!(vacuums, 1);
    assert_eq!(
        maintain::vacuum_if_needed(&db.pool, Vacuumed::Tasks)
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
    let dead = CLAIMS_DEAD_MIN;
    dead_claims(&db, dead * 2).await;
    dead_rows_counted(&db, "claims", dead * 2).await;
    assert_eq!(
        maintain::vacuum_if_needed(&db.pool, Vacuumed::Tasks)
            .await
            .unwrap(),
        None,
        "the tasks table has nothing to vacuum"
    );
    let found = maintain::vacuum_if_needed(&db.pool, Vacuumed::Claims)
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
    let vacuum = |table| maintain::vacuum_if_needed(&db.pool, table);
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
            tokio::spawn(maintain::vacuum(
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
    dead_claims(&db, CLAIMS_DEAD_MIN * 2).await;
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
    let dead = VACUUM_DEAD_MIN as usize;
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

/// After a bulk load a host gathers new statistics for `tasks` itself, once: a claim
/// planned on none takes its index for a path to a handful of rows and crawls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_analyzes_the_tasks_table_after_a_bulk_load() {
    let db = TestDb::new().await;
    let tasks: Vec<crate::enqueue::NewTask> = (0..20_000)
        .map(|i| crate::enqueue::NewTask::new("noop", format!("k{i}")))
        .collect();
    crate::enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    db.wait_for(
        "SELECT n_mod_since_analyze >= 20000 FROM pg_stat_user_tables WHERE relname = 'tasks'",
        Duration::from_secs(10),
    )
    .await;
    let changed = maintain::analyze_if_needed(&db.pool, 0).await.unwrap();
    assert!(changed.is_some_and(|n| n >= 20_000), "{changed:?}");
    let (analyzed, counted): (bool, f32) = sqlx::query_as(
        "SELECT s.last_analyze IS NOT NULL, c.reltuples
         FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE s.relname = 'tasks'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(analyzed && counted >= 20_000.0, "{analyzed} {counted}");
    assert_eq!(
        maintain::analyze_if_needed(&db.pool, 0).await.unwrap(),
        None,
        "nothing changed since"
    );
}
