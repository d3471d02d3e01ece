//! The sandbox's clock: one thread per sandbox advances the engine's epoch, which every
//! run's deadline counts in, and, where memory is reset with PAGEMAP_SCAN, watches that
//! swap stays off, halting the sandbox for new runs if it is turned on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use tokio::sync::watch;
use wasmtime::Engine;

use super::{MemoryReset, swap};

/// How often the epoch ticker advances the engine's epoch: the granularity of timeouts.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// How often, in epoch ticks (one second), a sandbox that resets memory with
/// PAGEMAP_SCAN checks that swap is still off (see `swap.rs`).
const SWAP_CHECK_TICKS: u32 = 500;

/// A sandbox's stop for new runs, set by its ticker thread: a flag for the workers and
/// a watch for whoever awaits it.
#[derive(Debug)]
pub(super) struct Halt {
    pub(super) flag: AtomicBool,
    pub(super) watch: watch::Sender<bool>,
}

impl Halt {
    pub(super) fn new() -> Self {
        Halt {
            flag: AtomicBool::new(false),
            watch: watch::Sender::new(false),
        }
    }

    fn set(&self) {
        self.flag.store(true, Ordering::Relaxed);
        self.watch.send_replace(true);
    }
}

/// Starts the thread that advances `ticking`'s epoch every [`EPOCH_TICK`] until `stop`:
/// the clock of every run's deadline. With the PAGEMAP_SCAN `reset` it also checks that
/// swap stays off, and sets `halt` if it is turned on.
pub(super) fn start_ticker(
    ticking: Engine,
    reset: MemoryReset,
    stop: Arc<AtomicBool>,
    halt: Arc<Halt>,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name("recur-epoch".into())
        .spawn(move || {
            let mut ticks = 0_u32;
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(EPOCH_TICK);
                ticking.increment_epoch();
                ticks = ticks.wrapping_add(1);
                if reset == MemoryReset::PageScan
                    && !halt.flag.load(Ordering::Relaxed)
                    && ticks.is_multiple_of(SWAP_CHECK_TICKS)
                    && swap::possible()
                {
                    // From here a page swapped out during a run would reach the next
                    // instance (see `Sandbox::halted`). The ticker goes on: the runs in
                    // progress still need their deadlines.
                    tracing::error!(
                        "swap was turned on while this host resets memory with PAGEMAP_SCAN, which misses swapped-out pages; no run starts here any more: start the host again"
                    );
                    halt.set();
                }
            }
        })?;
    Ok(())
}
