//! Panics with "deliberate trap"; a panic in a component aborts, which the host sees as a
//! trap.
use recur_guest::{Error, Handler, Outcome, Task};

struct Trap;

impl Handler for Trap {
    fn run(_task: Task) -> Result<Outcome, Error> {
        panic!("deliberate trap");
    }
}

recur_guest::export!(Trap);
