//! The roster of running hosts, with real `recur host` processes: `recur hosts` lists
//! each with its process and its tasks in flight; a host SIGKILLed is gone from the list
//! at once (its liveness lock went with its connections) and its row is deleted by the
//! other's next heartbeat; a host stopped gracefully deletes its own row.

use std::time::Duration;

use recur_host::enqueue::{self, NewTask};
use recur_host::examples::artifacts::NOOP_COMPONENT;

use crate::faults::Fleet;
use crate::support::{self, TestDb, stdout, wait};

fn hosts(db: &TestDb) -> Vec<serde_json::Value> {
    let listed = support::recur(&db.url, &["hosts", "--json"], b"");
    assert!(listed.status.success(), "{listed:?}");
    serde_json::from_str::<serde_json::Value>(stdout(&listed).trim())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn pids(db: &TestDb) -> Vec<u64> {
    let mut pids: Vec<u64> = hosts(db)
        .iter()
        .map(|h| h["pid"].as_u64().unwrap())
        .collect();
    pids.sort();
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recur_hosts_lists_the_live_hosts_and_drops_a_dead_one_at_once() {
    let _serial = crate::faults::SERIAL.lock().await;
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    let tasks: Vec<NewTask> = (0..200)
        .map(|i| NewTask {
            payload: br#"{"every_ms": 20}"#.to_vec(),
            ..NewTask::new("noop", format!("k{i}"))
        })
        .collect();
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    let mut fleet = Fleet::new(&db, "roster", &["--concurrency", "2"]);
    let (a, b) = (fleet.start(), fleet.start());
    let mut both = vec![fleet.pid(a) as u64, fleet.pid(b) as u64];
    both.sort();
    wait(Duration::from_secs(30), "both hosts listed", || async {
        pids(&db) == both
    })
    .await;
    let listed = hosts(&db);
    for host in &listed {
        assert_eq!(host["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(host["workers"], 2);
        assert!(host["seen_ms_ago"].as_i64().unwrap() < 10_000, "{host}");
    }
    wait(
        Duration::from_secs(20),
        "a host with tasks in flight",
        || async {
            hosts(&db)
                .iter()
                .any(|h| h["in_flight"].as_i64().unwrap() > 0)
        },
    )
    .await;

    fleet.kill9(a);
    let left = vec![fleet.pid(b) as u64];
    wait(
        Duration::from_secs(5),
        "the killed host dropped from the list",
        || async { pids(&db) == left },
    )
    .await;
    db.wait_for("SELECT count(*) = 1 FROM hosts", Duration::from_secs(10))
        .await;

    fleet.stop_all(Duration::from_secs(30)).await;
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM hosts").await, 0);
    let table = support::recur(&db.url, &["hosts"], b"");
    assert!(stdout(&table).contains("no host is running"), "{table:?}");
}
