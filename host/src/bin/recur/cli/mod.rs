//! The `recur` command line: argument parsing (clap) and dispatch to one file per
//! subcommand. Every error reaches `main` and is printed once, on one line.

mod deploy;
mod enqueue;
mod host;
mod hosts;
mod requeue;
mod settings;
mod status;
mod task;
mod tenant;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use sqlx::PgPool;

use recur_host::db;

/// recur runs recurring tasks for many teams on PostgreSQL, with the task logic in
/// sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "recur", version, about, long_about = None)]
pub struct Cli {
    /// PostgreSQL to use.
    #[arg(long, env = "DATABASE_URL", global = true, default_value = db::DEFAULT_DATABASE_URL, hide_default_value = true)]
    database_url: String,
    /// Log filter (tracing-subscriber syntax, e.g. `info` or `recur=debug`); also RECUR_LOG.
    #[arg(long, env = "RECUR_LOG", global = true)]
    log: Option<String>,
    /// How log lines are written to stderr: `human`, or `json`, one object a line with
    /// its fields (a guest's lines carry task, tenant, task_type and version) for a log
    /// collector; also RECUR_LOG_FORMAT.
    #[arg(long, env = "RECUR_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade recur's tables (idempotent).
    Migrate,
    /// Create, list, change and delete tenants.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Deploy and list modules.
    #[command(subcommand)]
    Module(deploy::ModuleCommand),
    /// Enqueue one task, or many from JSON lines on stdin with --bulk.
    Enqueue(enqueue::EnqueueArgs),
    /// Lease, run and commit tasks until SIGINT or SIGTERM.
    Host(host::HostArgs),
    /// Show tasks per tenant and type: scheduled, due, running, failed, done, lag.
    Status(status::StatusArgs),
    /// List the hosts running now: machine, process, version, workers, tasks in flight.
    Hosts(hosts::HostsArgs),
    /// Show one task, or list tasks with their last errors.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Put tasks parked as failed back to work, due now, their attempts reset.
    Requeue(requeue::RequeueArgs),
    /// Run the quick start: a database, the example modules, N tasks, S seconds of hosting.
    Demo(crate::demo::DemoArgs),
    /// Measure throughput and latency on a fresh database.
    Bench(crate::bench::BenchArgs),
    /// Compile the component on stdin and write the artifact to stdout: what a host runs
    /// in a child process to compile within its limits (`recur host --compile-timeout`).
    #[command(hide = true)]
    CompileComponent(host::CompileComponentArgs),
}

/// Parses the arguments (with a host's config file, see `settings.rs`), runs the
/// command and prints any error on one line.
pub fn main() -> ExitCode {
    let args = match settings::with_config_file(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => return usage_error(err),
    };
    if let Command::Host(args) = &cli.command
        && args.print_config
    {
        print!("{}", settings::print_config(&matches));
        return ExitCode::SUCCESS;
    }
    // A host's compile child: no runtime, no log, no database.
    if let Command::CompileComponent(args) = cli.command {
        return ExitCode::from(recur_host::sandbox::serve_compile(args.compile_cache) as u8);
    }
    let quiet_by_default = matches!(
        cli.command,
        Command::Demo(_)
            | Command::Bench(_)
            | Command::Status(_)
            | Command::Hosts(_)
            | Command::Task(_)
            | Command::Enqueue(_)
            | Command::Requeue(_)
            | Command::Tenant(_)
    );
    init_logging(
        cli.log.as_deref(),
        if quiet_by_default { "warn" } else { "info" },
        cli.log_format,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// Prints a command-line mistake on one line (clap's own rendering spans several, with
/// the usage) and exits 2; `--help` and `--version` print as clap renders them.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    // clap's message: the complaint, maybe the values it concerns on lines of their own,
    // maybe a tip, then the usage. Everything before the usage goes on one line.
    let rendered = err.render().to_string();
    let mut parts = Vec::new();
    for line in rendered.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if let Some(tip) = line.strip_prefix("tip: ") {
            parts.push(format!("({tip})"));
        } else if !line.is_empty() {
            parts.push(line.strip_prefix("error: ").unwrap_or(line).to_owned());
        }
    }
    eprintln!("error: {}; see `recur --help`", parts.join(" "));
    ExitCode::from(2)
}

/// An error and its causes on one line. Many errors repeat their cause in their own
/// message (a driver error quoting the server's), so a cause already said is skipped.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(text.trim()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text.trim());
    }
    line
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let url = cli.database_url;
    match cli.command {
        Command::Migrate => {
            let pool = db::connect(&url, 2).await?;
            db::migrate(&pool).await?;
            let version = db::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
            println!("migrations applied; the schema is at version {version}");
            Ok(())
        }
        Command::Tenant(command) => {
            tenant::run(&connect_migrated(&url).await?, &url, command).await
        }
        Command::Module(command) => deploy::run(&connect_migrated(&url).await?, command).await,
        Command::Enqueue(args) => {
            let pool = db::connect(&url, args.pool_size().max(8)).await?;
            db::check_schema(&pool).await?;
            enqueue::run(&pool, args).await
        }
        Command::Host(args) => {
            let pool = db::connect_for_host(&url, 8).await?;
            db::check_schema(&pool).await?;
            host::run(pool, args).await
        }
        Command::Status(args) => status::run(&connect_migrated(&url).await?, args).await,
        Command::Hosts(args) => hosts::run(&connect_migrated(&url).await?, args).await,
        Command::Task(command) => task::run(&connect_migrated(&url).await?, command).await,
        Command::Requeue(args) => requeue::run(&connect_migrated(&url).await?, args).await,
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Bench(args) => crate::bench::run(args).await,
        Command::CompileComponent(_) => unreachable!("answered before the runtime starts"),
    }
}

/// Connects and checks that the schema is current. Eight connections, as for a host,
/// whose locked claims hold one each while their batch runs (sqlx opens them only when
/// needed).
async fn connect_migrated(url: &str) -> anyhow::Result<PgPool> {
    let pool = db::connect(url, 8).await?;
    db::check_schema(&pool).await?;
    Ok(pool)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Text for people, coloured on a terminal.
    Human,
    /// One JSON object a line: timestamp, level, target, and the event's fields.
    Json,
}

fn init_logging(filter: Option<&str>, default: &str, format: LogFormat) {
    let filter = filter
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|err| {
        eprintln!("warning: ignoring log filter {filter:?}: {err}");
        tracing_subscriber::EnvFilter::new(default)
    });
    // Colours only on a terminal: a host's stderr usually ends up in a file or a log
    // collector, where escape codes would garble every line (and every grep).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => logger.with_ansi(ansi).init(),
        // The event's fields at the top level of each object, beside its level and target,
        // where a collector indexes them.
        LogFormat::Json => logger.json().flatten_event(true).init(),
    }
}
