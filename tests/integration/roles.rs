//! PostgreSQL enforces who may do what, with real roles: tenant A's login role, made by
//! `recur tenant create --login`, tries every door against tenant B's rows (the command
//! line, the library, `recur_enqueue()` and plain SQL), and each is refused with a
//! one-line error or finds nothing, and nothing of B's changes; A's own work goes
//! through; a host run as the operator still runs everyone's tasks.

use std::time::Duration;

use sqlx::PgPool;

use recur_host::enqueue::{self, EnqueueError, NewTask};
use recur_host::examples::artifacts::NOOP_COMPONENT;
use recur_host::requeue::{Requeue, RequeueError, requeue};
use recur_host::{Host, db};

use crate::support::{self, TestDb, one_line_error, stdout, test_config};

/// B's rows as the operator sees them, to compare before and after A's attempts.
async fn b_rows(db: &TestDb) -> Vec<(String, Vec<u8>, Option<Vec<u8>>, i16, i64)> {
    sqlx::query_as(
        "SELECT key, payload, state, status, runs FROM tasks WHERE tenant = 'b' ORDER BY key",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Creates tenant `tenant` with a login role named after the test's database (roles are
/// the server's, shared by every test's database); returns the role's URL.
fn create_with_login(db: &TestDb, tenant: &str) -> String {
    let role = format!("{}_{tenant}", db.name());
    let out = support::recur(
        &db.url,
        &["tenant", "create", tenant, "--login", &role],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    let url = said
        .split("DATABASE_URL=")
        .nth(1)
        .expect("the command says how to connect")
        .trim()
        .to_owned();
    assert!(url.contains(&role), "{url}");
    url
}

async fn drop_roles(db: &TestDb) {
    for tenant in ["a", "b"] {
        let out = support::recur(&db.url, &["tenant", "delete", tenant, "--force"], b"");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_role_reaches_only_its_own_rows_through_every_door() {
    let db = TestDb::strict().await;
    let a_url = create_with_login(&db, "a");
    let _b_url = create_with_login(&db, "b");
    db.deploy_for("a", "noop", NOOP_COMPONENT).await;
    db.deploy_for("b", "noop", NOOP_COMPONENT).await;
    for tenant in ["a", "b"] {
        let tasks: Vec<NewTask> = (0..3)
            .map(|i| NewTask {
                tenant: tenant.into(),
                payload: format!(r#"{{"secret": "{tenant}-{i}"}}"#).into_bytes(),
                ..NewTask::new("noop", format!("k{i}"))
            })
            .collect();
        enqueue::enqueue(&db.pool, &tasks).await.unwrap();
    }
    sqlx::query("UPDATE tasks SET status = 2, last_error = 'parked' WHERE key = 'k2'")
        .execute(&db.pool)
        .await
        .unwrap();
    let b_before = b_rows(&db).await;
    let b_modules: i64 = db
        .scalar("SELECT count(*) FROM modules WHERE tenant = 'b'")
        .await;

    // The command line, as A.
    let as_a = |args: &[&str]| support::recur(&a_url, args, b"");
    let refused = "acts for tenant \"a\" and cannot act for tenant \"b\"";
    for args in [
        &["enqueue", "noop", "x", "--tenant", "b"][..],
        &[
            "module",
            "deploy",
            "noop",
            "--example",
            "noop",
            "--tenant",
            "b",
        ],
        &["requeue", "noop", "--all-failed", "--tenant", "b"],
    ] {
        let error = one_line_error(&as_a(args));
        assert!(error.contains(refused), "{args:?}: {error}");
    }
    let bulk = one_line_error(&support::recur(
        &a_url,
        &["enqueue", "--bulk"],
        b"{\"type\":\"noop\",\"key\":\"y\",\"tenant\":\"b\"}\n",
    ));
    assert!(
        bulk.contains("acts for tenant \"a\" and cannot enqueue for any other")
            && bulk.contains("nothing was enqueued"),
        "{bulk}"
    );
    let limits = one_line_error(&as_a(&["tenant", "set", "a", "--weight", "100"]));
    assert!(
        limits.contains("permission denied for table tenants"),
        "{limits}"
    );
    let status = stdout(&as_a(&["status", "--json"]));
    assert!(
        status.contains("\"a\"") && !status.contains("\"b\""),
        "its own tenant only: {status}"
    );
    let listed = stdout(&as_a(&["tenant", "list", "--json"]));
    let listed: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "its own tenant only: {listed}"
    );

    // The library and plain SQL, as A.
    let a = db::connect(&a_url, 2).await.unwrap();
    let library = enqueue::enqueue(
        &a,
        &[NewTask {
            tenant: "b".into(),
            ..NewTask::new("noop", "z")
        }],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&library, EnqueueError::Refused(m) if m.contains(refused)),
        "{library}"
    );
    let requeued = requeue(
        &a,
        &Requeue {
            tenant: "b",
            task_type: "noop",
            keys: None,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(requeued, RequeueError::Refused(_)), "{requeued}");
    assert_sql_finds_nothing_of_b(&a).await;

    // Nothing of B's changed; A's own doors work.
    assert_eq!(b_rows(&db).await, b_before);
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM modules WHERE tenant = 'b'")
            .await,
        b_modules
    );
    let default = one_line_error(&as_a(&["enqueue", "noop", "k9"]));
    assert!(
        default.contains("cannot act for tenant \"default\""),
        "{default}"
    );
    assert!(stdout(&as_a(&["enqueue", "noop", "k9", "--tenant", "a"])).contains("1 new"));
    let own_bulk = support::recur(
        &a_url,
        &["enqueue", "--bulk", "--connections", "4"],
        b"{\"type\":\"noop\",\"key\":\"k10\",\"tenant\":\"a\"}\n{\"type\":\"noop\",\"key\":\"k11\",\"tenant\":\"a\"}\n",
    );
    assert!(stdout(&own_bulk).contains("2 new"), "{own_bulk:?}");
    assert!(
        stdout(&as_a(&[
            "module",
            "deploy",
            "other",
            "--example",
            "counter",
            "--tenant",
            "a"
        ]))
        .contains("version 1")
    );
    assert!(
        stdout(&as_a(&["requeue", "noop", "--all-failed", "--tenant", "a"])).contains("requeued 1")
    );
    a.close().await;

    // A host run as the operator runs both tenants' tasks.
    let host = Host::start(db.pool.clone(), test_config()).unwrap();
    db.wait_for(
        "SELECT count(DISTINCT tenant) = 2 FROM tasks WHERE runs > 0",
        Duration::from_secs(20),
    )
    .await;
    host.stop().await;
    drop_roles(&db).await;
}

/// A's plain SQL against B's rows: reads find nothing, writes change nothing or are
/// refused, and A's limits are out of its reach.
async fn assert_sql_finds_nothing_of_b(a: &PgPool) {
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(a)
            .await
            .unwrap()
    };
    assert_eq!(
        count("SELECT count(*) FROM tasks WHERE tenant = 'b'").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM task_keys WHERE tenant = 'b'").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM modules WHERE tenant = 'b'").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM tenants WHERE name = 'b'").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM tasks").await,
        3,
        "its own three"
    );
    for statement in [
        "UPDATE tasks SET next_run_at = now() + interval '1 day' WHERE tenant = 'b'",
        "DELETE FROM tasks WHERE tenant = 'b'",
        "DELETE FROM task_keys WHERE tenant = 'b'",
        "UPDATE modules SET active = false WHERE tenant = 'b'",
    ] {
        let done = sqlx::query(statement).execute(a).await.unwrap();
        assert_eq!(done.rows_affected(), 0, "{statement}");
    }
    for (statement, says) in [
        (
            "INSERT INTO tasks (id, tenant, task_type, key) VALUES (999, 'b', 'noop', 'w')",
            "permission denied",
        ),
        (
            "SELECT recur_enqueue_many(ARRAY['b'], ARRAY['noop'], ARRAY['v'])",
            "cannot act for tenant \"b\"",
        ),
        ("UPDATE tasks SET payload = 'x'", "permission denied"),
        ("UPDATE tasks SET runs = 0", "permission denied"),
        ("UPDATE tenants SET weight = 100", "permission denied"),
        (
            "UPDATE settings SET auto_create_tenants = true",
            "permission denied",
        ),
        ("SELECT * FROM claims", "permission denied"),
        (
            "SELECT recur_enqueue('b', 'noop', 'v')",
            "cannot act for tenant \"b\"",
        ),
    ] {
        let error = sqlx::query(statement)
            .execute(a)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(says), "{statement}: {error}");
    }
}

/// A tenant's role writes tasks only through the database's door, which keeps its
/// quotas: plain inserts are refused, ids it chooses are not used, and a payload or a
/// task count past its quota is refused whole by every way in (the door, the library,
/// the command line's single and bulk enqueue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_role_enqueues_only_through_the_door_that_keeps_its_quotas() {
    let db = TestDb::strict().await;
    let a_url = create_with_login(&db, "a");
    let _b_url = create_with_login(&db, "b");
    let set = support::recur(
        &db.url,
        &[
            "tenant",
            "set",
            "a",
            "--max-tasks",
            "3",
            "--max-payload-bytes",
            "20",
        ],
        b"",
    );
    assert!(set.status.success(), "{set:?}");
    let a = db::connect(&a_url, 2).await.unwrap();
    let refuse = |sql: &'static str, says: &'static str| {
        let a = a.clone();
        async move {
            let error = sqlx::query(sql).execute(&a).await.unwrap_err().to_string();
            assert!(error.contains(says), "{sql}: {error}");
        }
    };
    refuse(
        "INSERT INTO tasks (tenant, task_type, key) VALUES ('a', 'noop', 'plain')",
        "permission denied for table tasks",
    )
    .await;
    refuse(
        "INSERT INTO task_keys (tenant, task_type, key, id) VALUES ('a', 'noop', 'plain', 1)",
        "permission denied for table task_keys",
    )
    .await;
    refuse(
        "SELECT recur_enqueue_many(ARRAY['a'], ARRAY['noop'], ARRAY['big'],
                                   ARRAY[convert_to(repeat('x', 21), 'UTF8')])",
        "tenant \"a\" may enqueue at most 20 (its max_payload_bytes)",
    )
    .await;
    refuse(
        "SELECT recur_enqueue_many(ARRAY['a', 'a'], ARRAY['noop', 'noop'], ARRAY['x'])",
        "arrays of one length",
    )
    .await;
    // Ids it names are not the ones its tasks get: another tenant's later enqueue must
    // not meet them.
    let new: i64 = sqlx::query_scalar(
        "SELECT recur_enqueue_many(ARRAY['a', 'a'], ARRAY['noop', 'noop'], ARRAY['k1', 'k2'],
                                   NULL, NULL, ARRAY[900000, 900001]::bigint[])",
    )
    .fetch_one(&a)
    .await
    .unwrap();
    assert_eq!(new, 2);
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE id >= 900000")
            .await,
        0
    );
    let quota = "tenant \"a\" may have at most 3 scheduled tasks (its max_tasks)";
    refuse(
        "SELECT recur_enqueue_many(ARRAY['a', 'a'], ARRAY['noop', 'noop'], ARRAY['k3', 'k4'])",
        "may have at most 3 scheduled tasks (its max_tasks)",
    )
    .await;
    let library = enqueue::enqueue(
        &a,
        &[
            NewTask {
                tenant: "a".into(),
                ..NewTask::new("noop", "k3")
            },
            NewTask {
                tenant: "a".into(),
                ..NewTask::new("noop", "k4")
            },
        ],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&library, EnqueueError::Refused(m) if m.contains(quota)),
        "{library}"
    );
    let bulk = one_line_error(&support::recur(
        &a_url,
        &["enqueue", "--bulk", "--allow-undeployed"],
        b"{\"type\":\"noop\",\"key\":\"k3\",\"tenant\":\"a\"}\n{\"type\":\"noop\",\"key\":\"k4\",\"tenant\":\"a\"}\n",
    ));
    assert!(bulk.contains(quota), "{bulk}");
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM tasks WHERE tenant = 'a'")
            .await,
        2
    );
    let single: Option<i64> = sqlx::query_scalar("SELECT recur_enqueue('a', 'noop', 'k3')")
        .fetch_one(&a)
        .await
        .unwrap();
    assert!(single.is_some(), "the third fits");
    a.close().await;
    drop_roles(&db).await;
}

/// A tenant's role inserts its module rows itself, so the database checks what deploy
/// always checked: a row's sha256 is its bytes' hash (hosts share compiled code by that
/// hash, across tenants), and its bytes are within the deploy limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_role_cannot_plant_bytes_under_another_modules_hash() {
    let db = TestDb::strict().await;
    let a_url = create_with_login(&db, "a");
    let _b_url = create_with_login(&db, "b");
    db.deploy_for("b", "noop", NOOP_COMPONENT).await;
    let b_hash: String = db
        .scalar("SELECT sha256 FROM modules WHERE tenant = 'b'")
        .await;
    let a = db::connect(&a_url, 2).await.unwrap();
    let planted = sqlx::query(
        "INSERT INTO modules (tenant, task_type, version, sha256, component)
         VALUES ('a', 'noop', 1, $1, '\\x0061736d0d000100'::bytea)",
    )
    .bind(&b_hash)
    .execute(&a)
    .await
    .unwrap_err()
    .to_string();
    assert!(planted.contains("modules_sha256_is_the_hash"), "{planted}");
    let huge = sqlx::query(
        "INSERT INTO modules (tenant, task_type, version, sha256, component)
         SELECT 'a', 'noop', 1, encode(sha256(b), 'hex'), b
         FROM (SELECT convert_to(repeat('x', 67108865), 'UTF8') AS b) AS s",
    )
    .execute(&a)
    .await
    .unwrap_err()
    .to_string();
    assert!(huge.contains("modules_component_size"), "{huge}");
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM modules WHERE tenant = 'a'")
            .await,
        0
    );
    a.close().await;
    drop_roles(&db).await;
}
