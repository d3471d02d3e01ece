//! Returns as much as it is asked for, to test the host's limits on outcomes: payload
//! `{"state_bytes": N}` reschedules after a second with an N-byte state; `{"spawns": N}`
//! completes with N spawns of type "noop", keys `child-0` to `child-{N-1}`, each after
//! `"prefix"` if the payload gives one. With neither, it completes; `state_bytes` wins
//! when both are given.
use std::time::Duration;

use recur_guest::{Error, Handler, Outcome, Spawn, Task};

#[derive(serde::Deserialize)]
struct Payload {
    state_bytes: Option<usize>,
    spawns: Option<usize>,
    #[serde(default)]
    prefix: String,
}

struct HugeOutput;

impl Handler for HugeOutput {
    fn run(task: Task) -> Result<Outcome, Error> {
        Ok(match task.payload_json::<Payload>()? {
            Payload {
                state_bytes: Some(n),
                ..
            } => recur_guest::reschedule_after(Duration::from_secs(1)).with_state(vec![b'x'; n]),
            Payload {
                spawns: Some(n),
                prefix,
                ..
            } => recur_guest::complete()
                .spawns((0..n).map(|i| Spawn::new("noop", format!("{prefix}child-{i}")))),
            _ => recur_guest::complete(),
        })
    }
}

recur_guest::export!(HugeOutput);
