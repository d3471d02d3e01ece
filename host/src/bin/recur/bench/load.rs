//! Loading the bench's tasks fast: one COPY of all rows, streamed in chunks so memory
//! stays flat however many tasks are loaded, with a progress bar on a terminal, then
//! their keys; and the tenants they are spread over, with the copies of noop that make
//! each tenant's module its own (`--tenants`, `--distinct-modules`).
//!
//! Where each task's first due time falls against its place in the table (`--layout`)
//! moves the figures more than most settings do: a claim takes tasks in due order and
//! the server reads, locks and rewrites each heap page they lie on, and a task's new
//! version stays on its page, so the layout of the first interval is the layout of
//! every later one.

use std::fmt::Write;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

use recur_host::enqueue::DEFAULT_TENANT;

/// Rows per chunk sent to COPY.
const CHUNK: usize = 50_000;

/// How the first due times are laid over the tasks, which are stored in load order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Neighbouring tasks fall due far apart: each claim takes about one task per heap
    /// page, as it does for tasks enqueued over time at different intervals.
    #[default]
    Scattered,
    /// Due times follow the load order: a claim takes whole pages of neighbours, as it
    /// does for tasks enqueued together on one interval.
    Clustered,
}

impl Layout {
    /// How many places on task `i + 1` falls due after task `i`, of `tasks` places: a
    /// step coprime with `tasks`, so that `i * step % tasks` visits every place once.
    fn step(self, tasks: usize) -> u64 {
        match self {
            Layout::Scattered => {
                // 7,919 places apart, unless that divides evenly into the tasks.
                let mut step = 7919;
                while gcd(step, tasks as u64) != 1 {
                    step += 2;
                }
                step
            }
            Layout::Clustered => 1,
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The tenants of a bench over `count` of them: `default` alone, or `bench-0`, `bench-1`...
pub fn tenants(count: u32) -> Vec<String> {
    if count == 1 {
        return vec![DEFAULT_TENANT.to_owned()];
    }
    (0..count).map(|i| format!("bench-{i}")).collect()
}

/// Loads `tasks` `noop` tasks with keys `t0..`, task `i` in tenant `i % tenants.len()`,
/// payload `payload`, the first due at the database's now and the rest spread evenly
/// over `spread` (zero: all due now) as `layout` says. Returns how long the load took.
pub async fn load(
    pool: &PgPool,
    tasks: usize,
    tenants: &[String],
    payload: &[u8],
    spread: Duration,
    layout: Layout,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    let bar = ProgressBar::new(tasks as u64).with_style(
        ProgressStyle::with_template("loading {pos}/{len} tasks {bar:40} {per_sec} eta {eta}")
            .expect("the template is valid"),
    );
    // bytea in COPY's text format: \\x and hex digits (the backslash itself escaped).
    let mut payload_hex = String::from("\\\\x");
    for byte in payload {
        let _ = write!(payload_hex, "{byte:02x}");
    }
    let spread_us = spread.as_micros() as i64;
    let step = layout.step(tasks);

    let mut conn = pool.acquire().await?;
    let mut copy = conn
        .copy_in_raw("COPY tasks (tenant, task_type, key, payload, next_run_at) FROM STDIN")
        .await?;
    let mut buffer = String::with_capacity(CHUNK * 96);
    for i in 0..tasks {
        let offset = if spread_us > 0 {
            (i as u64 * step % tasks as u64) as i64 * spread_us / tasks as i64
        } else {
            0
        };
        let due = now + chrono::Duration::microseconds(offset);
        let _ = writeln!(
            buffer,
            "{}\tnoop\tt{i}\t{payload_hex}\t{}",
            tenants[i % tenants.len()],
            due.format("%Y-%m-%d %H:%M:%S%.6f+00")
        );
        if (i + 1) % CHUNK == 0 {
            copy.send(buffer.as_bytes()).await?;
            buffer.clear();
            bar.set_position(i as u64 + 1);
        }
    }
    if !buffer.is_empty() {
        copy.send(buffer.as_bytes()).await?;
    }
    copy.finish().await?;
    bar.finish_and_clear();
    // The keys in one statement after the tasks: the bench's keys are new by
    // construction, and this is faster than drawing ids for two COPYs. In the keys'
    // own order, so the unique index fills from left to right instead of taking each
    // key at a random place: each leaf page is filled once and left behind, where keys
    // in random order split and dirty leaves all over the index.
    sqlx::query(
        r#"INSERT INTO task_keys (tenant, task_type, key, id)
           SELECT tenant, task_type, key, id FROM tasks
           ORDER BY tenant COLLATE "C", task_type COLLATE "C", key COLLATE "C""#,
    )
    .execute(&mut *conn)
    .await?;
    // No ANALYZE or VACUUM of the bench's own: a host analyzes what a load left without
    // statistics, and vacuums what needs it (maintain.rs), and the bench measures that,
    // as a user who loads tasks and starts hosts meets it.
    let took = started.elapsed();
    // The load's inserts into pg_stat_user_tables now, before the bench reads its row
    // writes at the start of the window: a backend holds back what it counted until a
    // second after its last report, so a load shorter than that had its inserts counted
    // as the run's writes, more per execution than the two a run makes at most. The
    // server reports them when it goes idle after this statement, before it
    // answers. PostgreSQL 15 and later: an older server's backends send their counts
    // to its statistics collector within half a second, which this cannot hurry.
    sqlx::query(
        "DO $$ BEGIN
             IF current_setting('server_version_num')::int >= 150000 THEN
                 PERFORM pg_stat_force_next_flush();
             END IF;
         END $$",
    )
    .execute(&mut *conn)
    .await?;
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each layout gives every task its own place in the spread, whatever the count,
    /// including counts the scattered step divides.
    #[test]
    fn every_layout_gives_each_task_a_place_of_its_own() {
        for tasks in [1, 2, 10, 1000, 7919, 2 * 7919, 7919 * 7921] {
            for layout in [Layout::Scattered, Layout::Clustered] {
                let step = layout.step(tasks);
                // Coprime with the count: i * step % tasks is then a permutation.
                assert_eq!(gcd(step, tasks as u64), 1, "{layout:?}, {tasks} tasks");
                if tasks <= 20_000 {
                    let mut places: Vec<u64> =
                        (0..tasks as u64).map(|i| i * step % tasks as u64).collect();
                    places.sort_unstable();
                    assert!(
                        places.iter().copied().eq(0..tasks as u64),
                        "{layout:?}, {tasks}"
                    );
                }
            }
        }
        assert_eq!(Layout::Clustered.step(1_000_000), 1);
        assert_eq!(Layout::Scattered.step(1_000_000), 7919);
    }
}
