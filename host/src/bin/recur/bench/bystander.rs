//! `recur bench --bystander N`: small tenants beside the bench's load, as teams on a
//! shared fleet see it beside a big neighbour. N noop tasks due every
//! `--bystander-every-ms`, spread over `--bystander-tenants` tenants (`bystander`, or
//! `bystander-0`, `bystander-1`...), enqueued through the library's door after the main
//! load; the bench reports how many of their due runs they ran in the window and how late
//! their oldest due task was, sampled as the run goes.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use sqlx::PgPool;

use recur_host::deploy;
use recur_host::enqueue::{self, NewTask};
use recur_host::examples::example;
use recur_host::sandbox::{Sandbox, SandboxConfig};
use recur_host::tenants::{TenantChanges, TenantError, create as create_tenant};

use super::report::round;

/// The bystanders' tenants: `bystander` alone, or `bystander-0`, `bystander-1`...
pub fn tenants(count: u32) -> Vec<String> {
    if count == 1 {
        return vec!["bystander".into()];
    }
    (0..count).map(|i| format!("bystander-{i}")).collect()
}

/// Creates the tenants, deploys noop for each and enqueues `tasks` tasks due every
/// `every`, spread over the tenants in turn, their first runs over one interval from now.
/// noop is validated once: the other tenants get a copy of the first one's module row,
/// as deploying the same bytes would make.
pub async fn load(
    pool: &PgPool,
    tasks: u32,
    tenants: &[String],
    every: Duration,
) -> anyhow::Result<()> {
    for tenant in tenants {
        match create_tenant(pool, tenant, &TenantChanges::default(), None).await {
            Ok(_) | Err(TenantError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let sandbox = Sandbox::new(&SandboxConfig {
        concurrent_runs: 1,
        ..SandboxConfig::default()
    })?;
    let noop = example("noop").expect("the noop example is built in");
    deploy::deploy(pool, &sandbox, &tenants[0], "noop", noop.component).await?;
    sqlx::query(
        "INSERT INTO modules (tenant, task_type, version, sha256, component, reuse_instance)
         SELECT t, task_type, version, sha256, component, reuse_instance
         FROM modules, unnest($2::text[]) AS t
         WHERE tenant = $1 AND task_type = 'noop'",
    )
    .bind(&tenants[0])
    .bind(&tenants[1..])
    .execute(pool)
    .await?;
    let now = chrono::Utc::now();
    let payload = format!(r#"{{"every_ms": {}}}"#, every.as_millis()).into_bytes();
    let new: Vec<NewTask> = (0..tasks)
        .map(|i| NewTask {
            tenant: tenants[i as usize % tenants.len()].clone(),
            payload: payload.clone(),
            run_at: Some(now + every.mul_f64(f64::from(i) / f64::from(tasks.max(1)))),
            ..NewTask::new("noop", format!("b{i}"))
        })
        .collect();
    enqueue::enqueue(pool, &new).await?;
    Ok(())
}

/// Successful runs of the bystanders' tasks so far.
pub async fn runs(pool: &PgPool, tenants: &[String]) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(runs), 0)::bigint FROM tasks
         WHERE tenant = ANY($1) AND status = 0",
    )
    .bind(tenants)
    .fetch_one(pool)
    .await?)
}

/// How late, in milliseconds, the bystanders' oldest due task is now (0: none is due).
/// A task a host has claimed but not committed still counts as due under a locked
/// claim, so this is the lateness of its run's end, not only of its start.
pub async fn late_ms(pool: &PgPool, tenants: &[String]) -> anyhow::Result<u64> {
    let late: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - min(next_run_at))::float8 * 1000 FROM tasks
         WHERE tenant = ANY($1) AND status = 0 AND next_run_at <= now()",
    )
    .bind(tenants)
    .fetch_one(pool)
    .await?;
    Ok(late.unwrap_or(0.0).max(0.0) as u64)
}

/// What the bench measured of the bystander over the window.
#[derive(Debug, Clone, Serialize)]
pub struct Bystander {
    pub tasks: u32,
    pub tenants: u32,
    pub every_ms: u64,
    /// Its runs in the window, and how many were due (tasks × window / interval).
    pub runs: i64,
    pub due_runs: f64,
    /// Runs over due runs, in percent.
    pub ran_pct: f64,
    /// How late its oldest due task was, sampled through the window.
    pub late_ms_p50: f64,
    pub late_ms_p99: f64,
    pub late_ms_max: f64,
}

impl Bystander {
    /// The figures of a window of `window` in which it ran `runs` times, with `late`
    /// sampled.
    pub fn of(
        tasks: u32,
        tenants: u32,
        every: Duration,
        runs: i64,
        window: Duration,
        late: &Histogram<u64>,
    ) -> Bystander {
        let due_runs = f64::from(tasks) * window.as_secs_f64() / every.as_secs_f64();
        Bystander {
            tasks,
            tenants,
            every_ms: every.as_millis() as u64,
            runs,
            due_runs: round(due_runs, 0),
            ran_pct: round(runs as f64 / due_runs.max(1.0) * 100.0, 1),
            late_ms_p50: late.value_at_quantile(0.5) as f64,
            late_ms_p99: late.value_at_quantile(0.99) as f64,
            late_ms_max: late.max() as f64,
        }
    }
}
