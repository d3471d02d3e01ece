//! The locked claim's cursor: a host's next claim starts past the rows its batches in
//! flight hold, among rows of one due time too, and rows freed behind the cursor still
//! come back. Its record: a claim
//! whose `claims` row cannot be written runs nothing and frees its rows. And its commit
//! after the locks were lost, which finds rows where the claim saw them, and how its
//! record keeps the batch's ids.

use std::sync::Arc;
use std::time::Duration;

use crate::claim::{
    ClaimCursor, ClaimRequest, Compiling, claim_locked, claim_locked_pending, claim_timed,
};
use crate::commit;
use crate::enqueue::{self, NewTask};
use crate::examples::artifacts::NOOP_COMPONENT;
use crate::sandbox::{Decision, Outcome, now_ms};
use crate::task::ClaimedTask;
use tokio::sync::Semaphore;

use super::support::TestDb;

/// Nine due tasks, `k0` to `k8`: `k0`, `k1` and `k2` due one after the other, then `k3`
/// to `k8` all due at one later time, as a batch rescheduled by one commit is. A claim
/// takes tasks due at one time in no particular order.
async fn nine_due_tasks() -> TestDb {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    assert_eq!(db.enqueue_n("noop", 9, "").await, 9);
    sqlx::query(
        "UPDATE tasks SET next_run_at = now() - interval '1 minute'
             + least(substr(key, 2)::int, 3) * interval '1 second'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    db
}

/// A claim of up to `limit` tasks of any type.
fn request(limit: i64) -> ClaimRequest {
    super::claim_request(limit)
}

fn permit() -> tokio::sync::OwnedSemaphorePermit {
    Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap()
}

/// Claims up to three tasks from `cursor`; returns their keys, sorted, and the tasks,
/// whose batch's transaction stays open in their lock until it is taken.
async fn claim(db: &TestDb, cursor: &mut ClaimCursor) -> Claimed {
    let tasks = claim_locked(&db.pool, &request(3), cursor, permit())
        .await
        .unwrap();
    let mut keys: Vec<String> = tasks.iter().map(|t| t.key.clone()).collect();
    keys.sort();
    (keys, tasks)
}

/// Ends a batch without writing anything, as a failed commit does: its rows are free
/// again, behind the cursor.
async fn roll_back(tasks: Vec<ClaimedTask>) {
    let lock = tasks[0].lock.clone().unwrap();
    lock.take().await.unwrap().rollback().await.unwrap();
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|k| k.to_string()).collect()
}

/// The tasks of [`nine_due_tasks`] due at one time.
const LATE: [&str; 6] = ["k3", "k4", "k5", "k6", "k7", "k8"];

/// A claim's keys, sorted, and its tasks, which hold their batch's transaction open.
type Claimed = (Vec<String>, Vec<ClaimedTask>);

/// The first two claims of [`nine_due_tasks`]: `k0` to `k2`, then, from `k2`'s due time
/// on, where the first batch holds `k2`, three of the late tasks.
async fn the_first_two_claims(db: &TestDb, cursor: &mut ClaimCursor) -> (Claimed, Claimed) {
    let first = claim(db, cursor).await;
    assert_eq!(first.0, ["k0", "k1", "k2"]);
    let second = claim(db, cursor).await;
    let late = second.0.iter().all(|k| LATE.contains(&k.as_str()));
    assert!(late, "{:?}", second.0);
    (first, second)
}

/// The claims after a second claim that holds `second`, three of the late tasks: the
/// third takes the other three; the fourth finds nothing free past the cursor and comes
/// back short, which starts the cursor over; so the fifth takes `freed`, rows freed
/// behind it.
async fn the_rest_then_the_freed(
    db: &TestDb,
    cursor: &mut ClaimCursor,
    second: &[String],
    freed: &[String],
) {
    let mut rest = keys(&LATE);
    rest.retain(|k| !second.contains(k));
    let (third, _third_batch) = claim(db, cursor).await;
    assert_eq!(third, rest);
    let (fourth, _) = claim(db, cursor).await;
    assert!(fourth.is_empty(), "{fourth:?}");
    let (fifth, _fifth_batch) = claim(db, cursor).await;
    assert_eq!(fifth, freed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_starts_past_the_last_one_and_starts_over_when_it_comes_back_short() {
    let db = nine_due_tasks().await;
    let mut cursor = ClaimCursor::default();
    let ((first, first_batch), (second, _second_batch)) =
        the_first_two_claims(&db, &mut cursor).await;
    roll_back(first_batch).await;
    // k0 to k2 are free again, but the cursor is past them: the claim goes on from the
    // late ones' due time, skipping those the second batch holds, until it starts over.
    the_rest_then_the_freed(&db, &mut cursor, &second, &first).await;
}

/// Rows due at the cursor's time that lie at or before the last row the previous claim
/// took are passed over without trying their locks: where one commit rescheduled a
/// batch, or one statement enqueued many tasks, they share one due time, and a claim
/// from that time would otherwise try the lock of every row its batches in flight hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_passes_over_the_rows_due_at_its_cursor_up_to_the_last_one_taken() {
    let db = nine_due_tasks().await;
    let mut cursor = ClaimCursor::default();
    let (_first, (second, second_batch)) = the_first_two_claims(&db, &mut cursor).await;
    roll_back(second_batch).await;
    // The second batch's rows are free again and due at the cursor's time, but they lie
    // at or before the last one it took: the claim takes the other three, until the
    // cursor starts over.
    the_rest_then_the_freed(&db, &mut cursor, &second, &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_freed_behind_the_cursor_come_back_within_a_second_while_claims_stay_full() {
    let db = nine_due_tasks().await;
    let mut cursor = ClaimCursor::default();

    let (first, first_batch) = claim(&db, &mut cursor).await;
    assert_eq!(first, ["k0", "k1", "k2"]);
    roll_back(first_batch).await;
    // The cursor stays at k2's due time: k0 and k1, free again, are behind it.
    let (second, _second_batch) = claim(&db, &mut cursor).await;
    assert_eq!(second.len(), 3);
    assert!(!second.iter().any(|k| k == "k0" || k == "k1"), "{second:?}");
    // Every claim so far came back full, but the cursor is a second old: the next claim
    // starts from the front again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (third, _third_batch) = claim(&db, &mut cursor).await;
    assert_eq!(third[..2], ["k0", "k1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_record_fails_runs_nothing_and_frees_its_rows() {
    let db = nine_due_tasks().await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON claims
             FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let pending =
        claim_locked_pending(&db.pool, &request(3), &mut ClaimCursor::default(), permit())
            .await
            .unwrap();
    assert_eq!(pending.len(), 3);
    // The tasks come back only with the record; without it, nobody gets to run them.
    let err = pending.record(&db.pool).await.unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");

    sqlx::raw_sql("DROP TRIGGER refuse ON claims")
        .execute(&db.pool)
        .await
        .unwrap();
    // Dropping the tasks rolled their claim back: all nine are free to claim again.
    db.wait_for(
        "SELECT count(*) = 9 FROM (SELECT id FROM tasks FOR UPDATE SKIP LOCKED) AS free",
        Duration::from_secs(5),
    )
    .await;
    let tasks = claim_locked(&db.pool, &request(9), &mut ClaimCursor::default(), permit())
        .await
        .unwrap();
    assert_eq!(tasks.len(), 9);
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM claims").await, 1);
}

/// A locked claim whose transaction died writes its outcomes through the pool (see
/// `Writer::write_locked`). It finds each row where the claim saw it, so a row nobody
/// wrote since takes its outcome, while one written since has moved and keeps the newer
/// write.
#[tokio::test]
async fn outcomes_written_after_the_locks_were_lost_apply_where_nobody_wrote_since() {
    let db = nine_due_tasks().await;
    let mut cursor = ClaimCursor::default();
    let (keys, tasks) = claim(&db, &mut cursor).await;
    let claim_key = tasks[0].lock.as_ref().unwrap().key;
    roll_back(tasks.clone()).await;
    sqlx::query("UPDATE tasks SET payload = 'newer' WHERE key = $1")
        .bind(&keys[0])
        .execute(&db.pool)
        .await
        .unwrap();
    let writes: Vec<_> = tasks
        .iter()
        .map(|task| {
            let done = Outcome {
                decision: Decision::Complete(None),
                spawns: Vec::new(),
            };
            commit::decide(task, Ok(done), 3, &Default::default(), now_ms())
        })
        .collect();
    let done = commit::commit(&db.pool, &writes, Some(claim_key), true)
        .await
        .unwrap();
    assert_eq!(done.committed, 2);
    let done_keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM tasks WHERE status = 1 ORDER BY key")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(done_keys, keys[1..]);
    assert_eq!(db.task(&keys[0]).await.status, 0);
}

#[tokio::test]
async fn a_claims_row_keeps_its_ids_with_lz4_where_the_server_has_it() {
    let db = TestDb::new().await;
    let lz4: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_settings
                        WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals))",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // A batch of 1,000 ids, as a claim records it: large enough to be compressed.
    sqlx::query(
        "INSERT INTO claims (key, task_ids) SELECT 1, array_agg(i) FROM generate_series(1, 1000) i",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // Read back: a value is compressed as its row is stored, after RETURNING saw it.
    let how: Option<String> =
        sqlx::query_scalar("SELECT pg_column_compression(task_ids) FROM claims WHERE key = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let expected = if lz4 { "lz4" } else { "pglz" };
    assert_eq!(how.as_deref(), Some(expected));
}

/// A claim that takes over a lost batch's tasks puts back the batch's other ids with one
/// set difference per lost batch, not one for the column and another for the filter
/// that drops an emptied row.
#[tokio::test]
async fn a_claim_computes_a_lost_batchs_remaining_ids_once() {
    let db = TestDb::new().await;
    let plan = db
        .generic_plan(include_str!("../sql/claim_locked.sql"), 10)
        .await;
    let differences = plan
        .iter()
        .filter(|line| line.contains("SetOp Except"))
        .count();
    assert_eq!(differences, 1, "{}", plan.join("\n"));
}

/// Both claim statements leave alone the (tenant, task type) pairs the host is compiling
/// a module for, and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_leave_the_tasks_of_modules_being_compiled_alone() {
    let db = TestDb::new().await;
    let tasks =
        [("acme", "noop"), ("acme", "ticker"), ("globex", "noop")].map(|(tenant, task_type)| {
            NewTask {
                tenant: tenant.into(),
                ..NewTask::new(task_type, format!("{tenant}-{task_type}"))
            }
        });
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    let request = ClaimRequest {
        skip: Some(Arc::new(Compiling {
            tenants: vec!["acme".into()],
            types: vec!["noop".into()],
        })),
        ..request(10)
    };
    let keys = |claimed: &[ClaimedTask]| {
        let mut keys: Vec<String> = claimed.iter().map(|t| t.key.clone()).collect();
        keys.sort();
        keys
    };
    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
    let locked = claim_locked(&db.pool, &request, &mut ClaimCursor::default(), permit)
        .await
        .unwrap();
    assert_eq!(keys(&locked), ["acme-ticker", "globex-noop"], "row locks");
    locked[0]
        .lock
        .clone()
        .unwrap()
        .take()
        .await
        .unwrap()
        .rollback()
        .await
        .unwrap();
    let timed = claim_timed(&db.pool, &request).await.unwrap();
    assert_eq!(keys(&timed), ["acme-ticker", "globex-noop"], "timed lease");
    let rest = claim_timed(
        &db.pool,
        &ClaimRequest {
            skip: None,
            ..request
        },
    )
    .await
    .unwrap();
    assert_eq!(keys(&rest), ["acme-noop"], "unclaimed, and due");
}

/// A timed lease finds the rows it leases by their ids, one lookup each: joined with the
/// batch instead, whose size the planner cannot know and guesses at a tenth of the
/// table, the lease read the whole primary key's index on every claim.
#[tokio::test]
async fn a_timed_lease_looks_up_the_rows_it_leases_by_id() {
    let db = TestDb::new().await;
    let plan = db
        .generic_plan(include_str!("../sql/claim_timed.sql"), 9)
        .await;
    let update = plan
        .iter()
        .skip_while(|line| !line.starts_with("Update on"))
        .skip(1)
        .find(|line| line.starts_with("  ->"))
        .cloned()
        .unwrap_or_default();
    assert!(
        update.contains("Scan") && update.contains("on public.tasks t"),
        "the leased rows come from one scan of tasks, not a join:\n{}",
        plan.join("\n")
    );
    assert!(
        plan.iter().any(|line| line.contains("t.id = ANY (")),
        "{}",
        plan.join("\n")
    );
}
