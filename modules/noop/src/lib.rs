//! The smallest useful module: with payload `{"every_ms": N}` it reschedules itself every
//! N milliseconds, keeping its state; without `every_ms` it completes.
use std::time::Duration;

use recur_guest::{Handler, Outcome, Task};

#[derive(serde::Deserialize)]
struct Payload {
    every_ms: Option<u64>,
}

struct Noop;

impl Handler for Noop {
    fn run(task: Task) -> Outcome {
        match task.payload_json::<Payload>().map(|p| p.every_ms) {
            Ok(Some(ms)) => recur_guest::reschedule_after(Duration::from_millis(ms)),
            Ok(None) => recur_guest::complete(),
            Err(e) => recur_guest::fail(e.to_string()),
        }
    }
}

recur_guest::export!(Noop);
