//! The ledger: a recurring task that writes one log line per execution, so a test can
//! audit delivery from the hosts' logs alone, including executions whose commits were
//! lost. State `{"n": k}` (0 when absent) is the iteration about to run; payload
//! `{"every_ms": M, "iterations": N}` (defaults 500 and unlimited). Each run logs
//! `ledger task=<id> n=<k> scheduled_ms=<due> now_ms=<now> attempt=<a>`, then reschedules
//! M ms later with `{"n": k+1}`, or completes with it once k+1 reaches N.
use std::time::{Duration, UNIX_EPOCH};

use recur_guest::{Error, Handler, Outcome, Task};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(default)]
struct Payload {
    every_ms: u64,
    iterations: Option<u64>,
}

impl Default for Payload {
    fn default() -> Self {
        Self {
            every_ms: 500,
            iterations: None,
        }
    }
}

#[derive(Default, Deserialize, Serialize)]
struct State {
    n: u64,
}

struct Ledger;

impl Handler for Ledger {
    fn run(task: Task) -> Result<Outcome, Error> {
        let payload = task.payload_json::<Payload>()?;
        let state = task.state_json::<State>()?.unwrap_or_default();
        let millis =
            |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        recur_guest::info!(
            "ledger task={} n={} scheduled_ms={} now_ms={} attempt={}",
            task.id,
            state.n,
            millis(task.scheduled_at),
            millis(recur_guest::now()),
            task.attempt
        );
        let next = State { n: state.n + 1 };
        let decision = if payload.iterations.is_some_and(|n| next.n >= n) {
            recur_guest::complete()
        } else {
            recur_guest::reschedule_after(Duration::from_millis(payload.every_ms))
        };
        Ok(decision.with_state_json(&next)?)
    }
}

recur_guest::export!(Ledger);
