//! A component built to be slow to compile is stopped at the host's limit, in the child
//! process that compiles it, and holds back no other tenant's module.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use recur_host::deploy;
use recur_host::enqueue::{self, NewTask};
use recur_host::examples::artifacts::NOOP_COMPONENT;
use recur_host::sandbox::{Sandbox, SandboxConfig};
use sha2::Digest;

use crate::support::TestDb;

/// A valid component whose one core module holds `functions` functions of arithmetic:
/// slow to compile, and nothing a task module needs.
fn slow_to_compile(functions: usize) -> Vec<u8> {
    let body = "(local.get 0) (i32.const 7) (i32.mul) (i32.const 3) (i32.add) ".repeat(10);
    let funcs =
        format!("(func (param i32) (result i32) (local.get 0) {body} (i32.add))").repeat(functions);
    wat::parse_str(format!("(component (core module {funcs}))")).unwrap()
}

/// A component built to be slow to compile is stopped at the host's limit, in the child
/// process that compiles it: its task stays unrun with the reason, the compile does not
/// go on using the host's cores, and the next tenant's module, queued behind it,
/// compiles and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_too_slow_to_compile_is_stopped_at_the_limit() {
    let db = TestDb::new().await;
    // In by hand: deploy would compile it in full to check it.
    db.deploy_for("evil", "slow", NOOP_COMPONENT).await;
    let slow = slow_to_compile(200_000);
    let sha256: String = sha2::Sha256::digest(&slow)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sqlx::query("UPDATE modules SET component = $1, sha256 = $2 WHERE task_type = 'slow'")
        .bind(&slow)
        .bind(&sha256)
        .execute(&db.pool)
        .await
        .unwrap();
    drop(slow);
    // Bytes of its own, so that it needs a compile of its own, after the slow one.
    let noop = std::fs::read(NOOP_COMPONENT).unwrap();
    let sandbox = Sandbox::new(&SandboxConfig::default()).unwrap();
    deploy::deploy(
        &db.pool,
        &sandbox,
        "good",
        "noop",
        &recur_host::examples::marked(&noop, "good"),
    )
    .await
    .unwrap();
    let evil = NewTask {
        tenant: "evil".into(),
        ..NewTask::new("slow", "evil-slow")
    };
    enqueue::enqueue(&db.pool, &[evil]).await.unwrap();

    let mut host = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["host", "--concurrency", "2", "--compile-timeout", "1s"])
        .env("DATABASE_URL", &db.url)
        .env("RECUR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // The good tenant's tasks arrive while the slow component compiles.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let good: Vec<NewTask> = (0..10)
        .map(|i| NewTask {
            tenant: "good".into(),
            payload: br#"{"every_ms": 100}"#.to_vec(),
            ..NewTask::new("noop", format!("good-{i}"))
        })
        .collect();
    enqueue::enqueue(&db.pool, &good).await.unwrap();
    db.wait_for(
        "SELECT last_error IS NOT NULL FROM tasks WHERE key = 'evil-slow'",
        Duration::from_secs(20),
    )
    .await;
    let stopped_after = started.elapsed();
    db.wait_for(
        "SELECT bool_and(runs >= 3) FROM tasks WHERE tenant = 'good'",
        Duration::from_secs(20),
    )
    .await;
    let good_running_after = started.elapsed();
    // Had it not been stopped, the slow compile would still be running now.
    let compiles = compile_children(host.id());
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(host.id() as i32, libc::SIGTERM) };
    assert!(host.wait().unwrap().success());

    let error = db.task("evil-slow").await.error.unwrap_or_default();
    assert!(
        error.contains(
            "compiling it took longer than this host allows (1s), so the compile was stopped"
        ),
        "{error}"
    );
    assert_eq!(compiles, 0, "no compile process is left running");
    println!(
        "FIGURES containment::compile: a slow compile stopped {stopped_after:.1?} after the host started (limit 1 s); the next tenant's tasks all ran 3 times {good_running_after:.1?} after it"
    );
}

/// How many `recur compile-component` processes `parent` has now.
fn compile_children(parent: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            // The parent's pid is the fourth field of stat, after the parenthesised name.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains("compile-component")
        })
        .count()
}
