//! A host: the lease -> execute -> commit pipeline over one database, run until told
//! to stop. Any number of hosts, in one process or on many machines, can work the same
//! tables; they coordinate only through PostgreSQL row locks and lease tokens.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::commit::Committer;
use crate::execute::{Executor, Runner};
use crate::lease::{Claim, ClaimCursor, LeaseRequest, Leaser};
use crate::liveness;
use crate::maintain::{self, Vacuumed};
use crate::registry::Registry;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::stats::{Stats, StatsSnapshot};

/// Default largest lease batch. Measured with `recur bench --mode burn` on 2 cores,
/// three batches in flight: first 500 -> 50k/s, 1000 -> 66k/s, 2000 -> 71k/s; since
/// claims pass over the rows of their own due time (twenty-fourth measurement in
/// BENCHMARKS.md), 1500 ran burn faster than 1000 in six interleaved pairs of eight
/// (+5.6% between the means) and recurring in three of three on a fast turn, at lease
/// and commit p50 about 1.4 times as long (10 and 18 ms in burn); 2000 no faster.
pub const DEFAULT_BATCH: usize = 1500;
/// How many batches a host holds by default: one running, one waiting to run, one being
/// committed. Two left the workers idle while a commit and the next lease were in
/// flight (50k/s against 66k/s at batch 1000).
pub const IN_FLIGHT_BATCHES: usize = 3;
/// Default lease timeout: how long a leased task stays out of other hosts' way. It must
/// cover the wait in the local queue plus the run; a crashed host's tasks are due again
/// after it.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default pace of claims while a host keeps up with what falls due: at most one claim
/// per this long after one came back with fewer tasks than it asked for. It bounds how
/// late a task that falls due on a host that has caught up starts: at 20k/s offered
/// (half this machine's maximum) 100 ms gave a p99 lag of 119 ms, 25 ms gave 65 ms. The
/// price is up to 40 lease queries a second per idle host (LISTEN/NOTIFY would remove
/// them); the gain is that below its maximum a host claims what gathered in 25 ms at
/// once, instead of a few tasks per claim as fast as claims go (BENCHMARKS.md, seventh
/// measurement).
pub const DEFAULT_IDLE_WAIT: Duration = Duration::from_millis(25);
/// Default interval at which a host looks for newly deployed module versions.
pub const DEFAULT_REGISTRY_REFRESH: Duration = Duration::from_secs(2);

/// How a host runs. Every field has a default (see [`HostConfig::default`]).
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Worker threads running tasks; defaults to the number of CPUs.
    pub concurrency: usize,
    /// Largest lease batch.
    pub batch: usize,
    /// Most tasks held at once, leased and not yet committed; `None` means
    /// [`IN_FLIGHT_BATCHES`] batches. The lease stage also holds fewer when runs are slow
    /// (see lease/mod.rs), so queued tasks never wait long enough to outlive their lease.
    pub max_in_flight: Option<usize>,
    /// Lease timeout.
    pub lease_timeout: Duration,
    /// While the host keeps up, at most one claim per this long (see
    /// [`DEFAULT_IDLE_WAIT`]).
    pub idle_wait: Duration,
    /// Task types this host runs; `None` runs every type.
    pub types: Option<Vec<String>>,
    /// Tenants whose tasks this host runs; `None` runs every tenant's.
    pub tenants: Option<Vec<String>>,
    /// How often to look for newly deployed modules.
    pub registry_refresh: Duration,
    /// Engine-wide sandbox settings.
    pub sandbox: SandboxConfig,
    /// What runs the tasks: the sandbox, except in `recur bench --sql-only`.
    pub runner: Runner,
    /// Timed leases, row locks, or either by measured run time (see lease/mod.rs).
    pub claim: Claim,
    /// Whether this host vacuums its tables when rows wait for a vacuum (maintain.rs).
    pub vacuum: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        HostConfig {
            concurrency: cpus,
            batch: DEFAULT_BATCH,
            max_in_flight: None,
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
            idle_wait: DEFAULT_IDLE_WAIT,
            types: None,
            tenants: None,
            registry_refresh: DEFAULT_REGISTRY_REFRESH,
            sandbox: SandboxConfig {
                concurrent_runs: cpus as u32,
                ..SandboxConfig::default()
            },
            runner: Runner::Sandbox,
            claim: Claim::Auto,
            vacuum: true,
        }
    }
}

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A setting is out of range.
    #[error("invalid host setting: {0}")]
    Config(String),
    /// The wasm engine could not be built.
    #[error("cannot start the sandbox: {0:#}")]
    Sandbox(anyhow::Error),
}

/// A running host. Dropping it without [`Host::stop`] aborts it like a crash: nothing
/// is committed or given back, and its tasks run again when their leases run out.
pub struct Host {
    stats: Arc<Stats>,
    shutdown: watch::Sender<bool>,
    stages: tokio::task::JoinSet<()>,
    /// Holds the liveness lock ([`liveness`]). Apart from the stages: it must outlast
    /// the last commit, and it goes when the host is dropped (a JoinSet aborts its tasks).
    liveness: tokio::task::JoinSet<()>,
    /// For its pool's figures; the executor runs tasks in it.
    sandbox: Arc<Sandbox>,
}

impl Host {
    /// Starts the pipeline on the current tokio runtime.
    pub fn start(pool: PgPool, config: HostConfig) -> Result<Host, HostError> {
        if config.concurrency == 0 || config.batch == 0 {
            return Err(HostError::Config(
                "concurrency and batch must be at least 1".into(),
            ));
        }
        if config.lease_timeout < Duration::from_millis(100) {
            return Err(HostError::Config(
                "the lease timeout must be at least 100 ms".into(),
            ));
        }
        // No wait would claim as fast as round trips go while nothing is due.
        if config.idle_wait < Duration::from_millis(1) || config.idle_wait > config.lease_timeout {
            return Err(HostError::Config(
                "the idle wait must be at least 1 ms and at most the lease timeout".into(),
            ));
        }
        let sandbox_config = SandboxConfig {
            concurrent_runs: config.concurrency as u32,
            ..config.sandbox.clone()
        };
        let sandbox = Arc::new(Sandbox::new(&sandbox_config).map_err(HostError::Sandbox)?);
        let stats = Arc::new(Stats::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let max_in_flight = config
            .max_in_flight
            .unwrap_or(config.batch * IN_FLIGHT_BATCHES)
            .max(config.concurrency);
        let slots = Arc::new(Semaphore::new(max_in_flight));
        let (batches_tx, batches_rx) = mpsc::channel(1);
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let key = liveness::new_key();
        let (alive_tx, alive) = watch::channel(false);
        let mut liveness = tokio::task::JoinSet::new();
        liveness.spawn(liveness::hold(pool.clone(), key, alive_tx));

        let registry = Registry::new(
            pool.clone(),
            sandbox.clone(),
            sandbox_config.max_memory_bytes,
            config.registry_refresh,
        );
        let leaser = Leaser {
            pool: pool.clone(),
            request: LeaseRequest {
                limit: config.batch as i64,
                lease_timeout: config.lease_timeout,
                types: config.types.clone(),
                tenants: config.tenants.clone(),
                skip: None,
                host: key,
            },
            idle_wait: config.idle_wait,
            slots: slots.clone(),
            max_in_flight,
            workers: config.concurrency,
            claim: config.claim,
            // Each locked batch in flight holds a connection; leave two for leasing,
            // committing and loading modules.
            locks: Arc::new(Semaphore::new(
                (pool.options().get_max_connections() as usize)
                    .saturating_sub(2)
                    .max(1),
            )),
            batches: batches_tx,
            alive,
            shutdown: shutdown_rx.clone(),
            stats: stats.clone(),
            cursor: ClaimCursor::default(),
            compiling: registry.watch_compiling(),
        };
        let executor = Executor {
            registry,
            sandbox: sandbox.clone(),
            workers: config.concurrency,
            runner: config.runner,
            batches: batches_rx,
            finished: finished_tx,
            shutdown: shutdown_rx.clone(),
            stats: stats.clone(),
        };
        let sweep = maintain::run(pool.clone(), shutdown_rx.clone());
        let vacuum_pool = pool.clone();
        let committer = Committer {
            pool,
            finished: finished_rx,
            max_rows: config.batch.max(1000),
            give_up_after: config.lease_timeout,
            slots,
            stats: stats.clone(),
        };
        let mut stages = tokio::task::JoinSet::new();
        stages.spawn(leaser.run());
        stages.spawn(executor.run());
        stages.spawn(committer.run());
        stages.spawn(sweep);
        if config.vacuum {
            for table in [Vacuumed::Tasks, Vacuumed::Claims, Vacuumed::TaskKeys] {
                stages.spawn(maintain::vacuum(
                    vacuum_pool.clone(),
                    table,
                    maintain::VACUUM_CHECK_EVERY,
                    shutdown_rx.clone(),
                ));
            }
        }
        Ok(Host {
            stats,
            shutdown,
            stages,
            liveness,
            sandbox,
        })
    }

    /// The latency histograms so far.
    pub fn latencies(&self) -> crate::stats::Latencies {
        self.stats.latencies()
    }

    /// Empties the latency histograms (the bench does this after its warm-up).
    pub fn reset_latencies(&self) {
        self.stats.reset_latencies();
    }

    /// The host's counters so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// How many of the sandbox's memory slots are warm and unused, and the bytes they
    /// keep resident (see `recur host --warm-modules`).
    pub fn warm_memories(&self) -> (u32, usize) {
        self.sandbox.warm_memories()
    }

    /// How its sandbox resets a memory between runs.
    pub fn memory_reset(&self) -> crate::sandbox::MemoryReset {
        self.sandbox.memory_reset()
    }

    /// How many modules the host compiled and how many it loaded from its compilation
    /// cache (see `recur host --compile-cache`).
    pub fn compilations(&self) -> crate::sandbox::Compilations {
        self.sandbox.compilations()
    }

    /// Stops gracefully: no new leases; tasks already running finish and are committed;
    /// tasks leased but not started are given back, due at their old time. Returns the
    /// final counters.
    pub async fn stop(mut self) -> StatsSnapshot {
        let _ = self.shutdown.send(true);
        while let Some(done) = self.stages.join_next().await {
            if let Err(err) = done
                && err.is_panic()
            {
                tracing::error!(error = %err, "a host stage panicked");
            }
        }
        // Everything this host claimed is committed or given back: now it may look gone.
        self.liveness.shutdown().await;
        self.stats.snapshot()
    }
}
