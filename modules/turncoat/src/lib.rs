//! Proves itself a short module, then turns long: with the payload
//! `{"turn_at_ms": T, "every_ms": E}`, a run before T (ms since the epoch, by the host's
//! clock) reschedules itself after E ms at once; a run from T on spins until the host's
//! deadline stops it.
use std::time::{Duration, UNIX_EPOCH};

use recur_guest::{Error, Handler, Outcome, Task};

#[derive(serde::Deserialize)]
struct Payload {
    turn_at_ms: u64,
    every_ms: u64,
}

struct Turncoat;

impl Handler for Turncoat {
    fn run(task: Task) -> Result<Outcome, Error> {
        let payload = task.payload_json::<Payload>()?;
        let now_ms = recur_guest::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if now_ms < payload.turn_at_ms {
            return Ok(recur_guest::reschedule_after(Duration::from_millis(
                payload.every_ms,
            )));
        }
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

recur_guest::export!(Turncoat);
