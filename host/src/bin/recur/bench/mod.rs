//! `recur bench`: loads tasks into a fresh database, runs a host on them, and reports
//! throughput, latencies, row writes per execution, CPU and memory. Speed is measured
//! and reported here, never asserted by a test: a test's timing measures its machine.
//!
//! Modes: `burn` works T one-shot tasks down to zero (the standard job-queue
//! benchmark); `recurring` keeps T tasks rescheduling every `--every-ms`, due times
//! spread over one interval, so the offered rate is T / interval (recur's own
//! workload). Each task keeps its phase while the host keeps up (the `noop` module), so
//! the backlog that builds while the tasks load is worked off once and the load stays
//! even after it; above the host's maximum, each task runs again one interval after it
//! ran. `enqueue` times the library's bulk enqueue instead (`enqueue.rs`). `--sql-only`
//! replaces the sandbox with an in-process no-op, which gives
//! the ceiling the database and the pipeline allow; `--with-ceiling` runs both on
//! identical tables, twice each in the order real, ceiling, ceiling, real, and reports
//! the ratio of the sums.

mod bystander;
mod enqueue;
mod load;
mod native;
mod once;
mod probe;
mod report;
mod trend;

pub use load::Layout;
pub use report::Report;

use std::time::Duration;

use serde::Serialize;

use once::once;
use report::{print_table, round};

use crate::args::ClaimArg;
use crate::throwaway::Throwaway;
use recur_host::DEFAULT_BATCH;
use recur_host::Runner;

/// The database the bench creates (and recreates) on the server it finds.
pub const BENCH_DATABASE: &str = "recur_bench";

/// The workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// T one-shot tasks, worked to zero.
    Burn,
    /// T tasks that reschedule themselves every --every-ms.
    Recurring,
    /// T new tasks by the library's bulk enqueue, then the same T again.
    Enqueue,
}

/// Arguments of `recur bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The workload.
    #[arg(long, value_enum, default_value = "burn")]
    pub mode: Mode,
    /// Tasks to load.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// Longest run in seconds (burn mode stops earlier when every task is done).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Seconds at the start of a recurring run left out of the figures (module
    /// compilation, filling the pipeline).
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Recurring mode: each task's interval; tasks / interval is the offered rate.
    #[arg(long, default_value_t = 5000)]
    pub every_ms: u64,
    /// Worker threads (default: the number of CPUs).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Largest lease batch.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// While the host keeps up, at most one claim per this long (see `recur host --help`).
    #[arg(long, value_parser = crate::args::parse_duration, default_value = "25ms")]
    pub idle_wait: Duration,
    /// How the host claims tasks: timed leases, row locks, or auto (locks while runs are short).
    #[arg(long, value_enum, default_value = "auto")]
    pub claim: ClaimArg,
    /// Replace the sandbox with an in-process no-op: the ceiling of recur's SQL here.
    #[arg(long, conflicts_with = "with_ceiling")]
    pub sql_only: bool,
    /// Run the real bench and the --sql-only one, each twice on a fresh table (real,
    /// sql-only, sql-only, real), and report the ratio of the sums.
    #[arg(long)]
    pub with_ceiling: bool,
    /// Spread the tasks over this many tenants (`bench-0`, `bench-1`, ...; with one, the
    /// tenant is `default`), each with noop deployed on its own, as a host serving many
    /// teams sees them: consecutive runs mostly belong to different tenants.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub tenants: u32,
    /// With --tenants: each tenant deploys its own copy of noop, made distinct by a
    /// custom section naming the tenant, as tenants running different modules would.
    #[arg(long, requires = "tenants")]
    pub distinct_modules: bool,
    /// Each loaded task spawns this many one-shot noop tasks when it runs, keyed after
    /// it (`<key>/0`, `<key>/1`, ...), which complete when they run: the path of a module
    /// that fans out. In burn mode every spawn is new and the run works all of them down
    /// too; in recurring mode each run spawns the same keys again, so after a task's
    /// first run its spawns are absorbed by the unique key.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub spawns: u32,
    /// Recurring mode: of each run's --spawns, this many are keyed after the run
    /// (`<key>/run<runs>/0`, ...) and so are new every run, as a crawler's links to
    /// pages it has not seen; the rest keep their fixed keys and are absorbed.
    #[arg(long, default_value_t = 0)]
    pub new_spawns: u32,
    /// Deploy noop with `--reuse-instance`: a worker keeps its instance from task to task
    /// instead of a fresh one per task (see `recur module deploy --help`).
    #[arg(long, conflicts_with = "sql_only")]
    pub reuse_instance: bool,
    /// Distinct modules each CPU's share of the instance pool keeps a memory ready for
    /// (see `recur host --help`).
    #[arg(long, default_value_t = recur_host::sandbox::DEFAULT_WARM_MODULES,
          value_parser = crate::args::warm_modules)]
    pub warm_modules: u32,
    #[command(flatten)]
    pub compile_cache: crate::args::CompileCacheArgs,
    /// How to reset a memory between runs (see `recur host --help`).
    #[arg(long, value_enum, default_value = "madvise")]
    pub memory_reset: crate::args::MemoryResetArg,
    /// Print a line every this many seconds with that interval's throughput and
    /// latencies and the table's dead tuples and index size (for long runs).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub report_every: Option<u64>,
    /// Recurring mode: how the first due times fall against the tasks' order in the
    /// table, which decides how many tasks of one heap page a claim takes together
    /// [default: scattered].
    #[arg(long, value_enum)]
    pub layout: Option<Layout>,
    /// The tasks table's fillfactor for this run [default: 90, the migrations']: how much
    /// of each heap page the load fills, leaving the rest for the next versions of its
    /// rows (PostgreSQL places an updated row on its own page when it fits there).
    #[arg(long, value_parser = clap::value_parser!(u8).range(10..=100))]
    pub fillfactor: Option<u8>,
    /// Leave the tasks table's dead rows to autovacuum (by default the host vacuums it
    /// when they pile up; see `recur host --no-vacuum`).
    #[arg(long)]
    pub no_vacuum: bool,
    /// Enqueue mode: connections the bulk enqueue writes over (see `recur enqueue
    /// --help`).
    #[arg(long, default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=recur_host::enqueue::MAX_CONNECTIONS as i64))]
    pub connections: u16,
    /// Add a small tenant, `bystander`, with this many noop tasks due every
    /// --bystander-every-ms beside the load, and report how many of its due runs it ran
    /// and how late its tasks were: what a team beside a big neighbour gets.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub bystander: u32,
    /// Spread the bystander's tasks over this many tenants (`bystander-0`, ...): many
    /// small teams beside the load.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub bystander_tenants: u32,
    /// The bystander's interval.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub bystander_every_ms: u64,
    /// End with one JSON line of the results.
    #[arg(long)]
    pub json: bool,
    /// The database the bench drops and creates afresh on the server, and leaves behind
    /// for inspection.
    #[arg(long, default_value = BENCH_DATABASE, value_parser = database_name)]
    pub database: String,
}

/// A database name the bench can create unquoted: what `recur_bench` is made of.
fn database_name(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(
            "use 1 to 63 lowercase letters, digits and underscores, not starting with a digit"
                .into(),
        )
    }
}

/// Runs the bench and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.mode == Mode::Enqueue {
        return run_enqueue(args).await;
    }
    if args.new_spawns > args.spawns {
        anyhow::bail!(
            "--new-spawns {} is more than --spawns {}: it says how many of each run's spawns are new",
            args.new_spawns,
            args.spawns
        );
    }
    if args.mode == Mode::Burn && args.new_spawns > 0 {
        anyhow::bail!(
            "--new-spawns mixes new keys with known ones in recurring mode; in --mode burn every spawn is new"
        );
    }
    if args.mode == Mode::Burn && args.layout.is_some() {
        anyhow::bail!(
            "--layout spreads recurring mode's first due times; in --mode burn every task is due at once"
        );
    }
    let throwaway = Throwaway::create(&args.database).await?;
    let result = tokio::select! {
        result = bench(&throwaway, &args) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    drop(throwaway);
    let report = result?;
    print_table(&report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

/// `--mode enqueue`, which runs no host: the options about executions do not apply.
async fn run_enqueue(args: BenchArgs) -> anyhow::Result<()> {
    if args.sql_only
        || args.with_ceiling
        || args.reuse_instance
        || args.report_every.is_some()
        || args.tenants != 1
        || args.distinct_modules
        || args.layout.is_some()
        || args.fillfactor.is_some()
        || args.spawns != 0
        || args.new_spawns != 0
    {
        anyhow::bail!(
            "--sql-only, --with-ceiling, --reuse-instance, --report-every, --tenants, --distinct-modules, --layout, --fillfactor, --spawns and --new-spawns measure executions; --mode enqueue runs none"
        );
    }
    let throwaway = Throwaway::create(&args.database).await?;
    let result = tokio::select! {
        result = enqueue::run(&throwaway, args.tasks, usize::from(args.connections)) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    drop(throwaway);
    let report = result?;
    enqueue::print_table(&report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

/// The runner of `--sql-only`: the `noop` module's logic without the sandbox.
fn sql_only() -> Runner {
    Runner::Native(std::sync::Arc::new(native::NativeNoop))
}

/// Whether `runner` runs without the sandbox.
fn is_sql_only(runner: &Runner) -> bool {
    matches!(runner, Runner::Native(_))
}

async fn bench(throwaway: &Throwaway, args: &BenchArgs) -> anyhow::Result<Report> {
    let runner = if args.sql_only {
        sql_only()
    } else {
        Runner::Sandbox
    };
    eprintln!("timing a fresh noop alone…");
    let noop_alone_us = tokio::task::spawn_blocking(probe::noop_alone_us).await??;
    let mut report = once(throwaway, args, runner.clone()).await?;
    if args.with_ceiling {
        // Real, ceiling, ceiling, real, and the ratio of the sums: the machine's speed
        // drifts from one minute to the next (CPU frequency, a shared host's neighbours),
        // and a drift that is steady over the four runs moves both sums alike, where one
        // real run against one ceiling run after it reads the drift as the ratio.
        let mut ceiling = [0.0; 2];
        for rate in &mut ceiling {
            *rate = once(throwaway, args, sql_only()).await?.tasks_per_sec;
        }
        let real = [
            report.tasks_per_sec,
            once(throwaway, args, runner.clone()).await?.tasks_per_sec,
        ];
        let (real_sum, ceiling_sum) = (real[0] + real[1], ceiling[0] + ceiling[1]);
        report.ceiling_tasks_per_sec = Some(round(ceiling_sum / 2.0, 0));
        report.ratio_to_ceiling = Some(round(real_sum / ceiling_sum.max(1e-9), 3));
        report.real_runs_per_sec = Some(real);
        report.ceiling_runs_per_sec = Some(ceiling);
    }
    // Again at the end: the machine's speed can change in the middle of a run, and a
    // figure unlike the first says it did.
    report.noop_alone_after_us = tokio::task::spawn_blocking(probe::noop_alone_us).await??;
    report.noop_alone_us = noop_alone_us;
    report.database = throwaway.description.clone();
    Ok(report)
}
