//! The sandbox: narrows wasmtime to what recur uses. One `Engine` per host (pooling
//! allocator, epoch interruption driven by a ticker thread), a `Linker` that grants
//! only the `recur:task` host interface and a WASI that sees nothing, a prepared
//! component per module version, and a fresh `Store` per execution with a memory
//! ceiling and an epoch deadline, unless the module was deployed to reuse instances
//! (`carryover.rs`, which runs executions). A trap, a timeout or a memory overrun becomes a
//! [`RunError`] for that one task; nothing a guest does unwinds the host.

mod bindings;
mod cache;
mod carryover;
mod compiler;
pub mod cost;
mod engine;
mod errors;
mod imports;
mod swap;
mod ticker;
mod waits;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use wasmtime::component::{Component, ComponentExportIndex, HasSelf, Linker};
use wasmtime::{Cache, Engine};

pub use bindings::{Decision, Level, Outcome, Reschedule, Spawn, Task, When};
use bindings::{TaskModule, TaskModulePre};
pub use cache::{CacheError, directory as compile_cache_directory};
pub(crate) use carryover::Carryover;
pub use carryover::{REUSE_MAX_GROWTH, REUSE_MAX_RUNS};
pub use compiler::{CompileError, Compiler, serve as serve_compile};
pub use engine::{
    DEFAULT_WARM_MODULES, MAX_CORE_INSTANCES_PER_COMPONENT, MAX_MEMORIES_PER_COMPONENT,
    MAX_TABLES_PER_COMPONENT, max_warm_modules,
};
pub(crate) use errors::RunError;
pub use errors::{SandboxError, ValidationError};
use errors::{classify, one_line};
use imports::RunState;
pub use imports::{human_bytes, now_ms};
use ticker::{Halt, start_ticker};

/// The WIT world modules must export, as named in error messages.
pub const WORLD: &str = "recur:task/task-module@0.1.0";

/// The exit status of a host whose sandbox halted because swap was turned on under it
/// (EX_TEMPFAIL: started again, it resets memory in the way that is safe with swap).
pub const EXIT_SWAP_TURNED_ON: i32 = 75;

/// How a sandbox returns a memory to its initial state between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryReset {
    /// The pages a run wrote, found with Linux's PAGEMAP_SCAN, are zeroed in place:
    /// where nothing can be swapped out.
    PageScan,
    /// The first 2 MiB are zeroed whole and the rest returned to the kernel with
    /// madvise: without PAGEMAP_SCAN, or where pages can be swapped out.
    Madvise,
}

impl MemoryReset {
    /// Its name in the bench's report.
    pub fn name(self) -> &'static str {
        match self {
            MemoryReset::PageScan => "pagemap",
            MemoryReset::Madvise => "madvise",
        }
    }
}

/// Settings fixed for the life of a host's engine.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// How many executions may run at once: the pooling allocator reserves this many
    /// instance slots (plus a little headroom).
    pub concurrent_runs: u32,
    /// The most linear memory any tenant may allow a run; each pool slot is sized to it.
    pub max_memory_bytes: usize,
    /// How many distinct modules each shard of the pool keeps a memory ready for: a run
    /// of a module that has none maps the module's image into a slot first (see
    /// `Sandbox::engine`). At most [`max_warm_modules`].
    pub warm_modules: u32,
    /// Where to keep compiled modules between runs of the host (see `cache.rs`); `None`
    /// compiles every module the host meets.
    pub compile_cache: Option<PathBuf>,
    /// Where to compile components: in a child process bounded in time and memory, or,
    /// with `None`, in this process with no bound.
    pub compiler: Option<Compiler>,
    /// How to reset a memory between runs; `None` chooses: the page scan where nothing
    /// can be swapped out and the kernel has it, madvise elsewhere. The default is
    /// madvise, which resets every page a run used whatever the kernel did with it
    /// meanwhile; the page scan is faster but misses a page the kernel is moving at the
    /// instant it looks (RELIABILITY.md, gap 4), so it is for hosts whose tenants trust
    /// each other.
    pub memory_reset: Option<MemoryReset>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            concurrent_runs: 16,
            max_memory_bytes: 256 << 20,
            warm_modules: DEFAULT_WARM_MODULES,
            compile_cache: None,
            memory_reset: Some(MemoryReset::Madvise),
            compiler: None,
        }
    }
}

/// The limits one execution runs under (from its tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunLimits {
    /// Linear memory ceiling in bytes.
    pub memory_bytes: usize,
    /// Wall-clock budget.
    pub timeout: Duration,
}

/// A module version compiled and linked, ready to instantiate cheaply per task.
#[derive(Clone)]
pub struct Prepared {
    pre: TaskModulePre<RunState>,
    /// Unique to this compilation: an instance kept for reuse serves only the `Prepared`
    /// it came from (or a clone: the registry shares one compilation among the tenants
    /// and versions that deployed the same bytes, and a kept instance is checked for its
    /// tenant on its own, see `carryover.rs`).
    id: u64,
    /// Where `run` is among the component's exports, looked up once.
    run: ComponentExportIndex,
}

/// One engine, linker and epoch ticker, shared by every worker thread of a host.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<RunState>,
    /// Stops the ticker thread when the sandbox is dropped.
    ticker_stop: Arc<AtomicBool>,
    /// The compilation cache, if the host keeps one (shared with the engine).
    cache: Option<Cache>,
    /// Components turned into code, by compiling or from the cache.
    loaded: AtomicUsize,
    /// How the engine resets a memory between runs.
    reset: MemoryReset,
    /// Set, for good, when no run may start any more (see [`Sandbox::halted`]).
    halt: Arc<Halt>,
    /// Where components are compiled (see [`SandboxConfig::compiler`]).
    compiler: Option<Compiler>,
}

/// How the modules a sandbox prepared were compiled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compilations {
    /// Loaded from the compilation cache.
    pub cached: usize,
    /// Compiled (and, with a cache, stored in it).
    pub compiled: usize,
}

impl Prepared {
    /// Which compilation this is: equal for clones of one `Prepared`, as the registry
    /// hands to the tenants that deployed the same component.
    pub fn compilation(&self) -> u64 {
        self.id
    }
}

impl Sandbox {
    /// Builds the engine and linker and starts the epoch ticker. A sandbox that resets
    /// memory with PAGEMAP_SCAN halts if swap is turned on while it lives (see
    /// [`MemoryReset`] and [`Sandbox::halted`]).
    pub fn new(config: &SandboxConfig) -> Result<Sandbox, SandboxError> {
        if config.warm_modules > max_warm_modules() {
            return Err(SandboxError::WarmModules {
                max: max_warm_modules(),
                asked: config.warm_modules,
            });
        }
        let cache = config
            .compile_cache
            .as_deref()
            .map(cache::open)
            .transpose()?;
        let (engine, reset) = engine::build(config, cache.clone())?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(SandboxError::Engine)?;
        waits::add_to_linker(&mut linker).map_err(SandboxError::Engine)?;
        TaskModule::add_to_linker::<RunState, HasSelf<RunState>>(&mut linker, |state| state)
            .map_err(SandboxError::Engine)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let halt = Arc::new(Halt::new());
        start_ticker(engine.clone(), reset, ticker_stop.clone(), halt.clone())?;
        Ok(Sandbox {
            engine,
            linker,
            ticker_stop,
            cache,
            loaded: AtomicUsize::new(0),
            reset,
            halt,
            compiler: config.compiler.clone(),
        })
    }

    /// Whether the sandbox has halted: swap was turned on under a sandbox that resets
    /// memory with PAGEMAP_SCAN, which would miss a page swapped out during a run and
    /// hand it to the next instance, perhaps another tenant's. The engine cannot change
    /// how it resets, so no run may start here any more: the process must be started
    /// again (it then resets with madvise). `recur host` exits with
    /// [`EXIT_SWAP_TURNED_ON`].
    pub fn halted(&self) -> bool {
        self.halt.flag.load(Ordering::Relaxed)
    }

    /// Follows [`Sandbox::halted`].
    pub fn watch_halted(&self) -> watch::Receiver<bool> {
        self.halt.watch.subscribe()
    }

    /// How the engine resets a memory between runs.
    pub fn memory_reset(&self) -> MemoryReset {
        self.reset
    }

    /// How many memory slots are warm and unused, and the bytes they keep resident.
    pub fn warm_memories(&self) -> (u32, usize) {
        self.engine
            .pooling_allocator_metrics()
            .map_or((0, 0), |pool| {
                (
                    pool.unused_warm_memories(),
                    pool.unused_memory_bytes_resident(),
                )
            })
    }

    /// How many components [`Sandbox::prepare`] loaded from the compilation cache and
    /// how many it compiled, since the sandbox started.
    pub fn compilations(&self) -> Compilations {
        let loaded = self.loaded.load(Ordering::Relaxed);
        let cached = self.cache.as_ref().map_or(0, Cache::cache_hits);
        Compilations {
            cached,
            compiled: loaded.saturating_sub(cached),
        }
    }

    /// Compiles `bytes` and checks it against the task world: it must be a component,
    /// import nothing beyond what the linker grants, and export `run` with the right type.
    pub fn prepare(&self, bytes: &[u8]) -> Result<Prepared, ValidationError> {
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', _, _, 0, 0]) => return Err(ValidationError::CoreModule),
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(ValidationError::NotWasm),
        }
        let component = match &self.compiler {
            Some(compiler) => {
                compiler::compile(compiler, &self.engine, bytes).map_err(|e| match e {
                    CompileError::Refused(said) => ValidationError::Invalid(said),
                    other => ValidationError::Compile(other),
                })?
            }
            None => Component::new(&self.engine, bytes)
                .map_err(|e| ValidationError::Invalid(one_line(&e)))?,
        };
        self.loaded.fetch_add(1, Ordering::Relaxed);
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| ValidationError::Imports(one_line(&e)))?;
        let pre = TaskModulePre::new(pre).map_err(|e| ValidationError::Exports(one_line(&e)))?;
        let run = pre
            .instance_pre()
            .component()
            .get_export_index(None, "run")
            .ok_or_else(|| ValidationError::Exports("it has no `run` export".into()))?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Prepared {
            pre,
            run,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
