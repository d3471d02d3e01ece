//! The engine a sandbox runs on: wasmtime's pooling allocator sized for the host's
//! settings (slots for every run it allows at once, each component's share capped,
//! warm memories per module), and the memory reset this machine allows.

use std::thread;

use wasmtime::{Cache, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::errors::SandboxError;
use super::{MemoryReset, SandboxConfig, swap};

/// How much of a memory may stay resident between runs; the rest is returned to the
/// kernel with madvise, and each page of it a run touches faults in again. A Rust guest
/// touches the top of its 1 MiB stack and its heap just above: 2 MiB covers a typical
/// run. With PAGEMAP_SCAN only the pages a run wrote are zeroed and stay resident;
/// without it (swap on, see `swap.rs`) the resident part is zeroed whole, which for a
/// memory that fits costs less than madvise and the faults after it: zeroing stays in
/// user space, where madvise enters the kernel and every page the next run touches
/// faults in again. A warm slot then keeps its whole memory resident, up to this, where
/// the scan keeps only what runs wrote.
const KEEP_RESIDENT: usize = 2 << 20;
/// Tables are small; keep them resident either way.
const KEEP_RESIDENT_TABLES: usize = 64 << 10;

/// The most core instances, memories and tables one component may hold. A component is
/// refused at deploy over any of them, and the pool holds this many for every run it
/// allows at once, so no component can take slots another tenant's run needs. A Rust
/// component holds one memory, and a few core instances and tables (its module, and the
/// shims wit-component adds).
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 16;
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
pub const MAX_TABLES_PER_COMPONENT: u32 = 16;

/// How many distinct modules each shard of the pool keeps a memory warm for, unless the
/// host is told otherwise (see `engine`).
pub const DEFAULT_WARM_MODULES: u32 = 128;

/// The most memory slots a pool may have. Each reserves 4 GiB of address space (so wasm
/// code needs no bounds checks) and, while warm, a few mappings of its own: 8192 slots
/// are 32 TiB of the 128 TiB a process can address, and stay well inside Linux's default
/// limit of 65,530 mappings.
const MAX_MEMORY_SLOTS: u32 = 8192;

/// The engine, with the memory reset this machine allows: PAGEMAP_SCAN where it is
/// there and nothing can be swapped out, madvise otherwise.
///
/// Resetting a run's memory is much of what a fresh instance costs. By default the
/// pool returns pages with madvise, and on a multi-threaded host every madvise
/// shoots down TLB entries on the other cores, interrupting every core that runs
/// one of the process's threads, and the next run faults its pages in again. With
/// Linux's PAGEMAP_SCAN (6.7+), wasmtime finds the pages a run touched and resets
/// just those, keeping them resident: no madvise, and no faults after it.
/// Copy-on-write images stay on with it: a slot that last held the same module
/// keeps its image mapped, the pages a run dirtied are copied back from the image,
/// and instantiating copies no data segments, where copying them in would write
/// every segment on every run. Without PAGEMAP_SCAN the resident part is zeroed
/// whole (see KEEP_RESIDENT).
pub(super) fn build(
    config: &SandboxConfig,
    cache: Option<Cache>,
) -> Result<(Engine, MemoryReset), SandboxError> {
    let engine = |pagemap| engine(config, cache.clone(), pagemap);
    match config.memory_reset {
        Some(MemoryReset::Madvise) => Ok((
            engine(false).map_err(SandboxError::Engine)?,
            MemoryReset::Madvise,
        )),
        // The scan cannot see a page swapped out during a run, which the next
        // instance would read back: only where nothing can be swapped out (swap.rs).
        Some(MemoryReset::PageScan) if swap::possible() => Err(SandboxError::PageScanWithSwap),
        Some(MemoryReset::PageScan) => Ok((
            engine(true).map_err(SandboxError::PageScanUnavailable)?,
            MemoryReset::PageScan,
        )),
        None if swap::possible() => {
            // Debug, as every command that checks a module builds a sandbox; `recur
            // host` names the reset in the line that says it started.
            tracing::debug!(
                "swap is on: resetting memory between runs with madvise, since PAGEMAP_SCAN would miss swapped-out pages"
            );
            Ok((
                engine(false).map_err(SandboxError::Engine)?,
                MemoryReset::Madvise,
            ))
        }
        None => match engine(true) {
            Ok(engine) => Ok((engine, MemoryReset::PageScan)),
            Err(err) => {
                tracing::debug!(error = %err, "PAGEMAP_SCAN unavailable; resetting memory with madvise");
                Ok((
                    engine(false).map_err(SandboxError::Engine)?,
                    MemoryReset::Madvise,
                ))
            }
        },
    }
}

/// An engine with the pooling allocator sized for `config`; `pagemap` requires the
/// PAGEMAP_SCAN ioctl (engine creation fails without it).
fn engine(config: &SandboxConfig, cache: Option<Cache>, pagemap: bool) -> wasmtime::Result<Engine> {
    let slots = config.concurrent_runs + 2;
    let warm = warm_memories(config.warm_modules);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .total_core_instances(slots * MAX_CORE_INSTANCES_PER_COMPONENT)
        // A memory slot stays warm for the compilation that last used it (its image
        // mapped); another compilation must map its own image in first, an mmap under
        // the lock every worker's resets take. While fewer than max_unused_warm_slots
        // slots are warm and unused, a module with none of its own takes a slot never
        // used rather than another module's. The pool splits slots and that budget
        // into one shard per CPU and a thread takes from its own shard, so each shard
        // gets config.warm_modules: a budget for the whole pool, split over the
        // shards, would leave each thread too few warm slots for the modules it runs
        // in turn, and every run of a module without one maps its image first, under
        // that lock. A warm slot costs address space and the pages its last run
        // touched.
        .total_memories((slots * MAX_MEMORIES_PER_COMPONENT).max(warm))
        .max_unused_warm_slots(warm)
        .total_tables(slots * MAX_TABLES_PER_COMPONENT)
        .total_stacks(slots)
        .max_memory_size(config.max_memory_bytes);
    if pagemap {
        pool.pagemap_scan(wasmtime::Enabled::Yes);
    }
    pool.linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT_TABLES);
    let mut wasm = compile_settings(cache);
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm)
}

/// What a component's compiled code depends on: shared by the host's engine and a
/// compile in a child process (`compiler.rs`), whose artifact the host's engine loads.
pub(super) fn compile_settings(cache: Option<Cache>) -> Config {
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .cache(cache);
    wasm
}

/// The shards wasmtime's pool splits its slots into: one per CPU, at most 16 (wasmtime's
/// `default_shard_count`, which it does not export).
fn pool_shards() -> u32 {
    thread::available_parallelism().map_or(1, |n| n.get().min(16) as u32)
}

/// The warm memory slots that give each pool shard `warm_modules` of them.
fn warm_memories(warm_modules: u32) -> u32 {
    warm_modules.saturating_mul(pool_shards())
}

/// The largest `warm_modules` this machine's pool can hold (`MAX_MEMORY_SLOTS` over
/// its shards).
pub fn max_warm_modules() -> u32 {
    MAX_MEMORY_SLOTS / pool_shards()
}
