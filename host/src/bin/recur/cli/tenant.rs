//! `recur tenant`: create, list, show, change and delete tenants, and say whether the
//! other doors may create the tenants they are given.

use sqlx::PgPool;

use recur_host::tenants::{self, Tenant, TenantChanges};

/// Subcommands of `recur tenant`.
#[derive(Debug, clap::Subcommand)]
pub enum TenantCommand {
    /// Create a tenant, with the default settings unless given.
    Create {
        /// Its name.
        name: String,
        #[command(flatten)]
        settings: Settings,
        /// Print the tenant as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the tenants and their settings.
    List {
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one tenant.
    Show {
        /// Its name.
        name: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Change a tenant's settings; those not given stay as they are.
    Set {
        /// Its name.
        name: String,
        #[command(flatten)]
        settings: Settings,
        /// Print the tenant as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Delete a tenant that owns no tasks or modules (with --force, them too).
    Delete {
        /// Its name.
        name: String,
        /// Delete its tasks, keys and module versions too.
        #[arg(long)]
        force: bool,
    },
    /// Say whether enqueueing or deploying for a tenant that does not exist creates it
    /// (`on`) or is refused (`off`, the default); without a value, show the setting.
    AutoCreate {
        #[arg(value_parser = ["on", "off"])]
        value: Option<String>,
    },
}

/// A tenant's settings, as flags.
#[derive(Debug, clap::Args)]
pub struct Settings {
    /// Its share of the fleet's executions while other tenants have due work too (1 to
    /// 10000; default 1).
    #[arg(long)]
    weight: Option<i32>,
    /// Largest memory one run may grow to, in MiB (default 64).
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<i64>,
    /// Longest one run may take, in milliseconds (default 5000).
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<i32>,
    /// Tries of one run before its task is parked as failed (default 5).
    #[arg(long)]
    max_attempts: Option<i32>,
}

impl Settings {
    fn changes(&self) -> TenantChanges {
        TenantChanges {
            weight: self.weight,
            memory_bytes: self.memory_mib.map(|mib| mib.saturating_mul(1 << 20)),
            timeout_ms: self.timeout_ms,
            max_attempts: self.max_attempts,
        }
    }
}

pub async fn run(pool: &PgPool, command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create {
            name,
            settings,
            json,
        } => {
            let tenant = tenants::create(pool, &name, &settings.changes()).await?;
            print_one(&tenant, json, "created")
        }
        TenantCommand::List { json } => {
            let all = tenants::list(pool).await?;
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                print_table(&all);
            }
            Ok(())
        }
        TenantCommand::Show { name, json } => {
            print_one(&tenants::show(pool, &name).await?, json, "tenant")
        }
        TenantCommand::Set {
            name,
            settings,
            json,
        } => {
            let changes = settings.changes();
            if changes == TenantChanges::default() {
                anyhow::bail!(
                    "give a setting to change: --weight, --memory-mib, --timeout-ms or --max-attempts"
                );
            }
            print_one(&tenants::set(pool, &name, &changes).await?, json, "changed")
        }
        TenantCommand::Delete { name, force } => {
            tenants::delete(pool, &name, force).await?;
            println!("deleted tenant {name:?}");
            Ok(())
        }
        TenantCommand::AutoCreate { value } => {
            if let Some(value) = value {
                tenants::set_auto_create(pool, value == "on").await?;
            }
            let on = tenants::auto_create(pool).await?;
            println!(
                "auto-create is {}: enqueueing or deploying for a tenant that does not exist {}",
                if on { "on" } else { "off" },
                if on { "creates it" } else { "is refused" }
            );
            Ok(())
        }
    }
}

fn print_one(tenant: &Tenant, json: bool, said: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(tenant)?);
    } else {
        println!(
            "{said} {:?}: weight {}, memory {} MiB, timeout {} ms, attempts {}, {} active modules",
            tenant.name,
            tenant.weight,
            tenant.memory_bytes >> 20,
            tenant.timeout_ms,
            tenant.max_attempts,
            tenant.modules
        );
    }
    Ok(())
}

fn print_table(all: &[Tenant]) {
    let width = all.iter().map(|t| t.name.len()).max().unwrap_or(0).max(6);
    println!(
        "{:<width$}  {:>6}  {:>10}  {:>10}  {:>8}  {:>7}",
        "tenant", "weight", "memory MiB", "timeout ms", "attempts", "modules"
    );
    for t in all {
        println!(
            "{:<width$}  {:>6}  {:>10}  {:>10}  {:>8}  {:>7}",
            t.name,
            t.weight,
            t.memory_bytes >> 20,
            t.timeout_ms,
            t.max_attempts,
            t.modules
        );
    }
}
