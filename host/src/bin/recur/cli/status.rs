//! `recur status`: a table (or one JSON object) of tasks per tenant and type, and a
//! line on how the tasks table lies on disk.

use sqlx::PgPool;

use recur_host::status::{DUE_SAMPLE, status};

/// Arguments of `recur status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(pool: &PgPool, args: StatusArgs) -> anyhow::Result<()> {
    let status = status(pool).await?;
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
        return Ok(());
    }
    if status.types.is_empty() {
        println!("no tasks yet; enqueue some with `recur enqueue <task-type> <key>`");
        return Ok(());
    }
    println!(
        "{:<16} {:<20} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10} {:>9}",
        "TENANT", "TYPE", "SCHEDULED", "DUE", "RUNNING", "FAILED", "DONE", "LAG", "ERRORING"
    );
    for t in &status.types {
        println!(
            "{:<16} {:<20} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10} {:>9}",
            t.tenant,
            t.task_type,
            t.scheduled,
            t.due,
            t.running,
            t.failed,
            t.done,
            format!("{:.1}s", t.lag_ms as f64 / 1000.0),
            t.erroring
        );
    }
    let table = &status.table;
    println!(
        "\ntasks table: heap {} MB, indexes {} MB, {} dead rows, fillfactor {}; {}",
        table.heap_bytes >> 20,
        table.index_bytes >> 20,
        table.dead_tuples,
        table.fillfactor,
        table.due_per_page.map_or_else(
            || "no task is scheduled".to_owned(),
            |n| format!("the next {DUE_SAMPLE} due lie {n:.1} to a heap page")
        )
    );
    Ok(())
}
