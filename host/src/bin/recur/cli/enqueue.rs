//! `recur enqueue`: one task from arguments, or many from JSON lines on stdin (`--bulk`).
//!
//! A bulk enqueue is all or nothing: every line is parsed and checked, and the tasks are
//! written in transactions (one per connection, see `enqueue::BulkLoad`) that are
//! rolled back if any line is wrong; the errors are reported with their line numbers. A
//! thread parses stdin into COPY rows while the connections send the rows before them,
//! so reading, parsing and PostgreSQL's work overlap.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};

use anyhow::Context;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::oneshot;

use crate::args::parse_at;
use recur_host::enqueue::{self, DEFAULT_TENANT, NewTask};
use recur_host::tenants::{self, PayloadQuotas};

/// How many bad lines a bulk enqueue reports before it stops reading.
const MAX_REPORTED_ERRORS: usize = 10;
/// Longest line `--bulk` reads: the largest payload and room for the other fields. A
/// longer line is refused before it is read whole, so a stray binary file piped in
/// cannot exhaust memory.
const MAX_LINE_BYTES: usize = enqueue::MAX_PAYLOAD_BYTES * 6 + 64 * 1024;
/// Pieces of rows between the thread that parses stdin and the connection: enough that
/// neither waits on the other's hiccups.
const PIECES_IN_FLIGHT: usize = 4;
/// stdin is read in blocks this large.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Arguments of `recur enqueue`.
#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {
    /// The task type (names the module that runs it).
    #[arg(required_unless_present = "bulk", conflicts_with = "bulk")]
    task_type: Option<String>,
    /// The task's key, unique within its tenant and type.
    #[arg(required_unless_present = "bulk", conflicts_with = "bulk")]
    key: Option<String>,
    /// The payload, as JSON.
    #[arg(long, conflicts_with = "bulk")]
    payload: Option<String>,
    /// First run: RFC 3339, `now`, or a delay like +30s (default: now).
    #[arg(long, conflicts_with = "bulk")]
    at: Option<String>,
    /// The tenant (in --bulk mode, the default for lines without one).
    #[arg(long, default_value = DEFAULT_TENANT)]
    tenant: String,
    /// Read tasks from stdin, one JSON object a line:
    /// {"type": "...", "key": "...", "payload": {...}, "at": "<RFC 3339 or +30s>", "tenant": "..."}
    #[arg(long)]
    bulk: bool,
    /// Enqueue even when no module is deployed for the task type (the tasks then wait,
    /// with an error saying which deploy is missing, until one is).
    #[arg(long)]
    allow_undeployed: bool,
    /// With --bulk, how many connections write at once, each the tasks whose keys hash
    /// to it; one keeps a database core busy. All commit together at the end
    /// [default: 2]
    #[arg(long, conflicts_with = "task_type",
          value_parser = clap::value_parser!(u16).range(1..=enqueue::MAX_CONNECTIONS as i64))]
    connections: Option<u16>,
}

/// Connections of a bulk enqueue unless `--connections` says otherwise: each keeps one
/// database core busy, so two use a small server's cores, and more connections than
/// the server has cores only contend with each other for them.
const DEFAULT_CONNECTIONS: u16 = 2;

impl EnqueueArgs {
    /// Connections the command needs: the bulk load's, and one to look up modules.
    pub fn pool_size(&self) -> u32 {
        u32::from(self.connections()) + 1
    }

    fn connections(&self) -> u16 {
        self.connections.unwrap_or(DEFAULT_CONNECTIONS)
    }
}

/// One line of bulk input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(rename = "type")]
    task_type: String,
    key: String,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    /// RFC 3339, `now` or `+30s`, as for `--at`.
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

pub async fn run(pool: &PgPool, args: EnqueueArgs) -> anyhow::Result<()> {
    if args.bulk {
        let connections = usize::from(args.connections());
        return bulk(pool, &args.tenant, args.allow_undeployed, connections).await;
    }
    let (Some(task_type), Some(key)) = (args.task_type, args.key) else {
        anyhow::bail!("give a task type and a key, or --bulk");
    };
    let payload = match &args.payload {
        Some(text) => {
            let value: serde_json::Value = serde_json::from_str(text)
                .with_context(|| format!("--payload is not valid JSON: {text:?}"))?;
            serde_json::to_vec(&value)?
        }
        None => Vec::new(),
    };
    let run_at = match &args.at {
        Some(at) => parse_at(at).map_err(|e| anyhow::anyhow!("--at {e}"))?,
        None => None,
    };
    let task = NewTask {
        tenant: args.tenant,
        task_type,
        key,
        payload,
        run_at,
    };
    task.check().map_err(anyhow::Error::msg)?;
    // Before looking for its module: a tenant's role sees no other tenant's modules.
    let mut conn = pool.acquire().await?;
    tenants::require_own(&mut conn, &[&task.tenant])
        .await
        .map_err(refused)?;
    drop(conn);
    if !args.allow_undeployed {
        let mut types = Types::new();
        note_type(&mut types, &task, 0);
        undeployed(pool, types).await?;
    }
    let new = enqueue::enqueue(pool, std::slice::from_ref(&task)).await?;
    if new == 1 {
        println!("enqueued 1 new task");
    } else {
        println!(
            "a task with key {:?} exists already (type {}, tenant {}); nothing changed",
            task.key, task.task_type, task.tenant
        );
    }
    Ok(())
}

async fn bulk(
    pool: &PgPool,
    default_tenant: &str,
    allow_undeployed: bool,
    connections: usize,
) -> anyhow::Result<()> {
    let mut load = enqueue::BulkLoad::begin(pool, connections).await?;
    let quotas = tenants::payload_quotas(load.connection(), None).await?;
    let (writer, sources) = load.writer(PIECES_IN_FLIGHT);
    let (done, parsed) = oneshot::channel();
    let default_tenant = default_tenant.to_owned();
    // A thread of its own rather than the runtime's blocking pool: when the database
    // fails, the error is reported at once, and the process exits without waiting for
    // a read of stdin that may never end.
    std::thread::Builder::new()
        .name("recur-stdin".into())
        .spawn(move || {
            let mut stdin = io::BufReader::with_capacity(READ_BUFFER_BYTES, io::stdin().lock());
            let _ = done.send(parse(&mut stdin, &default_tenant, &quotas, writer));
        })
        .context("cannot start a thread to read stdin")?;
    // After a bad line the parser stops sending, and this returns without error. On an
    // error it returns at once, without waiting for a read of stdin that may never end.
    let new = match load.insert(sources).await {
        Ok(new) => new,
        Err(e @ enqueue::EnqueueError::Deadlock(_)) => return Err(e.into()),
        Err(e) => anyhow::bail!("{}; nothing was enqueued", explain(pool, e).await),
    };
    let parsed = parsed
        .await
        .context("the thread reading stdin stopped")?
        .context("cannot read stdin")?;
    let tenants: Vec<&str> = parsed.types.keys().map(String::as_str).collect();
    let mut errors = parsed.errors;
    if errors.is_empty()
        && let Err(e) = load.require_tenants(&tenants).await
    {
        errors.push(e.to_string());
    }
    if errors.is_empty()
        && let Err(e) = check_task_quotas(pool, &parsed.types).await
    {
        errors.push(e.to_string());
    }
    if errors.is_empty()
        && !allow_undeployed
        && let Err(e) = undeployed(pool, parsed.types).await
    {
        errors.push(e.to_string());
    }
    if !errors.is_empty() {
        load.rollback().await?;
        anyhow::bail!("{}; nothing was enqueued", errors.join("; "));
    }
    load.commit().await?;
    println!(
        "enqueued {new} new tasks ({} already existed)",
        parsed.read - new
    );
    Ok(())
}

/// Refuses tenants whose scheduled tasks and the tasks read for them pass their
/// `max_tasks`, counted outside the load's transactions, as if every task read were new.
async fn check_task_quotas(pool: &PgPool, types: &Types) -> anyhow::Result<()> {
    let (names, adding): (Vec<&str>, Vec<i64>) = types
        .iter()
        .map(|(tenant, names)| {
            let read: usize = names.values().map(|lines| lines.count).sum();
            (tenant.as_str(), read as i64)
        })
        .unzip();
    let mut conn = pool.acquire().await?;
    tenants::check_task_quotas(&mut conn, &names, &adding)
        .await
        .map_err(refused)
}

/// The database's one-line refusal as it said it, or any other error as it is.
fn refused(error: sqlx::Error) -> anyhow::Error {
    match tenants::refusal(&error) {
        Some(message) => anyhow::anyhow!(message),
        None => error.into(),
    }
}

/// A bulk load's error, with the tenant the role connected acts for where the database
/// refused a row for its tenant: a tenant's role meets row-level security on another
/// tenant's row before the load's check of its tenants, and the policy's message names
/// neither.
async fn explain(pool: &PgPool, error: enqueue::EnqueueError) -> String {
    let enqueue::EnqueueError::Refused(message) = &error else {
        return error.to_string();
    };
    match tenants::role_tenant(pool).await {
        Ok(Some(mine)) => format!(
            "the role connected acts for tenant {mine:?} and cannot enqueue for any other ({message})"
        ),
        _ => error.to_string(),
    }
}

/// What reading the bulk input found, besides the rows it sent.
struct Parsed {
    /// Tasks read (lines that parsed and passed the checks).
    read: u64,
    /// The task types the input uses, to check that each has a module.
    types: Types,
    /// Bad lines, each with its line number; at most [`MAX_REPORTED_ERRORS`].
    errors: Vec<String>,
}

/// tenant -> task type -> the lines that use it.
type Types = BTreeMap<String, BTreeMap<String, Lines>>;

/// The lines of the input that use one (tenant, task type).
#[derive(Debug, Clone, Copy)]
struct Lines {
    /// The first of them.
    first: usize,
    /// How many; 0 for a task given by arguments, not read from a line.
    count: usize,
}

/// Reads JSON lines from `input`, checks each and writes them to `writer`, which sends
/// them to the connections. After the first bad line it sends nothing more, but reads on
/// to report up to [`MAX_REPORTED_ERRORS`] of them. Stops early, with what it found so
/// far, when a connection is gone (its error is reported there). Runs on its own
/// thread, so parsing and sending overlap.
fn parse(
    input: &mut impl BufRead,
    default_tenant: &str,
    quotas: &PayloadQuotas,
    writer: enqueue::ShardWriter,
) -> io::Result<Parsed> {
    let mut writer = Some(writer);
    let mut parsed = Parsed {
        read: 0,
        types: Types::new(),
        errors: Vec::new(),
    };
    let mut buffer = Vec::new();
    let mut number = 0usize;
    loop {
        buffer.clear();
        let limit = MAX_LINE_BYTES as u64 + 1;
        if input.take(limit).read_until(b'\n', &mut buffer)? == 0 {
            break;
        }
        number += 1;
        if buffer.len() > MAX_LINE_BYTES {
            parsed.errors.push(format!(
                "line {number}: longer than {MAX_LINE_BYTES} bytes (is stdin JSON lines?)"
            ));
            break;
        }
        let result = match std::str::from_utf8(&buffer) {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => parse_line(line, default_tenant).and_then(|task| within(task, quotas)),
            Err(e) => Err(format!(
                "not UTF-8 (invalid byte at column {})",
                e.valid_up_to() + 1
            )),
        };
        let task = match result {
            Ok(task) => task,
            Err(message) => {
                parsed.errors.push(format!("line {number}: {message}"));
                // Nothing will be written: let the sending side finish now.
                writer = None;
                if parsed.errors.len() >= MAX_REPORTED_ERRORS {
                    break;
                }
                continue;
            }
        };
        parsed.read += 1;
        note_type(&mut parsed.types, &task, number);
        let Some(sending) = &mut writer else {
            continue;
        };
        if !sending.write_blocking(&task) {
            return Ok(parsed);
        }
    }
    if let Some(writer) = writer {
        writer.finish_blocking();
    }
    Ok(parsed)
}

/// Records that line `number` (0: the task came from arguments) uses `task`'s tenant and
/// type. Looks up before inserting, so the common case, a type seen before, copies no
/// string.
fn note_type(types: &mut Types, task: &NewTask, number: usize) {
    if let Some(lines) = types
        .get_mut(&task.tenant)
        .and_then(|names| names.get_mut(&task.task_type))
    {
        lines.count += 1;
        return;
    }
    types.entry(task.tenant.clone()).or_default().insert(
        task.task_type.clone(),
        Lines {
            first: number,
            count: usize::from(number > 0),
        },
    );
}

/// Fails, naming each (tenant, type) and the lines that use it, when no module is
/// deployed for it: such tasks would only wait, and a typo in a type is the likelier
/// story. `--allow-undeployed` skips the check.
async fn undeployed(pool: &PgPool, types: Types) -> anyhow::Result<()> {
    let (tenants, names): (Vec<&str>, Vec<&str>) = types
        .iter()
        .flat_map(|(tenant, names)| {
            names
                .keys()
                .map(move |name| (tenant.as_str(), name.as_str()))
        })
        .unzip();
    let deployed: Vec<(String, String)> = sqlx::query_as(
        "SELECT tenant, task_type FROM modules
         WHERE active AND (tenant, task_type) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    )
    .bind(&tenants)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    let missing: Vec<String> = types
        .iter()
        .flat_map(|(tenant, names)| names.iter().map(move |(name, lines)| (tenant, name, lines)))
        .filter(|(tenant, name, _)| !deployed.iter().any(|(t, n)| t == *tenant && n == *name))
        .map(|(tenant, task_type, lines)| {
            let used = match lines.count {
                0 => String::new(),
                1 => format!(" (line {})", lines.first),
                count => format!(" (lines {} and {} more)", lines.first, count - 1),
            };
            format!("no module is deployed for task type {task_type:?} in tenant {tenant:?}{used}")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{}; deploy one first (`recur module deploy TYPE FILE --tenant TENANT`), or pass --allow-undeployed",
        missing.join("; ")
    )
}

/// `task`, unless its payload is over its tenant's quota.
fn within(task: NewTask, quotas: &PayloadQuotas) -> Result<NewTask, String> {
    tenants::check_payload(quotas, &task.tenant, task.payload.len())?;
    Ok(task)
}

fn parse_line(line: &str, default_tenant: &str) -> Result<NewTask, String> {
    let line: Line = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let payload = match line.payload {
        Some(value) => serde_json::to_vec(&value).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let task = NewTask {
        tenant: line.tenant.unwrap_or_else(|| default_tenant.to_owned()),
        task_type: line.task_type,
        key: line.key,
        payload,
        run_at: match &line.at {
            Some(at) => parse_at(at).map_err(|e| format!("\"at\": {e}"))?,
            None => None,
        },
    };
    task.check()?;
    Ok(task)
}
