//! A commit statement the database refuses for what one outcome carries is split until
//! that outcome stands alone: the others are written at once, without the retries a
//! lost connection gets, and its task alone is parked as failed with the reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::claim::claim_timed;
use crate::commit::{self, Writer};
use crate::examples::artifacts::NOOP_COMPONENT;
use crate::sandbox::{Decision, Outcome, now_ms};
use crate::stats::Stats;

use super::support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_the_database_refuses_fails_only_its_own_task() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    assert_eq!(db.enqueue_n("noop", 8, "").await, 8);
    let claimed = claim_timed(&db.pool, &super::claim_request(8))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 8);
    let complete = Outcome {
        decision: Decision::Complete(None),
        spawns: Vec::new(),
    };
    let mut writes: Vec<_> = claimed
        .iter()
        .map(|task| commit::decide(task, Ok(complete.clone()), 3, &Default::default(), now_ms()))
        .collect();
    // What the outcome checks keep out, put past them: text PostgreSQL refuses.
    let culprit = claimed[5].key.clone();
    writes[5].row.error = Some("bad\0byte".into());

    let writer = Writer {
        pool: db.pool.clone(),
        give_up_after: Duration::from_secs(60),
        stats: Arc::new(Stats::default()),
    };
    let started = Instant::now();
    writer.write(&writes).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the refused statement was retried: {:?}",
        started.elapsed()
    );
    for task in &claimed {
        let row = db.task(&task.key).await;
        if task.key == culprit {
            let error = row.error.unwrap_or_default();
            assert_eq!(row.status, 2, "{error}");
            assert!(
                error.starts_with("the database refused to store this run's outcome:")
                    && error.contains("0x00"),
                "{error}"
            );
        } else {
            assert_eq!((row.status, row.error), (1, None), "{}", task.key);
        }
    }
    assert_eq!(writer.stats.snapshot().committed, 8);
}
