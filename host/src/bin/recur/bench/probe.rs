//! What the bench reads off the machine and the database: what a fresh noop costs alone
//! before and after the runs, CPU time of this process and of PostgreSQL's processes,
//! the time the hypervisor took from the machine and the page cache it read back (from
//! /proc), this process's peak
//! resident memory, the row writes PostgreSQL counted on the tasks table, the WAL the
//! server wrote, and the server settings the figures depend on. How the table lies (its
//! size, dead rows, fillfactor and due tasks per page) is `status::table`, which `recur
//! status` shows too.

use std::time::Instant;

use sqlx::PgPool;

use recur_host::examples::example;
use recur_host::sandbox::{Sandbox, SandboxConfig, cost};

/// Runs of a fresh noop timed before a bench: a steady median in well under a second.
const CALIBRATION_RUNS: usize = 20_000;

/// What a fresh noop instance costs alone on this machine now (median µs, one thread,
/// measured as the `sandbox_cost` example does). The machine's speed changes from one
/// hour to the next and every other figure moves with it: this one says how fast it
/// ran when the report was made.
pub fn noop_alone_us() -> anyhow::Result<f64> {
    let noop = example("noop").expect("the noop example is built in");
    // The yardstick keeps the reset it has always had (the page scan where it can), so
    // that its figures compare with those recorded before, whatever the bench's hosts use.
    let sandbox = Sandbox::new(&SandboxConfig {
        concurrent_runs: 1,
        memory_reset: None,
        ..SandboxConfig::default()
    })?;
    let module = sandbox.prepare(noop.component)?;
    Ok(cost::measure(&sandbox, &[module], CALIBRATION_RUNS, false)?.p50_us)
}

/// The machine's counters so far: CPU seconds used by this process and by every
/// `postgres` process, the CPU its hypervisor took, and the page cache read back.
#[derive(Debug, Clone, Copy)]
pub struct MachineSample {
    at: Instant,
    host_secs: f64,
    /// `None` when no PostgreSQL process is visible (a server on another machine).
    db_secs: Option<f64>,
    /// The machine's (steal, all) CPU ticks so far, from /proc/stat.
    ticks: Option<(u64, u64)>,
    /// File pages read back soon after the kernel dropped them from its page cache
    /// (`workingset_refault_file` in /proc/vmstat).
    refaults: Option<u64>,
}

impl MachineSample {
    /// Reads the counters now.
    pub fn take() -> MachineSample {
        let db = postgres_pids()
            .iter()
            .filter_map(|pid| cpu_secs(&format!("/proc/{pid}/stat")))
            .sum::<f64>();
        MachineSample {
            at: Instant::now(),
            host_secs: cpu_secs("/proc/self/stat").unwrap_or(0.0),
            db_secs: (db > 0.0).then_some(db),
            ticks: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|stat| steal_ticks(&stat)),
            refaults: std::fs::read_to_string("/proc/vmstat")
                .ok()
                .and_then(|vmstat| file_refaults(&vmstat)),
        }
    }

    /// File pages per second read back into the page cache between `self` and `later`,
    /// soon after the kernel dropped them: a table larger than PostgreSQL's buffers
    /// that the kernel does not keep cached is read from disk again, which slows a run
    /// for reasons of the machine's memory rather than recur's.
    pub fn refaults_per_sec_until(&self, later: &MachineSample) -> Option<f64> {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        Some(later.refaults?.saturating_sub(self.refaults?) as f64 / wall)
    }

    /// The share of all the machine's CPU time between `self` and `later` that its
    /// hypervisor gave to others (steal), in percent: on a virtual machine, time the
    /// host and the database waited for a core they could not see being used.
    pub fn steal_pct_until(&self, later: &MachineSample) -> Option<f64> {
        let ((steal_a, all_a), (steal_b, all_b)) = (self.ticks?, later.ticks?);
        let all = all_b.checked_sub(all_a).filter(|&all| all > 0)?;
        Some(steal_b.saturating_sub(steal_a) as f64 / all as f64 * 100.0)
    }

    /// (host, database) CPU seconds used between `self` and `later`.
    pub fn seconds_until(&self, later: &MachineSample) -> (f64, Option<f64>) {
        let host = later.host_secs - self.host_secs;
        let db = match (self.db_secs, later.db_secs) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        (host, db)
    }

    /// (host, database) CPU use between `self` and `later`, in percent of one core.
    pub fn percent_until(&self, later: &MachineSample) -> (f64, Option<f64>) {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let (host, db) = self.seconds_until(later);
        (host / wall * 100.0, db.map(|secs| secs / wall * 100.0))
    }
}

/// (steal, all) ticks from the machine's line of /proc/stat: `cpu user nice system idle
/// iowait irq softirq steal ...`, where guest time is counted in user time already.
fn steal_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (ticks.len() == 8).then(|| (ticks[7], ticks.iter().sum()))
}

/// `workingset_refault_file` from /proc/vmstat (kernels before 5.9 count all refaults
/// as `workingset_refault`, which this leaves out).
fn file_refaults(vmstat: &str) -> Option<u64> {
    vmstat
        .lines()
        .find_map(|line| line.strip_prefix("workingset_refault_file "))?
        .trim()
        .parse()
        .ok()
}

/// utime + stime of a /proc/<pid>/stat file, in seconds.
fn cpu_secs(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are positional.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / per_sec.max(1.0))
}

fn postgres_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("postgres"))
        })
        .collect()
}

/// Peak resident memory of this process (VmHWM), in MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Rows inserted, updated and deleted in `tasks`, as PostgreSQL's statistics count them.
/// Backends report their counts when they go idle or exit, so read this after the
/// writers' connections are closed.
pub async fn task_writes(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(n_tup_ins + n_tup_upd + n_tup_del, 0) FROM pg_stat_user_tables WHERE relname = 'tasks'",
    )
    .fetch_one(pool)
    .await
}

/// A `due_per_page` figure for the human table: one decimal, or "-" with no task left.
pub fn show_per_page(per_page: Option<f64>) -> String {
    per_page.map_or_else(|| "-".to_string(), |x| format!("{x:.1}"))
}

/// The server's write-ahead log so far: where it ends, how many full-page images it
/// holds, and how many checkpoints have run. After a checkpoint, the first change to
/// each page logs the whole page, so on a table rewritten faster than checkpoints come,
/// those images can outweigh the changes themselves.
#[derive(Debug, Clone, Copy)]
pub struct WalSample {
    lsn: i64,
    full_pages: i64,
    checkpoints: i64,
}

/// WAL written between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WalWritten {
    pub bytes: i64,
    pub full_pages: i64,
    pub checkpoints: i64,
}

impl WalSample {
    /// Reads the counters now. `pg_stat_wal` counts what backends have reported, which
    /// they do when they go idle, at most about a second late.
    pub async fn take(pool: &PgPool) -> Result<WalSample, sqlx::Error> {
        let (lsn, full_pages, checkpoints) = sqlx::query_as(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint,
                    (SELECT wal_fpi FROM pg_stat_wal),
                    (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)",
        )
        .fetch_one(pool)
        .await?;
        Ok(WalSample {
            lsn,
            full_pages,
            checkpoints,
        })
    }

    /// What was written from `self` to `later`.
    pub fn until(&self, later: &WalSample) -> WalWritten {
        WalWritten {
            bytes: later.lsn - self.lsn,
            full_pages: later.full_pages - self.full_pages,
            checkpoints: later.checkpoints - self.checkpoints,
        }
    }
}

/// The server's version and the settings the figures depend on most (buffer size,
/// checkpoint spacing, autovacuum, commit durability), as one line: the same bench
/// on a differently configured server measures something else.
pub async fn server_settings(db: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT format('PostgreSQL %s; shared_buffers %s, max_wal_size %s, autovacuum %s, synchronous_commit %s',
                       current_setting('server_version'), current_setting('shared_buffers'),
                       current_setting('max_wal_size'), current_setting('autovacuum'),
                       current_setting('synchronous_commit'))",
    )
    .fetch_one(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_read_from_the_machines_line_of_proc_stat() {
        let stat = "cpu  393382 0 40073 135419 2638 0 1093 8127 0 0\n\
                    cpu0 196000 0 20000 67000 1300 0 500 4000 0 0\n";
        assert_eq!(
            steal_ticks(stat),
            Some((8127, 393382 + 40073 + 135419 + 2638 + 1093 + 8127))
        );
        // A kernel too old to count steal (fewer than eight fields) gives no figure.
        assert_eq!(steal_ticks("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(steal_ticks("intr 1 2 3\n"), None);
    }

    #[test]
    fn refaults_are_read_from_proc_vmstat() {
        let vmstat =
            "workingset_refault_anon 0\nworkingset_refault_file 2451973\npgmajfault 11897\n";
        assert_eq!(file_refaults(vmstat), Some(2451973));
        assert_eq!(file_refaults("workingset_refault 12\n"), None);
    }
}
