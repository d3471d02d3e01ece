//! `recur requeue`: put tasks parked as failed back to work, due now.

use sqlx::PgPool;

use recur_host::enqueue::DEFAULT_TENANT;
use recur_host::requeue::{Requeue, requeue};

/// Arguments of `recur requeue`.
#[derive(Debug, clap::Args)]
pub struct RequeueArgs {
    /// The task type.
    task_type: String,
    /// Keys of the failed tasks to requeue.
    #[arg(conflicts_with = "all_failed")]
    keys: Vec<String>,
    /// Requeue every failed task of the type instead of naming keys.
    #[arg(long)]
    all_failed: bool,
    /// The tenant.
    #[arg(long, default_value = DEFAULT_TENANT)]
    tenant: String,
}

pub async fn run(pool: &PgPool, args: RequeueArgs) -> anyhow::Result<()> {
    if args.keys.is_empty() && !args.all_failed {
        anyhow::bail!(
            "name the keys of the failed tasks to requeue, or pass --all-failed to requeue every failed task of type {:?}",
            args.task_type
        );
    }
    let which = Requeue {
        tenant: &args.tenant,
        task_type: &args.task_type,
        keys: (!args.all_failed).then_some(args.keys.as_slice()),
    };
    let n = requeue(pool, &which).await?;
    println!(
        "requeued {n} failed task{} of type {:?} in tenant {:?}; due now",
        if n == 1 { "" } else { "s" },
        args.task_type,
        args.tenant
    );
    Ok(())
}
