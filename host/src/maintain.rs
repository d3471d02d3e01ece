//! Background duties that keep the tables honest, run by every host: any one of them
//! may do the work, and doing it twice changes nothing.
//!
//! Two duties. Vacuuming the tasks table when PostgreSQL's autovacuum is off or behind:
//! every execution leaves a dead row version behind, and on a server where nothing
//! reclaims them the due index fills with dead entries and every claim gets slower. One
//! host at a time does it (an advisory lock), and only past a threshold. The small
//! `claims` table gets the same, for the dead row each locked batch leaves, in a loop
//! of its own so that a long vacuum of `tasks` never holds it up. So does `task_keys`,
//! which gains a row per new task and loses few: a vacuum marks its pages all-visible,
//! which is what lets a commit drop a spawn of a known key by a probe of the index
//! alone (commit_timed.sql). Autovacuum does that for tables that are only inserted into;
//! with it off, nothing else would.
//!
//! Analyzing `tasks` and `task_keys` once many of their rows changed since their last
//! statistics: after a bulk load the planner would otherwise take the claim's index for
//! a path to a handful of rows, and claims crawl until autovacuum (off, or minutes
//! behind) gathers new ones. A host looks at once when it starts, then every few seconds,
//! so a load through any door (the CLI, the library, the SQL function, a flood of
//! spawns) is met within seconds.
//!
//! And counting the attempts of locked batches that never committed. A
//! locked claim writes nothing to its tasks, so a host that dies while running one
//! leaves no trace on them; its `claims` row (see migrations/0002) is the trace. Counting
//! it is what lets `max_attempts` park a task whose runs keep taking hosts down, instead
//! of letting it take down every host in turn. The next locked claim of such a task
//! counts it itself (claim_locked.sql); this sweep counts what no claim took over, such as
//! tasks run since under timed leases.

use std::time::Duration;

use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::watch;

const DUTY_LOCK_SQL: &str = include_str!("sql/vacuum_lock.sql");

const LOST_SQL: &str = include_str!("sql/lost.sql");

/// Rows changed since a table's last statistics, and the rows they counted.
const CHANGED_SQL: &str = include_str!("sql/table_needs_analyze.sql");

/// Advisory lock key that makes one host at a time the analyzing one (per table: the
/// table's position in [`ANALYZED`] is added).
const ANALYZE_LOCK: i64 = 0x7265_6375_7261_6e61; // "recurana"
/// How often a host checks whether its tables need new statistics: soon after a bulk
/// load, whose rows a claim would otherwise plan for as if they were not there.
pub const ANALYZE_CHECK_EVERY: Duration = Duration::from_secs(5);
/// The tables a host analyzes: what the claims and the commits' key probes plan on.
pub const ANALYZED: [&str; 2] = ["tasks", "task_keys"];
/// Changed rows that call for new statistics: this many, plus a tenth of the rows the
/// last statistics counted (autovacuum's defaults).
pub const ANALYZE_CHANGED_MIN: i64 = 50;

/// Dead row versions in a table, rows inserted since its last vacuum, its live rows,
/// and whether a vacuum of it is running now. Inserts are read through `to_jsonb` because
/// servers before PostgreSQL 13 do not count them: there the count is 0, `task_keys` is
/// left to autovacuum, and the other tables are vacuumed as before.
const DEAD_SQL: &str = include_str!("sql/table_needs_vacuum.sql");

/// Advisory lock key that makes one host at a time the vacuuming one (per table: the
/// table's [`Vacuumed`] number is added).
const VACUUM_LOCK: i64 = 0x7265_6375_7276_6163; // "recurvac"
/// How often a host checks whether its tables need a vacuum.
pub const VACUUM_CHECK_EVERY: Duration = Duration::from_secs(15);
/// Dead row versions that trigger a vacuum of `tasks`: this many, plus a tenth of the
/// live rows (autovacuum's default is a fifth; a queue's table churns faster than most).
pub const VACUUM_DEAD_MIN: i64 = 50_000;
/// The same for `claims`, which stays a few dozen rows but leaves one dead row per locked
/// batch, and which every locked claim scans whole (claim_locked.sql): left alone, it grows by
/// tens of thousands of dead rows a minute.
pub const CLAIMS_DEAD_MIN: i64 = 1_000;
/// The same for `task_keys`, counting the rows inserted since its last vacuum with its
/// dead ones: pages of new keys are not all-visible until a vacuum has seen them.
pub const KEYS_PENDING_MIN: i64 = 100_000;

/// The tables hosts vacuum themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vacuumed {
    /// `tasks`: one dead row version per execution.
    Tasks,
    /// `claims`: one dead row per locked batch.
    Claims,
    /// `task_keys`: one new row per new task.
    TaskKeys,
}

impl Vacuumed {
    /// The table's name.
    pub fn table(self) -> &'static str {
        match self {
            Vacuumed::Tasks => "tasks",
            Vacuumed::Claims => "claims",
            Vacuumed::TaskKeys => "task_keys",
        }
    }

    /// Rows waiting for a vacuum past which it is vacuumed (plus a tenth of its live
    /// rows).
    pub fn waiting_min(self) -> i64 {
        match self {
            Vacuumed::Tasks => VACUUM_DEAD_MIN,
            Vacuumed::Claims => CLAIMS_DEAD_MIN,
            Vacuumed::TaskKeys => KEYS_PENDING_MIN,
        }
    }
}

/// How often a host looks for lost claims.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How old a lost claim must be before the sweep counts it: until then it is left to
/// the next locked claim of its tasks, which counts it in step with its own commit.
pub const LOST_CLAIM_AGE: Duration = Duration::from_secs(30);

/// Counts an attempt on every task of each locked batch whose claim ended without a
/// commit at least `age` ago; returns how many tasks were counted.
pub async fn count_lost_claims(pool: &PgPool, age: Duration) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(LOST_SQL)
        .bind(age.as_millis() as i64)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Vacuums `table` if it holds more rows waiting for a vacuum than its threshold (dead
/// row versions, and for `task_keys` rows inserted since its last vacuum too), no vacuum
/// of it is running, and no other host is doing it. Returns the rows it found waiting,
/// if it vacuumed.
pub async fn vacuum_if_needed(pool: &PgPool, table: Vacuumed) -> Result<Option<i64>, sqlx::Error> {
    let (dead, inserted, live, running): (i64, i64, i64, bool) = sqlx::query_as(DEAD_SQL)
        .bind(table.table())
        .fetch_one(pool)
        .await?;
    let waiting = match table {
        Vacuumed::TaskKeys => dead + inserted,
        Vacuumed::Tasks | Vacuumed::Claims => dead,
    };
    if running || waiting < table.waiting_min() + live / 10 {
        return Ok(None);
    }
    // Not a prepared statement: VACUUM is a utility command, run once in a while. The
    // name is one of three constants, never input.
    let statement = format!("VACUUM (ANALYZE) {}", table.table());
    if !run_alone(pool, VACUUM_LOCK + table as i64, &statement).await? {
        return Ok(None);
    }
    Ok(Some(waiting))
}

/// Runs the utility command `statement` (not prepared: it runs once in a while) if this
/// host is the first to take the advisory lock `key`, and says whether it ran. On a
/// connection of its own, which goes away with the lock: a vacuum or an analyze of a
/// large table takes seconds, which sqlx would otherwise report as a slow statement on
/// every round.
async fn run_alone(pool: &PgPool, key: i64, statement: &str) -> Result<bool, sqlx::Error> {
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(60));
    let mut conn = PgConnection::connect_with(&options).await?;
    let mine: bool = sqlx::query_scalar(DUTY_LOCK_SQL)
        .bind(key)
        .fetch_one(&mut conn)
        .await?;
    if mine {
        sqlx::query(statement)
            .persistent(false)
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(mine)
}

/// Vacuums `table` when needed, every `every` ([`VACUUM_CHECK_EVERY`] in a host),
/// until shutdown. One loop per table: a vacuum of a large `tasks` takes minutes (hours
/// at billions of rows), and `claims`, which every locked claim scans whole, must not
/// wait for it. Nor does shutdown: a vacuum still running when the host stops is left
/// to finish on the server, whose work it is, while the host goes.
pub async fn vacuum(
    pool: PgPool,
    table: Vacuumed,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let started = std::time::Instant::now();
        let vacuumed = tokio::select! {
            vacuumed = vacuum_if_needed(&pool, table) => vacuumed,
            _ = shutdown.changed() => return,
        };
        match vacuumed {
            // The claims table is small and vacuumed often: not worth a line each time.
            Ok(Some(dead)) if table == Vacuumed::Claims => tracing::debug!(
                dead,
                took = ?started.elapsed(),
                "vacuumed the claims table"
            ),
            Ok(Some(waiting)) => tracing::info!(
                waiting,
                took = ?started.elapsed(),
                "vacuumed the {} table (autovacuum is off or behind)",
                table.table()
            ),
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(error = %err, table = table.table(), "could not vacuum")
            }
        }
    }
}

/// Analyzes `table` (one of [`ANALYZED`]) if more of its rows changed since its last
/// statistics than the threshold, and no other host is doing it. Returns the rows changed,
/// if it analyzed.
pub async fn analyze_if_needed(pool: &PgPool, table: usize) -> Result<Option<i64>, sqlx::Error> {
    let name = ANALYZED[table];
    let (changed, counted): (i64, i64) = sqlx::query_as(CHANGED_SQL)
        .bind(name)
        .fetch_one(pool)
        .await?;
    if changed <= ANALYZE_CHANGED_MIN + counted / 10 {
        return Ok(None);
    }
    // The name is one of two constants, never input.
    let statement = format!("ANALYZE {name}");
    if !run_alone(pool, ANALYZE_LOCK + table as i64, &statement).await? {
        return Ok(None);
    }
    Ok(Some(changed))
}

/// Keeps [`ANALYZED`]'s statistics current until shutdown: a look at once, then every
/// `every` ([`ANALYZE_CHECK_EVERY`] in a host).
pub async fn analyze(pool: PgPool, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        for (table, name) in ANALYZED.iter().enumerate() {
            let started = std::time::Instant::now();
            let analyzed = tokio::select! {
                analyzed = analyze_if_needed(&pool, table) => analyzed,
                _ = shutdown.changed() => return,
            };
            match analyzed {
                Ok(Some(changed)) => tracing::info!(
                    changed,
                    took = ?started.elapsed(),
                    "analyzed the {name} table (many rows changed since its last statistics)"
                ),
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(error = %err, table = ANALYZED[table], "could not analyze")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs the claims sweep every [`SWEEP_EVERY`] until shutdown. Errors are logged and the
/// loop carries on: the sweep catches up on the next round.
pub async fn run(pool: PgPool, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        match count_lost_claims(&pool, LOST_CLAIM_AGE).await {
            Ok(0) => {}
            Ok(tasks) => tracing::info!(
                tasks,
                "counted an attempt on tasks whose locked batch never committed (its host died or lost its connection)"
            ),
            Err(err) => tracing::debug!(error = %err, "could not look for lost claims"),
        }
    }
}
