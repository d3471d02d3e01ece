//! What one bench run reports: the figures as a struct (one JSON line with `--json`),
//! and the human table printed from them.

use serde::Serialize;

use super::{Layout, Mode, probe, trend};

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub sql_only: bool,
    /// noop was deployed with --reuse-instance.
    pub reuse_instance: bool,
    pub claim: String,
    pub tasks: usize,
    /// Tenants the tasks were spread over.
    pub tenants: u32,
    /// Each tenant ran its own copy of noop (--distinct-modules).
    pub distinct_modules: bool,
    pub concurrency: usize,
    pub batch: usize,
    /// Recurring mode's --layout (null in burn mode, where every task is due at once).
    pub layout: Option<Layout>,
    /// The tasks table's fillfactor (--fillfactor, else the migrations' setting).
    pub fillfactor: i32,
    /// The host's --warm-modules, and the memory slots warm and unused at the end of the
    /// window, with what they kept resident.
    pub warm_modules: u32,
    pub warm_memories: u32,
    pub warm_resident_mb: f64,
    /// How the host's sandbox reset a memory between runs: "pagemap" (the pages a run
    /// wrote) or "madvise" (swap is on, or the kernel has no PAGEMAP_SCAN).
    pub memory_reset: &'static str,
    /// Components the host compiled, and those it loaded from its compilation cache.
    pub modules_compiled: usize,
    pub modules_cached: usize,
    /// What each loaded task spawns when it runs (--spawns), and how many of those are
    /// new every run (--new-spawns).
    pub spawns: u32,
    pub new_spawns: u32,
    /// Executions committed per second, over the measured window.
    pub tasks_per_sec: f64,
    /// Executions committed per second in the host's first 10 s (from its start, warm-up
    /// included; the whole run if shorter): how soon a host reaches its pace after a
    /// load.
    pub first_10s_tasks_per_sec: f64,
    /// With --bystander: what the small tenant beside the load got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bystander: Option<super::bystander::Bystander>,
    /// New tasks created by spawns per second, over the window (absorbed ones are not
    /// counted).
    pub spawned_per_sec: f64,
    /// Executions committed in the window, and its length.
    pub executions: u64,
    pub seconds: f64,
    pub claim_ms_p50: f64,
    pub claim_ms_p99: f64,
    pub commit_ms_p50: f64,
    pub commit_ms_p99: f64,
    /// Due time to start of execution.
    pub lag_ms_p50: f64,
    pub lag_ms_p99: f64,
    /// Tasks claimed per lease statement over the window, empty ones included: below
    /// the host's maximum rate each claim takes what fell due since the last one.
    pub tasks_per_claim: f64,
    /// A fresh noop instance alone, measured before the run on an idle machine and again
    /// after it: how fast the machine ran the sandbox at the time, and whether that
    /// changed during the run (see `probe::noop_alone_us`).
    pub noop_alone_us: f64,
    pub noop_alone_after_us: f64,
    /// Time in the sandbox per task (store, instantiate, call, drop).
    pub exec_us_p50: f64,
    pub exec_us_p99: f64,
    /// Share of the worker threads' time in the window with no task to run, in percent:
    /// where the pipeline (leases, commits) rather than the workers set the pace.
    pub workers_idle_pct: f64,
    /// Row writes on `tasks` per execution, from pg_stat_user_tables.
    pub db_writes_per_task: f64,
    /// WAL bytes and full-page images per execution over the window, and the
    /// checkpoints in it (see probe::WalSample).
    pub wal_bytes_per_task: f64,
    pub wal_full_pages_per_task: f64,
    pub checkpoints: i64,
    pub table_rows: i64,
    /// CPU in percent of one core; `db_cpu_pct` is null when PostgreSQL is not local.
    pub host_cpu_pct: f64,
    pub db_cpu_pct: Option<f64>,
    /// The machine's CPU time its hypervisor gave to others over the window, in percent
    /// of all of it (null where /proc/stat does not count it).
    pub steal_pct: Option<f64>,
    /// File pages per second read back into the page cache soon after the kernel dropped
    /// them, over the window (null where /proc/vmstat does not count them).
    pub refaults_per_sec: Option<f64>,
    /// The same CPU per execution committed in the window, in microseconds of one core:
    /// what each side spends on a run, which comparisons between runs read where the
    /// rate alone mixes that cost with how much of the machine each side got.
    pub host_cpu_us_per_task: f64,
    pub db_cpu_us_per_task: Option<f64>,
    pub host_rss_mb: f64,
    pub load_tasks_per_sec: f64,
    /// The tasks table's dead tuples and index size when the measured window began and
    /// when the run ended.
    pub dead_tuples_before: i64,
    pub index_bytes_before: i64,
    pub dead_tuples_after: i64,
    pub index_bytes_after: i64,
    /// How many of the next `batch` tasks by due time share a heap page, on average, when
    /// the window began and when the run ended (status::TableStatus); null when none was
    /// scheduled. It says how much of the table a claim touches, which the rate depends
    /// on, and whether a layout drifts.
    pub due_per_page_before: Option<f64>,
    pub due_per_page_after: Option<f64>,
    /// The size of the tasks table's heap when the window began and when the run ended:
    /// what room left on each page costs, and whether the table grows.
    pub heap_bytes_before: i64,
    pub heap_bytes_after: i64,
    /// The size of the keys table and its index at the end (runs write it only when they
    /// spawn).
    pub keys_bytes: i64,
    /// With --report-every: the figures of each interval.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub intervals: Vec<trend::Interval>,
    /// With --with-ceiling: the mean rate of the two --sql-only runs, and the sum of the
    /// two real runs' rates over the sum of theirs. The other figures are the first
    /// real run's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling_tasks_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_ceiling: Option<f64>,
    /// With --with-ceiling: each run's rate, in the order they ran around the ceiling
    /// runs (real first and last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_runs_per_sec: Option<[f64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling_runs_per_sec: Option<[f64; 2]>,
    pub database: String,
    /// The server's version and the settings the figures depend on most.
    pub server: String,
}

pub(super) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Burn => "burn",
        Mode::Recurring => "recurring",
        Mode::Enqueue => "enqueue",
    }
}

pub(super) fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// The CPU line of a report's table; the database's is unknown when it is not local.
pub(super) fn print_cpu(host_cpu_pct: f64, db_cpu_pct: Option<f64>) {
    println!(
        "  cpu host / db %       {:>12.0} / {}",
        host_cpu_pct,
        db_cpu_pct.map_or("n/a".to_owned(), |c| format!("{c:.0}"))
    );
}

/// Prints a report as a table, a section at a time.
pub(super) fn print_table(r: &Report) {
    print_heading(r);
    print_rates(r);
    print_latencies(r);
    print_machine(r);
    print_host(r);
    print_table_state(r);
}

/// What ran: the mode, the tasks and the host's settings.
fn print_heading(r: &Report) {
    println!();
    println!(
        "recur bench: {} {}, {} tasks{}{}, concurrency {}, batch {}, on {}",
        mode_name(r.mode),
        if r.sql_only {
            "(sql-only)"
        } else if r.reuse_instance {
            "(reusing instances)"
        } else {
            ""
        },
        r.tasks,
        if r.tenants > 1 {
            format!(" in {} tenants", r.tenants)
        } else {
            String::new()
        },
        if r.layout == Some(Layout::Clustered) {
            ", due in table order"
        } else {
            ""
        },
        r.concurrency,
        r.batch,
        r.database
    );
}

/// Executions and spawns per second, and the ceiling when measured.
fn print_rates(r: &Report) {
    println!(
        "  tasks/s               {:>12.0}   ({} executions in {:.1} s)",
        r.tasks_per_sec, r.executions, r.seconds
    );
    println!(
        "  first 10 s tasks/s    {:>12.0}   (from the host's start)",
        r.first_10s_tasks_per_sec
    );
    if let Some(b) = &r.bystander {
        println!(
            "  bystander ran         {:>11.1}%   ({} of {:.0} due runs of {} tasks in {} tenants every {} ms; oldest due late p50 {} / p99 {} / max {} ms)",
            b.ran_pct,
            b.runs,
            b.due_runs,
            b.tasks,
            b.tenants,
            b.every_ms,
            b.late_ms_p50,
            b.late_ms_p99,
            b.late_ms_max
        );
    }
    if r.spawns > 0 {
        let new = match r.new_spawns {
            0 => String::new(),
            n => format!(", {n} of them new"),
        };
        println!(
            "  spawned/s             {:>12.0}   ({} spawns per loaded task's run{new})",
            r.spawned_per_sec, r.spawns
        );
    }
    if let (Some(ceiling), Some(ratio), Some(real), Some(sql_only)) = (
        r.ceiling_tasks_per_sec,
        r.ratio_to_ceiling,
        r.real_runs_per_sec,
        r.ceiling_runs_per_sec,
    ) {
        println!(
            "  sql-only ceiling      {ceiling:>12.0}   (ratio {ratio:.2}; runs {:.0}, {:.0} sql-only, {:.0} sql-only, {:.0})",
            real[0], sql_only[0], sql_only[1], real[1]
        );
    }
}

/// Claim, commit, lag and run latencies, and how long the workers waited.
fn print_latencies(r: &Report) {
    println!(
        "  claim ms p50 / p99    {:>12.2} / {:.2}",
        r.claim_ms_p50, r.claim_ms_p99
    );
    println!(
        "  commit ms p50 / p99   {:>12.2} / {:.2}",
        r.commit_ms_p50, r.commit_ms_p99
    );
    println!(
        "  lag ms p50 / p99      {:>12.1} / {:.1}",
        r.lag_ms_p50, r.lag_ms_p99
    );
    println!("  tasks per claim       {:>12.1}", r.tasks_per_claim);
    println!(
        "  exec us p50 / p99     {:>12.1} / {:.1}   (a fresh noop alone before / after: {:.2} / {:.2})",
        r.exec_us_p50, r.exec_us_p99, r.noop_alone_us, r.noop_alone_after_us
    );
    println!("  workers idle %        {:>12.1}", r.workers_idle_pct);
}

/// What the database wrote and what the machine spent per execution.
fn print_machine(r: &Report) {
    println!("  row writes per task   {:>12.2}", r.db_writes_per_task);
    println!(
        "  WAL bytes per task    {:>12.0}   ({:.3} full pages per task, {} checkpoints)",
        r.wal_bytes_per_task, r.wal_full_pages_per_task, r.checkpoints
    );
    println!("  table rows            {:>12}", r.table_rows);
    print_cpu(r.host_cpu_pct, r.db_cpu_pct);
    if let Some(steal) = r.steal_pct {
        println!("  cpu stolen %          {steal:>12.1}   (taken by the hypervisor)");
    }
    if let Some(refaults) = r.refaults_per_sec {
        println!("  page cache refaults/s {refaults:>12.0}   (pages read back soon after dropped)");
    }
    println!(
        "  cpu us per task       {:>12.1} / {}",
        r.host_cpu_us_per_task,
        r.db_cpu_us_per_task
            .map_or("n/a".to_owned(), |us| format!("{us:.1}"))
    );
}

/// The host's memory and its modules.
fn print_host(r: &Report) {
    println!("  host peak rss MB      {:>12.1}", r.host_rss_mb);
    println!(
        "  warm memories         {:>12}   ({:.1} MB resident; --warm-modules {})",
        r.warm_memories, r.warm_resident_mb, r.warm_modules
    );
    println!("  memory reset          {:>12}", r.memory_reset);
    println!(
        "  modules compiled      {:>12}   ({} from the compilation cache)",
        r.modules_compiled, r.modules_cached
    );
}

/// The tasks table before and after the window.
fn print_table_state(r: &Report) {
    println!("  load tasks/s          {:>12.0}", r.load_tasks_per_sec);
    println!(
        "  dead tuples / index   {:>12} / {} MB   (at the start of the window: {} / {} MB)",
        r.dead_tuples_after,
        r.index_bytes_after >> 20,
        r.dead_tuples_before,
        r.index_bytes_before >> 20
    );
    println!(
        "  due tasks per page    {:>12}   (at the start of the window: {}; next {} tasks by due time)",
        probe::show_per_page(r.due_per_page_after),
        probe::show_per_page(r.due_per_page_before),
        r.batch
    );
    println!(
        "  heap MB               {:>12}   (at the start of the window: {}; fillfactor {})",
        r.heap_bytes_after >> 20,
        r.heap_bytes_before >> 20,
        r.fillfactor
    );
    println!("  keys table MB         {:>12}", r.keys_bytes >> 20);
    println!("  server                {}", r.server);
}
