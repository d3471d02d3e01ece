//! Counts the calls its instance has served in a static, logs the count and completes
//! with state `{"calls": n}`: a fresh instance says 1, a reused one more. Payload
//! `{"trap": true}` panics after counting; `{"leak_kib": K}` leaks K KiB each call, to
//! grow the instance's memory.
use std::sync::atomic::{AtomicU64, Ordering};

use recur_guest::{Error, Handler, Outcome, Task};
use serde::{Deserialize, Serialize};

static CALLS: AtomicU64 = AtomicU64::new(0);

#[derive(Default, Deserialize)]
#[serde(default)]
struct Payload {
    trap: bool,
    leak_kib: usize,
}

#[derive(Serialize)]
struct State {
    calls: u64,
}

struct CallCount;

impl Handler for CallCount {
    fn run(task: Task) -> Result<Outcome, Error> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        recur_guest::info!("call {calls} of this instance");
        let payload = task.payload_json::<Payload>().unwrap_or_default();
        if payload.trap {
            panic!("deliberate trap on call {calls}");
        }
        // Touch every page so the memory is really used, then lose it.
        std::mem::forget(vec![1u8; payload.leak_kib << 10]);
        Ok(recur_guest::complete().with_state_json(&State { calls })?)
    }
}

recur_guest::export!(CallCount);
