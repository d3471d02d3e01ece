//! `recur enqueue`: one task from arguments, or many from JSON lines on stdin (`--bulk`).
//!
//! A bulk enqueue is all or nothing: every line is parsed and checked, the inserts run
//! in one transaction in chunks of a few thousand, and if any line is wrong the
//! transaction is rolled back and the errors are reported with their line numbers.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::time::parse_at;
use crate::enqueue::{self, DEFAULT_TENANT, NewTask};

/// How many bad lines a bulk enqueue reports before it stops reading.
const MAX_REPORTED_ERRORS: usize = 10;
/// Longest line `--bulk` reads: the largest payload and room for the other fields. A
/// longer line is refused before it is read whole, so a stray binary file piped in
/// cannot exhaust memory.
const MAX_LINE_BYTES: usize = enqueue::MAX_PAYLOAD_BYTES * 6 + 64 * 1024;

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
        return bulk(pool, &args.tenant, args.allow_undeployed).await;
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
    if !args.allow_undeployed {
        let key = (task.tenant.clone(), task.task_type.clone());
        undeployed(pool, BTreeMap::from([(key, vec![])])).await?;
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

async fn bulk(pool: &PgPool, default_tenant: &str, allow_undeployed: bool) -> anyhow::Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut tx = pool.begin().await?;
    let mut chunk = Vec::with_capacity(enqueue::BULK_CHUNK);
    let (mut read, mut new, mut errors) = (0usize, 0u64, Vec::new());
    // (tenant, type) -> the lines that use it, to check that each has a module.
    let mut types: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    let mut buffer = Vec::new();
    let mut number = 0usize;
    loop {
        buffer.clear();
        let limit = MAX_LINE_BYTES as u64 + 1;
        let n = (&mut stdin)
            .take(limit)
            .read_until(b'\n', &mut buffer)
            .await
            .context("cannot read stdin")?;
        if n == 0 {
            break;
        }
        number += 1;
        if buffer.len() > MAX_LINE_BYTES {
            errors.push(format!(
                "line {number}: longer than {MAX_LINE_BYTES} bytes (is stdin JSON lines?)"
            ));
            break;
        }
        let line = match std::str::from_utf8(&buffer) {
            Ok(line) => line,
            Err(e) => {
                errors.push(format!(
                    "line {number}: not UTF-8 (invalid byte at column {})",
                    e.valid_up_to() + 1
                ));
                if errors.len() >= MAX_REPORTED_ERRORS {
                    break;
                }
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line, default_tenant) {
            Ok(task) => {
                read += 1;
                types
                    .entry((task.tenant.clone(), task.task_type.clone()))
                    .or_default()
                    .push(number);
                if errors.is_empty() {
                    chunk.push(task);
                }
            }
            Err(message) => {
                errors.push(format!("line {number}: {message}"));
                if errors.len() >= MAX_REPORTED_ERRORS {
                    break;
                }
            }
        }
        if chunk.len() == enqueue::BULK_CHUNK {
            new += enqueue::insert_chunk(&mut tx, &chunk).await?;
            chunk.clear();
        }
    }
    if errors.is_empty()
        && !allow_undeployed
        && let Err(e) = undeployed(pool, types).await
    {
        errors.push(e.to_string());
    }
    if !errors.is_empty() {
        tx.rollback().await?;
        anyhow::bail!("{}; nothing was enqueued", errors.join("; "));
    }
    if !chunk.is_empty() {
        new += enqueue::insert_chunk(&mut tx, &chunk).await?;
    }
    tx.commit().await?;
    println!(
        "enqueued {new} new tasks ({} already existed)",
        read as u64 - new
    );
    Ok(())
}

/// Fails, naming each (tenant, type) and the lines that use it, when no module is
/// deployed for it: such tasks would only wait, and a typo in a type is the likelier
/// story. `--allow-undeployed` skips the check.
async fn undeployed(
    pool: &PgPool,
    types: BTreeMap<(String, String), Vec<usize>>,
) -> anyhow::Result<()> {
    let (tenants, names): (Vec<String>, Vec<String>) = types.keys().cloned().unzip();
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
        .filter(|(key, _)| !deployed.contains(key))
        .map(|((tenant, task_type), lines)| {
            let used = match lines.as_slice() {
                [] => String::new(),
                [one] => format!(" (line {one})"),
                [first, ..] => format!(" (lines {first} and {} more)", lines.len() - 1),
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
