//! `recur host`: runs a host until SIGINT or SIGTERM, then stops gracefully (stops
//! leasing, finishes what runs, gives back what waits) and exits 0.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::args::{
    ClaimArg, CompileCacheArgs, CompileLimitArgs, MemoryResetArg, parse_duration, warm_modules,
};
use recur_host::sandbox::{DEFAULT_WARM_MODULES, EXIT_SWAP_TURNED_ON};
use recur_host::{DEFAULT_BATCH, Host, HostConfig};

/// How often a running host logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Arguments of `recur host`.
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    /// A TOML file of settings, keyed by these flags' names (`batch = 500`, `claim =
    /// "timed"`, `tenants = ["acme"]`): a flag given, or its RECUR_ variable, wins over
    /// the file, which wins over the default.
    #[arg(long, value_name = "FILE", env = "RECUR_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Print the settings this host would run with, as a config file (the database
    /// password masked), and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Worker threads running tasks (default: the number of CPUs).
    #[arg(long, env = "RECUR_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Largest claim: most tasks one claim takes.
    #[arg(long, env = "RECUR_BATCH", default_value_t = DEFAULT_BATCH)]
    batch: usize,
    /// Only run these task types (comma-separated or repeated; default: all).
    #[arg(long, env = "RECUR_TYPES", value_delimiter = ',')]
    types: Vec<String>,
    /// Only run these tenants' tasks (comma-separated or repeated; default: all), to
    /// give tenants hosts of their own or to spread many modules over a fleet.
    #[arg(long, env = "RECUR_TENANTS", value_delimiter = ',')]
    tenants: Vec<String>,
    /// How long a claimed task stays out of other hosts' way (e.g. 60s).
    #[arg(long, env = "RECUR_LEASE_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    lease_timeout: Duration,
    /// While the host keeps up with what falls due, at most one claim per this long: a
    /// task that falls due then waits up to this long to start, and each claim takes
    /// all that gathered (e.g. 25ms; lower for less lag, higher for fewer, larger
    /// claims).
    #[arg(long, env = "RECUR_IDLE_WAIT", value_parser = parse_duration, default_value = "25ms")]
    idle_wait: Duration,
    /// How to claim tasks: `timed` leases (two row writes per run, any run length),
    /// `locked` row locks held until the batch commits (one write, for short runs), or
    /// `auto`: locked while the mean run is under 20 ms.
    #[arg(long, env = "RECUR_CLAIM", value_enum, default_value = "auto")]
    claim: ClaimArg,
    /// How many distinct modules each CPU's share of the instance pool keeps a memory
    /// ready for. A run of a module with none ready maps the module in first, under a
    /// lock every run's memory reset takes too. Raise it on a host that runs more modules
    /// than this in turn; each ready memory costs 4 GiB of address space, not memory, and
    /// keeps the pages its last run touched resident (a few for the example modules, at
    /// most 2 MiB).
    #[arg(long, env = "RECUR_WARM_MODULES", default_value_t = DEFAULT_WARM_MODULES, value_parser = warm_modules)]
    warm_modules: u32,
    #[command(flatten)]
    compile_cache: CompileCacheArgs,
    /// How to reset a memory between runs, so that nothing of one run reaches the next:
    /// `madvise` returns its pages to the kernel (every page, whatever the kernel did with
    /// it meanwhile), `page-scan` zeroes the pages a run wrote (faster, needs Linux 6.7+
    /// and no swap, but misses a page the kernel is moving at that instant: for hosts
    /// whose tenants trust each other), `auto` the page scan where it can.
    #[arg(
        long,
        env = "RECUR_MEMORY_RESET",
        value_enum,
        default_value = "madvise"
    )]
    memory_reset: MemoryResetArg,
    /// A component whose compile runs past its limits is not run, with the reason in its
    /// tasks' errors, and this host does not try it again.
    #[command(flatten)]
    compile_limits: CompileLimitArgs,
    /// Never vacuum or analyze recur's tables from this host (by default a host vacuums
    /// `tasks` and `claims` when dead row versions pile up, and `task_keys` when new keys
    /// do, and analyzes `tasks` and `task_keys` when many rows changed, for a server whose
    /// autovacuum is off or behind).
    #[arg(long, env = "RECUR_NO_VACUUM")]
    no_vacuum: bool,
}

pub async fn run(pool: PgPool, args: HostArgs) -> anyhow::Result<()> {
    if let Some(file) = &args.config {
        tracing::info!(file = %file.display(), "settings read from a config file, under the flags and RECUR_ variables given");
    }
    let mut config = HostConfig::default();
    if let Some(concurrency) = args.concurrency {
        config.concurrency = concurrency;
    }
    config.batch = args.batch;
    config.lease_timeout = args.lease_timeout;
    config.idle_wait = args.idle_wait;
    config.claim = args.claim.into();
    config.vacuum = !args.no_vacuum;
    config.sandbox.warm_modules = args.warm_modules;
    config.sandbox.compile_cache = args.compile_cache.dir();
    config.sandbox.memory_reset = args.memory_reset.reset();
    config.sandbox.compiler = Some(args.compile_limits.compiler(args.compile_cache.dir())?);
    if !args.types.is_empty() {
        for t in &args.types {
            recur_host::contract::check_name("task type", t)
                .map_err(|e| anyhow::anyhow!("--types: {e}"))?;
        }
        config.types = Some(args.types);
    }
    if !args.tenants.is_empty() {
        for t in &args.tenants {
            recur_host::contract::check_name("tenant", t)
                .map_err(|e| anyhow::anyhow!("--tenants: {e}"))?;
        }
        config.tenants = Some(args.tenants);
    }
    let host = Host::start(pool, config.clone())?;
    tracing::info!(concurrency = config.concurrency, batch = config.batch, types = ?config.types,
        tenants = ?config.tenants, memory_reset = host.memory_reset().name(), "host started");

    let started = Instant::now();
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;
    let mut last = host.stats();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut exit = None;
    loop {
        tokio::select! {
            name = &mut signal => {
                tracing::info!(signal = name?, "stopping: no new claims; finishing running tasks");
                break;
            }
            _ = host.halted() => {
                tracing::error!("stopping: the sandbox halted; exiting for a restart");
                exit = Some(EXIT_SWAP_TURNED_ON);
                break;
            }
            _ = progress.tick() => {
                let now = host.stats();
                let rate = (now.executed - last.executed) as f64 / PROGRESS_EVERY.as_secs_f64();
                tracing::info!(executed = now.executed, committed = now.committed, failed = now.failed,
                    rate = format!("{rate:.0}/s"), "progress");
                last = now;
            }
        }
    }
    let stats = host.stop().await;
    tracing::info!(
        executed = stats.executed,
        committed = stats.committed,
        fenced_out = stats.fenced_out,
        given_back = stats.given_back,
        uptime = ?started.elapsed(),
        "host stopped"
    );
    if let Some(code) = exit {
        std::process::exit(code);
    }
    Ok(())
}

/// Resolves with the signal's name on SIGINT or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// The hidden subcommand a compile child runs (see `CompileLimitArgs::compiler`).
#[derive(Debug, clap::Args)]
pub struct CompileComponentArgs {
    /// The host's compilation cache, if it keeps one.
    #[arg(long, value_name = "DIR")]
    pub compile_cache: Option<std::path::PathBuf>,
}
