//! Counts its runs in its state: payload `{"runs": N, "every_ms": M}` (defaults 3 and
//! 1000), state `{"count": k}`. Each run adds one to k, then completes once k reaches N
//! and otherwise runs again M milliseconds later.
use std::time::Duration;

use recur_guest::{Error, Handler, Outcome, Task};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(default)]
struct Payload {
    runs: u64,
    every_ms: u64,
}

impl Default for Payload {
    fn default() -> Self {
        Self {
            runs: 3,
            every_ms: 1000,
        }
    }
}

#[derive(Default, Deserialize, Serialize)]
struct State {
    count: u64,
}

struct Counter;

impl Handler for Counter {
    fn run(task: Task) -> Result<Outcome, Error> {
        let payload = task.payload_json::<Payload>()?;
        let state = task.state_json::<State>()?.unwrap_or_default();
        let count = state.count + 1;
        let next = if count >= payload.runs {
            recur_guest::complete()
        } else {
            recur_guest::reschedule_after(Duration::from_millis(payload.every_ms))
        };
        Ok(next.with_state_json(&State { count })?)
    }
}

recur_guest::export!(Counter);
