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
        /// Also create a login role that acts for this tenant alone (named after it, or
        /// ROLE), and print how its team connects.
        #[arg(long, value_name = "ROLE", num_args = 0..=1, default_missing_value = "")]
        login: Option<String>,
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
    /// The largest payload its tasks may be enqueued with (default and most 1 MiB).
    #[arg(long, value_name = "BYTES")]
    max_payload_bytes: Option<i32>,
    /// The largest state one of its runs may keep (default and most 256 KiB).
    #[arg(long, value_name = "BYTES")]
    max_state_bytes: Option<i32>,
    /// The most tasks one of its runs may spawn (default and most 1000).
    #[arg(long, value_name = "N")]
    max_spawns: Option<i32>,
    /// The most scheduled tasks it may have; `none` removes the quota (default: none).
    /// Enqueues past it are refused; a run whose spawns would pass it is retried at the
    /// next minute.
    #[arg(long, value_name = "N|none", value_parser = quota::<i64>)]
    max_tasks: Option<Quota<i64>>,
    /// The most runs it may have in flight across the whole fleet, 1 to 100000; `none`
    /// removes the quota (default: none). Hosts claim its tasks only while it has room.
    #[arg(long, value_name = "N|none", value_parser = quota::<i32>)]
    max_running: Option<Quota<i32>>,
    /// The most tasks its runs may spawn per minute across the whole fleet; `none`
    /// removes the quota (default: none). A run whose spawns this minute's budget does
    /// not hold is retried in the next minute.
    #[arg(long, value_name = "N|none", value_parser = quota::<i32>)]
    max_spawns_per_minute: Option<Quota<i32>>,
}

/// A quota flag's value: a count, or none.
#[derive(Debug, Clone, Copy)]
struct Quota<T>(Option<T>);

fn quota<T: std::str::FromStr + Default + PartialOrd>(text: &str) -> Result<Quota<T>, String> {
    if text == "none" {
        return Ok(Quota(None));
    }
    text.parse::<T>()
        .ok()
        .filter(|n| *n >= T::default())
        .map(|n| Quota(Some(n)))
        .ok_or_else(|| format!("{text:?} is not a count; give a number, or none"))
}

impl Settings {
    fn changes(&self) -> TenantChanges {
        TenantChanges {
            weight: self.weight,
            memory_bytes: self.memory_mib.map(|mib| mib.saturating_mul(1 << 20)),
            timeout_ms: self.timeout_ms,
            max_attempts: self.max_attempts,
            max_payload_bytes: self.max_payload_bytes,
            max_state_bytes: self.max_state_bytes,
            max_spawns: self.max_spawns,
            max_tasks: self.max_tasks.map(|quota| quota.0),
            max_running: self.max_running.map(|quota| quota.0),
            max_spawns_per_minute: self.max_spawns_per_minute.map(|quota| quota.0),
        }
    }
}

pub async fn run(pool: &PgPool, url: &str, command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create {
            name,
            settings,
            login,
            json,
        } => {
            let role = login.map(|role| if role.is_empty() { name.clone() } else { role });
            let (tenant, login) =
                tenants::create(pool, &name, &settings.changes(), role.as_deref()).await?;
            print_one(&tenant, json, "created")?;
            if let Some(login) = login {
                // On stderr, so that --json's stdout stays one object.
                eprintln!(
                    "tenant {name:?} connects as role {:?} (password shown once): DATABASE_URL={}",
                    login.role,
                    url_as(url, &login.role, &login.password)
                );
            }
            Ok(())
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
                    "give a setting to change: --weight, --memory-mib, --timeout-ms, --max-attempts, --max-payload-bytes, --max-state-bytes, --max-spawns, --max-spawns-per-minute, --max-tasks or --max-running"
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
            "{said} {:?}: weight {}, memory {} MiB, timeout {} ms, attempts {}, payload {} B, state {} B, spawns {}, spawns per minute {}, tasks {}, running {}, {} active modules{}",
            tenant.name,
            tenant.weight,
            tenant.memory_bytes >> 20,
            tenant.timeout_ms,
            tenant.max_attempts,
            tenant.max_payload_bytes,
            tenant.max_state_bytes,
            tenant.max_spawns,
            tenant
                .max_spawns_per_minute
                .map_or("unlimited".to_owned(), |n| n.to_string()),
            tenant
                .max_tasks
                .map_or("unlimited".to_owned(), |n| n.to_string()),
            tenant
                .max_running
                .map_or("unlimited".to_owned(), |n| n.to_string()),
            tenant.modules,
            match &tenant.role {
                Some(role) => format!(", login role {role:?}"),
                None => String::new(),
            }
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

/// `url` with the user and password replaced by `role` and `password`.
fn url_as(url: &str, role: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!(
        "{scheme}://{}:{password}@{host}{}",
        percent_encode(role),
        &rest[authority_end..]
    )
}

/// `text` with every byte but unreserved URL characters percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::url_as;

    #[test]
    fn a_tenants_url_keeps_the_server_and_database() {
        assert_eq!(
            url_as("postgres://postgres@127.0.0.1:5432/recur", "acme", "pw"),
            "postgres://acme:pw@127.0.0.1:5432/recur"
        );
        assert_eq!(
            url_as(
                "postgresql://op:secret@db.example/recur?sslmode=require",
                "a b",
                "pw"
            ),
            "postgresql://a%20b:pw@db.example/recur?sslmode=require"
        );
        assert_eq!(
            url_as("postgres://localhost", "t", "pw"),
            "postgres://t:pw@localhost"
        );
    }
}
