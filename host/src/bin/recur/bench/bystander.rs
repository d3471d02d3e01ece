//! `recur bench --bystander N`: a small tenant beside the bench's load, as a team on a
//! shared fleet sees it beside a big neighbour. Tenant `bystander` gets N noop tasks
//! due every `--bystander-every-ms`, enqueued through the library's door after the
//! main load; the bench reports how many of its due runs it ran in the window and how
//! late its oldest due task was, sampled as the run goes.

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

/// The bystander's tenant.
pub const TENANT: &str = "bystander";

/// Creates the tenant, deploys noop for it and enqueues `tasks` tasks due every
/// `every`, their first runs spread over one interval from now.
pub async fn load(pool: &PgPool, tasks: u32, every: Duration) -> anyhow::Result<()> {
    match create_tenant(pool, TENANT, &TenantChanges::default(), None).await {
        Ok(_) | Err(TenantError::Exists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let sandbox = Sandbox::new(&SandboxConfig {
        concurrent_runs: 1,
        ..SandboxConfig::default()
    })?;
    let noop = example("noop").expect("the noop example is built in");
    deploy::deploy(pool, &sandbox, TENANT, "noop", noop.component).await?;
    let now = chrono::Utc::now();
    let payload = format!(r#"{{"every_ms": {}}}"#, every.as_millis()).into_bytes();
    let new: Vec<NewTask> = (0..tasks)
        .map(|i| NewTask {
            tenant: TENANT.into(),
            payload: payload.clone(),
            run_at: Some(now + every.mul_f64(f64::from(i) / f64::from(tasks.max(1)))),
            ..NewTask::new("noop", format!("b{i}"))
        })
        .collect();
    enqueue::enqueue(pool, &new).await?;
    Ok(())
}

/// Successful runs of the bystander's tasks so far.
pub async fn runs(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(runs), 0)::bigint FROM tasks WHERE tenant = $1 AND status = 0",
    )
    .bind(TENANT)
    .fetch_one(pool)
    .await?)
}

/// How late, in milliseconds, the bystander's oldest due task is now (0: none is due).
/// A task a host has claimed but not committed still counts as due under a locked
/// claim, so this is the lateness of its run's end, not only of its start.
pub async fn late_ms(pool: &PgPool) -> anyhow::Result<u64> {
    let late: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - min(next_run_at))::float8 * 1000 FROM tasks
         WHERE tenant = $1 AND status = 0 AND next_run_at <= now()",
    )
    .bind(TENANT)
    .fetch_one(pool)
    .await?;
    Ok(late.unwrap_or(0.0).max(0.0) as u64)
}

/// What the bench measured of the bystander over the window.
#[derive(Debug, Clone, Serialize)]
pub struct Bystander {
    pub tasks: u32,
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
        every: Duration,
        runs: i64,
        window: Duration,
        late: &Histogram<u64>,
    ) -> Bystander {
        let due_runs = f64::from(tasks) * window.as_secs_f64() / every.as_secs_f64();
        Bystander {
            tasks,
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
