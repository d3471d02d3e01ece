//! Bad input at every door: the command line (through the real binary) and the library.
//! Each mistake gets one line that names the problem and what to do, a non-zero exit,
//! and changes nothing. (cli.rs, deploy.rs and enqueue.rs cover the first cases of each
//! door; this file is the long tail.)
//!
//! Longer than most files: it is the catalogue of refused input, one short test per door
//! and mistake, and reads best in one place.

use std::process::Output;

use recur_host::deploy;
use recur_host::enqueue::{self, NewTask};
use recur_host::examples::artifacts::*;
use recur_host::sandbox::{Sandbox, SandboxConfig};

use crate::support::{TestDb, recur};

/// Asserts that `output` is a refusal: non-zero exit, nothing on stdout, one line on
/// stderr containing `expected`. Returns the line.
fn refused(what: &str, output: &Output, expected: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert!(
        !output.status.success(),
        "{what}: should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(expected),
        "{what}: expected {expected:?} in {stderr:?}"
    );
    stderr
}

fn line(task_type: &str, key: &str) -> String {
    format!("{{\"type\": \"{task_type}\", \"key\": \"{key}\"}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_refuses_bad_input_on_one_line_and_writes_nothing() {
    let db = TestDb::new().await;
    db.deploy("noop", NOOP_COMPONENT).await;
    let long_key = "k".repeat(2049);
    let args: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "empty key",
            vec!["enqueue", "noop", ""],
            "the key must be 1 to 2048 bytes, not 0",
        ),
        ("long key", vec!["enqueue", "noop", &long_key], "not 2049"),
        (
            "empty type",
            vec!["enqueue", "", "k"],
            "task type \"\" is not valid",
        ),
        (
            "quoted type",
            vec!["enqueue", "no'pe", "k"],
            "task type \"no'pe\" is not valid",
        ),
        (
            "tenant",
            vec!["enqueue", "noop", "k", "--tenant", "a b"],
            "tenant \"a b\" is not valid",
        ),
        (
            "empty payload",
            vec!["enqueue", "noop", "k", "--payload", ""],
            "--payload is not valid JSON",
        ),
        (
            "empty at",
            vec!["enqueue", "noop", "k", "--at", ""],
            "is not a time; use RFC 3339",
        ),
        (
            "huge delay",
            vec!["enqueue", "noop", "k", "--at", "+99999999999d"],
            "is not a time",
        ),
        (
            "far future",
            vec!["enqueue", "noop", "k", "--at", "9999-01-01T00:00:00Z"],
            "more than ten years ahead",
        ),
        (
            "negative delay",
            vec!["enqueue", "noop", "k", "--at", "-5s"],
            "unexpected argument '-5'",
        ),
        (
            "no key",
            vec!["enqueue", "noop"],
            "required arguments were not provided: <KEY>",
        ),
        (
            "no connections",
            vec!["enqueue", "--bulk", "--connections", "0"],
            "invalid value '0' for '--connections <CONNECTIONS>': 0 is not in 1..=16",
        ),
        (
            "connections without bulk",
            vec!["enqueue", "noop", "k", "--connections", "2"],
            "the argument '[TASK_TYPE]' cannot be used with '--connections <CONNECTIONS>'",
        ),
        (
            "unknown type",
            vec!["enqueue", "nosuch", "k"],
            "no module is deployed for task type \"nosuch\" in tenant \"default\"; deploy one first",
        ),
        (
            "example",
            vec!["module", "deploy", "noop", "--example", "nope"],
            "no example module \"nope\"",
        ),
        (
            "deploy dir",
            vec!["module", "deploy", "noop", "/"],
            "cannot read /",
        ),
        (
            "lease",
            vec!["host", "--lease-timeout", "50ms"],
            "the lease timeout must be at least 100 ms",
        ),
        (
            "lease unit",
            vec!["host", "--lease-timeout", "soon"],
            "\"soon\" is not a duration",
        ),
        (
            "idle wait",
            vec!["host", "--idle-wait", "0ms"],
            "the idle wait must be at least 1 ms and at most the lease timeout",
        ),
        (
            "batch",
            vec!["host", "--batch", "0"],
            "concurrency and batch must be at least 1",
        ),
        (
            "types",
            vec!["host", "--types", "bad type"],
            "--types: task type \"bad type\" is not valid",
        ),
        (
            "tenants",
            vec!["host", "--tenants", "acme,bad tenant"],
            "--tenants: tenant \"bad tenant\" is not valid",
        ),
        (
            "warm modules",
            vec!["host", "--warm-modules", "100000"],
            "expected a number of modules from 0 to",
        ),
        (
            "compile cache others may write",
            vec!["host", "--compile-cache", "/tmp"],
            "writable by others",
        ),
        (
            "compile cache not a directory",
            vec!["host", "--compile-cache", "/dev/null"],
            "it is not a directory",
        ),
        (
            "subcommand",
            vec!["frobnicate"],
            "unrecognized subcommand 'frobnicate'",
        ),
    ];
    for (what, args, expected) in &args {
        refused(what, &recur(&db.url, args, b""), expected);
    }

    let mut huge_payload = b"{\"type\": \"noop\", \"key\": \"big\", \"payload\": \"".to_vec();
    huge_payload.extend(vec![b'x'; 2_000_000]);
    huge_payload.extend(b"\"}\n");
    let bulk: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not utf-8",
            [
                line("noop", "a").as_bytes(),
                b"{\"type\": \"noop\", \"key\": \"\xff\"}\n",
            ]
            .concat(),
            "line 2: not UTF-8 (invalid byte at column 26)",
        ),
        (
            "nul",
            line("noop", "a\\u0000b").into_bytes(),
            "line 1: the key contains a NUL character",
        ),
        (
            "payload",
            huge_payload,
            "line 1: the payload is 2000002 bytes; the limit is 1048576",
        ),
        (
            "field",
            b"{\"type\": \"noop\", \"key\": \"x\", \"tenat\": \"a\"}\n".to_vec(),
            "line 1: unknown field `tenat`",
        ),
        ("garbage", vec![b'a'; 8 << 20], "line 1: longer than"),
        (
            "at",
            b"{\"type\": \"noop\", \"key\": \"x\", \"at\": \"later\"}\n".to_vec(),
            "line 1: \"at\": \"later\" is not a time",
        ),
        (
            "undeployed",
            [line("noop", "a"), line("nope", "b")].concat().into_bytes(),
            "no module is deployed for task type \"nope\" in tenant \"default\" (line 2)",
        ),
        (
            "truncated",
            [line("noop", "a"), "{\"type\": \"noop\", \"ke".into()]
                .concat()
                .into_bytes(),
            "line 2: EOF while parsing",
        ),
    ];
    for (what, stdin, expected) in &bulk {
        let err = refused(
            what,
            &recur(&db.url, &["enqueue", "--bulk"], stdin),
            expected,
        );
        assert!(err.ends_with("nothing was enqueued"), "{what}: {err}");
    }

    let dir = std::env::temp_dir().join(format!("recur-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let noop = std::fs::read(NOOP_COMPONENT).unwrap();
    let files: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"#!/bin/sh\n".to_vec(), "is not WebAssembly"),
        (
            "truncated",
            noop[..noop.len() / 3].to_vec(),
            "the component is not valid",
        ),
        ("empty", Vec::new(), "the file is 0 bytes"),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module, not a component",
        ),
    ];
    for (what, bytes, expected) in &files {
        let path = dir.join(format!("{what}.wasm"));
        std::fs::write(&path, bytes).unwrap();
        let err = refused(
            what,
            &recur(
                &db.url,
                &["module", "deploy", "noop", path.to_str().unwrap()],
                b"",
            ),
            expected,
        );
        assert!(err.contains("nothing was stored"), "{what}: {err}");
    }
    // Larger than any component may be: refused from its size, before it is read.
    let huge = dir.join("huge.wasm");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    refused(
        "huge",
        &recur(
            &db.url,
            &["module", "deploy", "noop", huge.to_str().unwrap()],
            b"",
        ),
        "is 65 MiB; a component may be at most 64 MiB",
    );
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM tasks").await, 0);
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM modules").await, 1);
}

#[tokio::test]
async fn a_wrong_database_url_or_a_database_without_the_schema_is_named() {
    let db = TestDb::new().await;
    let base = db.url.rsplit_once('/').unwrap().0.to_owned();
    let host_port = base
        .rsplit_once('@')
        .map_or(base.as_str(), |(_, h)| h)
        .to_owned();
    // Each door that connects: status, a host (which must not start), an enqueue.
    let cases: [(String, &[&str], &str); 3] = [
        (
            "not a url".to_owned(),
            &["status"],
            "is not a valid PostgreSQL URL",
        ),
        (
            format!("{base}/recur_no_such_database"),
            &["host"],
            "database \"recur_no_such_database\" does not exist",
        ),
        (
            format!("postgres://recur_no_such_role:secret@{host_port}/postgres"),
            &["enqueue", "noop", "k"],
            "postgres://recur_no_such_role:***@",
        ),
    ];
    for (url, args, expected) in &cases {
        let err = refused(url, &recur(url, args, b""), expected);
        assert!(!err.contains("secret"), "the password was shown: {err}");
        // The driver repeats the server's message in its own; it is said once.
        let cause = err.rsplit(": ").next().unwrap();
        assert_eq!(err.matches(cause).count(), 1, "repeated: {err}");
    }

    sqlx::query("DROP TABLE _sqlx_migrations, tasks, modules, tenants CASCADE")
        .execute(&db.pool)
        .await
        .unwrap();
    for args in [
        &["host"][..],
        &["enqueue", "noop", "k"],
        &["module", "deploy", "noop", "--example", "noop"],
        &["module", "list"],
    ] {
        refused(
            &args.join(" "),
            &recur(&db.url, args, b""),
            "the database has no recur schema; run `recur migrate` first",
        );
    }
}

#[tokio::test]
async fn the_library_refuses_bad_tasks_whole_and_keeps_payload_bytes_as_they_are() {
    let db = TestDb::new().await;
    let bad = [
        (
            NewTask {
                tenant: "nul\0".into(),
                ..NewTask::new("noop", "k")
            },
            "tenant \"nul\\0\" is not valid",
        ),
        (
            NewTask::new("noop", "a\0b"),
            "the key contains a NUL character",
        ),
        (NewTask::new("noop", "k".repeat(2049)), "not 2049"),
        (
            NewTask {
                payload: vec![0; (1 << 20) + 1],
                ..NewTask::new("noop", "k")
            },
            "the payload is 1048577 bytes",
        ),
        (
            NewTask {
                run_at: Some(chrono::Utc::now() + chrono::Duration::days(3660 + 10)),
                ..NewTask::new("noop", "k")
            },
            "more than ten years ahead",
        ),
    ];
    for (task, expected) in bad {
        let tasks = [NewTask::new("noop", "fine"), task];
        let err = enqueue::enqueue(&db.pool, &tasks)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("task 1: ") && err.contains(expected),
            "expected {expected:?} in {err:?}"
        );
    }
    assert_eq!(db.scalar::<i64>("SELECT count(*) FROM tasks").await, 0);

    // Payloads are bytes: not UTF-8, NULs and quotes arrive as they were sent; keys may
    // hold quotes, backslashes and any Unicode.
    let payload = b"\xff\x00'\"\\\n".to_vec();
    let key = "it's \"quoted\" \\ ключ 🔑";
    let task = NewTask {
        payload: payload.clone(),
        ..NewTask::new("noop", key)
    };
    assert_eq!(enqueue::enqueue(&db.pool, &[task]).await.unwrap(), 1);
    let (stored_key, stored): (String, Vec<u8>) = sqlx::query_as("SELECT key, payload FROM tasks")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((stored_key.as_str(), stored), (key, payload));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_of_one_type_get_distinct_versions_and_one_is_active() {
    let db = TestDb::new().await;
    let components = [
        NOOP_COMPONENT,
        COUNTER_COMPONENT,
        LEDGER_COMPONENT,
        CRAWLER_COMPONENT,
        TRAP_COMPONENT,
        SPIN_COMPONENT,
    ];
    let sandbox = std::sync::Arc::new(
        Sandbox::new(&SandboxConfig {
            concurrent_runs: 1,
            ..SandboxConfig::default()
        })
        .unwrap(),
    );
    let deploys = components.iter().map(|path| {
        let (pool, sandbox, bytes) = (
            db.pool.clone(),
            sandbox.clone(),
            std::fs::read(path).unwrap(),
        );
        tokio::spawn(async move {
            deploy::deploy(&pool, &sandbox, "default", "contested", &bytes).await
        })
    });
    // The same bytes deployed four times at once: one version, three "unchanged".
    let same = (0..4).map(|_| {
        let (pool, sandbox, bytes) = (
            db.pool.clone(),
            sandbox.clone(),
            std::fs::read(NOOP_COMPONENT).unwrap(),
        );
        tokio::spawn(
            async move { deploy::deploy(&pool, &sandbox, "default", "same", &bytes).await },
        )
    });
    let mut versions = Vec::new();
    for deploy in deploys.collect::<Vec<_>>() {
        versions.push(deploy.await.unwrap().unwrap().version);
    }
    versions.sort();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    let mut unchanged = 0;
    for deploy in same.collect::<Vec<_>>() {
        let deployed = deploy.await.unwrap().unwrap();
        assert_eq!(deployed.version, 1);
        unchanged += deployed.unchanged as usize;
    }
    assert_eq!(unchanged, 3);
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM modules WHERE task_type = 'contested' AND active")
            .await,
        1
    );
    assert_eq!(
        db.scalar::<i32>("SELECT version FROM modules WHERE task_type = 'contested' AND active")
            .await,
        6,
        "the last deploy to commit is the active one"
    );
}
