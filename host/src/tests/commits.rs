//! The commit stage on its own: a timed write that has to wait does not hold up the
//! commit of a locked batch, whose claim would otherwise run out behind it; a locked
//! batch that gives a task back unrun keeps the tries its claim counted for dead hosts;
//! commits that spawn the same keys at once do not deadlock; a commit's spawns are
//! matched with their keys by hash, not by comparing every pair.

use std::sync::Arc;
use std::time::Duration;

use crate::Host;
use crate::claim::{ClaimCursor, ClaimRequest, claim_locked, claim_timed};
use crate::commit::{self, Committer};
use crate::examples::artifacts::NOOP_COMPONENT;
use crate::execute::Finished;
use crate::sandbox::{Decision, Outcome, Spawn, now_ms};
use crate::stats::Stats;
use crate::task::ClaimedTask;
use tokio::sync::{Semaphore, mpsc};

use super::support::{TestDb, test_config};

const DONE: &str = "SELECT count(*) FILTER (WHERE status = 1) = count(*) FROM tasks";

/// `task` ran and its module completed it.
fn completed(task: ClaimedTask) -> Vec<Finished> {
    vec![Finished::Ran {
        task,
        result: Ok(Outcome {
            decision: Decision::Complete(None),
            spawns: Vec::new(),
        }),
        max_attempts: 3,
        quotas: Default::default(),
    }]
}

/// One task at a time, for 60 s, claimed outside any host (so a claim that never
/// commits always counts as a lost try).
fn one_task() -> ClaimRequest {
    super::claim_request(1)
}

/// A committer writing into `db`, fed by the returned sender.
fn committer(db: &TestDb) -> (mpsc::UnboundedSender<Vec<Finished>>, Committer) {
    let (finished, from_workers) = mpsc::unbounded_channel();
    let committer = Committer {
        pool: db.pool.clone(),
        finished: from_workers,
        max_rows: 1000,
        give_up_after: Duration::from_secs(60),
        in_flight: Arc::new(Semaphore::new(0)),
        stats: Arc::new(Stats::default()),
    };
    (finished, committer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_batch_commits_while_a_timed_write_waits() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    assert_eq!(db.enqueue_n("noop", 2, "").await, 2);
    let request = one_task();
    let mut timed = claim_timed(&db.pool, &request).await.unwrap();
    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
    let mut locked = claim_locked(&db.pool, &request, &mut ClaimCursor::default(), permit)
        .await
        .unwrap();
    let (timed, locked) = (timed.remove(0), locked.remove(0));
    let (timed_id, locked_id) = (timed.id, locked.id);

    // Another session holds the timed task's row, so its write waits for the lock.
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE")
        .bind(timed_id)
        .execute(&mut *holder)
        .await
        .unwrap();

    let (finished, committer) = committer(&db);
    let committing = tokio::spawn(committer.run());
    finished.send(completed(timed)).unwrap();
    // (`query` is cut at 1 kB, inside commit_timed.sql's opening comment.)
    db.wait_for(
        "SELECT count(*) = 1 FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'
           AND query LIKE '-- Write back the outcomes%'",
        Duration::from_secs(10),
    )
    .await;
    finished.send(completed(locked)).unwrap();

    db.wait_for(
        &format!("SELECT status = 1 FROM tasks WHERE id = {locked_id}"),
        Duration::from_secs(10),
    )
    .await;
    let timed_status: i16 = db
        .scalar(&format!("SELECT status FROM tasks WHERE id = {timed_id}"))
        .await;
    assert_eq!(timed_status, 0, "the timed write went through a held lock");

    holder.rollback().await.unwrap();
    db.wait_for(
        &format!("SELECT status = 1 FROM tasks WHERE id = {timed_id}"),
        Duration::from_secs(10),
    )
    .await;
    drop(finished);
    committing.await.unwrap();
}

/// A locked batch gives a task back unrun (its module is still compiling, the host is
/// stopping): the task is due again as it was, and the try of a dead batch that its claim
/// took over stays counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_task_given_back_unrun_keeps_the_tries_of_dead_batches() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    db.enqueue(&[("noop", "a", "")]).await;
    let claim = || async {
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let mut tasks = claim_locked(&db.pool, &one_task(), &mut ClaimCursor::default(), permit)
            .await
            .unwrap();
        assert_eq!(tasks.len(), 1, "the task was not due");
        tasks.remove(0)
    };

    // A batch dies: its transaction ends without a commit, its claims row stays.
    let dead = claim().await;
    assert_eq!((dead.attempt, dead.lost_runs), (1, 0));
    let tx = dead.lock.unwrap().take().await.unwrap();
    tx.rollback().await.unwrap();
    // The next claim takes that row over and counts its try.
    let task = claim().await;
    assert_eq!((task.attempt, task.lost_runs), (2, 1));

    let (finished, committer) = committer(&db);
    let committing = tokio::spawn(committer.run());
    finished.send(vec![Finished::NotRun(task)]).unwrap();
    drop(finished);
    committing.await.unwrap();

    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM claims").await, 0);
    let row = db.task("a").await;
    assert_eq!((row.status, row.runs, row.attempt), (0, 0, 1), "{row:?}");
    // Due again at once, and its next claim hands out the same attempt as the one that
    // gave it back.
    let again = claim().await;
    assert_eq!((again.attempt, again.lost_runs), (2, 0));
}

/// Two commits at once that spawn the same keys in opposite orders, as two locked batches
/// of a crawler do. Each waits for the keys the other has inserted and not yet committed;
/// inserted in different orders, each would hold a key the other waits for, and
/// PostgreSQL would abort one as a deadlock a second later. Both insert in key order, so
/// the second waits for the first to commit, then finds every key taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_spawning_the_same_keys_in_opposite_orders_do_not_deadlock() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    db.enqueue_n("noop", 2, "").await;
    let parents = claim_timed(
        &db.pool,
        &ClaimRequest {
            limit: 2,
            ..one_task()
        },
    )
    .await
    .unwrap();
    assert_eq!(parents.len(), 2);
    let keys: Vec<String> = (0..crate::contract::MAX_SPAWNS)
        .map(|i| format!("page-{i:04}"))
        .collect();
    let write = |parent: &ClaimedTask, keys: Vec<&String>| {
        let spawns = keys
            .into_iter()
            .map(|key| Spawn {
                task_type: "noop".into(),
                key: key.clone(),
                payload: Vec::new(),
                when: None,
            })
            .collect();
        let ran = Outcome {
            decision: Decision::Complete(None),
            spawns,
        };
        vec![commit::decide(
            parent,
            Ok(ran),
            3,
            &Default::default(),
            now_ms(),
        )]
    };
    let forward = write(&parents[0], keys.iter().collect());
    let backward = write(&parents[1], keys.iter().rev().collect());
    let commit_in_own_transaction = |writes| async {
        let writes: Vec<_> = writes;
        let mut tx = db.pool.begin().await?;
        let done = commit::commit(&mut *tx, &writes, None, false).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(done)
    };
    let (a, b) = tokio::join!(
        commit_in_own_transaction(forward),
        commit_in_own_transaction(backward)
    );
    let (a, b) = (a.expect("no deadlock"), b.expect("no deadlock"));
    assert_eq!((a.committed, b.committed), (1, 1));
    assert_eq!(a.spawned + b.spawned, crate::contract::MAX_SPAWNS as u64);
    let spawned: i64 = db
        .scalar("SELECT count(*) FROM tasks WHERE key LIKE 'page-%'")
        .await;
    assert_eq!(spawned, crate::contract::MAX_SPAWNS as i64);
    db.assert_keys_match_tasks().await;
}

/// A commit's spawns are matched with the keys they won by a hashed lookup (and with
/// their outcomes by a hash join), whatever the planner guesses about the CTEs' sizes.
/// As a join, the generic plan a connection settles on after five commits compared
/// every spawn with every key: work that grows with the square of a batch's spawns,
/// where a hash costs one probe per spawn.
#[tokio::test]
async fn a_commits_spawns_find_the_keys_they_won_by_hash_in_the_generic_plan() {
    let db = TestDb::new().await;
    let plan = db
        .generic_plan(include_str!("../sql/commit_timed.sql"), 21)
        .await;
    // The lines of a CTE's plan: from its name to the next node at its depth.
    let cte = |name: &str| -> Vec<String> {
        plan.iter()
            .skip_while(|line| line.trim() != format!("CTE {name}"))
            .skip(1)
            .take_while(|line| !line.starts_with("  CTE ") && !line.starts_with("  InitPlan"))
            .cloned()
            .collect()
    };
    let (spawn, spawned) = (cte("spawn"), cte("spawned"));
    let plan = plan.join("\n");
    assert!(
        spawned.iter().any(|line| line.contains("hashed SubPlan")),
        "{plan}"
    );
    assert!(
        !spawned
            .iter()
            .any(|line| line.contains("Nested Loop") || line.contains("Join")),
        "{plan}"
    );
    // The spawns' join with the outcomes that applied, which gives each its tenant, is
    // hashed too: a nested loop there would compare every spawn with every outcome.
    // The one nested loop is the probe that drops keys that exist, an index lookup per
    // spawn.
    let nested: Vec<&String> = spawn
        .iter()
        .filter(|line| line.contains("Nested Loop"))
        .collect();
    assert!(
        spawn.iter().any(|line| line.contains("Hash Join"))
            && nested
                .iter()
                .all(|line| line.contains("Nested Loop Anti Join"))
            && spawn
                .iter()
                .any(|line| line.contains("Index Only Scan using task_keys_pkey")),
        "{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_is_never_committed_runs_again_and_its_late_commit_changes_nothing() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    db.enqueue(&[("noop", "a", ""), ("noop", "b", ""), ("noop", "c", "")])
        .await;

    // A "host" leases two tasks and dies before committing.
    let request = ClaimRequest {
        lease_timeout: Duration::from_millis(800),
        ..super::claim_request(2)
    };
    let crashed = claim_timed(&db.pool, &request).await.unwrap();
    assert_eq!(crashed.len(), 2);
    // While the lease holds, nobody else gets those tasks.
    let others = claim_timed(
        &db.pool,
        &ClaimRequest {
            limit: 10,
            ..request.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(others.len(), 1);
    assert!(crashed.iter().all(|c| c.id != others[0].id));

    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(DONE, Duration::from_secs(20)).await;
    host.stop().await;
    for task in &crashed {
        let row = db.task(&task.key).await;
        assert_eq!((row.status, row.runs), (1, 1), "{}: {row:?}", task.key);
    }

    // The dead host's late commit (old token) must not touch the newer result.
    let stale = Outcome {
        decision: Decision::Fail("stale".into()),
        spawns: vec![],
    };
    let writes: Vec<_> = crashed
        .iter()
        .map(|t| commit::decide(t, Ok(stale.clone()), 5, &Default::default(), 0))
        .collect();
    let done = commit::commit(&db.pool, &writes, None, false)
        .await
        .unwrap();
    assert_eq!(done.committed, 0);
    for task in &crashed {
        let row = db.task(&task.key).await;
        assert_eq!((row.status, row.error), (1, None));
    }
}
