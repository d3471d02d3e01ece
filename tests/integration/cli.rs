//! The `recur` binary end to end: migrate, deploy, enqueue (single and bulk), status,
//! a host process stopped by SIGTERM, and the demo on a private cluster.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sqlx::Connection;

use crate::support::{self, TestDb};

fn recur(db: &TestDb, args: &[&str]) -> Output {
    support::recur(&db.url, args, b"")
}

fn recur_with_stdin(db: &TestDb, args: &[&str], stdin: &str) -> Output {
    support::recur(&db.url, args, stdin.as_bytes())
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn error(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

/// Drops a database a `recur bench` run left beside the test's.
async fn drop_database(db: &TestDb, name: &str) {
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut db.admin().await)
        .await
        .unwrap();
}

/// Runs `recur args`, which must fail with one line that says `says`.
fn refused(db: &TestDb, args: &[&str], says: &str) {
    let line = error(&recur(db, args));
    assert!(line.contains(says), "{line}");
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
        error(&recur(
            &db,
            &["module", "deploy", "noop", "--example", "nope"]
        ))
        .contains("no example module")
    );
    assert!(
        error(&recur(&db, &["module", "deploy", "noop", "/no/such.wasm"]))
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
        error(&recur(
            &db,
            &["enqueue", "noop", "k2", "--payload", "{oops"]
        ))
        .contains("not valid JSON")
    );
    assert!(
        error(&recur(&db, &["enqueue", "noop", "k2", "--at", "tomorrow"])).contains("RFC 3339")
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
    let err = error(&recur_with_stdin(&db, &["enqueue", "--bulk"], bad));
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
    assert!(error(&recur(&db, &["status"])).contains("run `recur migrate` first"));
    let output = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["status"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(
        error(&output)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_on_a_private_cluster_and_removes_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["demo", "--tasks", "500", "--seconds", "2", "--json"])
        .env("RECUR_DEMO_PRIVATE_CLUSTER", "1")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
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

    let refused = error(&recur(&db, &["requeue", "noop", "f1", "ok", "nope"]));
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
    let missing = error(&recur(&db, &["requeue", "noop"]));
    assert!(missing.contains("--all-failed"), "{missing}");
    let bad = error(&recur(&db, &["requeue", "no pe", "--all-failed"]));
    assert!(bad.contains("task type"), "{bad}");
}

/// `recur bench` runs both workloads end to end on a small table, and the enqueue mode,
/// and reports every figure; its numbers are not judged here, only that they are there
/// and add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_both_workloads_and_reports_every_figure() {
    let db = TestDb::new().await;
    // The bench creates a database of its own beside the test's, dropped at the end.
    let database = format!("{}_bench", db.name());
    for (mode, tasks) in [("burn", "2000"), ("recurring", "3000")] {
        let mut args = vec![
            "bench",
            "--mode",
            mode,
            "--tasks",
            tasks,
            "--seconds",
            "4",
            "--warmup",
            "1",
            "--every-ms",
            "1000",
            "--json",
            "--database",
            &database,
        ];
        // The ceiling runs the same tasks again, keys and all, on a fresh table.
        if mode == "burn" {
            args.push("--with-ceiling");
        } else {
            args.extend([
                "--report-every",
                "1",
                "--layout",
                "clustered",
                "--fillfactor",
                "50",
            ]);
        }
        let output = support::recur(&db.url, &args, b"");
        let out = stdout(&output);
        let report: serde_json::Value =
            serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
        for key in [
            "tasks_per_sec",
            "lease_ms_p50",
            "lease_ms_p99",
            "commit_ms_p50",
            "commit_ms_p99",
            "lag_ms_p50",
            "lag_ms_p99",
            "tasks_per_lease",
            "exec_us_p50",
            "workers_idle_pct",
            "db_writes_per_task",
            "table_rows",
            "host_cpu_pct",
            "db_cpu_pct",
            "host_cpu_us_per_task",
            "db_cpu_us_per_task",
            "host_rss_mb",
            "dead_tuples_before",
            "index_bytes_after",
            "keys_bytes",
            "server",
        ] {
            assert!(
                report.get(key).is_some(),
                "the report lacks {key}: {report}"
            );
        }
        assert_eq!(
            report["table_rows"],
            tasks.parse::<u64>().unwrap(),
            "{report}"
        );
        assert!(report["executions"].as_u64().unwrap() > 0, "{report}");
        let idle = report["workers_idle_pct"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&idle), "{report}");
        let reset = report["memory_reset"].as_str().unwrap();
        assert!(["pagemap", "madvise"].contains(&reset), "{report}");
        // CPU per execution is the CPU share over the window, spread over its executions
        // (the share is rounded to a whole percent, hence the slack).
        let per_task = report["host_cpu_us_per_task"].as_f64().unwrap();
        let from_share =
            report["host_cpu_pct"].as_f64().unwrap() * 1e4 * report["seconds"].as_f64().unwrap()
                / report["executions"].as_f64().unwrap();
        assert!(
            per_task > 0.0 && (per_task - from_share).abs() <= 0.05 * per_task + 0.5,
            "{per_task} against {from_share}: {report}"
        );
        // The loaded tasks' keys are in task_keys: some 150 bytes each with its index.
        let keys_bytes = report["keys_bytes"].as_i64().unwrap();
        assert!(keys_bytes > 40 * tasks.parse::<i64>().unwrap(), "{report}");
        assert!(
            report["server"].as_str().unwrap().contains("max_wal_size"),
            "{report}"
        );
        let layout = if mode == "recurring" {
            "clustered".into()
        } else {
            serde_json::Value::Null
        };
        assert_eq!(report["layout"], layout, "{report}");
        // The migrations' fillfactor unless --fillfactor says otherwise.
        let fillfactor = if mode == "recurring" { 50 } else { 90 };
        assert_eq!(report["fillfactor"], fillfactor, "{report}");
        assert!(
            report["heap_bytes_before"].as_i64().unwrap() > 0,
            "{report}"
        );
        if mode == "recurring" {
            // A line a second, each with the table's state at its end.
            let intervals = report["intervals"].as_array().unwrap();
            assert!(!intervals.is_empty(), "{report}");
            for interval in intervals {
                for key in [
                    "tasks_per_sec",
                    "spawned_per_sec",
                    "lease_ms_p50",
                    "dead_tuples",
                ] {
                    assert!(interval.get(key).is_some(), "{interval}");
                }
                for key in ["index_mb", "heap_mb"] {
                    assert!(interval[key].as_f64().unwrap() > 0.0, "{interval}");
                }
                // The table stays full, so the next batch by due time is on some pages.
                assert!(
                    interval["due_per_page"].as_f64().unwrap() >= 1.0,
                    "{interval}"
                );
            }
            for key in ["due_per_page_before", "due_per_page_after"] {
                assert!(report[key].as_f64().unwrap() >= 1.0, "{key}: {report}");
            }
        }
        if mode == "burn" {
            assert_eq!(report["executions"], 2000, "{report}");
            // Each execution writes its row once under a row lock, twice under a timed
            // lease; the load's inserts, counted before the window, are not the run's.
            let writes = report["db_writes_per_task"].as_f64().unwrap();
            assert!((1.0..=2.0).contains(&writes), "{report}");
            // Worked to zero: no task is left to say where the next ones lie.
            assert_eq!(
                report["due_per_page_after"],
                serde_json::Value::Null,
                "{report}"
            );
            assert!(
                report["ratio_to_ceiling"].as_f64().unwrap() > 0.0,
                "{report}"
            );
        }
    }
    // The enqueue mode: the library's bulk enqueue, of new keys and then of the same.
    let output = support::recur(
        &db.url,
        &[
            "bench",
            "--mode",
            "enqueue",
            "--tasks",
            "3000",
            "--connections",
            "3",
            "--json",
            "--database",
            &database,
        ],
        b"",
    );
    let out = stdout(&output);
    let report: serde_json::Value =
        serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            &report["mode"],
            &report["connections"],
            &report["table_rows"]
        ),
        (&"enqueue".into(), &3.into(), &3000.into()),
        "{report}"
    );
    for key in ["tasks_per_sec", "existing_tasks_per_sec"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    assert!(report.get("db_cpu_pct").is_some() && report.get("server").is_some());
    refused(
        &db,
        &["bench", "--mode", "enqueue", "--with-ceiling"],
        "--mode enqueue runs none",
    );
    refused(
        &db,
        &["bench", "--mode", "burn", "--layout", "clustered"],
        "every task is due at once",
    );
    refused(&db, &["bench", "--fillfactor", "5"], "10..=100");
    refused(
        &db,
        &["bench", "--mode", "enqueue", "--spawns", "1"],
        "--mode enqueue runs none",
    );
    refused(&db, &["bench", "--spawns", "1001"], "0..=1000");
    refused(
        &db,
        &["bench", "--spawns", "1", "--new-spawns", "2"],
        "is more than --spawns 1",
    );
    refused(
        &db,
        &[
            "bench",
            "--mode",
            "burn",
            "--spawns",
            "1",
            "--new-spawns",
            "1",
        ],
        "in --mode burn every spawn is new",
    );

    drop_database(&db, &database).await;
    refused(
        &db,
        &["bench", "--database", "Robert'); DROP"],
        "lowercase letters, digits and underscores",
    );
}

/// `recur bench --spawns`: in burn mode the spawned tasks are worked down with the
/// loaded ones (and the ceiling spawns as the module does); in recurring mode each task
/// spawns its children once and every later spawn is absorbed by the unique key, except
/// the `--new-spawns`, keyed after each run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_spawns_and_works_the_spawned_tasks_down_too() {
    let db = TestDb::new().await;
    let database = format!("{}_bench", db.name());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--tasks",
            "1000",
            "--json",
            "--database",
            &database,
        ];
        args.extend(extra);
        let out = stdout(&support::recur(&db.url, &args, b""));
        serde_json::from_str::<serde_json::Value>(out.trim().lines().last().unwrap()).unwrap()
    };

    let burn = run(&["--mode", "burn", "--spawns", "2", "--with-ceiling"]);
    assert_eq!(
        (&burn["spawns"], &burn["executions"], &burn["table_rows"]),
        (&2.into(), &3000.into(), &3000.into()),
        "{burn}"
    );
    assert!(burn["spawned_per_sec"].as_f64().unwrap() > 0.0, "{burn}");
    assert!(burn["ratio_to_ceiling"].as_f64().unwrap() > 0.0, "{burn}");

    // Recurring runs of 3 s, every task due twice a second, and what they leave behind.
    let recurring = |spawns: &[&str]| {
        let args = ["--mode", "recurring", "--every-ms", "500", "--seconds", "3"];
        run(&[&args[..], &["--warmup", "1"], spawns].concat())
    };
    let left_behind = || sqlx::PgConnection::connect(&db.sibling_url(&database));

    let fixed = recurring(&["--spawns", "1"]);
    // Every task ran more than once; its one child exists once, and ran to completion.
    assert_eq!(fixed["table_rows"], 2000, "{fixed}");
    assert!(fixed["executions"].as_u64().unwrap() > 2000, "{fixed}");
    let mut conn = left_behind().await.unwrap();
    let children: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 1 AND runs = 1)
         FROM tasks WHERE key LIKE '%/0'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(children.0, 1000);
    assert!(children.1 > 900, "{children:?}");
    conn.close().await.unwrap();

    // With one of two spawns new every run: each task keeps one fixed child, and every
    // run of it it committed spawned one child more, keyed after that run.
    let mixed = recurring(&["--spawns", "2", "--new-spawns", "1"]);
    assert_eq!(mixed["new_spawns"], 1, "{mixed}");
    let mut conn = left_behind().await.unwrap();
    let (fixed, fresh, parent_runs): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE key ~ '^t[0-9]+/0$'),
                count(*) FILTER (WHERE key ~ '^t[0-9]+/run[0-9]+/0$'),
                coalesce(sum(runs) FILTER (WHERE key !~ '/'), 0)::bigint
         FROM tasks",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(fixed, 1000);
    assert!(parent_runs > 1000, "{parent_runs}");
    assert_eq!(fresh, parent_runs);
    conn.close().await.unwrap();

    drop_database(&db, &database).await;
}
