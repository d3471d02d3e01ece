//! The `recur` binary end to end: migrate, deploy, enqueue (single and bulk), status,
//! a host process stopped by SIGTERM, its JSON logs, and the demo on a private cluster.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{self, TestDb, one_line_error, stdout};

fn recur(db: &TestDb, args: &[&str]) -> Output {
    support::recur(&db.url, args, b"")
}

fn recur_with_stdin(db: &TestDb, args: &[&str], stdin: &str) -> Output {
    support::recur(&db.url, args, stdin.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_enqueue_and_status_from_the_command_line() {
    let db = TestDb::new().await;
    assert!(stdout(&recur(&db, &["migrate"])).contains("schema is at version"));
    assert!(
        stdout(&recur(
            &db,
            &["module", "deploy", "noop", "--example", "noop"]
        ))
        .contains("deployed noop version 1")
    );
    assert!(
        one_line_error(&recur(
            &db,
            &["module", "deploy", "noop", "--example", "nope"]
        ))
        .contains("no example module")
    );
    assert!(
        one_line_error(&recur(&db, &["module", "deploy", "noop", "/no/such.wasm"]))
            .contains("cannot read /no/such.wasm")
    );
    assert!(stdout(&recur(&db, &["module", "list"])).contains("noop"));

    assert!(
        stdout(&recur(
            &db,
            &[
                "enqueue",
                "noop",
                "k1",
                "--payload",
                r#"{"every_ms": 1000}"#
            ]
        ))
        .contains("1 new")
    );
    assert!(stdout(&recur(&db, &["enqueue", "noop", "k1"])).contains("exists already"));
    assert!(
        one_line_error(&recur(
            &db,
            &["enqueue", "noop", "k2", "--payload", "{oops"]
        ))
        .contains("not valid JSON")
    );
    assert!(
        one_line_error(&recur(&db, &["enqueue", "noop", "k2", "--at", "tomorrow"]))
            .contains("RFC 3339")
    );
    assert!(stdout(&recur(&db, &["enqueue", "noop", "k2", "--at", "+1h"])).contains("1 new"));

    let lines: String = (0..1000)
        .map(|i| format!("{{\"type\": \"noop\", \"key\": \"b{i}\"}}\n"))
        .collect();
    let lines = format!("{lines}{{\"type\": \"noop\", \"key\": \"k1\"}}\n");
    assert!(
        stdout(&recur_with_stdin(&db, &["enqueue", "--bulk"], &lines))
            .contains("enqueued 1000 new tasks (1 already existed)")
    );

    let bad = "{\"type\": \"noop\", \"key\": \"z1\"}\nnot json\n{\"type\": \"noop\"}\n{\"type\": \"noop\", \"key\": \"z2\", \"at\": \"soon\"}\n";
    let err = one_line_error(&recur_with_stdin(&db, &["enqueue", "--bulk"], bad));
    assert!(
        err.contains("line 2:") && err.contains("line 3:") && err.contains("line 4:"),
        "{err}"
    );
    assert!(err.contains("nothing was enqueued"));
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE key LIKE 'z%'")
            .await,
        0
    );

    let status: serde_json::Value =
        serde_json::from_str(&stdout(&recur(&db, &["status", "--json"]))).unwrap();
    let noop = &status["types"][0];
    for key in [
        "tenant",
        "task_type",
        "scheduled",
        "due",
        "running",
        "failed",
        "done",
        "lag_ms",
    ] {
        assert!(noop.get(key).is_some(), "status lacks {key}: {status}");
    }
    assert_eq!(
        noop["scheduled"].as_i64().unwrap() + noop["due"].as_i64().unwrap(),
        1002
    );
    // How the table lies: the migrations' fillfactor, and the next 1,000 due tasks by
    // due time on some pages of it.
    let table = &status["table"];
    assert_eq!(table["fillfactor"], 90, "{status}");
    assert!(table["heap_bytes"].as_i64().unwrap() > 0, "{status}");
    assert!(table["due_per_page"].as_f64().unwrap() >= 1.0, "{status}");
    let human = stdout(&recur(&db, &["status"]));
    assert!(
        human.contains("fillfactor 90") && human.contains("to a heap page"),
        "{human}"
    );
}

#[tokio::test]
async fn commands_on_a_database_without_the_schema_say_to_migrate() {
    let db = TestDb::new().await;
    sqlx::query("DROP TABLE _sqlx_migrations")
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(one_line_error(&recur(&db, &["status"])).contains("run `recur migrate` first"));
    let output = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["status"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(
        one_line_error(&output)
            .contains("cannot connect to PostgreSQL at postgres://nobody@127.0.0.1:1/none")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_process_works_until_sigterm_and_exits_cleanly() {
    let db = TestDb::new().await;
    db.deploy("noop", recur_host::examples::artifacts::NOOP_COMPONENT)
        .await;
    db.enqueue_n("noop", 500, r#"{"every_ms": 200}"#).await;

    let mut host = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["host", "--concurrency", "2", "--batch", "100"])
        .env("DATABASE_URL", &db.url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    db.wait_for("SELECT min(runs) >= 3 FROM tasks", Duration::from_secs(30))
        .await;
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(host.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || host.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE lease_token IS NOT NULL")
            .await,
        0
    );
}

/// `--log-format json` (here by RECUR_LOG_FORMAT): every line on stderr is one JSON
/// object, and a guest's line carries its task, tenant, task type and module version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_logs_json_lines_that_name_the_guests_task_and_module_version() {
    let db = TestDb::new().await;
    let path = recur_host::examples::artifacts::SLEEPER_COMPONENT;
    db.deploy_for("acme", "sleeper", path).await;
    // A second version, of other bytes.
    let sandbox = recur_host::sandbox::Sandbox::new(&Default::default()).unwrap();
    let second = recur_host::examples::marked(&std::fs::read(path).unwrap(), "second");
    recur_host::deploy::deploy(&db.pool, &sandbox, "acme", "sleeper", &second)
        .await
        .unwrap();
    let id: i64 =
        sqlx::query_scalar("SELECT recur_enqueue('acme', 'sleeper', 'nap', '{\"ms\": 10}')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let host = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["host", "--concurrency", "2"])
        .env("DATABASE_URL", &db.url)
        .env("RECUR_LOG_FORMAT", "json")
        .env("RECUR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    db.wait_for(
        "SELECT bool_and(status = 1) FROM tasks",
        Duration::from_secs(30),
    )
    .await;
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(host.id() as i32, libc::SIGTERM) };
    let output = tokio::task::spawn_blocking(move || host.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "exit status {}", output.status);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let guest = lines
        .iter()
        .find(|line| line["target"] == "recur::guest")
        .unwrap_or_else(|| panic!("no guest line in {lines:?}"));
    assert_eq!(guest["level"], "INFO");
    assert_eq!(guest["message"], "waiting attempt=1");
    assert_eq!(guest["task"], id);
    assert_eq!(guest["tenant"], "acme");
    assert_eq!(guest["task_type"], "sleeper");
    assert_eq!(guest["version"], 2, "the active version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_on_a_private_cluster_and_removes_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["demo", "--tasks", "500", "--seconds", "2", "--json"])
        .env("RECUR_DEMO_PRIVATE_CLUSTER", "1")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let summary = support::json_report(&output);
    for key in [
        "executed",
        "completed",
        "spawned",
        "failed",
        "tasks_per_sec",
    ] {
        assert!(summary.get(key).is_some(), "summary lacks {key}: {summary}");
    }
    assert!(summary["executed"].as_u64().unwrap() >= 500, "{summary}");
    assert_eq!(summary["failed"], 0);
    let dir = summary["cluster_dir"]
        .as_str()
        .expect("the demo used a private cluster");
    assert!(!std::path::Path::new(dir).exists(), "{dir} was left behind");
    let leftover = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(dir))
        });
    assert!(
        !leftover,
        "a process of the private cluster is still running"
    );
}

/// `recur requeue` puts failed tasks back to work, all or nothing: a named key that is
/// not a failed task refuses the whole command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_puts_failed_tasks_back_and_refuses_the_others() {
    let db = TestDb::new().await;
    db.deploy("noop", recur_host::examples::artifacts::NOOP_COMPONENT)
        .await;
    db.enqueue(&[
        ("noop", "f1", ""),
        ("noop", "f2", ""),
        ("noop", "f3", ""),
        ("noop", "ok", ""),
    ])
    .await;
    sqlx::query(
        "UPDATE tasks SET status = 2, attempt = 7, last_error = 'boom', next_run_at = now() + interval '1 day'
         WHERE key LIKE 'f%'",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let refused = one_line_error(&recur(&db, &["requeue", "noop", "f1", "ok", "nope"]));
    assert!(refused.contains(r#""nope" does not exist"#), "{refused}");
    assert!(refused.contains(r#""ok" is scheduled"#), "{refused}");
    assert!(refused.contains("nothing was requeued"), "{refused}");
    assert_eq!(
        db.task("f1").await.status,
        2,
        "a refused requeue changed nothing"
    );

    let out = stdout(&recur(&db, &["requeue", "noop", "f1"]));
    assert!(out.contains("requeued 1 failed task"), "{out}");
    let f1 = db.task("f1").await;
    assert_eq!((f1.status, f1.attempt, f1.error.as_deref()), (0, 0, None));
    assert!(f1.due_in_secs <= 0.0, "due now: {f1:?}");

    let out = stdout(&recur(&db, &["requeue", "noop", "--all-failed"]));
    assert!(out.contains("requeued 2 failed tasks"), "{out}");
    let missing = one_line_error(&recur(&db, &["requeue", "noop"]));
    assert!(missing.contains("--all-failed"), "{missing}");
    let bad = one_line_error(&recur(&db, &["requeue", "no pe", "--all-failed"]));
    assert!(bad.contains("task type"), "{bad}");
}

/// A host's settings: a flag wins over its RECUR_ variable, which wins over the config
/// file, which wins over the default; `--print-config` prints them as a config file that
/// gives the same settings back, with the database password masked; a bad file is a
/// one-line error.
#[test]
fn host_settings_come_from_flags_variables_a_config_file_and_defaults_in_that_order() {
    let dir = std::env::temp_dir().join(format!("recur-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("host.toml");
    std::fs::write(
        &file,
        "batch = 10\nclaim = \"timed\"\nlease-timeout = \"30s\"\nidle_wait = \"50ms\"\ntenants = [\"a\", \"b\"]\nno_vacuum = true\n",
    )
    .unwrap();
    let print = |config: &std::path::Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_recur"))
            .args(["host", "--print-config", "--idle-wait", "5ms"])
            .env("RECUR_CONFIG", config)
            .env("RECUR_BATCH", "77")
            .env("DATABASE_URL", "postgres://u:secret@db.example:5432/recur")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        stdout(&output)
    };
    let printed = print(&file);
    for line in [
        "batch = 77",
        "claim = \"timed\"",
        "lease_timeout = \"30s\"",
        "idle_wait = \"5ms\"",
        "tenants = [\"a\", \"b\"]",
        "no_vacuum = true",
        "memory_reset = \"madvise\"",
        "# database_url = \"postgres://u:***@db.example:5432/recur\"",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "{line:?} in:\n{printed}"
        );
    }
    assert!(!printed.contains("secret"), "{printed}");
    let again = dir.join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    assert_eq!(
        print(&again),
        printed,
        "the printed file gives the same settings"
    );
    for (text, says) in [
        ("bogus = 1\n", "has no setting \"bogus\""),
        ("batch = \n", "is not TOML"),
        ("batch = \"many\"\n", "invalid value 'many' for '--batch"),
    ] {
        std::fs::write(&file, text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_recur"))
            .args(["host", "--print-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let error = one_line_error(&output);
        assert!(error.contains(says), "{error}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
