//! Never returns: the host's deadline must interrupt it. `black_box` keeps the compiler
//! from treating the side-effect-free loop as dead code. It logs
//! `spinning attempt=N scheduled_ms=T` first, so a test can see that a run has started,
//! which try it is, and when the host said it was due.
use recur_guest::{Error, Handler, Outcome, Task};

struct Spin;

impl Handler for Spin {
    fn run(task: Task) -> Result<Outcome, Error> {
        let scheduled_ms = task
            .scheduled_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        recur_guest::info!(
            "spinning attempt={} scheduled_ms={scheduled_ms}",
            task.attempt
        );
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

recur_guest::export!(Spin);
