//! `recur bench --mode enqueue`: the library's bulk enqueue (`enqueue_parallel`) of T
//! new tasks into empty tables, then of the same T again, every key existing by then.
//! The tasks are made in memory before the clock starts, so what is measured is the
//! enqueue: formatting, sending and PostgreSQL's work.

use std::time::Instant;

use serde::Serialize;

use super::report::{print_cpu, round};
use super::{Mode, probe};
use crate::throwaway::Throwaway;
use recur_host::db;
use recur_host::enqueue::{self, NewTask};

/// The figures of an enqueue bench.
#[derive(Debug, Clone, Serialize)]
pub struct EnqueueReport {
    pub mode: Mode,
    pub tasks: usize,
    pub connections: usize,
    /// New tasks enqueued per second, into empty tables.
    pub tasks_per_sec: f64,
    /// Tasks per second when every key exists already (nothing is written).
    pub existing_tasks_per_sec: f64,
    /// CPU in percent of one core while the new tasks went in; `db_cpu_pct` is null
    /// when PostgreSQL is not local.
    pub host_cpu_pct: f64,
    pub db_cpu_pct: Option<f64>,
    pub table_rows: i64,
    pub database: String,
    /// The server's version and the settings the figures depend on most.
    pub server: String,
}

/// Enqueues `tasks` tasks twice over `connections` connections on the throwaway database.
pub async fn run(
    throwaway: &Throwaway,
    tasks: usize,
    connections: usize,
) -> anyhow::Result<EnqueueReport> {
    let pool = db::connect(&throwaway.url, connections as u32 + 1).await?;
    db::migrate(&pool).await?;
    sqlx::query("TRUNCATE tasks, task_keys, claims")
        .execute(&pool)
        .await?;
    sqlx::query("CHECKPOINT").execute(&pool).await?;
    // Keys `k0`, `k1`, ...: the shape of a numbered file for `recur enqueue --bulk`, so
    // timing one compares with timing the other.
    let made: Vec<NewTask> = (0..tasks)
        .map(|i| NewTask::new("noop", format!("k{i}")))
        .collect();

    eprintln!("enqueueing {tasks} new tasks over {connections} connections…");
    let (started, cpu_start) = (Instant::now(), probe::MachineSample::take());
    let new = enqueue::enqueue_parallel(&pool, &made, connections).await?;
    let (took, cpu_end) = (started.elapsed(), probe::MachineSample::take());
    anyhow::ensure!(
        new == tasks as u64,
        "{new} of {tasks} tasks were new in empty tables"
    );

    eprintln!("enqueueing them again, every key existing…");
    let started = Instant::now();
    let again = enqueue::enqueue_parallel(&pool, &made, connections).await?;
    let took_again = started.elapsed();
    anyhow::ensure!(again == 0, "{again} tasks were new the second time");

    let (host_cpu, db_cpu) = cpu_start.percent_until(&cpu_end);
    let table_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&pool)
        .await?;
    let server = probe::server_settings(&pool).await?;
    pool.close().await;
    Ok(EnqueueReport {
        mode: Mode::Enqueue,
        tasks,
        connections,
        tasks_per_sec: round(tasks as f64 / took.as_secs_f64(), 0),
        existing_tasks_per_sec: round(tasks as f64 / took_again.as_secs_f64(), 0),
        host_cpu_pct: round(host_cpu, 0),
        db_cpu_pct: db_cpu.map(|c| round(c, 0)),
        table_rows,
        database: throwaway.description.clone(),
        server,
    })
}

/// Prints the report as `recur bench` prints its others.
pub fn print_table(r: &EnqueueReport) {
    println!();
    println!(
        "recur bench: enqueue, {} tasks over {} connections, on {}",
        r.tasks, r.connections, r.database
    );
    println!("  new tasks/s           {:>12.0}", r.tasks_per_sec);
    println!("  existing tasks/s      {:>12.0}", r.existing_tasks_per_sec);
    print_cpu(r.host_cpu_pct, r.db_cpu_pct);
    println!("  table rows            {:>12}", r.table_rows);
    println!("  server                {}", r.server);
}
