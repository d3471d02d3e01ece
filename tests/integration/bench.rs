//! `recur bench` end to end: both workloads and the enqueue mode with every figure of
//! their reports, spawned tasks worked down, and the options it refuses.

use sqlx::Connection;

use crate::support::{self, TestDb, one_line_error};

/// Drops a database a `recur bench` run left beside the test's.
async fn drop_database(db: &TestDb, name: &str) {
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut db.admin().await)
        .await
        .unwrap();
}

/// Runs `recur args`, which must fail with one line that says `says`.
fn refused(db: &TestDb, args: &[&str], says: &str) {
    let line = one_line_error(&support::recur(&db.url, args, b""));
    assert!(line.contains(says), "{line}");
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
        let report = support::json_report(&output);
        for key in [
            "tasks_per_sec",
            "claim_ms_p50",
            "claim_ms_p99",
            "commit_ms_p50",
            "commit_ms_p99",
            "lag_ms_p50",
            "lag_ms_p99",
            "tasks_per_claim",
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
        // The machine's speed at the time: a fresh noop alone takes microseconds.
        for key in ["noop_alone_us", "noop_alone_after_us"] {
            let alone = report[key].as_f64().unwrap();
            assert!(alone > 0.5 && alone < 10_000.0, "{key}: {report}");
        }
        let steal = &report["steal_pct"];
        assert!(
            steal.is_null() || (0.0..=100.0).contains(&steal.as_f64().unwrap()),
            "{report}"
        );
        let refaults = &report["refaults_per_sec"];
        assert!(
            refaults.is_null() || refaults.as_f64().unwrap() >= 0.0,
            "{report}"
        );
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
        // The loaded tasks' keys are in task_keys: each key's row (a tuple header, tenant,
        // type, key and id) and its index entry take well over 40 bytes.
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
                    "claim_ms_p50",
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
            // Real, ceiling, ceiling, real: the ratio is the real runs' sum over the
            // ceiling runs', the ceiling their mean, and the first run is the report's.
            let rates = |key: &str| -> Vec<f64> {
                let runs = report[key].as_array().unwrap_or_else(|| panic!("{report}"));
                runs.iter().map(|r| r.as_f64().unwrap()).collect()
            };
            let (real, ceiling) = (rates("real_runs_per_sec"), rates("ceiling_runs_per_sec"));
            assert!(real.len() == 2 && ceiling.len() == 2, "{report}");
            assert!(real.iter().chain(&ceiling).all(|&r| r > 0.0), "{report}");
            assert_eq!(report["tasks_per_sec"].as_f64(), Some(real[0]), "{report}");
            let mean = report["ceiling_tasks_per_sec"].as_f64().unwrap();
            assert!(
                (mean - (ceiling[0] + ceiling[1]) / 2.0).abs() <= 0.5,
                "{report}"
            );
            let ratio = report["ratio_to_ceiling"].as_f64().unwrap();
            let sums = (real[0] + real[1]) / (ceiling[0] + ceiling[1]);
            assert!((ratio - sums).abs() <= 0.0005, "{report}");
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
    let report = support::json_report(&output);
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
        support::json_report(&support::recur(&db.url, &args, b""))
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
