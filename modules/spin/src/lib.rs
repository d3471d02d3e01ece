//! Never returns: the host's deadline must interrupt it. `black_box` keeps the compiler
//! from treating the side-effect-free loop as dead code.
use recur_guest::{Handler, Outcome, Task};

struct Spin;

impl Handler for Spin {
    fn run(_task: Task) -> Outcome {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

recur_guest::export!(Spin);
