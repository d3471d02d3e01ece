//! Recurses without end until a stack runs out, which traps: by default the wasm call
//! stack; with a payload that says `"memory"`, Rust's shadow stack in linear memory,
//! which a module overruns when its frames hold buffers or borrowed locals.
use recur_guest::{Error, Handler, Outcome, Task};

struct StackOverflow;

impl Handler for StackOverflow {
    fn run(task: Task) -> Result<Outcome, Error> {
        if String::from_utf8_lossy(&task.payload).contains("memory") {
            recurse_in_memory(0);
        } else {
            recurse(0);
        }
        unreachable!("the recursion never ends");
    }
}

/// Each frame holds a buffer whose address escapes (through `black_box`), so the frame
/// lives on the shadow stack at the bottom of linear memory; running past its end is an
/// out-of-bounds access.
#[inline(never)]
fn recurse_in_memory(depth: u64) -> u64 {
    let mut buffer = [depth as u8; 4096];
    std::hint::black_box(&mut buffer);
    // SAFETY: a read of a static through a pointer derived from it.
    if depth == unsafe { std::ptr::read_volatile(&raw const LIMIT) } {
        return depth;
    }
    recurse_in_memory(depth + 1).wrapping_add(buffer[depth as usize % 4096] as u64)
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
