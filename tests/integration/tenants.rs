//! Tenants are created on purpose: `recur tenant` creates, lists, shows, changes and
//! deletes them, and every door that writes for a tenant (the CLI's enqueue, single and
//! bulk, deploy, the library, `recur_enqueue()`) refuses one that does not exist, with a
//! one-line error that says how to create it, and writes nothing, unless the operator
//! lets the doors create tenants.

use std::process::Output;

use recur_host::enqueue::{self, EnqueueError, NewTask};

use crate::support::{self, TestDb, one_line_error, stdout};

fn recur(db: &TestDb, args: &[&str]) -> Output {
    support::recur(&db.url, args, b"")
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.scalar::<i64>(sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_refuses_a_tenant_nobody_created_and_writes_nothing() {
    let db = TestDb::strict().await;
    let refusal = "tenant \"acme\" does not exist; create it with `recur tenant create acme`";

    let deploy = one_line_error(&recur(
        &db,
        &[
            "module",
            "deploy",
            "noop",
            "--example",
            "noop",
            "--tenant",
            "acme",
        ],
    ));
    assert!(deploy.contains(refusal), "{deploy}");
    let single = one_line_error(&recur(
        &db,
        &[
            "enqueue",
            "noop",
            "k1",
            "--tenant",
            "acme",
            "--allow-undeployed",
        ],
    ));
    assert!(single.contains(refusal), "{single}");
    let lines = "{\"type\":\"noop\",\"key\":\"a\"}\n{\"type\":\"noop\",\"key\":\"b\",\"tenant\":\"acme\"}\n";
    let bulk = one_line_error(&support::recur(
        &db.url,
        &["enqueue", "--bulk", "--allow-undeployed"],
        lines.as_bytes(),
    ));
    assert!(
        bulk.contains(refusal) && bulk.contains("nothing was enqueued"),
        "{bulk}"
    );
    let library = enqueue::enqueue(
        &db.pool,
        &[NewTask {
            tenant: "acme".into(),
            ..NewTask::new("noop", "k")
        }],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&library, EnqueueError::Refused(m) if m.contains(refusal)),
        "{library}"
    );
    let sql = sqlx::query("SELECT recur_enqueue('acme', 'noop', 'k')")
        .execute(&db.pool)
        .await
        .unwrap_err()
        .to_string();
    assert!(sql.contains(refusal), "{sql}");

    assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM task_keys").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM modules").await, 0);
    assert_eq!(
        count(&db, "SELECT count(*) FROM tenants WHERE name = 'acme'").await,
        0
    );

    // Created, the same doors let it through; `default` exists from the start.
    assert!(stdout(&recur(&db, &["tenant", "create", "acme"])).contains("created \"acme\""));
    assert!(
        stdout(&recur(
            &db,
            &[
                "module",
                "deploy",
                "noop",
                "--example",
                "noop",
                "--tenant",
                "acme"
            ]
        ))
        .contains("deployed")
    );
    assert!(stdout(&recur(&db, &["enqueue", "noop", "k1", "--tenant", "acme"])).contains("1 new"));
    assert!(
        stdout(&support::recur(
            &db.url,
            &["enqueue", "--bulk", "--allow-undeployed"],
            lines.as_bytes()
        ))
        .contains("enqueued 2 new")
    );

    // With auto-create on, a door creates the tenant it is given.
    assert!(stdout(&recur(&db, &["tenant", "auto-create", "on"])).contains("creates it"));
    sqlx::query("SELECT recur_enqueue('globex', 'noop', 'k')")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        count(&db, "SELECT count(*) FROM tenants WHERE name = 'globex'").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_created_listed_changed_and_deleted_from_the_command_line() {
    let db = TestDb::strict().await;
    let created = stdout(&recur(
        &db,
        &[
            "tenant",
            "create",
            "acme",
            "--weight",
            "3",
            "--timeout-ms",
            "900",
            "--json",
        ],
    ));
    let tenant: serde_json::Value = serde_json::from_str(created.trim()).unwrap();
    assert_eq!(tenant["name"], "acme");
    assert_eq!(tenant["weight"], 3);
    assert_eq!(tenant["timeout_ms"], 900);
    assert_eq!(tenant["max_attempts"], 5, "a default");
    assert!(one_line_error(&recur(&db, &["tenant", "create", "acme"])).contains("exists already"));
    assert!(one_line_error(&recur(&db, &["tenant", "create", "bad name"])).contains("tenant"));
    let out_of_range = one_line_error(&recur(&db, &["tenant", "set", "acme", "--weight", "0"]));
    assert!(
        out_of_range.contains("weight 0 is out of range; give 1 to 10000"),
        "{out_of_range}"
    );
    assert!(
        one_line_error(&recur(&db, &["tenant", "set", "nobody", "--weight", "2"]))
            .contains("tenant \"nobody\" does not exist")
    );
    assert!(one_line_error(&recur(&db, &["tenant", "set", "acme"])).contains("give a setting"));
    assert!(stdout(&recur(&db, &["tenant", "set", "acme", "--weight", "5"])).contains("weight 5"));

    let list: serde_json::Value =
        serde_json::from_str(stdout(&recur(&db, &["tenant", "list", "--json"])).trim()).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "default"]);
    assert!(stdout(&recur(&db, &["tenant", "list"])).contains("acme"));
    let shown: serde_json::Value =
        serde_json::from_str(stdout(&recur(&db, &["tenant", "show", "acme", "--json"])).trim())
            .unwrap();
    assert_eq!(shown["weight"], 5);

    // A tenant that owns tasks is deleted only with --force, and then with them.
    assert!(
        stdout(&recur(
            &db,
            &[
                "enqueue",
                "noop",
                "k1",
                "--tenant",
                "acme",
                "--allow-undeployed"
            ]
        ))
        .contains("1 new")
    );
    let owns = one_line_error(&recur(&db, &["tenant", "delete", "acme"]));
    assert!(
        owns.contains("still owns 1 tasks") && owns.contains("--force"),
        "{owns}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 1);
    assert!(stdout(&recur(&db, &["tenant", "delete", "acme", "--force"])).contains("deleted"));
    assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM task_keys").await, 0);
    assert!(one_line_error(&recur(&db, &["tenant", "show", "acme"])).contains("does not exist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_quotas_fails_that_enqueue_or_that_run_and_nothing_else() {
    let db = TestDb::strict().await;
    for args in [
        &[
            "tenant",
            "create",
            "tight",
            "--max-payload-bytes",
            "30",
            "--max-spawns",
            "2",
            "--max-state-bytes",
            "5",
        ][..],
        &["tenant", "create", "roomy"],
    ] {
        assert!(stdout(&recur(&db, args)).contains("created"));
    }
    for tenant in ["tight", "roomy"] {
        for example in ["noop", "counter"] {
            let args = [
                "module",
                "deploy",
                example,
                "--example",
                example,
                "--tenant",
                tenant,
            ];
            assert!(stdout(&recur(&db, &args)).contains("deployed"));
        }
    }
    let long = r#"{"padding": "more than thirty bytes of it"}"#;
    let over = "tenant \"tight\" may enqueue at most 30 (its max_payload_bytes)";
    let single = one_line_error(&recur(
        &db,
        &[
            "enqueue",
            "noop",
            "big",
            "--tenant",
            "tight",
            "--payload",
            long,
        ],
    ));
    assert!(single.contains(over), "{single}");
    let line =
        format!("{{\"type\":\"noop\",\"key\":\"big\",\"tenant\":\"tight\",\"payload\":{long}}}\n");
    let bulk = one_line_error(&support::recur(
        &db.url,
        &["enqueue", "--bulk"],
        line.as_bytes(),
    ));
    assert!(bulk.contains(over) && bulk.contains("line 1"), "{bulk}");
    let sql = sqlx::query(&format!(
        "SELECT recur_enqueue('tight', 'noop', 'big', '{long}')"
    ))
    .execute(&db.pool)
    .await
    .unwrap_err()
    .to_string();
    assert!(
        sql.contains("tenant \"tight\" may enqueue at most 30"),
        "{sql}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 0);

    // Spawns and state over the quota fail the run that decided them; the same runs of
    // a tenant without those quotas go through.
    for tenant in ["tight", "roomy"] {
        let tasks = [
            NewTask {
                tenant: tenant.into(),
                payload: br#"{"spawn": 3}"#.to_vec(),
                ..NewTask::new("noop", "spawner")
            },
            NewTask {
                tenant: tenant.into(),
                payload: br#"{"runs": 2, "every_ms": 10}"#.to_vec(),
                ..NewTask::new("counter", "counter")
            },
        ];
        enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    }
    let host = recur_host::Host::start(db.pool.clone(), support::test_config()).unwrap();
    db.wait_for(
        "SELECT count(*) = 4 FROM tasks WHERE key IN ('spawner', 'counter') AND status <> 0",
        std::time::Duration::from_secs(20),
    )
    .await;
    host.stop().await;
    let rows: Vec<(String, String, i16, Option<String>)> = sqlx::query_as(
        "SELECT tenant, key, status, last_error FROM tasks
         WHERE key IN ('spawner', 'counter') ORDER BY tenant, key",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let error = |tenant: &str, key: &str| {
        rows.iter()
            .find(|r| r.0 == tenant && r.1 == key)
            .map(|r| (r.2, r.3.clone().unwrap_or_default()))
            .unwrap()
    };
    let (status, spawns) = error("tight", "spawner");
    assert_eq!(status, 2, "{spawns}");
    assert!(
        spawns.contains("3 spawns in one run is over its tenant's quota of 2 (max_spawns)"),
        "{spawns}"
    );
    let (status, state) = error("tight", "counter");
    assert_eq!(status, 2, "{state}");
    assert!(
        state.contains("over its tenant's quota of 5 bytes (max_state_bytes)"),
        "{state}"
    );
    assert_eq!(error("roomy", "spawner").0, 1, "done");
    assert_eq!(error("roomy", "counter").0, 1, "done");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM tasks WHERE tenant = 'roomy' AND key LIKE 'spawner/%'"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM tasks WHERE tenant = 'tight' AND key LIKE 'spawner/%'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_past_a_tenants_task_quota_are_refused_whole() {
    let db = TestDb::strict().await;
    assert!(
        stdout(&recur(
            &db,
            &["tenant", "create", "capped", "--max-tasks", "3"]
        ))
        .contains("tasks 3")
    );
    let capped = |key: &str| NewTask {
        tenant: "capped".into(),
        ..NewTask::new("noop", key)
    };
    assert_eq!(
        enqueue::enqueue(&db.pool, &[capped("a"), capped("b")])
            .await
            .unwrap(),
        2
    );
    let quota = "tenant \"capped\" may have at most 3 scheduled tasks (its max_tasks)";
    let over = enqueue::enqueue(&db.pool, &[capped("c"), capped("d")])
        .await
        .unwrap_err();
    assert!(
        matches!(&over, EnqueueError::Refused(m) if m.contains(quota)),
        "{over}"
    );
    let single = sqlx::query("SELECT recur_enqueue('capped', 'noop', 'c')")
        .execute(&db.pool)
        .await;
    assert!(single.is_ok(), "the third fits");
    let sql = sqlx::query("SELECT recur_enqueue('capped', 'noop', 'd')")
        .execute(&db.pool)
        .await
        .unwrap_err()
        .to_string();
    assert!(sql.contains(quota), "{sql}");
    let lines = "{\"type\":\"noop\",\"key\":\"e\",\"tenant\":\"capped\"}\n";
    let bulk = one_line_error(&support::recur(
        &db.url,
        &["enqueue", "--bulk", "--allow-undeployed"],
        lines.as_bytes(),
    ));
    assert!(
        bulk.contains(quota) && bulk.contains("nothing was enqueued"),
        "{bulk}"
    );
    let many: Vec<NewTask> = (0..enqueue::COPY_FROM_TASKS)
        .map(|i| capped(&format!("m{i}")))
        .collect();
    let bulk_library = enqueue::enqueue(&db.pool, &many).await.unwrap_err();
    assert!(
        matches!(&bulk_library, EnqueueError::Refused(m) if m.contains(quota)),
        "{bulk_library}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM tasks WHERE tenant = 'capped'").await,
        3
    );
    assert_eq!(count(&db, "SELECT count(*) FROM task_keys").await, 3);
    // Lifted, the same enqueue goes in.
    assert!(
        stdout(&recur(
            &db,
            &["tenant", "set", "capped", "--max-tasks", "none"]
        ))
        .contains("tasks unlimited")
    );
    assert_eq!(enqueue::enqueue(&db.pool, &[capped("d")]).await.unwrap(), 1);
}
