//! For the host's tests: with payload `{"fail_times": N, "mode": "retry"}` it asks for a
//! retry ("flaky: attempt k") on attempts 1..=N and completes after; with `"mode":
//! "fail"` it fails permanently instead.
use recur_guest::{Error, Handler, Outcome, Task};

#[derive(serde::Deserialize)]
struct Payload {
    fail_times: u32,
    mode: String,
}

struct Flaky;

impl Handler for Flaky {
    fn run(task: Task) -> Result<Outcome, Error> {
        let payload = task.payload_json::<Payload>()?;
        Ok(match payload.mode.as_str() {
            _ if task.attempt > payload.fail_times => recur_guest::complete(),
            "fail" => recur_guest::fail(format!(
                "flaky: permanent failure on attempt {}",
                task.attempt
            )),
            _ => recur_guest::retry(format!("flaky: attempt {}", task.attempt)),
        })
    }
}

recur_guest::export!(Flaky);
