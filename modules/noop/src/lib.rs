//! The smallest useful module: with payload `{"every_ms": N}` it reschedules itself every
//! N milliseconds, keeping its state; without `every_ms` it completes.
//!
//! It keeps its phase: the next run is due N ms after this one was due, not after it
//! ran, so a schedule keeps its spacing however late its runs start (and `recur bench`
//! offers the load it says, even after a start with a backlog). A task that fell a whole
//! interval behind starts a new phase N ms after this run instead of running back to
//! back to catch up.
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
            Ok(Some(ms)) => {
                let every = Duration::from_millis(ms);
                let next = task.scheduled_at + every;
                if next > recur_guest::now() {
                    recur_guest::reschedule_at(next)
                } else {
                    recur_guest::reschedule_after(every)
                }
            }
            Ok(None) => recur_guest::complete(),
            Err(e) => recur_guest::fail(e.to_string()),
        }
    }
}

recur_guest::export!(Noop);
