//! A hostile tenant's module fails only its own tasks. Each attack runs beside a
//! well-behaved tenant on the same host, and the bystander's schedule is the measure.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recur_host::deploy;
use recur_host::enqueue::{self, NewTask};
use recur_host::examples::artifacts::{
    NOOP_COMPONENT, POISON_COMPONENT, SLEEPER_COMPONENT, TURNCOAT_COMPONENT,
};
use recur_host::sandbox::{Sandbox, SandboxConfig};
use recur_host::{Host, HostConfig};

use crate::support::{TestDb, test_config, wait};

/// The bystander: tenant `good`'s noop tasks, each due every `GOOD_EVERY_MS`.
const GOOD_TASKS: usize = 300;
const GOOD_EVERY_MS: u64 = 200;

/// Each attack of the `poison` module, and what its task's error must say.
const ATTACKS: [(&str, &str); 5] = [
    (
        "fail-nul",
        r#"invalid outcome: its fail message holds a NUL character at byte 3, which PostgreSQL cannot store; it began: "bad\0byte\n2026"#,
    ),
    (
        "retry-nul",
        "invalid outcome: its retry message holds a NUL character at byte 3",
    ),
    (
        "long-message",
        "invalid outcome: its fail message of 1048576 bytes is over the limit of 16 KiB",
    ),
    ("log-nul-trap", "after logging poison"),
    (
        "stderr-nul-trap",
        r"the module wrote: bad\0byte 2026-01-01T00:00:00.000000Z INFO recur: forged host line",
    ),
];

/// Outcomes PostgreSQL cannot store (a NUL in a fail or retry message, in what the module
/// wrote to stderr before it trapped) or that are too long fail their own tasks, each
/// with what was wrong; a NUL and a newline in a logged line reach the host's log
/// escaped, forging no line of it. Meanwhile a bystander tenant keeps its schedule, and
/// the host stops at once on SIGTERM. (Such an outcome used to fail every commit
/// statement of its host, with everyone's outcomes in it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_the_database_refuses_fail_only_their_own_tasks() {
    let db = TestDb::new().await;
    db.deploy_for("good", "noop", NOOP_COMPONENT).await;
    db.deploy_for("evil", "poison", POISON_COMPONENT).await;
    db.limits("evil", 1000, 1).await;
    let host = host_beside_a_bystander(&db).await;

    // The attacks start while the bystander runs; the window covers them.
    let window = Duration::from_secs(4);
    let runs_before = good_runs(&db).await;
    let started = Instant::now();
    let evil: Vec<NewTask> = ATTACKS
        .iter()
        .map(|(attack, _)| NewTask {
            tenant: "evil".into(),
            payload: format!(r#"{{"attack": "{attack}"}}"#).into_bytes(),
            ..NewTask::new("poison", *attack)
        })
        .collect();
    enqueue::enqueue(&db.pool, &evil).await.unwrap();
    db.wait_for(
        "SELECT count(*) = 5 FROM tasks WHERE tenant = 'evil' AND status = 2",
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(window.saturating_sub(started.elapsed())).await;
    let elapsed = started.elapsed();
    let (ran, share) = bystander_share(&db, runs_before, elapsed).await;

    let (log, stopped_in) = stop(host).await;

    for (attack, expected) in ATTACKS {
        let row = db.task(attack).await;
        let error = row.error.unwrap_or_default();
        assert!(error.contains(expected), "{attack}: {error:?}");
    }
    assert!(
        !log.lines()
            .any(|line| line.starts_with("2026-01-01T00:00:00.000000Z")),
        "a module forged a host log line:\n{log}"
    );
    assert!(
        log.contains(r"bad\0byte\n2026-01-01T00:00:00.000000Z  INFO recur: forged host line"),
        "the logged line, escaped:\n{log}"
    );

    println!(
        "FIGURES containment::outcomes: bystander ran {ran} runs in {elapsed:.1?}, {:.0}% of its due runs, beside 5 poisoned outcomes; SIGTERM to exit {stopped_in:.1?}",
        share * 100.0
    );
    // Loose, for a loaded CI machine: a poisoned commit used to leave it a few percent.
    assert!(
        share >= 0.5,
        "the bystander ran {ran} runs, {share:.2} of its due runs"
    );
    assert!(
        stopped_in < Duration::from_secs(5),
        "SIGTERM took {stopped_in:?}"
    );
}

/// A `recur host` process, and its log as read so far.
struct HostProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl HostProcess {
    /// Lines of the log so far that contain `text`.
    fn lines_with(&self, text: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.lines().filter(|line| line.contains(text)).count()
    }
}

/// Starts a `recur host` process with two workers, and tenant `good`'s bystander tasks
/// (deployed already) running on it.
async fn host_beside_a_bystander(db: &TestDb) -> HostProcess {
    let good: Vec<NewTask> = (0..GOOD_TASKS)
        .map(|i| NewTask {
            tenant: "good".into(),
            payload: format!(r#"{{"every_ms": {GOOD_EVERY_MS}}}"#).into_bytes(),
            ..NewTask::new("noop", format!("good-{i}"))
        })
        .collect();
    enqueue::enqueue(&db.pool, &good).await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["host", "--concurrency", "2", "--batch", "100"])
        .env("DATABASE_URL", &db.url)
        .env("RECUR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let reader = std::thread::spawn({
        let log = log.clone();
        move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
                log.lock().unwrap().push_str(&line);
                line.clear();
            }
        }
    });
    db.wait_for(
        "SELECT min(runs) >= 2 FROM tasks WHERE tenant = 'good'",
        Duration::from_secs(30),
    )
    .await;
    HostProcess { child, log, reader }
}

/// SIGTERMs `host` and waits for it to exit, which it must do cleanly; returns its log
/// and how long it took to exit.
async fn stop(host: HostProcess) -> (String, Duration) {
    let HostProcess {
        mut child,
        log,
        reader,
    } = host;
    let stopping = Instant::now();
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        reader.join().unwrap();
        status
    })
    .await
    .unwrap();
    let stopped_in = stopping.elapsed();
    let log = log.lock().unwrap().clone();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    (log, stopped_in)
}

/// The bystander's runs since `runs_before`, and their share of its due runs over
/// `elapsed`.
async fn bystander_share(db: &TestDb, runs_before: i64, elapsed: Duration) -> (i64, f64) {
    let ran = good_runs(db).await - runs_before;
    let due = GOOD_TASKS as f64 * elapsed.as_millis() as f64 / GOOD_EVERY_MS as f64;
    (ran, ran as f64 / due)
}

/// Runs of tenant `good`'s tasks so far.
async fn good_runs(db: &TestDb) -> i64 {
    db.scalar("SELECT sum(runs)::bigint FROM tasks WHERE tenant = 'good'")
        .await
}

/// A host runs only the bytes that were deployed: a component changed in the database
/// afterwards (here, swapped for another valid component, past the database's own check
/// of the hash) hashes to another sha256, and its tasks stay unrun with the reason,
/// while another tenant's run on. (A host that has
/// compiled the deployed bytes under that sha256 already never reads the row's bytes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_altered_after_its_deploy_is_refused() {
    let db = TestDb::new().await;
    db.deploy_for("good", "noop", NOOP_COMPONENT).await;
    db.deploy_for("evil", "noop", NOOP_COMPONENT).await;
    // Bytes of its own, which no other module shares a compilation with.
    let sandbox = Sandbox::new(&SandboxConfig::default()).unwrap();
    let noop = std::fs::read(NOOP_COMPONENT).unwrap();
    let own = recur_host::examples::marked(&noop, "altered");
    deploy::deploy(&db.pool, &sandbox, "evil", "altered", &own)
        .await
        .unwrap();
    let other = std::fs::read(recur_host::examples::artifacts::COUNTER_COMPONENT).unwrap();
    let alter = "UPDATE modules SET component = $1 WHERE task_type = 'altered'";
    // The database refuses bytes that do not match their hash (migrations/0016)...
    let refused = sqlx::query(alter)
        .bind(&other)
        .execute(&db.pool)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("modules_sha256_is_the_hash"), "{refused}");
    // ...so only the schema's owner, dropping the check, can alter them; the host's
    // own check still holds then.
    sqlx::query("ALTER TABLE modules DROP CONSTRAINT modules_sha256_is_the_hash")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(alter)
        .bind(&other)
        .execute(&db.pool)
        .await
        .unwrap();
    let tasks =
        [("good", "noop"), ("evil", "noop"), ("evil", "altered")].map(|(tenant, task_type)| {
            NewTask {
                tenant: tenant.into(),
                payload: br#"{"every_ms": 100}"#.to_vec(),
                ..NewTask::new(task_type, format!("{tenant}-{task_type}"))
            }
        });
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    let host = recur_host::Host::start(db.pool.clone(), crate::support::test_config()).unwrap();
    db.wait_for(
        "SELECT bool_and(runs >= 10) FROM tasks WHERE task_type = 'noop'",
        Duration::from_secs(30),
    )
    .await;
    host.stop().await;
    let altered = db.task("evil-altered").await;
    let error = altered.error.unwrap_or_default();
    assert_eq!(altered.runs, 0, "{error}");
    assert!(
        error.contains("so they were changed after the deploy; deploy the module again"),
        "{error}"
    );
}

/// Every way `sleeper` waits inside WASI (a sleep, `poll` and `pollable.block` on a
/// clock, a run of 1 ms naps), each asked to wait 30 s, ends at the tenant's 1 s
/// timeout, which the epoch interrupt alone cannot do in host code; meanwhile the
/// bystander keeps its schedule, and a host SIGTERMed with such waits in progress exits
/// within the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_in_wasi_ends_at_its_deadline() {
    let db = TestDb::new().await;
    db.deploy_for("good", "noop", NOOP_COMPONENT).await;
    db.deploy_for("evil", "sleeper", SLEEPER_COMPONENT).await;
    db.limits("evil", 1000, 1).await;
    let host = host_beside_a_bystander(&db).await;
    let sleepers = |keys: &[&str]| -> Vec<NewTask> {
        keys.iter()
            .map(|wait| NewTask {
                tenant: "evil".into(),
                payload: format!(r#"{{"wait": "{wait}", "ms": 30000}}"#).into_bytes(),
                ..NewTask::new("sleeper", *wait)
            })
            .collect()
    };

    let runs_before = good_runs(&db).await;
    let started = Instant::now();
    let waits = ["sleep", "poll", "block", "naps"];
    enqueue::enqueue(&db.pool, &sleepers(&waits)).await.unwrap();
    db.wait_for(
        "SELECT count(*) = 4 FROM tasks WHERE tenant = 'evil' AND status = 2",
        Duration::from_secs(15),
    )
    .await;
    let all_ended_in = started.elapsed();
    let (ran, share) = bystander_share(&db, runs_before, started.elapsed()).await;
    for wait in waits {
        let error = db.task(wait).await.error.unwrap_or_default();
        assert!(error.contains("timed out after 1000 ms"), "{wait}: {error}");
    }

    // Two more waits, under way when the host is told to stop.
    enqueue::enqueue(&db.pool, &sleepers(&["late-sleep", "late-poll"]))
        .await
        .unwrap();
    wait(Duration::from_secs(10), "a late wait to start", || {
        let started = host.lines_with("waiting attempt=1") > waits.len();
        async move { started }
    })
    .await;
    let (_, stopped_in) = stop(host).await;
    println!(
        "FIGURES containment::waits: 4 runs waiting 30 s in WASI ended within {all_ended_in:.1?} under a 1 s timeout; bystander ran {ran} runs, {:.0}% of its due runs; SIGTERM with 2 waits under way to exit {stopped_in:.1?}",
        share * 100.0
    );
    assert!(
        share >= 0.5,
        "the bystander ran {ran} runs, {share:.2} of its due runs"
    );
    assert!(
        stopped_in < Duration::from_secs(4),
        "SIGTERM took {stopped_in:?} with waits under way"
    );
}

/// A module that proves itself short over thousands of quick runs, then turns long,
/// loses its standing as short with its first long runs: from then on its tenant may
/// hold every worker but one, and a bystander on the other keeps its schedule. (Judged
/// by the mean of all its runs, the module stayed short for about a hundred runs of
/// 2 s, each of which could take every worker.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_proves_itself_short_and_then_runs_long_cannot_take_every_worker() {
    let db = TestDb::new().await;
    db.deploy_for("good", "noop", NOOP_COMPONENT).await;
    db.deploy_for("evil", "turncoat", TURNCOAT_COMPONENT).await;
    db.limits("evil", 2000, 1000).await;
    let turn_at = recur_host::sandbox::now_ms() + 4000;
    let tasks: Vec<NewTask> = (0..GOOD_TASKS)
        .map(|i| NewTask {
            tenant: "good".into(),
            payload: format!(r#"{{"every_ms": {GOOD_EVERY_MS}}}"#).into_bytes(),
            ..NewTask::new("noop", format!("good-{i}"))
        })
        .chain((0..100).map(|i| NewTask {
            tenant: "evil".into(),
            payload: format!(r#"{{"turn_at_ms": {turn_at}, "every_ms": 10}}"#).into_bytes(),
            ..NewTask::new("turncoat", format!("evil-{i}"))
        }))
        .collect();
    enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    let host = Host::start(
        db.pool.clone(),
        HostConfig {
            // Runs are stopped at the tenant's 2 s, well inside their claims.
            lease_timeout: Duration::from_secs(10),
            ..test_config()
        },
    )
    .unwrap();

    // The first long runs start while the module still counts as short, and may take
    // every worker; from a few seconds after the turn it counts as long.
    let wait_until = |ms: i64| {
        tokio::time::sleep(Duration::from_millis(
            (ms - recur_host::sandbox::now_ms()).max(0) as u64,
        ))
    };
    wait_until(turn_at + 3000).await;
    let quick_runs: i64 = db
        .scalar("SELECT sum(runs)::bigint FROM tasks WHERE tenant = 'evil'")
        .await;
    let runs_before = good_runs(&db).await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (ran, share) = bystander_share(&db, runs_before, started.elapsed()).await;
    let timed_out: i64 = db
        .scalar(
            "SELECT count(*) FROM tasks WHERE tenant = 'evil' AND last_error LIKE '%timed out%'",
        )
        .await;
    host.stop().await;
    println!(
        "FIGURES containment::turncoat: after {quick_runs} quick runs, {timed_out} tasks ran long to the 2 s timeout; from 3 s after the turn, the bystander ran {ran} runs in 6 s, {:.0}% of its due runs",
        share * 100.0
    );
    assert!(
        quick_runs >= 1000,
        "the module proved itself short: {quick_runs} runs"
    );
    assert!(timed_out >= 2, "the module turned long");
    assert!(
        share >= 0.5,
        "the bystander ran {ran} runs, {share:.2} of its due runs"
    );
}
