//! Returns text that PostgreSQL cannot store or that would forge lines in the host's
//! log, to test that such an outcome fails its own task and nothing else. The payload
//! `{"attack": A}` picks what it does:
//! - `fail-nul`, `retry-nul`: fails or retries with a message holding a NUL byte;
//! - `long-message`: fails with a 1 MiB message;
//! - `log-nul-trap`: logs an error line holding a NUL byte and a newline that starts a
//!   forged host log line, then panics;
//! - `stderr-nul-trap`: writes the same to stderr, then panics.
//!
//! Any other payload completes.
use recur_guest::{Error, Handler, Level, Outcome, Task};

/// A NUL byte, then a newline and what looks like a line of the host's own log.
const POISON: &str = "bad\0byte\n2026-01-01T00:00:00.000000Z  INFO recur: forged host line";

#[derive(serde::Deserialize)]
struct Payload {
    attack: Option<String>,
}

struct Poison;

impl Handler for Poison {
    fn run(task: Task) -> Result<Outcome, Error> {
        let attack = task.payload_json::<Payload>()?.attack.unwrap_or_default();
        Ok(match attack.as_str() {
            "fail-nul" => recur_guest::fail(POISON),
            "retry-nul" => recur_guest::retry(POISON),
            "long-message" => recur_guest::fail("x".repeat(1 << 20)),
            "log-nul-trap" => {
                recur_guest::log(Level::Error, POISON);
                panic!("after logging poison");
            }
            "stderr-nul-trap" => {
                eprintln!("{POISON}");
                panic!("after writing poison to stderr");
            }
            _ => recur_guest::complete(),
        })
    }
}

recur_guest::export!(Poison);
