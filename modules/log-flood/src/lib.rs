//! Logs 10,000 info lines, far more than the host keeps for one run, then completes.
use recur_guest::{Handler, Outcome, Task};

const LINES: u32 = 10_000;

struct LogFlood;

impl Handler for LogFlood {
    fn run(_task: Task) -> Outcome {
        for i in 1..=LINES {
            recur_guest::info!("line {i} of {LINES}");
        }
        recur_guest::complete()
    }
}

recur_guest::export!(LogFlood);
