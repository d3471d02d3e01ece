//! Why a sandbox could not start ([`SandboxError`]), why a component was refused
//! ([`ValidationError`]) and why a run produced no outcome ([`RunError`]), with the words
//! an operator or a module author can act on.

use wasmtime::Trap;

use super::cache::CacheError;
use super::compiler::CompileError;
use super::imports::{RunState, human_bytes};
use super::{RunLimits, WORLD};
use crate::text;

/// Why a sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// More warm modules were asked for than this machine's pool can hold.
    #[error("warm modules must be at most {max} on this machine, not {asked}")]
    WarmModules {
        /// The most this machine allows (`max_warm_modules`).
        max: u32,
        /// What was asked for.
        asked: u32,
    },
    /// The compilation cache cannot be used.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// wasmtime refused the engine's settings or the linker's imports.
    #[error("{0:#}")]
    Engine(wasmtime::Error),
    /// The page-scan reset was asked for where pages can be swapped out.
    #[error(
        "the page-scan memory reset misses pages swapped out during a run, and swap is on here: use --memory-reset madvise (or auto, which picks it)"
    )]
    PageScanWithSwap,
    /// The page-scan reset was asked for where the kernel cannot do it.
    #[error(
        "the page-scan memory reset needs Linux's PAGEMAP_SCAN (6.7 or later), which this machine lacks ({0:#}): use --memory-reset madvise or auto"
    )]
    PageScanUnavailable(wasmtime::Error),
    /// The thread that keeps time for deadlines could not start.
    #[error("cannot start the epoch ticker: {0}")]
    Ticker(#[from] std::io::Error),
}

/// Why a component was refused at deploy (or when a host loads it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ValidationError {
    /// The bytes are not WebAssembly at all.
    #[error(
        "the file is not WebAssembly (it does not start with the \\0asm header); pass the .wasm component your build produced"
    )]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "the file is a core WebAssembly module, not a component; build it for the wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// The component does not compile.
    #[error("the component is not valid: {0}")]
    Invalid(String),
    /// It imports something the host does not grant.
    #[error(
        "the component imports something recur does not grant (it may grant only recur:task/host@0.1.0 and WASI): {0}"
    )]
    Imports(String),
    /// It does not export the task world.
    #[error("the component does not export the {WORLD} world (`run: func(task) -> outcome`): {0}")]
    Exports(String),
    /// Its compile, in a child process, ran out of time or memory, or failed.
    #[error(transparent)]
    Compile(CompileError),
}

/// Why an execution produced no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The run used up its time budget.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The run was stopped where its host's claim on it was about to run out, before the
    /// tenant's timeout: left running, it would be run again elsewhere.
    #[error(
        "stopped after {0} ms, at the end of its lease; give the hosts a --lease-timeout well above the tenant's timeout"
    )]
    PastLease(u64),
    /// The run tried to grow memory past its ceiling.
    #[error("memory limit of {} exceeded", human_bytes(*.0))]
    Memory(usize),
    /// The run recursed past the wasm stack.
    #[error("stack overflow")]
    StackOverflow,
    /// The guest trapped (a Rust panic ends here), with what it printed to stderr.
    #[error("trapped: {0}")]
    Trap(String),
    /// The instance could not be created (for instance the pool is exhausted).
    #[error("could not instantiate the module: {0}")]
    Instantiate(String),
}

/// Names what went wrong in a run, in words an operator can act on.
pub(super) fn classify(
    err: wasmtime::Error,
    instantiating: bool,
    state: &RunState,
    limits: RunLimits,
) -> RunError {
    if state.limiter.hit {
        return RunError::Memory(state.limiter.limit());
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => RunError::Timeout(limits.timeout.as_millis() as u64),
        Some(Trap::StackOverflow) => RunError::StackOverflow,
        Some(trap) => {
            // Rust (like C's wasm toolchains) puts a module's own stack at the bottom of
            // its linear memory, so running past its end is an out-of-bounds access, not
            // a stack overflow trap. The trap alone does not suggest that; say it.
            let trap = match trap {
                Trap::MemoryOutOfBounds => format!(
                    "{trap} (a module that outgrows its stack ends this way too: the stack sits at the bottom of its memory; link a larger one, see the guest SDK's docs, \"A smaller stack\")"
                ),
                other => other.to_string(),
            };
            let stderr = state.stderr.contents();
            let stderr = squeeze(&String::from_utf8_lossy(&stderr));
            // A module without WASI has no stderr; with `forward_panics` the guest SDK
            // logs its panic's message instead.
            let logged = state.last_error.as_deref().map(squeeze);
            match (stderr.is_empty(), logged) {
                (false, _) => RunError::Trap(format!("{trap}; the module wrote: {stderr}")),
                (true, Some(line)) => RunError::Trap(format!("{trap}; the module logged: {line}")),
                (true, None) => RunError::Trap(trap),
            }
        }
        None if instantiating => RunError::Instantiate(one_line(&err)),
        None => RunError::Trap(one_line(&err)),
    }
}

/// What a module wrote, on one line, its control characters escaped, and cut to a length
/// fit for a task's error.
fn squeeze(written: &str) -> String {
    let line = written.split_whitespace().collect::<Vec<_>>().join(" ");
    text::cut(&text::escaped(&line), 500).into_owned()
}

/// An error and its causes on one line.
pub(super) fn one_line(err: &wasmtime::Error) -> String {
    text::cut(&text::escaped(&format!("{err:#}").replace('\n', " ")), 1000).into_owned()
}
