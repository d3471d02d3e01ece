//! `recur enqueue`: one task from arguments, or many from JSON lines on stdin (`--bulk`).
//!
//! A bulk enqueue is all or nothing: every line is parsed and checked, the inserts run
//! in one transaction in chunks of a few thousand, and if any line is wrong the
//! transaction is rolled back and the errors are reported with their line numbers.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::time::parse_at;
use crate::enqueue::{self, BULK_CHUNK, DEFAULT_TENANT, NewTask};

/// How many bad lines a bulk enqueue reports before it stops reading.
const MAX_REPORTED_ERRORS: usize = 10;

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
    /// {"type": "...", "key": "...", "payload": {...}, "at": "<RFC 3339>", "tenant": "..."}
    #[arg(long)]
    bulk: bool,
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
    #[serde(default)]
    at: Option<DateTime<Utc>>,
    #[serde(default)]
    tenant: Option<String>,
}

pub async fn run(pool: &PgPool, args: EnqueueArgs) -> anyhow::Result<()> {
    if args.bulk {
        return bulk(pool, &args.tenant).await;
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

async fn bulk(pool: &PgPool, default_tenant: &str) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut tx = pool.begin().await?;
    let mut chunk = Vec::with_capacity(BULK_CHUNK);
    let (mut read, mut new, mut errors) = (0usize, 0u64, Vec::new());
    let mut number = 0usize;
    while let Some(line) = lines.next_line().await.context("cannot read stdin")? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line, default_tenant) {
            Ok(task) => {
                read += 1;
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
        if chunk.len() == BULK_CHUNK {
            new += enqueue::insert_chunk(&mut tx, &chunk).await?;
            chunk.clear();
        }
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
        run_at: line.at,
    };
    task.check()?;
    Ok(task)
}
