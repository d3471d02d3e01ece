//! Waits inside a WASI call: host code, where the epoch deadline that stops a busy loop
//! cannot reach. The payload `{"wait": W, "ms": N}` picks how it waits N ms (default
//! 30,000), then completes:
//! - `sleep`: `std::thread::sleep`, as any Rust module might;
//! - `poll`: `wasi:io/poll.poll` on a monotonic-clock subscription;
//! - `block`: `pollable.block` on one;
//! - `naps`: 1 ms sleeps, one after another, N of them.
//!
//! It logs `waiting attempt=N` first, so a test can see that a run has started.
use std::time::Duration;

use recur_guest::{Error, Handler, Outcome, Task};
use wasip2::clocks::monotonic_clock;

#[derive(serde::Deserialize)]
struct Payload {
    wait: Option<String>,
    ms: Option<u64>,
}

struct Sleeper;

impl Handler for Sleeper {
    fn run(task: Task) -> Result<Outcome, Error> {
        let payload = task.payload_json::<Payload>()?;
        let ms = payload.ms.unwrap_or(30_000);
        recur_guest::info!("waiting attempt={}", task.attempt);
        let nanos = ms * 1_000_000;
        match payload.wait.as_deref().unwrap_or("sleep") {
            "poll" => {
                let clock = monotonic_clock::subscribe_duration(nanos);
                wasip2::io::poll::poll(&[&clock]);
            }
            "block" => monotonic_clock::subscribe_duration(nanos).block(),
            "naps" => {
                for _ in 0..ms {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            _ => std::thread::sleep(Duration::from_millis(ms)),
        }
        Ok(recur_guest::complete())
    }
}

recur_guest::export!(Sleeper);
