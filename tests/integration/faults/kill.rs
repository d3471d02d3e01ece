//! The kill -9 storm: several hosts on tens of thousands of recurring ledger tasks, a
//! random one SIGKILLed every few seconds and replaced, then the survivors stopped with
//! SIGTERM under full load.

use std::time::{Duration, Instant};

use recur_host::examples::artifacts::LEDGER_COMPONENT;

use super::fleet::Fleet;
use super::{Rng, SERIAL, enqueue_ledger, fault_phase, ledger, report, settle};
use crate::support::TestDb;

const TASKS: usize = 20_000;
const EVERY_MS: u64 = 500;
const HOSTS: usize = 3;
/// Long enough that a live host's claims end well inside it even on a machine this test
/// overloads (a new host process every few seconds, each compiling its module, beside
/// the others at full load): a claim that outlives its lease is repeated elsewhere, and
/// the audit allows repeats only of killed hosts' runs. (Such a repeat is not charged to
/// the task while its host's liveness lock is held, see `liveness.rs`.)
const LEASE_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_storm_loses_no_task_and_sigterm_stops_under_load() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    db.deploy("ledger", LEDGER_COMPONENT).await;
    enqueue_ledger(&db, TASKS, EVERY_MS).await;

    let mut fleet = Fleet::new(&db, "kill-storm", &["--lease-timeout", "10s"]);
    for _ in 0..HOSTS {
        fleet.start();
    }
    let mut rng = Rng::new();
    let phase = fault_phase(20);
    let end = Instant::now() + phase;
    let (mut kills, mut last_kill) = (0, Instant::now());
    while Instant::now() < end {
        // Not an assertion: the pause only spreads the kills over the phase.
        tokio::time::sleep(rng.millis(500, 2500)).await;
        fleet.assert_alive();
        let live = fleet.live();
        let victim = live[rng.below(live.len() as u64) as usize];
        fleet.kill9(victim);
        fleet.start();
        kills += 1;
        last_kill = Instant::now();
    }
    settle(&db, last_kill, LEASE_TIMEOUT).await;
    fleet.assert_alive();

    // SIGTERM under full load: every host exits 0, promptly, and gives back or commits
    // everything it held.
    let stop = fleet.stop_all(Duration::from_secs(30)).await;
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE lease_token IS NOT NULL")
            .await,
        0,
        "a stopped host left tasks leased"
    );
    let audit = ledger::audit(&db, &fleet, &[], EVERY_MS as i64).await;
    report(
        "kill-storm",
        &format!("{kills} SIGKILLs in {phase:?}, {HOSTS} hosts"),
        &audit,
        &format!("; slowest SIGTERM exit {} ms", stop.as_millis()),
    );
    audit.assert_clean();
    assert!(kills > 0);
    assert_eq!(audit.lost, 0);
}
