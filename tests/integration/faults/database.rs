//! Database faults under load: the hosts' connections cut again and again with
//! `pg_terminate_backend`, and the server itself restarted. Hosts must reconnect on
//! their own, with backoff, saying so in their logs, and stay up; the ledger must still
//! balance.

use std::process::Command;
use std::time::{Duration, Instant};

use recur_host::examples::artifacts::LEDGER_COMPONENT;
use sqlx::PgConnection;

use super::fleet::Fleet;
use super::{Rng, SERIAL, enqueue_ledger, fault_phase, ledger, report, settle};
use crate::support::TestDb;

const TASKS: usize = 10_000;
const EVERY_MS: u64 = 500;
const LEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Terminates every backend of `database` except the caller's; returns how many.
async fn cut_connections(admin: &mut PgConnection, database: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
         FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .fetch_one(admin)
    .await
    .unwrap()
}

/// Warning and error lines in the hosts' logs: each says that a database call failed
/// and what the host does about it (retry, or leave the tasks to run again).
fn reconnect_warnings(fleet: &Fleet) -> usize {
    fleet
        .all_logs()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count()
}

/// Row-locked batches (what `--claim auto` picks for these short runs): a cut connection
/// ends its claim, so another host may claim and run the batch's tasks again before the
/// first host, whose runs finished, writes them through a new connection (fenced by row
/// version). Nothing may be lost; repeats are counted, not forbidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_ride_out_cut_connections_and_lose_nothing() {
    cut_connections_under_load("auto").await;
}

/// Timed leases outlive a connection: the host writes its outcomes through a new one
/// while it still holds the lease, so a cut repeats no run at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_timed_leases_a_cut_connection_repeats_no_run() {
    cut_connections_under_load("timed").await;
}

/// Cuts the hosts' connections again and again under load, then audits. With timed
/// leases, repeated runs on hosts that were never killed are forbidden too.
async fn cut_connections_under_load(claim: &str) {
    let strict = claim == "timed";
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    db.deploy("ledger", LEDGER_COMPONENT).await;
    enqueue_ledger(&db, TASKS, EVERY_MS).await;
    let mut fleet = Fleet::new(
        &db,
        &format!("cut-connections-{claim}"),
        &["--lease-timeout", "5s", "--claim", claim],
    );
    for _ in 0..3 {
        fleet.start();
    }
    db.wait_for(
        "SELECT sum(runs) > 1000 FROM tasks",
        Duration::from_secs(60),
    )
    .await;

    let mut admin = db.admin().await;
    let mut rng = Rng::new();
    let phase = fault_phase(12);
    let end = Instant::now() + phase;
    let (mut rounds, mut cut) = (0, 0);
    while Instant::now() < end {
        cut += cut_connections(&mut admin, db.name()).await;
        rounds += 1;
        // Not an assertion: spreads the cuts over the phase.
        tokio::time::sleep(rng.millis(300, 1500)).await;
        fleet.assert_alive();
    }
    let last_cut = Instant::now();
    // Work goes on after the last cut: the hosts reconnected by themselves.
    let runs: i64 = db.scalar("SELECT sum(runs)::bigint FROM tasks").await;
    db.wait_for(
        &format!("SELECT sum(runs) > {} FROM tasks", runs + 2000),
        Duration::from_secs(60),
    )
    .await;
    settle(&db, last_cut, LEASE_TIMEOUT).await;
    fleet.assert_alive();
    let warnings = reconnect_warnings(&fleet);
    fleet.stop_all(Duration::from_secs(30)).await;

    let audit = ledger::audit(&db, &fleet, &[], EVERY_MS as i64).await;
    report(
        &format!("cut-connections ({claim} claims)"),
        &format!("{rounds} rounds of pg_terminate_backend, {cut} connections cut, 3 hosts"),
        &audit,
        &format!("; {warnings} warnings logged"),
    );
    assert!(cut > 0, "no connection was cut");
    assert!(
        warnings > 0,
        "the hosts never said that a database call failed"
    );
    assert!(
        !fleet.all_logs().contains('\u{1b}'),
        "a log written to a file has terminal escape codes"
    );
    if strict {
        audit.assert_clean();
    } else {
        assert_at_least_once(&audit);
    }
}

/// Every task ran, none was lost, none is left leased or failed; repeated runs are
/// counted, not forbidden.
fn assert_at_least_once(audit: &ledger::Audit) {
    let problems: Vec<_> = audit
        .problems
        .iter()
        .filter(|p| !p.contains("hosts that never lost their lease"))
        .collect();
    assert!(
        problems.is_empty(),
        "{:#?}",
        &problems[..problems.len().min(10)]
    );
    assert_eq!(audit.lost, 0);
}

/// Restarts the local PostgreSQL 15 cluster; `Err` says why it could not.
fn restart_postgres() -> Result<(), String> {
    let output = Command::new("pg_ctlcluster")
        .args(["15", "main", "restart"])
        .output()
        .map_err(|e| format!("cannot run pg_ctlcluster: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`pg_ctlcluster 15 main restart` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Restarting the server cuts every connection on it, other tests' included, so this
/// test runs alone: `.ci/run` runs it by name after the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts PostgreSQL, which cuts every other test's connections; .ci/run runs it alone"]
async fn hosts_ride_out_a_postgres_restart_and_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    db.deploy("ledger", LEDGER_COMPONENT).await;
    enqueue_ledger(&db, TASKS, EVERY_MS).await;
    let mut fleet = Fleet::new(&db, "pg-restart", &["--lease-timeout", "5s"]);
    for _ in 0..2 {
        fleet.start();
    }
    db.wait_for(
        "SELECT sum(runs) > 1000 FROM tasks",
        Duration::from_secs(60),
    )
    .await;

    let started = Instant::now();
    if let Err(reason) = tokio::task::spawn_blocking(restart_postgres).await.unwrap() {
        println!("SKIPPED the PostgreSQL restart: {reason}");
        fleet.stop_all(Duration::from_secs(30)).await;
        return;
    }
    let restart = started.elapsed();
    fleet.assert_alive();
    // The pool's connections died with the server; `wait_for` treats errors as "not
    // yet", so this also waits for the server to accept connections again.
    let runs_before: i64 = loop {
        if let Ok(runs) = sqlx::query_scalar("SELECT sum(runs)::bigint FROM tasks")
            .fetch_one(&db.pool)
            .await
        {
            break runs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "PostgreSQL did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    db.wait_for(
        &format!("SELECT sum(runs) > {} FROM tasks", runs_before + 2000),
        Duration::from_secs(60),
    )
    .await;
    settle(&db, Instant::now(), LEASE_TIMEOUT).await;
    fleet.assert_alive();
    let warnings = reconnect_warnings(&fleet);
    fleet.stop_all(Duration::from_secs(30)).await;

    let audit = ledger::audit(&db, &fleet, &[], EVERY_MS as i64).await;
    report(
        "pg-restart",
        &format!("1 PostgreSQL restart ({} ms), 2 hosts", restart.as_millis()),
        &audit,
        &format!("; {warnings} warnings logged"),
    );
    assert!(
        warnings > 0,
        "the hosts never said that a database call failed"
    );
    // A commit that cannot reach the server for longer than the lease is given up and
    // its task runs again: at-least-once, so duplicates are counted, not forbidden.
    assert_at_least_once(&audit);
}
