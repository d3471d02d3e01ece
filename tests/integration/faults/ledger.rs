//! The ledger: every execution of a `ledger` task, read back from the hosts' logs (the
//! module logs one line per run, before the host commits anything), and the audit that
//! holds it against the committed rows. The logs see what the database cannot: runs
//! whose commits were lost to a kill, a pause or a dropped connection.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use sqlx::Row;

use super::fleet::Fleet;
use crate::support::TestDb;

/// One execution, as its log line tells it.
#[derive(Debug, Clone, Copy)]
pub struct Execution {
    pub task: i64,
    /// The iteration: the state's `n` the run started from.
    pub n: u64,
    pub scheduled_ms: i64,
    pub now_ms: i64,
    /// The fleet index of the host that ran it.
    pub host: usize,
}

/// Reads every ledger line of every host in `fleet`.
pub fn read(fleet: &Fleet) -> Vec<Execution> {
    let mut executions = Vec::new();
    for host in &fleet.hosts {
        let text = std::fs::read_to_string(&host.log).unwrap_or_default();
        // A SIGKILL can cut the last line short; a partial line is no execution we can
        // name, and the run it began is re-run (and logged) by another host anyway.
        executions.extend(text.lines().filter_map(|line| parse(line, host.index)));
    }
    executions
}

fn parse(line: &str, host: usize) -> Option<Execution> {
    let rest = &line[line.find("ledger task=")? + "ledger ".len()..];
    let field = |name: &str| -> Option<i64> {
        let value = rest.split_whitespace().find_map(|w| w.strip_prefix(name))?;
        value.parse().ok()
    };
    Some(Execution {
        task: field("task=")?,
        n: field("n=")? as u64,
        scheduled_ms: field("scheduled_ms=")?,
        now_ms: field("now_ms=")?,
        host,
    })
}

/// What an audit found: the figures and every broken invariant.
#[derive(Debug, Default)]
pub struct Audit {
    pub tasks: usize,
    pub executions: usize,
    /// Executions beyond the first of an iteration.
    pub duplicates: usize,
    /// Duplicates where more than one execution came from a host that survived (not
    /// killed, not in `stale_hosts`): a commit lost by a live host.
    pub live_duplicates: usize,
    /// Tasks with a gap, a missing first run, or a state that disagrees with the ledger.
    pub lost: usize,
    /// Largest `now_ms - scheduled_ms`: how late a run started after the time the host
    /// leased it for.
    pub max_lateness_ms: i64,
    /// Largest wait between the last run of one iteration and the first of the next,
    /// beyond the task's own interval: includes the lease timeout after a kill.
    pub max_gap_ms: i64,
    pub problems: Vec<String>,
    /// The warnings and errors logged by the live hosts of every run repeated on live
    /// hosts (the one that lost its commit and the one that ran it again): what they
    /// saw of the lost commit.
    pub warnings: Vec<String>,
}

impl Audit {
    /// Panics with the first problems found, if any.
    pub fn assert_clean(&self) {
        assert!(
            self.problems.is_empty(),
            "{} problems, first: {:#?}\nwhat the hosts that lost runs logged: {:#?}",
            self.problems.len(),
            &self.problems[..self.problems.len().min(10)],
            self.warnings
        );
    }
}

/// Holds the ledger against the `ledger` tasks: every task ran; its iterations are
/// 0..=last with no gap; its state is `{"n": last + 1}`; it is scheduled or done with no
/// lease held; and no iteration ran twice except on hosts that were killed, or on a host
/// in `stale` (host, until_ms) before until_ms (a host paused past its leases runs what
/// it had queued when it wakes up; its commits must be fenced off). `every_ms` is the
/// tasks' interval.
pub async fn audit(db: &TestDb, fleet: &Fleet, stale: &[(usize, i64)], every_ms: i64) -> Audit {
    let executions = read(fleet);
    let killed: HashSet<usize> = fleet
        .hosts
        .iter()
        .filter(|h| h.killed)
        .map(|h| h.index)
        .collect();
    let excused = |e: &Execution| {
        killed.contains(&e.host)
            || stale
                .iter()
                .any(|&(host, until)| e.host == host && e.now_ms < until)
    };
    let mut by_task: BTreeMap<i64, BTreeMap<u64, Vec<Execution>>> = BTreeMap::new();
    for e in &executions {
        by_task
            .entry(e.task)
            .or_default()
            .entry(e.n)
            .or_default()
            .push(*e);
    }
    let rows = sqlx::query(
        "SELECT id, status, state, lease_token IS NOT NULL AS leased FROM tasks
         WHERE task_type = 'ledger' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut audit = Audit {
        tasks: rows.len(),
        executions: executions.len(),
        max_lateness_ms: executions
            .iter()
            .map(|e| e.now_ms - e.scheduled_ms)
            .max()
            .unwrap_or(0),
        ..Audit::default()
    };
    let empty = BTreeMap::new();
    let mut losers = BTreeSet::new();
    for row in rows {
        let id: i64 = row.get("id");
        let status: i16 = row.get("status");
        let leased: bool = row.get("leased");
        let state: Option<Vec<u8>> = row.get("state");
        let state_n = state
            .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s).ok())
            .and_then(|v| v["n"].as_u64());
        let iterations = by_task.get(&id).unwrap_or(&empty);
        if status == 2 || leased {
            audit
                .problems
                .push(format!("task {id}: status {status}, leased {leased}"));
        }
        let Some((&last, _)) = iterations.last_key_value() else {
            audit.lost += 1;
            audit.problems.push(format!("task {id} never ran"));
            continue;
        };
        let missing = (0..=last).filter(|n| !iterations.contains_key(n)).count();
        if missing > 0 || state_n != Some(last + 1) {
            audit.lost += 1;
            audit.problems.push(format!(
                "task {id}: {missing} iterations missing of 0..={last}, committed state n={state_n:?}"
            ));
        }
        let mut previous_end: Option<i64> = None;
        for (n, runs) in iterations {
            audit.duplicates += runs.len() - 1;
            let live = runs.iter().filter(|e| !excused(e)).count();
            if live > 1 {
                audit.live_duplicates += live - 1;
                losers.extend(runs.iter().filter(|e| !excused(e)).map(|e| e.host));
                audit.problems.push(format!(
                    "task {id} iteration {n} ran {live} times on hosts that never lost their lease: {runs:?}"
                ));
            }
            let first = runs.iter().map(|e| e.now_ms).min().unwrap();
            if let Some(end) = previous_end {
                audit.max_gap_ms = audit.max_gap_ms.max(first - end - every_ms);
            }
            previous_end = Some(runs.iter().map(|e| e.now_ms).max().unwrap());
        }
    }
    for host in losers {
        let text = std::fs::read_to_string(&fleet.hosts[host].log).unwrap_or_default();
        let said = text
            .lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .take(10)
            .map(|line| format!("host {host}: {line}"));
        audit.warnings.extend(said);
    }
    audit
}
