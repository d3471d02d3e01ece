//! Reschedules at a time the host must refuse: payload `{"when": "past"}` asks for the
//! Unix epoch, `{"when": "future"}` (the default) for a hundred years from now.
use std::time::{Duration, UNIX_EPOCH};

use recur_guest::{Error, Handler, Outcome, Task};

const HUNDRED_YEARS: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

#[derive(serde::Deserialize)]
struct Payload {
    when: Option<String>,
}

struct BadTime;

impl Handler for BadTime {
    fn run(task: Task) -> Result<Outcome, Error> {
        let payload = task.payload_json::<Payload>()?;
        Ok(match payload.when.as_deref() {
            Some("past") => recur_guest::reschedule_at(UNIX_EPOCH),
            Some("future") | None => recur_guest::reschedule_at(recur_guest::now() + HUNDRED_YEARS),
            Some(other) => {
                recur_guest::fail(format!("`when` is {other:?}, not \"past\" or \"future\""))
            }
        })
    }
}

recur_guest::export!(BadTime);
