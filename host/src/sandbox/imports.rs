//! What a running task's store holds, and the host side of the imports a module is
//! granted: logging tagged with the task, the current time, and a WASI context that
//! sees nothing (no files, environment, arguments or network).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::RunLimits;
use super::bindings::Level;
use super::bindings::recur::task::{host, types};
use crate::contract::{MAX_LOG_LINE_BYTES, MAX_LOG_LINES};
use crate::text;

/// How much of the guest's stderr is kept to explain a trap (Rust prints its panic
/// message there before aborting).
pub const STDERR_CAPTURE_BYTES: usize = 2048;

/// The state inside a `Store`. A fresh store gets a new one (or one recycled from the
/// same tenant's last fresh run, see `carryover.rs`); a kept instance keeps its own. Either
/// way [`RunState::begin`] resets everything that belongs to one run before each call.
pub struct RunState {
    /// The WASI context: deny-by-default, see [`deny_all_wasi`]. Made on the guest's
    /// first WASI call: a module built without WASI never makes one, and making a context
    /// seeds its random generators, a cost every run would pay where consecutive runs
    /// belong to different tenants, since then no state can be recycled.
    wasi: Option<WasiCtx>,
    /// Resources (streams, pollables) the WASI implementation hands to the guest.
    pub(super) table: ResourceTable,
    /// When this run must end: a wait in WASI ends here (see `waits.rs`), as the epoch
    /// deadline ends guest code.
    pub(super) deadline: Instant,
    /// The guest's stderr, kept to explain a trap. Never cleared: a store whose guest
    /// wrote to it is not used again (see `carryover.rs`), so it only ever holds one run's.
    pub(super) stderr: MemoryOutputPipe,
    /// Memory ceiling, whether the guest hit it, and how much memory the store holds.
    pub(super) limiter: MemoryCeiling,
    /// Who is running, for log lines: the task is set by each run, the tenant never
    /// changes (a store serves one tenant only), the task type and the module version
    /// with the module.
    task_id: i64,
    pub(super) tenant: String,
    task_type: String,
    version: i32,
    /// Log lines written and dropped so far in this run.
    log_lines: u32,
    pub(super) log_dropped: u32,
    /// This run's last line at error level: what explains a trap of a module that has no
    /// stderr (built without WASI, it logs its panic's message instead).
    pub(super) last_error: Option<String>,
}

impl RunState {
    /// A new state for `tenant`'s runs. Call [`RunState::begin`] before each run.
    pub fn new(tenant: &str) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        RunState {
            wasi: None,
            table: ResourceTable::new(),
            deadline: Instant::now(),
            stderr,
            limiter: MemoryCeiling {
                limit: 0,
                hit: false,
                size: 0,
            },
            task_id: 0,
            tenant: tenant.to_owned(),
            task_type: String::new(),
            version: 0,
            log_lines: 0,
            log_dropped: 0,
            last_error: None,
        }
    }

    /// Resets what belongs to one run: the task and module version its log lines name,
    /// the log budget, the memory ceiling (the tenant's limit may have changed since the
    /// last run) and the deadline.
    pub fn begin(&mut self, task_id: i64, task_type: &str, version: i32, limits: RunLimits) {
        self.deadline = Instant::now() + limits.timeout;
        self.task_id = task_id;
        self.version = version;
        if self.task_type != task_type {
            task_type.clone_into(&mut self.task_type);
        }
        self.log_lines = 0;
        self.log_dropped = 0;
        self.last_error = None;
        self.limiter.limit = limits.memory_bytes;
        self.limiter.hit = false;
    }

    /// Readies a state whose store was dropped for a new store: resources the last
    /// guest left in the table go, and so does the memory the store held.
    pub fn recycle(&mut self) {
        self.table = ResourceTable::new();
        self.limiter.size = 0;
    }

    /// Whether the guest wrote anything to stderr.
    pub fn wrote_stderr(&self) -> bool {
        !self.stderr.contents().is_empty()
    }
}

/// The WASI context every module gets. `WasiCtxBuilder::new()` already denies what
/// matters, and this function is where that is written down: stdin is closed, stdout
/// is discarded, no environment variables, no arguments, no preopened directories (so
/// no filesystem at all), every socket address denied and name lookup off. The wall
/// and monotonic clocks stay, which the contract grants anyway ("the current time").
/// stderr goes to a small in-memory buffer so a panic message can explain a trap.
fn deny_all_wasi(stderr: MemoryOutputPipe) -> WasiCtx {
    WasiCtx::builder()
        .stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let stderr = &self.stderr;
        WasiCtxView {
            ctx: self
                .wasi
                .get_or_insert_with(|| deny_all_wasi(stderr.clone())),
            table: &mut self.table,
        }
    }
}

/// Caps linear memory growth and remembers whether the guest ran into the cap, so the
/// resulting trap can be reported as "memory limit exceeded" rather than a bare trap.
pub struct MemoryCeiling {
    limit: usize,
    pub(super) hit: bool,
    /// Bytes of linear memory the store's instance holds, over all its memories: each
    /// memory's creation and growth passes here. What a kept instance is capped on.
    pub(super) size: usize,
}

impl MemoryCeiling {
    /// The ceiling in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl ResourceLimiter for MemoryCeiling {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The limit holds for all of the instance's memories together: a component may
        // have several.
        let total = self.size + desired.saturating_sub(current);
        if total > self.limit {
            self.hit = true;
            // An error (rather than Ok(false)) traps at once: a Rust guest would abort on
            // a failed allocation anyway, and the trap carries a clear reason.
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} exceeded (the module asked for {total} bytes over its memories)",
                human_bytes(self.limit)
            )));
        }
        self.size = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; 100k entries is far beyond what a task
        // module needs and bounds what a hostile one can take.
        Ok(desired <= 100_000)
    }
}

/// Formats a byte count as MiB or KiB for error messages.
pub fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

impl types::Host for RunState {}

impl host::Host for RunState {
    fn log(&mut self, level: Level, message: String) {
        if self.log_lines >= MAX_LOG_LINES {
            self.log_dropped += 1;
            return;
        }
        self.log_lines += 1;
        // Escaped, so that the line cannot end early and forge the host's next one.
        let message = text::escaped(&text::cut(&message, MAX_LOG_LINE_BYTES)).into_owned();
        let (id, tenant, task_type, version) =
            (self.task_id, &self.tenant, &self.task_type, self.version);
        match level {
            Level::Trace => {
                tracing::trace!(target: "recur::guest", task = id, tenant, task_type, version, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "recur::guest", task = id, tenant, task_type, version, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "recur::guest", task = id, tenant, task_type, version, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "recur::guest", task = id, tenant, task_type, version, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "recur::guest", task = id, tenant, task_type, version, "{message}");
                self.last_error = Some(message);
            }
        }
    }

    fn now(&mut self) -> types::Timestamp {
        now_ms()
    }
}

/// Milliseconds since the Unix epoch, by the host's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_holds_for_all_memories_together() {
        let mut ceiling = MemoryCeiling {
            limit: 64 << 20,
            hit: false,
            size: 0,
        };
        // Two memories of 40 MiB each: the first fits, the second would pass 64 MiB.
        assert!(ceiling.memory_growing(0, 40 << 20, None).unwrap());
        let err = ceiling.memory_growing(0, 40 << 20, None).unwrap_err();
        assert!(ceiling.hit);
        assert!(
            err.to_string().contains("memory limit of 64 MiB exceeded"),
            "{err}"
        );
        // Growing the first within the limit still works.
        assert!(ceiling.memory_growing(40 << 20, 60 << 20, None).unwrap());
        assert_eq!(ceiling.size, 60 << 20);
    }
}
