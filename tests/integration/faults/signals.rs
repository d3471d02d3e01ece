//! Lease fencing with a real pause: a host SIGSTOPped past its lease timeout, another
//! host taking its tasks over and committing newer results, then the first one resumed
//! (SIGCONT) with runs in flight. Its late commits must change nothing.

use std::time::Duration;

use recur_host::examples::artifacts::LEDGER_COMPONENT;
use sqlx::Row;

use super::fleet::Fleet;
use super::{SERIAL, enqueue_ledger, ledger, report};
use crate::support::{TestDb, wait};

const TASKS: usize = 2_000;
const EVERY_MS: u64 = 100;

/// The `n` of every ledger task's committed state, by id.
async fn states(db: &TestDb) -> std::collections::HashMap<i64, u64> {
    sqlx::query("SELECT id, state FROM tasks")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let state: Option<Vec<u8>> = row.get("state");
            let n = state
                .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s).ok())
                .and_then(|v| v["n"].as_u64())
                .unwrap_or(0);
            (row.get("id"), n)
        })
        .collect()
}

/// Timed leases: every held task is taken over and every late commit fenced off. Row-
/// locked batches: the paused host's session ends at the lease timeout
/// (idle_in_transaction_session_timeout), which releases its locks, and on waking it does
/// not start the tasks whose claim ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_paused_past_its_lease_cannot_overwrite_newer_results() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    db.deploy("ledger", LEDGER_COMPONENT).await;
    enqueue_ledger(&db, TASKS, EVERY_MS).await;
    // One worker thread and large batches: the paused host always has a queue of leased,
    // unstarted tasks, which it runs on waking up, long after their leases ran out.
    let mut fleet = Fleet::new(
        &db,
        "sigstop",
        &[
            "--lease-timeout",
            "1s",
            "--concurrency",
            "1",
            "--batch",
            "256",
        ],
    );
    let paused = fleet.start();
    db.wait_for(
        "SELECT sum(runs) > 2000 FROM tasks",
        Duration::from_secs(60),
    )
    .await;

    // Pause it while it holds leases on tasks it has already run: their commits can only
    // come after the takeover's, and the takeover runs those iterations again. It may
    // just have committed everything and be waiting for the next tasks to fall due, or
    // hold only a batch it has not started (which it gives up on waking, once its claim
    // ran out), so try again until it does.
    let mut held: Vec<(i64, i64)> = Vec::new();
    for _ in 0..200 {
        fleet.signal(paused, libc::SIGSTOP);
        // A statement the host sent just before it stopped still runs on the server
        // (a commit would release the leases it covers): wait until it is done, so
        // `held` is what the paused host really holds.
        db.wait_for(
            "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database()
             AND pid <> pg_backend_pid() AND state = 'active'",
            Duration::from_secs(10),
        )
        .await;
        // Held by a timed lease, or by the row locks of a batch claimed in a transaction
        // (the rows this statement cannot lock itself).
        held = sqlx::query_as(
            "SELECT id, runs FROM tasks WHERE lease_token IS NOT NULL
             OR id NOT IN (SELECT id FROM tasks FOR UPDATE SKIP LOCKED)",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        if ran_uncommitted(&fleet.hosts[paused].log, &held) {
            break;
        }
        held.clear();
        fleet.signal(paused, libc::SIGCONT);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !held.is_empty(),
        "the paused host was never caught holding a run it had not committed"
    );

    // Another host takes every held task over once its lease runs out, and commits at
    // least two newer iterations of each.
    let takeover = fleet.start();
    let ids: Vec<i64> = held.iter().map(|(id, _)| *id).collect();
    let runs: Vec<i64> = held.iter().map(|(_, runs)| *runs).collect();
    let pool = db.pool.clone();
    wait(
        Duration::from_secs(30),
        "the takeover of the paused host's tasks",
        || {
            let (pool, ids, runs) = (pool.clone(), ids.clone(), runs.clone());
            async move {
                sqlx::query_scalar::<_, bool>(
                    "SELECT bool_and(t.runs >= h.runs + 2) FROM tasks t
                 JOIN unnest($1::bigint[], $2::bigint[]) AS h(id, runs) ON h.id = t.id",
                )
                .bind(ids)
                .bind(runs)
                .fetch_one(&pool)
                .await
                .unwrap_or(false)
            }
        },
    )
    .await;
    let before = states(&db).await;

    let resumed_ms = recur_host::sandbox::now_ms();
    fleet.signal(paused, libc::SIGCONT);
    // Let the resumed host run what it had queued: its log shows a run after waking up.
    // Bounded, and not an assertion by itself (the audit below is).
    let log = fleet.hosts[paused].log.clone();
    let woke = wait_quietly(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|line| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix("now_ms="))
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|ms| ms >= resumed_ms)
            })
    })
    .await;
    assert!(woke, "the resumed host never ran anything");
    fleet.assert_alive();
    fleet.stop_all(Duration::from_secs(30)).await;
    fleet.assert_alive();

    // No task went back: every committed state is at least what it was before the
    // paused host woke up.
    let after = states(&db).await;
    let regressed: Vec<_> = before
        .iter()
        .filter(|(id, n)| after.get(id).is_none_or(|m| m < n))
        .collect();
    assert!(regressed.is_empty(), "states went back: {regressed:?}");
    // The paused host's wake-up runs (those that started within its lease timeout plus
    // a queue's worth of work) are excused duplicates; anything later must not repeat.
    let stale_until = resumed_ms + 3000;
    let audit = ledger::audit(&db, &fleet, &[(paused, stale_until)], EVERY_MS as i64).await;
    let fenced = stopped_line(&fleet, paused);
    report(
        "sigstop",
        &format!(
            "1 SIGSTOP past the 1 s lease, {} leased tasks held, then SIGCONT",
            held.len()
        ),
        &audit,
        &format!("; paused host at exit: {fenced}"),
    );
    audit.assert_clean();
    assert!(
        audit.duplicates > 0,
        "the paused host re-ran nothing: the test proved nothing"
    );
    let _ = takeover;
}

/// Whether the host logging to `log` ran the next iteration of any of `held` (id, runs):
/// a run whose commit has not landed. A ledger task's iteration `n` is its committed
/// runs.
fn ran_uncommitted(log: &std::path::Path, held: &[(i64, i64)]) -> bool {
    let held: std::collections::HashSet<(i64, i64)> = held.iter().copied().collect();
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("ledger task="))
        .any(|line| {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .and_then(|v| v.parse::<i64>().ok())
            };
            matches!((field("task="), field("n=")), (Some(id), Some(n)) if held.contains(&(id, n)))
        })
}

/// Polls `check` until true or `timeout`; returns whether it became true.
async fn wait_quietly(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// The counters of a host's "host stopped" line.
fn stopped_line(fleet: &Fleet, index: usize) -> String {
    let log = std::fs::read_to_string(&fleet.hosts[index].log).unwrap_or_default();
    log.lines()
        .find(|l| l.contains("host stopped"))
        .map(|l| l[l.find("executed").unwrap_or(0)..].to_owned())
        .unwrap_or_default()
}
