//! `recur module deploy` and `recur module list`.

use std::path::PathBuf;

use anyhow::Context;
use sqlx::PgPool;

use recur_host::deploy::{self, DeployOptions, MAX_COMPONENT_BYTES};
use recur_host::enqueue::DEFAULT_TENANT;
use recur_host::examples::{EXAMPLES, example};
use recur_host::sandbox::{Sandbox, SandboxConfig, human_bytes};

use crate::args::CompileLimitArgs;

/// `recur module ...`
#[derive(Debug, clap::Subcommand)]
pub enum ModuleCommand {
    /// Validate a component against the task world and make it the active module of a
    /// task type. A refused component stores nothing.
    Deploy {
        /// The task type the module runs.
        task_type: String,
        /// The component (.wasm) to deploy.
        #[arg(required_unless_present = "example", conflicts_with = "example")]
        file: Option<PathBuf>,
        /// Deploy one of the example modules built into recur (noop, counter, crawler).
        #[arg(long)]
        example: Option<String>,
        /// The tenant whose tasks of this type the module runs.
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
        /// Let a worker keep the module's instance for the tenant's next task of this
        /// version and call it again, instead of a fresh instance per task (the default).
        /// Faster, at a cost in isolation: the module's statics and heap carry over from
        /// one of the tenant's tasks to the next (never to another tenant's or version's),
        /// so a module must not keep anything in memory that one task may not see from
        /// another. An instance is dropped after any error or output to stderr, after 1000
        /// runs, or once its memory grows 4 MiB past its size after its first run. Set per
        /// deployed version: the same component with the other setting is a new version.
        #[arg(long)]
        reuse_instance: bool,
        /// The component is compiled to check it, in a child process within these limits.
        #[command(flatten)]
        compile_limits: CompileLimitArgs,
    },
    /// List the active module of every tenant and task type.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(pool: &PgPool, command: ModuleCommand) -> anyhow::Result<()> {
    match command {
        ModuleCommand::Deploy {
            task_type,
            file,
            example: name,
            tenant,
            reuse_instance,
            compile_limits,
        } => {
            let component = match (file, name) {
                (Some(path), _) => read_component(&path)?,
                (None, Some(name)) => match example(&name) {
                    Some(example) => example.component.to_vec(),
                    None => {
                        let names: Vec<_> = EXAMPLES.iter().map(|e| e.name).collect();
                        anyhow::bail!(
                            "there is no example module {name:?}; the examples are {}",
                            names.join(", ")
                        );
                    }
                },
                (None, None) => anyhow::bail!("give a .wasm file or --example NAME"),
            };
            let sandbox = Sandbox::new(&SandboxConfig {
                concurrent_runs: 1,
                compiler: Some(compile_limits.compiler(None)?),
                ..SandboxConfig::default()
            })?;
            let options = DeployOptions { reuse_instance };
            let deployed =
                deploy::deploy_with(pool, &sandbox, &tenant, &task_type, &component, options)
                    .await
                    .with_context(|| {
                        format!(
                            "module refused, nothing was stored for {task_type} (tenant {tenant})"
                        )
                    })?;
            let reuse = if deployed.reuse_instance {
                ", reusing instances"
            } else {
                ""
            };
            if deployed.unchanged {
                println!(
                    "{} (tenant {}) is already at version {} with this component{reuse}; nothing changed",
                    deployed.task_type, deployed.tenant, deployed.version
                );
            } else {
                println!(
                    "deployed {} version {} for tenant {} (sha256 {}, {}{reuse}); running hosts pick it up within seconds",
                    deployed.task_type,
                    deployed.version,
                    deployed.tenant,
                    &deployed.sha256[..12],
                    human_bytes(component.len())
                );
            }
            Ok(())
        }
        ModuleCommand::List { json } => {
            let modules = deploy::list(pool).await?;
            if json {
                for module in &modules {
                    println!("{}", serde_json::to_string(module)?);
                }
            } else if modules.is_empty() {
                println!("no modules deployed; try `recur module deploy noop --example noop`");
            } else {
                println!(
                    "{:<16} {:<20} {:>7} {:>10} {:<14} {:<8} DEPLOYED",
                    "TENANT", "TYPE", "VERSION", "SIZE", "SHA256", "INSTANCE"
                );
                for m in &modules {
                    println!(
                        "{:<16} {:<20} {:>7} {:>10} {:<14} {:<8} {}",
                        m.tenant,
                        m.task_type,
                        m.version,
                        human_bytes(m.size_bytes as usize),
                        &m.sha256[..12],
                        if m.reuse_instance { "reused" } else { "fresh" },
                        m.deployed_at.format("%Y-%m-%d %H:%M:%S")
                    );
                }
            }
            Ok(())
        }
    }
}

/// Reads a component file, refusing one too large before reading it all.
fn read_component(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_COMPONENT_BYTES as u64 {
        anyhow::bail!(
            "{} is {}; a component may be at most {}",
            path.display(),
            human_bytes(meta.len() as usize),
            human_bytes(MAX_COMPONENT_BYTES)
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
