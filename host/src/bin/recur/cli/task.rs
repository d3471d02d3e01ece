//! `recur task show|list|retry|run-now`: one task, by id or by key, with its payload and
//! state; the tasks of a status, tenant or type, with their last errors; a failed task
//! put back to work; a scheduled task made due now.

use sqlx::PgPool;

use recur_host::Status;
use recur_host::enqueue::DEFAULT_TENANT;
use recur_host::inspect::{self, Filter, MAX_LIST, TaskView, Which};
use recur_host::requeue::{self, Requeue};

#[derive(Debug, clap::Subcommand)]
pub enum TaskCommand {
    /// One task: by its id, or by --type and --key (and --tenant).
    Show {
        /// The task's id.
        #[arg(required_unless_present = "key", conflicts_with = "key")]
        id: Option<i64>,
        /// The task's key, with --type.
        #[arg(long, requires = "task_type")]
        key: Option<String>,
        /// Its task type.
        #[arg(long = "type", value_name = "TYPE")]
        task_type: Option<String>,
        /// Its tenant.
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Put a failed task back to work: due now, its attempts reset (as `recur requeue`).
    Retry {
        /// The task's id.
        id: i64,
    },
    /// Make a scheduled task due now, whatever its next run time.
    RunNow {
        /// The task's id.
        id: i64,
    },
    /// Tasks, newest first; failed ones by their latest failure, with its error.
    List {
        /// Only tasks parked as failed.
        #[arg(long, conflicts_with = "done")]
        failed: bool,
        /// Only completed tasks.
        #[arg(long)]
        done: bool,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this task type's.
        #[arg(long = "type", value_name = "TYPE")]
        task_type: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=MAX_LIST))]
        limit: i64,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(pool: &PgPool, command: TaskCommand) -> anyhow::Result<()> {
    match command {
        TaskCommand::Show {
            id,
            key,
            task_type,
            tenant,
            json,
        } => {
            let which = match (id, &key, &task_type) {
                (Some(id), _, _) => Which::Id(id),
                (None, Some(key), Some(task_type)) => Which::Key {
                    tenant: &tenant,
                    task_type,
                    key,
                },
                _ => anyhow::bail!("give a task id, or --type and --key"),
            };
            let Some(task) = inspect::show(pool, &which).await? else {
                anyhow::bail!(
                    "no such task{}; `recur task list` lists tasks",
                    match &which {
                        Which::Id(id) => format!(" with id {id}"),
                        Which::Key { .. } => format!(
                            " with key {:?} of type {:?} in tenant {tenant:?}",
                            key.unwrap_or_default(),
                            task_type.unwrap_or_default()
                        ),
                    }
                );
            };
            if json {
                println!("{}", serde_json::to_string(&task)?);
            } else {
                print_one(&task);
            }
            Ok(())
        }
        TaskCommand::Retry { id } => {
            let Some(task) = inspect::show(pool, &Which::Id(id)).await? else {
                anyhow::bail!("no such task with id {id}; `recur task list` lists tasks");
            };
            let keys = [task.key.clone()];
            let which = Requeue {
                tenant: &task.tenant,
                task_type: &task.task_type,
                keys: Some(&keys),
            };
            requeue::requeue(pool, &which).await?;
            println!("task {id} is due now, its attempts reset");
            Ok(())
        }
        TaskCommand::RunNow { id } => {
            requeue::run_now(pool, id).await?;
            println!("task {id} is due now");
            Ok(())
        }
        TaskCommand::List {
            failed,
            done,
            tenant,
            task_type,
            limit,
            json,
        } => {
            let status = if failed {
                Some(Status::Failed)
            } else if done {
                Some(Status::Done)
            } else {
                None
            };
            let filter = Filter {
                status,
                tenant: tenant.as_deref(),
                task_type: task_type.as_deref(),
                limit,
            };
            let tasks = inspect::list(pool, &filter).await?;
            if json {
                println!("{}", serde_json::to_string(&tasks)?);
            } else if tasks.is_empty() {
                println!("no such tasks");
            } else {
                print_table(&tasks);
            }
            Ok(())
        }
    }
}

fn print_one(task: &TaskView) {
    println!(
        "task {} ({}/{}/{})",
        task.id, task.tenant, task.task_type, task.key
    );
    println!("  status      {}", task.status);
    println!(
        "  next run    {}",
        task.next_run_at.format("%Y-%m-%d %H:%M:%S%.3f UTC")
    );
    println!(
        "  attempt     {}, {} successful runs",
        task.attempt, task.runs
    );
    if let Some(error) = &task.last_error {
        println!("  last error  {error}");
    }
    println!("  payload     {}", task.payload.as_deref().unwrap_or(""));
    println!(
        "  state       {}",
        task.state.as_deref().unwrap_or("(none)")
    );
    println!(
        "  created     {}",
        task.created_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    println!(
        "  updated     {}",
        task.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
}

fn print_table(tasks: &[TaskView]) {
    println!(
        "{:>10}  {:<12}  {:<16}  {:<24}  {:<9}  {:>7}  {:>7}  last error",
        "id", "tenant", "type", "key", "status", "attempt", "runs"
    );
    for t in tasks {
        println!(
            "{:>10}  {:<12}  {:<16}  {:<24}  {:<9}  {:>7}  {:>7}  {}",
            t.id,
            t.tenant,
            t.task_type,
            t.key,
            t.status,
            t.attempt,
            t.runs,
            t.last_error.as_deref().unwrap_or("")
        );
    }
}
