//! Connecting to PostgreSQL and applying the embedded migrations (`reworded.rs`: those
//! whose comments changed after they shipped).

mod reworded;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

const SCHEMA_VERSION_SQL: &str = include_str!("../sql/schema_version.sql");

const SCHEMA_EXISTS_SQL: &str = include_str!("../sql/schema_exists.sql");

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The database used when neither `--database-url` nor `DATABASE_URL` says otherwise:
/// the local PostgreSQL the development machines and CI run.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL does not parse.
    #[error(
        "DATABASE_URL {url:?} is not a valid PostgreSQL URL ({source}); expected postgres://user[:password]@host[:port]/database"
    )]
    BadUrl {
        /// The URL with any password hidden.
        url: String,
        /// The parser's complaint.
        source: sqlx::Error,
    },
    /// The server did not answer or refused the login.
    #[error(
        "cannot connect to PostgreSQL at {url}: {source}; check that it runs and that DATABASE_URL is right"
    )]
    Connect {
        /// The URL with any password hidden.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The schema is missing or from another version.
    #[error("{0}")]
    Schema(String),
    /// A query failed.
    #[error("database error: {0}")]
    Query(sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Opens a pool of up to `max_connections` connections to `url`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    connect_with(url, max_connections, tracing::log::LevelFilter::Warn, true).await
}

/// [`connect`] for a host's pipeline, whose every claim and commit acquires a
/// connection: sqlx's default ping on each acquire would be a round trip before each of
/// them, on the claim loop's serial path, where nothing overlaps it. Without it, a
/// connection that died while idle fails its next statement, where the host's stages
/// retry (sqlx still pings a connection when it goes back to the pool, off that path).
/// Code that does not retry keeps the ping: [`connect`].
pub async fn connect_for_host(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    connect_with(url, max_connections, tracing::log::LevelFilter::Warn, false).await
}

/// [`connect`] for statements that are long by design (a bench loading millions of
/// tasks): sqlx's warning for a statement over a second goes to the debug level, where
/// it does not read as a fault in the middle of a normal run.
pub async fn connect_for_bulk(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    connect_with(url, max_connections, tracing::log::LevelFilter::Debug, true).await
}

async fn connect_with(
    url: &str,
    max_connections: u32,
    slow: tracing::log::LevelFilter,
    ping_on_acquire: bool,
) -> Result<PgPool, DbError> {
    let shown = hide_password(url);
    let options: PgConnectOptions = url.parse().map_err(|source| DbError::BadUrl {
        url: shown.clone(),
        source,
    })?;
    // Statement logging at INFO would print every claim and commit. No JIT: recur's
    // statements are short, and the planner's estimate for a claim over many tenants'
    // queues (one per tenant, each with a LIMIT it cannot know) is high enough to compile
    // it, which takes far longer than the claim itself.
    let options = options
        .options([("jit", "off")])
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(slow, Duration::from_secs(1));
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(ping_on_acquire)
        .connect_with(options)
        .await
        .map_err(|source| DbError::Connect { url: shown, source })
}

/// Applies every migration not applied yet. Idempotent; safe to run from several hosts
/// at once (sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    let migrated: bool = sqlx::query_scalar(SCHEMA_EXISTS_SQL)
        .fetch_one(pool)
        .await
        .map_err(DbError::Query)?;
    if migrated {
        reworded::record(pool, &MIGRATOR)
            .await
            .map_err(DbError::Query)?;
    }
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Checks that the schema is there and current, so commands fail with a clear error
/// instead of "relation does not exist".
pub async fn check_schema(pool: &PgPool) -> Result<(), DbError> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let exists: bool = sqlx::query_scalar(SCHEMA_EXISTS_SQL)
        .fetch_one(pool)
        .await
        .map_err(DbError::Query)?;
    let applied: Option<i64> = if exists {
        sqlx::query_scalar(SCHEMA_VERSION_SQL)
            .fetch_one(pool)
            .await
            .map_err(DbError::Query)?
    } else {
        None
    };
    match applied {
        None => Err(DbError::Schema(
            "the database has no recur schema; run `recur migrate` first".into(),
        )),
        Some(v) if v < latest => Err(DbError::Schema(format!(
            "the database schema is at version {v} but this recur needs {latest}; run `recur migrate`"
        ))),
        Some(v) if v > latest => Err(DbError::Schema(format!(
            "the database schema is at version {v}, newer than this recur knows ({latest}); upgrade recur"
        ))),
        Some(_) => Ok(()),
    }
}

/// `url` with its password replaced by `***`, for messages.
pub fn hide_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
