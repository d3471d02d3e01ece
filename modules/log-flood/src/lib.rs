//! Logs 10,000 info lines, far more than the host keeps for one run, then completes.
use recur_guest::{Error, Handler, Outcome, Task};

const LINES: u32 = 10_000;

struct LogFlood;

impl Handler for LogFlood {
    fn run(_task: Task) -> Result<Outcome, Error> {
        for i in 1..=LINES {
            recur_guest::info!("line {i} of {LINES}");
        }
        Ok(recur_guest::complete())
    }
}

recur_guest::export!(LogFlood);
