//! One measured run of `recur bench` on a freshly loaded table, in its phases: load the
//! tasks ([`load_tasks`]), run a host over them and measure the window ([`measure`]),
//! and turn what was measured into the report ([`report`]).

use std::time::{Duration, Instant};

use recur_host::Runner;
use recur_host::db;
use recur_host::deploy;
use recur_host::examples::example;
use recur_host::sandbox::{Sandbox, SandboxConfig};
use recur_host::status;
use recur_host::tenants::{TenantChanges, TenantError, create as create_tenant};
use recur_host::{Host, HostConfig};
use recur_host::{Latencies, StatsSnapshot};

use super::bystander::{self, Bystander};
use super::report::{Report, mode_name, round};
use super::{BenchArgs, Layout, Mode, is_sql_only, load, probe, trend};
use crate::throwaway::Throwaway;

/// One measured run on a freshly loaded table.
pub(super) async fn once(
    throwaway: &Throwaway,
    args: &BenchArgs,
    runner: Runner,
) -> anyhow::Result<Report> {
    let loaded = load_tasks(throwaway, args).await?;
    let config = host_config(args, runner.clone());
    let measured = measure(throwaway, args, &loaded, config, is_sql_only(&runner)).await?;
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
async fn load_tasks(throwaway: &Throwaway, args: &BenchArgs) -> anyhow::Result<Loaded> {
    let setup = db::connect_for_bulk(&throwaway.url, 2).await?;
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
    let options = deploy::DeployOptions {
        reuse_instance: args.reuse_instance,
    };
    let tenants = load::tenants(args.tenants);
    for tenant in &tenants {
        match create_tenant(&setup, tenant, &TenantChanges::default(), None).await {
            Ok(_) | Err(TenantError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let component = if args.distinct_modules {
            recur_host::examples::marked(noop.component, tenant)
        } else {
            noop.component.to_vec()
        };
        deploy::deploy_with(&setup, &sandbox, tenant, "noop", &component, options).await?;
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
    if args.bystander > 0 {
        let tenants = bystander::tenants(args.bystander_tenants);
        bystander::load(&setup, args.bystander, &tenants, bystander_every(args)).await?;
    }
    sqlx::query("CHECKPOINT").execute(&setup).await?;
    let writes_before = probe::task_writes(&setup).await?;

    Ok(Loaded {
        setup,
        layout,
        load_time,
        writes_before,
    })
}

fn bystander_every(args: &BenchArgs) -> Duration {
    Duration::from_millis(args.bystander_every_ms)
}

/// How long after a host starts the bench counts its first executions: how fast it
/// works straight after a load, before anything has warmed up.
const FIRST_SECONDS: Duration = Duration::from_secs(10);

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
    config.sandbox.memory_reset = args.memory_reset.reset();
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
    /// Executions committed in the host's first seconds ([`FIRST_SECONDS`], or the
    /// whole run if shorter), and how long that was.
    first_seconds: (u64, Duration),
    bystander: Option<Bystander>,
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
    throwaway: &Throwaway,
    args: &BenchArgs,
    loaded: &Loaded,
    config: HostConfig,
    sql_only: bool,
) -> anyhow::Result<Measured> {
    let concurrency = config.concurrency;
    let pool = db::connect_for_host(&throwaway.url, 8).await?;
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
    let bystanders = bystander::tenants(args.bystander_tenants);
    let bystander_before = match args.bystander {
        0 => 0,
        _ => bystander::runs(&loaded.setup, &bystanders).await?,
    };
    let mut bystander_late = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut first_seconds: Option<(u64, Duration)> = None;
    let mut trend = args
        .report_every
        .map(|secs| trend::Trend::new(Duration::from_secs(secs), args.batch as i64, &host));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            // The host runs nothing more: figures from here on would mean nothing.
            _ = host.halted() => anyhow::bail!(
                "the sandbox halted (swap was turned on) and the host stopped running tasks; \
                 run the bench again (started with swap on, it uses the memory reset safe with swap)"
            ),
        }
        if let Some(trend) = &mut trend {
            trend.tick(&host, &loaded.setup).await?;
        }
        if args.bystander > 0 {
            bystander_late.record(bystander::late_ms(&loaded.setup, &bystanders).await?)?;
        }
        let committed = host.stats().committed;
        if first_seconds.is_none() && started.elapsed() >= FIRST_SECONDS {
            first_seconds = Some((committed, started.elapsed()));
        }
        let done = args.mode == Mode::Burn && committed >= burn_executions;
        if done || Instant::now() >= deadline {
            break;
        }
    }
    let first_seconds = first_seconds.unwrap_or((host.stats().committed, started.elapsed()));
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
    let bystander = match args.bystander {
        0 => None,
        tasks => Some(Bystander::of(
            tasks,
            args.bystander_tenants,
            bystander_every(args),
            bystander::runs(&loaded.setup, &bystanders).await? - bystander_before,
            window,
            &bystander_late,
        )),
    };
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
        first_seconds,
        bystander,
    })
}

/// The report of one run.
fn report(args: &BenchArgs, runner: &Runner, loaded: &Loaded, m: Measured) -> Report {
    let (host_cpu, db_cpu) = m.machine_start.percent_until(&m.machine_end);
    let (host_secs, db_secs) = m.machine_start.seconds_until(&m.machine_end);
    let per_task_us = |secs: f64| round(secs * 1e6 / m.executions.max(1) as f64, 2);
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
        concurrency: m.concurrency,
        batch: args.batch,
        layout: (args.mode == Mode::Recurring).then_some(layout),
        fillfactor: m.after.fillfactor,
        warm_modules: args.warm_modules,
        warm_memories: m.warm_memories,
        warm_resident_mb: round(m.warm_bytes as f64 / (1 << 20) as f64, 1),
        memory_reset: m.memory_reset,
        modules_compiled: m.compilations.compiled,
        modules_cached: m.compilations.cached,
        spawns: args.spawns,
        new_spawns: args.new_spawns,
        tasks_per_sec: round(m.executions as f64 / m.window.as_secs_f64(), 0),
        first_10s_tasks_per_sec: round(
            m.first_seconds.0 as f64 / m.first_seconds.1.as_secs_f64(),
            0,
        ),
        bystander: m.bystander,
        spawned_per_sec: round(m.spawned as f64 / m.window.as_secs_f64(), 0),
        executions: m.executions,
        seconds: round(m.window.as_secs_f64(), 2),
        claim_ms_p50: ms(&m.latencies.claim_us, 0.5, 1000.0),
        claim_ms_p99: ms(&m.latencies.claim_us, 0.99, 1000.0),
        commit_ms_p50: ms(&m.latencies.commit_us, 0.5, 1000.0),
        commit_ms_p99: ms(&m.latencies.commit_us, 0.99, 1000.0),
        lag_ms_p50: ms(&m.latencies.lag_ms, 0.5, 1.0),
        lag_ms_p99: ms(&m.latencies.lag_ms, 0.99, 1.0),
        tasks_per_claim: round(
            (m.stats_end.claimed - m.stats_start.claimed) as f64 / m.leases.max(1) as f64,
            1,
        ),
        // Set by `bench`, which measures them before the first run and after the last.
        noop_alone_us: 0.0,
        noop_alone_after_us: 0.0,
        exec_us_p50: ms(&m.latencies.exec_ns, 0.5, 1000.0),
        exec_us_p99: ms(&m.latencies.exec_ns, 0.99, 1000.0),
        // A wait is counted when it ends, whole: one that began before the window can
        // take a mostly idle host's share past 100.
        workers_idle_pct: round(
            ((m.stats_end.idle_us - m.stats_start.idle_us) as f64
                / (m.concurrency as f64 * m.window.as_micros() as f64)
                * 100.0)
                .min(100.0),
            1,
        ),
        db_writes_per_task: round(m.writes as f64 / m.total.executed.max(1) as f64, 2),
        wal_bytes_per_task: round(m.wal.bytes as f64 / m.executions.max(1) as f64, 0),
        wal_full_pages_per_task: round(m.wal.full_pages as f64 / m.executions.max(1) as f64, 3),
        checkpoints: m.wal.checkpoints,
        table_rows: m.table_rows,
        host_cpu_pct: round(host_cpu, 0),
        db_cpu_pct: db_cpu.map(|c| round(c, 0)),
        steal_pct: m
            .machine_start
            .steal_pct_until(&m.machine_end)
            .map(|s| round(s, 1)),
        refaults_per_sec: m
            .machine_start
            .refaults_per_sec_until(&m.machine_end)
            .map(|r| round(r, 0)),
        host_cpu_us_per_task: per_task_us(host_secs),
        db_cpu_us_per_task: db_secs.map(per_task_us),
        host_rss_mb: round(probe::peak_rss_mb(), 1),
        load_tasks_per_sec: round(args.tasks as f64 / load_time.as_secs_f64(), 0),
        dead_tuples_before: m.before.dead_tuples,
        index_bytes_before: m.before.index_bytes,
        dead_tuples_after: m.after.dead_tuples,
        index_bytes_after: m.after.index_bytes,
        due_per_page_before: m.before.due_per_page.map(|x| round(x, 1)),
        due_per_page_after: m.after.due_per_page.map(|x| round(x, 1)),
        heap_bytes_before: m.before.heap_bytes,
        heap_bytes_after: m.after.heap_bytes,
        keys_bytes: m.keys_bytes,
        intervals: m.trend.map(|t| t.intervals).unwrap_or_default(),
        ceiling_tasks_per_sec: None,
        ratio_to_ceiling: None,
        real_runs_per_sec: None,
        ceiling_runs_per_sec: None,
        database: String::new(),
        server: m.server,
    }
}
