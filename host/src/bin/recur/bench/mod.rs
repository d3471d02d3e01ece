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

mod enqueue;
mod load;
mod native;
mod probe;
mod report;
mod trend;

pub use load::Layout;
pub use report::Report;

use std::time::{Duration, Instant};

use serde::Serialize;

use report::{mode_name, print_table, round};

use crate::args::ClaimArg;
use crate::scratch::Scratch;
use recur_host::db;
use recur_host::examples::example;
use recur_host::execute::Runner;
use recur_host::host::{DEFAULT_BATCH, Host, HostConfig};
use recur_host::registry;
use recur_host::sandbox::{Sandbox, SandboxConfig};
use recur_host::stats::{Latencies, StatsSnapshot};
use recur_host::status;

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
    let scratch = Scratch::create(&args.database).await?;
    let result = tokio::select! {
        result = bench(&scratch, &args) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    drop(scratch);
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
    let scratch = Scratch::create(&args.database).await?;
    let result = tokio::select! {
        result = enqueue::run(&scratch, args.tasks, usize::from(args.connections)) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    drop(scratch);
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

async fn bench(scratch: &Scratch, args: &BenchArgs) -> anyhow::Result<Report> {
    let runner = if args.sql_only {
        sql_only()
    } else {
        Runner::Sandbox
    };
    eprintln!("timing a fresh noop alone…");
    let noop_alone_us = tokio::task::spawn_blocking(probe::noop_alone_us).await??;
    let mut report = once(scratch, args, runner.clone()).await?;
    if args.with_ceiling {
        // Real, ceiling, ceiling, real, and the ratio of the sums: the machine's speed
        // drifts from one minute to the next (CPU frequency, a shared host's neighbours),
        // and a drift that is steady over the four runs moves both sums alike, where one
        // real run against one ceiling run after it reads the drift as the ratio.
        let mut ceiling = [0.0; 2];
        for rate in &mut ceiling {
            *rate = once(scratch, args, sql_only()).await?.tasks_per_sec;
        }
        let real = [
            report.tasks_per_sec,
            once(scratch, args, runner.clone()).await?.tasks_per_sec,
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
    report.database = scratch.description.clone();
    Ok(report)
}

/// One measured run on a freshly loaded table.
async fn once(scratch: &Scratch, args: &BenchArgs, runner: Runner) -> anyhow::Result<Report> {
    let loaded = load_tasks(scratch, args).await?;
    let config = host_config(args, runner.clone());
    let measured = measure(scratch, args, &loaded, config, is_sql_only(&runner)).await?;
    loaded.setup.close().await;
    Ok(report(args, &runner, &loaded, measured))
}

/// What a run measures against: the tasks loaded, and the database they are in.
struct Loaded {
    setup: sqlx::PgPool,
    layout: Layout,
    load_time: Duration,
    writes_before: i64,
}

/// Deploys `noop` for every tenant and loads the tasks, after emptying the tables.
async fn load_tasks(scratch: &Scratch, args: &BenchArgs) -> anyhow::Result<Loaded> {
    let setup = db::connect_for_bulk(&scratch.url, 2).await?;
    db::migrate(&setup).await?;
    // Keys too: every run after the first of --with-ceiling loads the same keys again.
    sqlx::query("TRUNCATE tasks, task_keys, claims")
        .execute(&setup)
        .await?;
    if let Some(fillfactor) = args.fillfactor {
        // A number in 10..=100 (clap checked it), so formatting it into the DDL is safe.
        sqlx::query(&format!(
            "ALTER TABLE tasks SET (fillfactor = {fillfactor})"
        ))
        .execute(&setup)
        .await?;
    }
    let noop = example("noop").expect("the noop example is built in");
    let sandbox = Sandbox::new(&SandboxConfig {
        concurrent_runs: 1,
        ..SandboxConfig::default()
    })?;
    let options = registry::DeployOptions {
        reuse_instance: args.reuse_instance,
    };
    let tenants = load::tenants(args.tenants);
    for tenant in &tenants {
        let component = if args.distinct_modules {
            load::marked(noop.component, tenant)
        } else {
            noop.component.to_vec()
        };
        registry::deploy_with(&setup, &sandbox, tenant, "noop", &component, options).await?;
    }
    drop(sandbox);

    let (mut fields, spread) = match args.mode {
        Mode::Enqueue => unreachable!("`run` hands the enqueue mode to `run_enqueue`"),
        Mode::Burn => (Vec::new(), Duration::ZERO),
        Mode::Recurring => (
            vec![format!(r#""every_ms": {}"#, args.every_ms)],
            Duration::from_millis(args.every_ms),
        ),
    };
    if args.spawns > 0 {
        fields.push(format!(r#""spawn": {}"#, args.spawns));
    }
    if args.new_spawns > 0 {
        fields.push(format!(r#""new_spawns": {}"#, args.new_spawns));
    }
    // Burn mode's tasks without spawns keep the empty payload they always had.
    let payload = if fields.is_empty() {
        Vec::new()
    } else {
        format!("{{{}}}", fields.join(", ")).into_bytes()
    };
    eprintln!("loading {} tasks…", args.tasks);
    let layout = args.layout.unwrap_or_default();
    let load_time = load::load(&setup, args.tasks, &tenants, &payload, spread, layout).await?;
    sqlx::query("CHECKPOINT").execute(&setup).await?;
    let writes_before = probe::task_writes(&setup).await?;

    Ok(Loaded {
        setup,
        layout,
        load_time,
        writes_before,
    })
}

/// The host's settings for a run with `runner`.
fn host_config(args: &BenchArgs, runner: Runner) -> HostConfig {
    let mut config = HostConfig {
        batch: args.batch,
        runner,
        claim: args.claim.into(),
        idle_wait: args.idle_wait,
        vacuum: !args.no_vacuum,
        ..HostConfig::default()
    };
    config.sandbox.warm_modules = args.warm_modules;
    config.sandbox.compile_cache = args.compile_cache.dir();
    if let Some(concurrency) = args.concurrency {
        config.concurrency = concurrency;
    }
    config
}

/// What one run measured: the host's figures over the window, the machine's and the
/// database's.
struct Measured {
    concurrency: usize,
    window: Duration,
    machine_start: probe::MachineSample,
    machine_end: probe::MachineSample,
    latencies: Latencies,
    stats_start: StatsSnapshot,
    stats_end: StatsSnapshot,
    total: StatsSnapshot,
    warm_memories: u32,
    warm_bytes: usize,
    compilations: recur_host::sandbox::Compilations,
    memory_reset: &'static str,
    executions: u64,
    spawned: u64,
    leases: u64,
    wal: probe::WalWritten,
    writes: i64,
    table_rows: i64,
    before: status::TableStatus,
    after: status::TableStatus,
    keys_bytes: i64,
    server: String,
    trend: Option<trend::Trend>,
}

/// Runs a host over the loaded tasks until the burn is done or time is up, and measures
/// the window after the warm-up.
async fn measure(
    scratch: &Scratch,
    args: &BenchArgs,
    loaded: &Loaded,
    config: HostConfig,
    sql_only: bool,
) -> anyhow::Result<Measured> {
    let concurrency = config.concurrency;
    let pool = db::connect_for_host(&scratch.url, 8).await?;
    eprintln!(
        "running {}{} for up to {} s…",
        mode_name(args.mode),
        if args.sql_only || sql_only {
            " (sql-only)"
        } else {
            ""
        },
        args.seconds
    );
    let host = Host::start(pool.clone(), config)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);

    // Burn: every loaded task and every task they spawn runs once.
    let burn_executions = args.tasks as u64 * (1 + u64::from(args.spawns));
    // Burn: the window is the whole run, to the last commit. Recurring: after a warm-up.
    let warmup = match args.mode {
        Mode::Burn | Mode::Enqueue => Duration::ZERO,
        Mode::Recurring => Duration::from_secs(args.warmup.min(args.seconds.saturating_sub(1))),
    };
    tokio::time::sleep(warmup).await;
    host.reset_latencies();
    let before = status::table(&loaded.setup, args.batch as i64).await?;
    let wal_start = probe::WalSample::take(&loaded.setup).await?;
    let (window_start, stats_start, machine_start) =
        (Instant::now(), host.stats(), probe::MachineSample::take());
    let mut trend = args
        .report_every
        .map(|secs| trend::Trend::new(Duration::from_secs(secs), args.batch as i64, &host));
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(trend) = &mut trend {
            trend.tick(&host, &loaded.setup).await?;
        }
        let done = args.mode == Mode::Burn && host.stats().committed >= burn_executions;
        if done || Instant::now() >= deadline {
            break;
        }
    }
    let (window, machine_end) = (window_start.elapsed(), probe::MachineSample::take());
    let latencies = host.latencies();
    let stats_end = host.stats();
    let (warm_memories, warm_bytes) = host.warm_memories();
    let compilations = host.compilations();
    let memory_reset = host.memory_reset().name();
    let executions = stats_end.committed - stats_start.committed;
    let spawned = stats_end.spawned - stats_start.spawned;
    let leases = stats_end.claims - stats_start.claims;
    let wal = wal_start.until(&probe::WalSample::take(&loaded.setup).await?);
    let total = host.stop().await;
    pool.close().await;

    // Let PostgreSQL's statistics settle: backends flush them when they exit.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let writes = probe::task_writes(&loaded.setup).await? - loaded.writes_before;
    let table_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&loaded.setup)
        .await?;
    let after = status::table(&loaded.setup, args.batch as i64).await?;
    let keys_bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('task_keys')")
        .fetch_one(&loaded.setup)
        .await?;
    let server = probe::server_settings(&loaded.setup).await?;

    Ok(Measured {
        concurrency,
        window,
        machine_start,
        machine_end,
        latencies,
        stats_start,
        stats_end,
        total,
        warm_memories,
        warm_bytes,
        compilations,
        memory_reset,
        executions,
        spawned,
        leases,
        wal,
        writes,
        table_rows,
        before,
        after,
        keys_bytes,
        server,
        trend,
    })
}

/// The report of one run.
fn report(args: &BenchArgs, runner: &Runner, loaded: &Loaded, m: Measured) -> Report {
    let Measured {
        concurrency,
        window,
        machine_start,
        machine_end,
        latencies,
        stats_start,
        stats_end,
        total,
        warm_memories,
        warm_bytes,
        compilations,
        memory_reset,
        executions,
        spawned,
        leases,
        wal,
        writes,
        table_rows,
        before,
        after,
        keys_bytes,
        server,
        trend,
    } = m;
    let (host_cpu, db_cpu) = machine_start.percent_until(&machine_end);
    let (host_secs, db_secs) = machine_start.seconds_until(&machine_end);
    let per_task_us = |secs: f64| round(secs * 1e6 / executions.max(1) as f64, 2);
    let layout = loaded.layout;
    let load_time = loaded.load_time;
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64, per_ms: f64| {
        round(h.value_at_quantile(q) as f64 / per_ms, 3)
    };
    Report {
        mode: args.mode,
        sql_only: is_sql_only(runner),
        reuse_instance: args.reuse_instance && !is_sql_only(runner),
        claim: format!("{:?}", args.claim).to_lowercase(),
        tasks: args.tasks,
        tenants: args.tenants,
        distinct_modules: args.distinct_modules,
        concurrency,
        batch: args.batch,
        layout: (args.mode == Mode::Recurring).then_some(layout),
        fillfactor: after.fillfactor,
        warm_modules: args.warm_modules,
        warm_memories,
        warm_resident_mb: round(warm_bytes as f64 / (1 << 20) as f64, 1),
        memory_reset,
        modules_compiled: compilations.compiled,
        modules_cached: compilations.cached,
        spawns: args.spawns,
        new_spawns: args.new_spawns,
        tasks_per_sec: round(executions as f64 / window.as_secs_f64(), 0),
        spawned_per_sec: round(spawned as f64 / window.as_secs_f64(), 0),
        executions,
        seconds: round(window.as_secs_f64(), 2),
        lease_ms_p50: ms(&latencies.claim_us, 0.5, 1000.0),
        lease_ms_p99: ms(&latencies.claim_us, 0.99, 1000.0),
        commit_ms_p50: ms(&latencies.commit_us, 0.5, 1000.0),
        commit_ms_p99: ms(&latencies.commit_us, 0.99, 1000.0),
        lag_ms_p50: ms(&latencies.lag_ms, 0.5, 1.0),
        lag_ms_p99: ms(&latencies.lag_ms, 0.99, 1.0),
        tasks_per_lease: round(
            (stats_end.claimed - stats_start.claimed) as f64 / leases.max(1) as f64,
            1,
        ),
        // Set by `bench`, which measures them before the first run and after the last.
        noop_alone_us: 0.0,
        noop_alone_after_us: 0.0,
        exec_us_p50: ms(&latencies.exec_ns, 0.5, 1000.0),
        exec_us_p99: ms(&latencies.exec_ns, 0.99, 1000.0),
        // A wait is counted when it ends, whole: one that began before the window can
        // take a mostly idle host's share past 100.
        workers_idle_pct: round(
            ((stats_end.idle_us - stats_start.idle_us) as f64
                / (concurrency as f64 * window.as_micros() as f64)
                * 100.0)
                .min(100.0),
            1,
        ),
        db_writes_per_task: round(writes as f64 / total.executed.max(1) as f64, 2),
        wal_bytes_per_task: round(wal.bytes as f64 / executions.max(1) as f64, 0),
        wal_full_pages_per_task: round(wal.full_pages as f64 / executions.max(1) as f64, 3),
        checkpoints: wal.checkpoints,
        table_rows,
        host_cpu_pct: round(host_cpu, 0),
        db_cpu_pct: db_cpu.map(|c| round(c, 0)),
        steal_pct: machine_start
            .steal_pct_until(&machine_end)
            .map(|s| round(s, 1)),
        refaults_per_sec: machine_start
            .refaults_per_sec_until(&machine_end)
            .map(|r| round(r, 0)),
        host_cpu_us_per_task: per_task_us(host_secs),
        db_cpu_us_per_task: db_secs.map(per_task_us),
        host_rss_mb: round(probe::peak_rss_mb(), 1),
        load_tasks_per_sec: round(args.tasks as f64 / load_time.as_secs_f64(), 0),
        dead_tuples_before: before.dead_tuples,
        index_bytes_before: before.index_bytes,
        dead_tuples_after: after.dead_tuples,
        index_bytes_after: after.index_bytes,
        due_per_page_before: before.due_per_page.map(|x| round(x, 1)),
        due_per_page_after: after.due_per_page.map(|x| round(x, 1)),
        heap_bytes_before: before.heap_bytes,
        heap_bytes_after: after.heap_bytes,
        keys_bytes,
        intervals: trend.map(|t| t.intervals).unwrap_or_default(),
        ceiling_tasks_per_sec: None,
        ratio_to_ceiling: None,
        real_runs_per_sec: None,
        ceiling_runs_per_sec: None,
        database: String::new(),
        server,
    }
}
