//! What every test needs: a fresh migrated database of its own, deploying the test
//! modules, and waiting on conditions in the database (never on bare sleeps).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use recur_host::enqueue::{self, NewTask};
use recur_host::sandbox::{Sandbox, SandboxConfig};
use recur_host::{HostConfig, db, deploy};
use sqlx::{Connection, PgConnection, PgPool};

/// A database created for one test and dropped when the test ends (even if it fails).
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    name: String,
    server: String,
}

fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| db::DEFAULT_DATABASE_URL.to_owned())
}

/// `server` with its database replaced by `database`.
fn with_database(server: &str, database: &str) -> String {
    let base = server.split('?').next().unwrap_or(server);
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{database}", &base[..host_end])
}

impl TestDb {
    /// A database with every migration applied, whose doors create the tenants they are
    /// given (`recur tenant auto-create on`), so that a test names tenants freely; the
    /// tests of refusing unknown tenants turn that off ([`TestDb::strict`]).
    pub async fn new() -> TestDb {
        let db = TestDb::at_version(i64::MAX).await;
        recur_host::tenants::set_auto_create(&db.pool, true)
            .await
            .unwrap();
        db
    }

    /// A database with every migration applied, as an operator's is: only created
    /// tenants (and `default`) exist.
    pub async fn strict() -> TestDb {
        TestDb::at_version(i64::MAX).await
    }

    /// A database with the migrations up to `version` applied, to test the later ones.
    pub async fn at_version(version: i64) -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = server_url();
        let name = format!(
            "recur_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!("tests need PostgreSQL at {server} (set DATABASE_URL): {e}")
        });
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
        let url = with_database(&server, &name);
        let pool = db::connect(&url, 8).await.unwrap();
        let migrations: Vec<_> = db::MIGRATOR
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect();
        let migrator = sqlx::migrate::Migrator {
            migrations: migrations.into(),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        migrator.run(&pool).await.unwrap();
        TestDb {
            pool,
            url,
            name,
            server,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of another database on the same server (one a `recur bench` run made).
    pub fn sibling_url(&self, database: &str) -> String {
        with_database(&self.server, database)
    }

    /// A connection to the server's maintenance database, outside this test's database:
    /// for what a test does to the server rather than in its database (cutting
    /// connections, for one).
    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.server).await.unwrap()
    }

    /// A second, independent pool on the same database (as another host would have).
    pub async fn another_pool(&self) -> PgPool {
        db::connect(&self.url, 8).await.unwrap()
    }

    /// Deploys the component at `path` as `task_type` for tenant `default`.
    pub async fn deploy(&self, task_type: &str, path: &str) {
        self.deploy_for("default", task_type, path).await;
    }

    pub async fn deploy_for(&self, tenant: &str, task_type: &str, path: &str) {
        let bytes = std::fs::read(path).unwrap();
        let sandbox = Sandbox::new(&SandboxConfig {
            concurrent_runs: 1,
            ..SandboxConfig::default()
        })
        .unwrap();
        deploy::deploy(&self.pool, &sandbox, tenant, task_type, &bytes)
            .await
            .unwrap();
    }

    /// Sets a tenant's limits.
    pub async fn limits(&self, tenant: &str, timeout_ms: i32, max_attempts: i32) {
        sqlx::query(
            "INSERT INTO tenants (name, timeout_ms, max_attempts) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET timeout_ms = $2, max_attempts = $3",
        )
        .bind(tenant)
        .bind(timeout_ms)
        .bind(max_attempts)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// Enqueues `(type, key, payload)` tasks in tenant `default`, due now.
    pub async fn enqueue(&self, tasks: &[(&str, &str, &str)]) -> u64 {
        let tasks: Vec<NewTask> = tasks
            .iter()
            .map(|(t, k, p)| NewTask {
                payload: p.as_bytes().to_vec(),
                ..NewTask::new(*t, *k)
            })
            .collect();
        enqueue::enqueue(&self.pool, &tasks).await.unwrap()
    }

    /// Enqueues `n` tasks of `task_type` with keys `k0` to `k{n-1}` and one payload.
    pub async fn enqueue_n(&self, task_type: &str, n: usize, payload: &str) -> u64 {
        let tasks: Vec<NewTask> = (0..n)
            .map(|i| NewTask {
                payload: payload.as_bytes().to_vec(),
                ..NewTask::new(task_type, format!("k{i}"))
            })
            .collect();
        enqueue::enqueue(&self.pool, &tasks).await.unwrap()
    }

    /// Runs a scalar query.
    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The plan a connection settles on for `sql` after five executions (the generic
    /// plan, which cannot see its parameters' values), as `EXPLAIN (VERBOSE)` prints it
    /// for all `params` parameters NULL, one line a row. Used by the engine's tests of its
    /// claim and commit statements (host/src/tests/), which share this file.
    #[allow(dead_code)]
    pub async fn generic_plan(&self, sql: &str, params: usize) -> Vec<String> {
        let mut conn = self.pool.acquire().await.unwrap();
        sqlx::raw_sql(&format!(
            "SET plan_cache_mode = force_generic_plan; PREPARE generic AS {sql}"
        ))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let nulls = vec!["NULL"; params].join(", ");
        sqlx::query_scalar(&format!(
            "EXPLAIN (VERBOSE, COSTS OFF) EXECUTE generic({nulls})"
        ))
        .fetch_all(&mut *conn)
        .await
        .unwrap()
    }

    /// Whether `tasks` and `task_keys` agree: every task has its key under its id, and
    /// every key its task. Panics with the first rows that do not.
    pub async fn assert_keys_match_tasks(&self) {
        let wrong: Vec<(Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT t.id, k.id FROM tasks AS t
             FULL JOIN task_keys AS k
               ON k.tenant = t.tenant AND k.task_type = t.task_type AND k.key = t.key
             WHERE t.id IS DISTINCT FROM k.id
             LIMIT 5",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        assert!(
            wrong.is_empty(),
            "(task id, key's id) that differ: {wrong:?}"
        );
    }

    /// That no session holds an advisory lock in this database: a bulk load's locks
    /// live in its pooled connections' sessions, and one left there would stall the
    /// next load that gets the connection.
    pub async fn assert_no_advisory_locks(&self) {
        let held: i64 = self
            .scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .await;
        assert_eq!(held, 0, "advisory locks held");
    }

    /// One task's row by key: (status, runs, attempt, state as text, last_error).
    pub async fn task(&self, key: &str) -> TaskRow {
        let row: (i16, i64, i32, Option<Vec<u8>>, Option<String>, f64) = sqlx::query_as(
            "SELECT status, runs, attempt, state, last_error,
                    extract(epoch FROM next_run_at - now())::float8
             FROM tasks WHERE key = $1",
        )
        .bind(key)
        .fetch_one(&self.pool)
        .await
        .unwrap_or_else(|e| panic!("task {key}: {e}"));
        TaskRow {
            status: row.0,
            runs: row.1,
            attempt: row.2,
            state: row.3.map(|s| String::from_utf8_lossy(&s).into_owned()),
            error: row.4,
            due_in_secs: row.5,
        }
    }

    /// Waits until `sql` (a boolean query) is true; fails the test after `timeout`.
    pub async fn wait_for(&self, sql: &str, timeout: Duration) {
        let pool = self.pool.clone();
        let sql = sql.to_owned();
        wait(timeout, &sql.clone(), move || {
            let (pool, sql) = (pool.clone(), sql.clone());
            async move {
                sqlx::query_scalar::<_, bool>(&sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(false)
            }
        })
        .await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop cannot await; a short-lived runtime on its own thread can.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&server).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A task row, as the tests look at it.
#[derive(Debug)]
pub struct TaskRow {
    pub status: i16,
    pub runs: i64,
    pub attempt: i32,
    pub state: Option<String>,
    pub error: Option<String>,
    pub due_in_secs: f64,
}

/// Runs the `recur` binary with `args` against the database at `url`, feeding it `stdin`.
pub fn recur(url: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    // Set by cargo for the integration suite only, which is all that runs the binary.
    let Some(binary) = option_env!("CARGO_BIN_EXE_recur") else {
        panic!("only the integration suite runs `recur`");
    };
    let mut child = Command::new(binary)
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("RECUR_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // A writer thread: a refused input may be answered before it is all read.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

/// The stdout of a command that must have succeeded.
pub fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The JSON line that a `--json` command, which must have succeeded, printed last.
pub fn json_report(output: &std::process::Output) -> serde_json::Value {
    let out = stdout(output);
    serde_json::from_str(out.trim().lines().last().unwrap()).unwrap()
}

/// The stderr of a command that must have failed, with one line that says why.
pub fn one_line_error(output: &std::process::Output) -> String {
    assert!(
        !output.status.success(),
        "should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

/// Polls `check` until it is true; panics with `what` after `timeout`.
pub async fn wait<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Host settings for tests: small batches, short lease, quick polling and refresh.
pub fn test_config() -> HostConfig {
    let defaults = HostConfig::default();
    HostConfig {
        concurrency: 2,
        batch: 64,
        lease_timeout: Duration::from_secs(2),
        idle_wait: Duration::from_millis(20),
        registry_refresh: Duration::from_millis(200),
        sandbox: SandboxConfig {
            concurrent_runs: 2,
            ..defaults.sandbox.clone()
        },
        ..defaults
    }
}
