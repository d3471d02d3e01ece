//! `recur demo`: the quick start in one command. It gets a fresh `recur_demo` database
//! (see `throwaway`: on DATABASE_URL's server, else localhost:5432, else a private
//! cluster), deploys the example modules, enqueues N tasks across them, runs a host for
//! S seconds and prints what happened.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::throwaway::Throwaway;
use recur_host::db;
use recur_host::deploy;
use recur_host::enqueue::{self, DEFAULT_TENANT, NewTask};
use recur_host::examples::EXAMPLES;
use recur_host::sandbox::{Sandbox, SandboxConfig};
use recur_host::{Host, HostConfig};

/// The database the demo creates (and recreates on each run) on a server it finds.
pub const DEMO_DATABASE: &str = "recur_demo";

/// Arguments of `recur demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Tasks to enqueue across the example modules.
    #[arg(long, default_value_t = 10_000)]
    pub tasks: usize,
    /// Seconds to run the host.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// End with one JSON line of the results.
    #[arg(long)]
    pub json: bool,
}

/// What the demo measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Where the database came from: `DATABASE_URL`, `localhost`, or `private cluster`.
    pub database: String,
    /// The private cluster's directory, removed before the demo returns (when used).
    pub cluster_dir: Option<String>,
    /// Tasks enqueued.
    pub enqueued: u64,
    /// Executions in the sandbox.
    pub executed: u64,
    /// Tasks that completed.
    pub completed: u64,
    /// Runs that rescheduled their task.
    pub rescheduled: u64,
    /// New tasks the crawler spawned (duplicates absorbed are not counted).
    pub spawned: u64,
    /// Tasks parked as failed.
    pub failed: u64,
    /// Runs that will be retried.
    pub retried: u64,
    /// Executions per second over the run.
    pub tasks_per_sec: f64,
    /// Seconds the host ran.
    pub seconds: f64,
}

/// Runs the demo and prints its summary.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (summary, table) = demo(&args).await?;
    println!();
    println!(
        "recur demo: {} tasks for {:.1} s on {}",
        summary.enqueued, summary.seconds, summary.database
    );
    println!("  executed     {:>10}", summary.executed);
    println!("  rescheduled  {:>10}", summary.rescheduled);
    println!("  completed    {:>10}", summary.completed);
    println!("  spawned      {:>10}", summary.spawned);
    println!("  retried      {:>10}", summary.retried);
    println!("  failed       {:>10}", summary.failed);
    println!("  tasks/s      {:>10.0}", summary.tasks_per_sec);
    println!();
    println!("{table}");
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// Runs the demo and returns its summary and a status table of the end state.
pub async fn demo(args: &DemoArgs) -> anyhow::Result<(Summary, String)> {
    let throwaway = Throwaway::create(DEMO_DATABASE).await?;
    // Ctrl-C anywhere in the demo must still stop and remove a private cluster, so the
    // whole run races the signal instead of leaving SIGINT's default (exit at once).
    let result = tokio::select! {
        result = work(&throwaway.url, args) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let (database, cluster_dir) = (throwaway.description.clone(), throwaway.cluster_dir());
    drop(throwaway);
    let (mut summary, table) = result?;
    summary.database = database;
    summary.cluster_dir = cluster_dir;
    Ok((summary, table))
}

async fn work(url: &str, args: &DemoArgs) -> anyhow::Result<(Summary, String)> {
    let pool = db::connect(url, 8).await?;
    db::migrate(&pool).await?;
    let sandbox = Sandbox::new(&SandboxConfig {
        concurrent_runs: 1,
        ..SandboxConfig::default()
    })?;
    for example in EXAMPLES {
        deploy::deploy(
            &pool,
            &sandbox,
            DEFAULT_TENANT,
            example.name,
            example.component,
        )
        .await?;
    }
    drop(sandbox);
    let tasks = workload(args.tasks);
    let enqueued = enqueue::enqueue(&pool, &tasks).await?;
    eprintln!(
        "enqueued {enqueued} tasks; running a host for {} s…",
        args.seconds
    );

    let started = Instant::now();
    let host = Host::start(pool.clone(), HostConfig::default())?;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(args.seconds)) => {}
        _ = host.halted() => anyhow::bail!(
            "the sandbox halted (swap was turned on) and the host stopped running tasks; \
             run the demo again"
        ),
    }
    let stats = host.stop().await;
    let seconds = started.elapsed().as_secs_f64();
    let status = recur_host::status::status(&pool).await?;
    let mut table = String::from("TYPE        SCHEDULED     DUE  RUNNING  FAILED    DONE");
    for t in &status.types {
        table.push_str(&format!(
            "\n{:<10} {:>10} {:>7} {:>8} {:>7} {:>7}",
            t.task_type, t.scheduled, t.due, t.running, t.failed, t.done
        ));
    }
    pool.close().await;
    let summary = Summary {
        database: String::new(),
        cluster_dir: None,
        enqueued,
        executed: stats.executed,
        completed: stats.completed,
        rescheduled: stats.rescheduled,
        spawned: stats.spawned,
        failed: stats.failed,
        retried: stats.retried,
        tasks_per_sec: (stats.executed as f64 / seconds * 10.0).round() / 10.0,
        seconds: (seconds * 10.0).round() / 10.0,
    };
    Ok((summary, table))
}

/// The demo's tasks: most are noop pollers revisiting every second, some one-shot
/// noops, counters that finish after five runs, and crawler seeds whose children land
/// in a small key space, so that duplicate spawns are absorbed.
fn workload(n: usize) -> Vec<NewTask> {
    (0..n)
        .map(|i| {
            let (task_type, key, payload) = match i % 10 {
                0..=4 => (
                    "noop",
                    format!("poll-{i}"),
                    r#"{"every_ms": 1000}"#.to_owned(),
                ),
                5 | 6 => ("noop", format!("once-{i}"), String::new()),
                7 | 8 => (
                    "counter",
                    format!("count-{i}"),
                    r#"{"runs": 5, "every_ms": 500}"#.to_owned(),
                ),
                _ => (
                    "crawler",
                    format!("https://site-{}.example/page/{}", i % 50, i / 50),
                    r#"{"sites": 50, "pages": 400, "fanout": 2, "min_ms": 1000, "max_ms": 8000}"#
                        .to_owned(),
                ),
            };
            NewTask {
                payload: payload.into_bytes(),
                ..NewTask::new(task_type, key)
            }
        })
        .collect()
}
