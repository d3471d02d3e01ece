//! Recurses without end until the wasm call stack is exhausted, which traps.
use recur_guest::{Handler, Outcome, Task};

struct StackOverflow;

impl Handler for StackOverflow {
    fn run(_task: Task) -> Outcome {
        recurse(0);
        unreachable!("the recursion never ends");
    }
}

/// Never equal to a depth reached in practice; read with a volatile load, so the compiler
/// cannot prove the recursion unbounded and turn it into a loop.
static LIMIT: u64 = u64::MAX;

/// Each frame keeps only scalars, in wasm locals: a frame that took a local's address
/// (as `black_box` does) would live on Rust's shadow stack in linear memory, and
/// overflowing that shows up as an out-of-bounds access rather than a stack overflow.
/// The result is used after the call returns, and not as a plain accumulator, so the call
/// is not a tail call the compiler could eliminate.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // SAFETY: a read of a static through a pointer derived from it.
    if depth == unsafe { std::ptr::read_volatile(&raw const LIMIT) } {
        return depth;
    }
    recurse(depth + 1).wrapping_mul(3).wrapping_add(depth)
}

recur_guest::export!(StackOverflow);
