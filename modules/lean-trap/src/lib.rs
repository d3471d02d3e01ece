//! A module without WASI that panics with "deliberate trap without WASI". It has no
//! stderr, so it calls `forward_panics` first: the host then finds the panic's message
//! in the run's log and puts it in the task's error.
use recur_guest::{Error, Handler, Outcome, Task};

struct LeanTrap;

impl Handler for LeanTrap {
    fn run(_task: Task) -> Result<Outcome, Error> {
        recur_guest::forward_panics();
        panic!("deliberate trap without WASI");
    }
}

recur_guest::export!(LeanTrap);
