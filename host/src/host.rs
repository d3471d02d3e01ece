//! A host: the claim -> execute -> commit pipeline over one database, run until told
//! to stop. Any number of hosts, in one process or on many machines, can work the same
//! tables; they coordinate only through PostgreSQL row locks and lease tokens.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::claim::{CLAIM_MAX_BYTES, ClaimCursor, ClaimMode, ClaimRequest, Claimer};
use crate::commit::Committer;
use crate::execute::{Executor, Runner};
use crate::liveness;
use crate::maintain::{self, Vacuumed};
use crate::registry::Registry;
use crate::room;
use crate::roster;
use crate::sandbox::{Sandbox, SandboxConfig, SandboxError};
use crate::stats::{Stats, StatsSnapshot};

/// Default largest claim. A bigger batch spreads each claim's and each commit's round
/// trips and transaction over more tasks, and makes each statement take longer; the
/// default is the size where `recur bench` stopped getting faster (BENCHMARKS.md has
/// the runs that chose it).
pub const DEFAULT_BATCH: usize = 1500;
/// How many batches a host holds by default: one running, one waiting to run, one being
/// committed. With two, the workers wait while a commit and the next claim are both in
/// flight.
pub const IN_FLIGHT_BATCHES: usize = 3;
/// Default lease timeout: how long a claimed task stays out of other hosts' way. It must
/// cover the wait in the local queue plus the run; a crashed host's timed leases are due
/// again after it.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default pace of claims while a host keeps up with what falls due: at most one claim
/// per this long after one came back with fewer tasks than it asked for. It bounds how
/// late a task that falls due on a host that has caught up starts; the price is up to
/// one claim per idle wait per idle host, and the gain is that below its maximum a host
/// claims what gathered in that time at once, instead of a few tasks per claim as fast
/// as claims go.
pub const DEFAULT_IDLE_WAIT: Duration = Duration::from_millis(25);
/// Default interval at which a host looks for newly deployed module versions.
pub const DEFAULT_REGISTRY_REFRESH: Duration = Duration::from_secs(2);

/// How a host runs. Every field has a default (see [`HostConfig::default`]).
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Worker threads running tasks; defaults to the number of CPUs.
    pub concurrency: usize,
    /// Largest claim.
    pub batch: usize,
    /// Most tasks held at once, claimed and not yet committed (the in-flight limit);
    /// `None` means [`IN_FLIGHT_BATCHES`] batches. The claim stage also holds fewer when
    /// runs are slow (see claim/mod.rs), so queued tasks never outlive their claim.
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
    /// What runs the tasks: the sandbox, except where a bench measures without it.
    pub runner: Runner,
    /// Timed leases, locked claims, or either by measured run time (see claim/mod.rs).
    pub claim: ClaimMode,
    /// Whether this host vacuums its tables when rows wait for a vacuum, and analyzes
    /// them when many rows changed (maintain.rs).
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
            claim: ClaimMode::Auto,
            vacuum: true,
        }
    }
}

impl HostConfig {
    /// Refuses settings out of range, with what is wrong.
    fn validate(&self) -> Result<(), HostError> {
        if self.concurrency == 0 || self.batch == 0 {
            return Err(HostError::Config(
                "concurrency and batch must be at least 1".into(),
            ));
        }
        if self.lease_timeout < Duration::from_millis(100) {
            return Err(HostError::Config(
                "the lease timeout must be at least 100 ms".into(),
            ));
        }
        // No wait would claim as fast as round trips go while nothing is due.
        if self.idle_wait < Duration::from_millis(1) || self.idle_wait > self.lease_timeout {
            return Err(HostError::Config(
                "the idle wait must be at least 1 ms and at most the lease timeout".into(),
            ));
        }
        Ok(())
    }

    /// The in-flight limit: what the host may hold, claimed and not yet committed.
    fn max_in_flight(&self) -> usize {
        self.max_in_flight
            .unwrap_or(self.batch * IN_FLIGHT_BATCHES)
            .max(self.concurrency)
    }
}

/// What the stages of one host are built from.
struct Pipeline<'a> {
    pool: PgPool,
    config: &'a HostConfig,
    stats: Arc<Stats>,
    shutdown: watch::Receiver<bool>,
}

impl Pipeline<'_> {
    /// Starts the claim, execute and commit stages and the background duties, wired by
    /// their channels; `key` is the host's liveness key, `alive` says when it holds it.
    fn start(
        self,
        registry: Registry,
        sandbox: Arc<Sandbox>,
        key: i64,
        alive: watch::Receiver<bool>,
    ) -> tokio::task::JoinSet<()> {
        let config = self.config;
        let max_in_flight = config.max_in_flight();
        let in_flight = Arc::new(Semaphore::new(max_in_flight));
        let in_flight_for_roster = in_flight.clone();
        let (batches_tx, batches_rx) = mpsc::channel(1);
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let (held_back_tx, held_back_rx) = watch::channel(Arc::from([]));
        let claimer = Claimer {
            pool: self.pool.clone(),
            request: ClaimRequest {
                limit: config.batch as i64,
                lease_timeout: config.lease_timeout,
                types: config.types.clone(),
                tenants: config.tenants.clone(),
                skip: None,
                held_back: Arc::from([]),
                host: key,
                max_bytes: CLAIM_MAX_BYTES,
            },
            idle_wait: config.idle_wait,
            in_flight: in_flight.clone(),
            max_in_flight,
            workers: config.concurrency,
            mode: config.claim,
            // Each locked claim in flight holds a connection; leave two for claiming,
            // committing and loading modules.
            locks: Arc::new(Semaphore::new(
                (self.pool.options().get_max_connections() as usize)
                    .saturating_sub(2)
                    .max(1),
            )),
            batches: batches_tx,
            alive,
            shutdown: self.shutdown.clone(),
            stats: self.stats.clone(),
            cursor: ClaimCursor::default(),
            compiling: registry.watch_compiling(),
            held_back: held_back_rx,
        };
        let executor = Executor {
            registry,
            sandbox,
            workers: config.concurrency,
            runner: config.runner.clone(),
            batches: batches_rx,
            finished: finished_tx,
            shutdown: self.shutdown.clone(),
            stats: self.stats.clone(),
            held_back: held_back_tx,
        };
        let committer = Committer {
            pool: self.pool.clone(),
            finished: finished_rx,
            max_rows: config.batch.max(1000),
            give_up_after: config.lease_timeout,
            in_flight,
            stats: self.stats.clone(),
        };
        let mut stages = tokio::task::JoinSet::new();
        stages.spawn(claimer.run());
        stages.spawn(executor.run());
        stages.spawn(committer.run());
        let host = roster::Describe {
            id: key,
            claim_mode: format!("{:?}", config.claim).to_lowercase(),
            workers: config.concurrency,
            max_in_flight,
        };
        stages.spawn(roster::keep(
            self.pool.clone(),
            host,
            in_flight_for_roster,
            self.shutdown.clone(),
        ));
        self.start_duties(&mut stages);
        stages
    }

    /// Starts the duties any host does beside its pipeline (maintain.rs, room.rs).
    fn start_duties(&self, stages: &mut tokio::task::JoinSet<()>) {
        stages.spawn(maintain::run(self.pool.clone(), self.shutdown.clone()));
        stages.spawn(room::run(
            self.pool.clone(),
            room::COUNT_EVERY,
            self.shutdown.clone(),
        ));
        if self.config.vacuum {
            stages.spawn(maintain::analyze(
                self.pool.clone(),
                maintain::ANALYZE_CHECK_EVERY,
                self.shutdown.clone(),
            ));
            for table in [Vacuumed::Tasks, Vacuumed::Claims, Vacuumed::TaskKeys] {
                stages.spawn(maintain::vacuum(
                    self.pool.clone(),
                    table,
                    maintain::VACUUM_CHECK_EVERY,
                    self.shutdown.clone(),
                ));
            }
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
    #[error("cannot start the sandbox: {0}")]
    Sandbox(#[from] SandboxError),
}

/// A running host. Dropping it without [`Host::stop`] aborts it like a crash: nothing
/// is committed or given back, and its tasks run again when their claims run out.
pub struct Host {
    stats: Arc<Stats>,
    shutdown: watch::Sender<bool>,
    stages: tokio::task::JoinSet<()>,
    /// Holds the liveness lock ([`liveness`]). Apart from the stages: it must outlast
    /// the last commit, and it goes when the host is dropped (a JoinSet aborts its tasks).
    liveness: tokio::task::JoinSet<()>,
    /// For its pool's figures; the executor runs tasks in it.
    sandbox: Arc<Sandbox>,
    /// Its row in the roster of hosts (roster.rs), deleted when it stops.
    pool: PgPool,
    key: i64,
}

impl Host {
    /// Starts the pipeline on the current tokio runtime.
    pub fn start(pool: PgPool, config: HostConfig) -> Result<Host, HostError> {
        config.validate()?;
        let sandbox_config = SandboxConfig {
            concurrent_runs: config.concurrency as u32,
            ..config.sandbox.clone()
        };
        let sandbox = Arc::new(Sandbox::new(&sandbox_config)?);
        let stats = Arc::new(Stats::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
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
        let pipeline = Pipeline {
            pool: pool.clone(),
            config: &config,
            stats: stats.clone(),
            shutdown: shutdown_rx,
        };
        let stages = pipeline.start(registry, sandbox.clone(), key, alive);
        Ok(Host {
            stats,
            shutdown,
            stages,
            liveness,
            sandbox,
            pool,
            key,
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

    /// Resolves once the host's sandbox has halted (see `Sandbox::halted`): no run
    /// starts here any more, and the process must be started again. Never resolves
    /// while the sandbox can go on.
    pub async fn halted(&self) {
        let mut halted = self.sandbox.watch_halted();
        // The sender lives in the sandbox, which this host holds: it cannot close.
        let _ = halted.wait_for(|halted| *halted).await;
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

    /// Stops gracefully: no new claims; tasks already running finish and are committed;
    /// tasks claimed but not started are given back, due at their old time. Returns the
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
        roster::leave(&self.pool, self.key).await;
        self.liveness.shutdown().await;
        self.stats.snapshot()
    }
}
