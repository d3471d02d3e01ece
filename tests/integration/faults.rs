//! Faults with real processes: `recur host` binaries SIGKILLed, paused and stopped under
//! load, their database connections cut and the server restarted, all while running
//! `ledger` tasks whose every execution is logged. Afterwards the ledger (the hosts'
//! logs) is audited against the committed rows: no task lost, duplicates only where a
//! host lost its lease, nothing left leased.
//!
//! These tests take a process-wide lock: each runs several hosts flat out, and two at
//! once on a small machine would measure the machine rather than recur. The test that
//! restarts PostgreSQL is `#[ignore]`d because it would cut every other test's
//! connections; `.ci/run` runs it alone. `RECUR_SOAK_SECS` lengthens the fault phases.

mod crashing;
mod database;
pub mod fleet;
mod kill;
pub mod ledger;
mod signals;

use std::time::{Duration, Instant};

use recur_host::enqueue::{self, NewTask};
use tokio::sync::Mutex;

use crate::support::TestDb;
pub use fleet::Fleet;
pub use ledger::{Audit, audit};

/// Serializes the fault tests (see the module doc).
pub static SERIAL: Mutex<()> = Mutex::const_new(());

/// How long a fault phase lasts: `RECUR_SOAK_SECS` if set, else `ci_secs`.
fn fault_phase(ci_secs: u64) -> Duration {
    let secs = std::env::var("RECUR_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ci_secs);
    Duration::from_secs(secs)
}

/// Enqueues `n` ledger tasks rescheduling every `every_ms`; every tenth completes after
/// five iterations, so the audit sees finished tasks too.
async fn enqueue_ledger(db: &TestDb, n: usize, every_ms: u64) {
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| {
            let payload = if i % 10 == 0 {
                format!(r#"{{"every_ms": {every_ms}, "iterations": 5}}"#)
            } else {
                format!(r#"{{"every_ms": {every_ms}}}"#)
            };
            NewTask {
                payload: payload.into_bytes(),
                ..NewTask::new("ledger", format!("l{i}"))
            }
        })
        .collect();
    assert_eq!(enqueue::enqueue(&db.pool, &tasks).await.unwrap(), n as u64);
}

/// Waits until the leases of every host that died have run out and been taken over,
/// so that stopping the survivors leaves every task committed.
async fn settle(db: &TestDb, last_fault: Instant, lease_timeout: Duration) {
    let expired = last_fault + lease_timeout + Duration::from_millis(200);
    tokio::time::sleep_until(expired.into()).await;
    db.wait_for(
        "SELECT count(*) = 0 FROM tasks WHERE lease_token IS NOT NULL AND next_run_at <= now()",
        Duration::from_secs(90),
    )
    .await;
}

/// Prints one line of figures for RELIABILITY.md.
pub fn report(test: &str, faults: &str, audit: &Audit, extra: &str) {
    println!(
        "FIGURES {test}: faults: {faults}; tasks {}; executions {}; duplicates {} ({} on live hosts); lost {}; max lateness {} ms; max gap beyond interval {} ms{extra}",
        audit.tasks,
        audit.executions,
        audit.duplicates,
        audit.live_duplicates,
        audit.lost,
        audit.max_lateness_ms,
        audit.max_gap_ms
    );
}

/// A small deterministic generator (xorshift), seeded from `RECUR_FAULT_SEED` or the
/// clock, printed so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("RECUR_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("RECUR_FAULT_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// A duration between `min` and `max` milliseconds.
    fn millis(&mut self, min: u64, max: u64) -> Duration {
        Duration::from_millis(min + self.below(max - min + 1))
    }
}
