//! The tenants door: creating, listing, changing and deleting tenants and their login
//! roles, and the checks every other door makes before it writes for one ([`require`],
//! [`require_own`]). A tenant exists only once an operator created it, unless the fleet
//! lets the doors create tenants they do not know ([`set_auto_create`]). A tenant's role
//! sees and changes only its own tenant's rows (migrations/0011). The checks are the
//! database's own (`recur_require_tenants()`, `recur_require_own()`), so plain SQL meets
//! them too.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, PgPool, Postgres, Row};

use crate::contract::{self, MAX_SPAWNS, MAX_STATE_BYTES};

/// The largest payload a door accepts (enqueue's limit, which the tenants table bounds
/// quotas by, migrations/0012).
const MAX_PAYLOAD_BYTES: usize = 1 << 20;

const LIST_SQL: &str = include_str!("sql/tenants_list.sql");
const CREATE_SQL: &str = include_str!("sql/tenants_create.sql");
const SET_SQL: &str = include_str!("sql/tenants_set.sql");
const DELETE_SQL: &str = include_str!("sql/tenants_delete.sql");
const REQUIRE_SQL: &str = "SELECT recur_require_tenants($1)";
const REQUIRE_OWN_SQL: &str = "SELECT recur_require_own($1)";
const SET_ROLE_SQL: &str = "UPDATE tenants SET role = $2 WHERE name = $1";

/// The SQLSTATE `recur_require_tenants()` raises for a tenant without a row.
pub const UNKNOWN_TENANT: &str = "RT404";

/// The SQLSTATE `recur_check_task_quotas()` raises for a tenant past its `max_tasks`.
pub const OVER_TASK_QUOTA: &str = "RT413";

/// The SQLSTATE PostgreSQL raises for a privilege the role lacks, and
/// `recur_require_own()` for a tenant's role that names another tenant.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// PostgreSQL's SQLSTATE for an object that exists already (here, a role).
const DUPLICATE_OBJECT: &str = "42710";

/// The group role every tenant's login role is a member of (migrations/0011).
pub const TENANT_GROUP: &str = "recur_tenant";

/// A tenant and the limits its tasks run under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// Its name.
    pub name: String,
    /// Its share of the fleet's executions while other tenants have due work too.
    pub weight: i32,
    /// Largest linear memory one run may grow to.
    pub memory_bytes: i64,
    /// Wall-clock budget of one run, in milliseconds.
    pub timeout_ms: i32,
    /// Tries of one run before its task is parked as failed.
    pub max_attempts: i32,
    /// The largest payload its tasks may be enqueued with.
    pub max_payload_bytes: i32,
    /// The largest state one of its runs may keep.
    pub max_state_bytes: i32,
    /// The most tasks one of its runs may spawn.
    pub max_spawns: i32,
    /// The most scheduled tasks it may have, if it has a quota.
    pub max_tasks: Option<i64>,
    /// The most runs it may have in flight across the whole fleet, if it has a quota.
    pub max_running: Option<i32>,
    /// The most tasks its runs may spawn per minute across the fleet, if it has a quota.
    pub max_spawns_per_minute: Option<i32>,
    /// Its active modules.
    pub modules: i64,
    /// The login role that acts for it, if it has one.
    pub role: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Changes to a tenant's settings; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantChanges {
    /// See [`Tenant::weight`]: 1 to 10,000.
    pub weight: Option<i32>,
    /// See [`Tenant::memory_bytes`]: 64 KiB to 4 GiB.
    pub memory_bytes: Option<i64>,
    /// See [`Tenant::timeout_ms`]: 1 ms to an hour.
    pub timeout_ms: Option<i32>,
    /// See [`Tenant::max_attempts`]: 1 to 1,000.
    pub max_attempts: Option<i32>,
    /// See [`Tenant::max_payload_bytes`]: 0 to 1 MiB.
    pub max_payload_bytes: Option<i32>,
    /// See [`Tenant::max_state_bytes`]: 0 to 256 KiB.
    pub max_state_bytes: Option<i32>,
    /// See [`Tenant::max_spawns`]: 0 to 1,000.
    pub max_spawns: Option<i32>,
    /// See [`Tenant::max_tasks`]: 0 or more; `Some(None)` removes the quota.
    pub max_tasks: Option<Option<i64>>,
    /// See [`Tenant::max_running`]: 1 to 100,000; `Some(None)` removes the quota.
    pub max_running: Option<Option<i32>>,
    /// See [`Tenant::max_spawns_per_minute`]: 0 or more; `Some(None)` removes the quota.
    pub max_spawns_per_minute: Option<Option<i32>>,
}

/// Why a tenants door changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The name breaks the naming rule, or a setting is out of its range.
    #[error("{0}")]
    Invalid(String),
    /// No tenant has this name.
    #[error("tenant \"{0}\" does not exist; `recur tenant list` shows the tenants")]
    Unknown(String),
    /// A tenant of this name exists already.
    #[error("tenant \"{0}\" exists already; `recur tenant set` changes its settings")]
    Exists(String),
    /// The login role cannot be made: its name is taken, or the database has no group
    /// role for tenants.
    #[error("{0}")]
    Role(String),
    /// The tenant still owns tasks or modules.
    #[error(
        "tenant \"{name}\" still owns {tasks} tasks and {modules} module versions; delete with --force to delete them too"
    )]
    Owns {
        /// The tenant.
        name: String,
        /// Its tasks, of any status.
        tasks: i64,
        /// Its module versions.
        modules: i64,
    },
    /// The database failed; nothing changed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Refuses, with the database's one-line error (SQLSTATE [`UNKNOWN_TENANT`]), if any of
/// `names` is not a tenant, unless the fleet lets the doors create tenants: then creates
/// those missing. Run inside the transaction that writes for them.
pub async fn require(conn: &mut PgConnection, names: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query(REQUIRE_SQL).bind(names).execute(conn).await?;
    Ok(())
}

/// Refuses, with the database's one-line error (SQLSTATE [`OVER_TASK_QUOTA`]), if any of
/// `names` has more scheduled tasks than its `max_tasks` once the number at the same
/// index of `adding` is added: what a bulk load read per tenant, counted before the load
/// from outside its transactions. (Enqueues in one transaction go through the database's
/// door, `recur_enqueue_many()`, which counts what it wrote itself.)
pub async fn check_task_quotas(
    conn: &mut PgConnection,
    names: &[&str],
    adding: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT recur_check_task_quotas($1, $2)")
        .bind(names)
        .bind(adding)
        .execute(conn)
        .await?;
    Ok(())
}

/// Refuses, with the database's one-line error (SQLSTATE 42501), if the role connected
/// acts for a tenant other than each of `names`; the operator's role passes. For the doors
/// that change rows without writing new ones (requeue).
pub async fn require_own(conn: &mut PgConnection, names: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query(REQUIRE_OWN_SQL)
        .bind(names)
        .execute(conn)
        .await?;
    Ok(())
}

/// The database's one-line refusal, if `error` is one: a tenant that does not exist
/// ([`UNKNOWN_TENANT`]), a tenant past its scheduled-task quota ([`OVER_TASK_QUOTA`]),
/// or a privilege the role connected lacks (another tenant's rows, a tenant's limits).
pub fn refusal(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db)
            if matches!(
                db.code().as_deref(),
                Some(UNKNOWN_TENANT | INSUFFICIENT_PRIVILEGE | OVER_TASK_QUOTA)
            ) =>
        {
            Some(db.message().to_owned())
        }
        _ => None,
    }
}

/// The tenant the role connected acts for; `None` for the operator's role.
pub async fn role_tenant(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT recur_role_tenant()")
        .fetch_one(pool)
        .await
}

/// What a tenant's login role connects with, as [`create`] made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The role's name.
    pub role: String,
    /// Its password, made at random; not stored anywhere but in PostgreSQL's hash.
    pub password: String,
}

/// Every tenant, by name.
pub async fn list(pool: &PgPool) -> Result<Vec<Tenant>, TenantError> {
    let rows = sqlx::query(LIST_SQL)
        .bind(None::<&str>)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(tenant)
        .collect::<Result<_, _>>()
        .map_err(Into::into)
}

/// The tenant `name`.
pub async fn show(pool: &PgPool, name: &str) -> Result<Tenant, TenantError> {
    let row = sqlx::query(LIST_SQL)
        .bind(Some(name))
        .fetch_optional(pool)
        .await?;
    match row {
        Some(row) => Ok(tenant(&row)?),
        None => Err(TenantError::Unknown(name.into())),
    }
}

/// Creates the tenant `name` with `changes` over the default settings, and with `role`,
/// a login role of that name that acts for it alone (returned with its password).
pub async fn create(
    pool: &PgPool,
    name: &str,
    changes: &TenantChanges,
    role: Option<&str>,
) -> Result<(Tenant, Option<Login>), TenantError> {
    contract::check_name("tenant", name).map_err(TenantError::Invalid)?;
    check(changes)?;
    if let Some(role) = role {
        check_role(role)?;
    }
    let mut tx = pool.begin().await?;
    let created = with_settings(sqlx::query(CREATE_SQL).bind(name), changes)
        .bind(changes.max_tasks.flatten())
        .bind(changes.max_running.flatten())
        .bind(changes.max_spawns_per_minute.flatten())
        .execute(&mut *tx)
        .await?;
    if created.rows_affected() == 0 {
        return Err(TenantError::Exists(name.into()));
    }
    let login = match role {
        Some(role) => Some(create_role(&mut tx, name, role).await?),
        None => None,
    };
    tx.commit().await?;
    Ok((show(pool, name).await?, login))
}

/// Makes `role` a login role with a random password, a member of [`TENANT_GROUP`], and
/// names it as the role of tenant `name`.
async fn create_role(tx: &mut PgConnection, name: &str, role: &str) -> Result<Login, TenantError> {
    let group: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(TENANT_GROUP)
            .fetch_one(&mut *tx)
            .await?;
    if !group {
        return Err(TenantError::Role(format!(
            "the server has no {TENANT_GROUP} role, so tenants cannot have login roles; run `recur migrate` as a role with CREATEROLE"
        )));
    }
    let password = uuid::Uuid::new_v4().simple().to_string();
    // Utility statements take no bind parameters: the name is quoted as an identifier,
    // and the password is hex digits.
    let statement = format!(
        "CREATE ROLE {} LOGIN PASSWORD '{password}' IN ROLE {TENANT_GROUP}",
        quote_identifier(role)
    );
    sqlx::query(&statement)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some(DUPLICATE_OBJECT) => {
                TenantError::Role(format!(
                    "role {role:?} exists already; give another name with --login NAME"
                ))
            }
            _ => match refusal(&e) {
                Some(message) => TenantError::Role(format!(
                    "{message}: creating a tenant's login role needs CREATEROLE"
                )),
                None => TenantError::Database(e),
            },
        })?;
    sqlx::query(SET_ROLE_SQL)
        .bind(name)
        .bind(role)
        .execute(&mut *tx)
        .await?;
    Ok(Login {
        role: role.into(),
        password,
    })
}

/// A role name PostgreSQL keeps whole: 1 to 63 bytes, no NUL.
fn check_role(role: &str) -> Result<(), TenantError> {
    if role.is_empty() || role.len() > 63 || role.contains('\0') {
        return Err(TenantError::Invalid(format!(
            "role name {role:?} must be 1 to 63 bytes"
        )));
    }
    Ok(())
}

/// `name` as a quoted SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Changes the settings of the tenant `name` that `changes` names.
pub async fn set(
    pool: &PgPool,
    name: &str,
    changes: &TenantChanges,
) -> Result<Tenant, TenantError> {
    check(changes)?;
    let changed = with_settings(sqlx::query(SET_SQL).bind(name), changes)
        .bind(changes.max_tasks.is_some())
        .bind(changes.max_tasks.flatten())
        .bind(changes.max_running.is_some())
        .bind(changes.max_running.flatten())
        .bind(changes.max_spawns_per_minute.is_some())
        .bind(changes.max_spawns_per_minute.flatten())
        .execute(pool)
        .await?;
    if changed.rows_affected() == 0 {
        return Err(TenantError::Unknown(name.into()));
    }
    show(pool, name).await
}

/// Deletes the tenant `name` and its login role; with `force`, its tasks, keys and
/// modules too, else only a tenant that owns none.
pub async fn delete(pool: &PgPool, name: &str, force: bool) -> Result<(), TenantError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(DELETE_SQL)
        .bind(name)
        .bind(force)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Err(TenantError::Unknown(name.into()));
    };
    let (tasks, modules): (i64, i64) = (row.try_get("tasks")?, row.try_get("modules")?);
    if !force && (tasks > 0 || modules > 0) {
        return Err(TenantError::Owns {
            name: name.into(),
            tasks,
            modules,
        });
    }
    if let Some(role) = row.try_get::<Option<String>, _>("role")? {
        sqlx::query(&format!("DROP ROLE IF EXISTS {}", quote_identifier(&role)))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether the doors create tenants they do not know.
pub async fn auto_create(pool: &PgPool) -> Result<bool, TenantError> {
    Ok(
        sqlx::query_scalar("SELECT auto_create_tenants FROM settings")
            .fetch_one(pool)
            .await?,
    )
}

/// Lets the doors create tenants they do not know, or stops them.
pub async fn set_auto_create(pool: &PgPool, on: bool) -> Result<(), TenantError> {
    sqlx::query("UPDATE settings SET auto_create_tenants = $1")
        .bind(on)
        .execute(pool)
        .await?;
    Ok(())
}

/// `query` with the settings `changes` gives, bound in the order tenants_create.sql and
/// tenants_set.sql take them after the name.
fn with_settings<'q>(
    query: Query<'q, Postgres, PgArguments>,
    changes: &TenantChanges,
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(changes.weight)
        .bind(changes.memory_bytes)
        .bind(changes.timeout_ms)
        .bind(changes.max_attempts)
        .bind(changes.max_payload_bytes)
        .bind(changes.max_state_bytes)
        .bind(changes.max_spawns)
}

/// Checks each change against the range the tenants table allows, so that a bad value is
/// a one-line error naming the setting rather than a constraint's name.
fn check(changes: &TenantChanges) -> Result<(), TenantError> {
    fn within<T: PartialOrd + std::fmt::Display>(
        what: &str,
        value: Option<T>,
        low: T,
        high: T,
        unit: &str,
    ) -> Result<(), TenantError> {
        match value {
            Some(v) if v < low || v > high => Err(TenantError::Invalid(format!(
                "{what} {v} is out of range; give {low} to {high}{unit}"
            ))),
            _ => Ok(()),
        }
    }
    within("weight", changes.weight, 1, 10_000, "")?;
    within("memory", changes.memory_bytes, 65_536, 4 << 30, " bytes")?;
    within("timeout", changes.timeout_ms, 1, 3_600_000, " ms")?;
    within("attempts", changes.max_attempts, 1, 1_000, "")?;
    within(
        "max payload",
        changes.max_payload_bytes,
        0,
        MAX_PAYLOAD_BYTES as i32,
        " bytes",
    )?;
    within(
        "max state",
        changes.max_state_bytes,
        0,
        MAX_STATE_BYTES as i32,
        " bytes",
    )?;
    within("max spawns", changes.max_spawns, 0, MAX_SPAWNS as i32, "")?;
    within("max tasks", changes.max_tasks.flatten(), 0, i64::MAX, "")?;
    within("max running", changes.max_running.flatten(), 1, 100_000, "")?;
    within(
        "max spawns per minute",
        changes.max_spawns_per_minute.flatten(),
        0,
        i32::MAX,
        "",
    )?;
    Ok(())
}

fn tenant(row: &sqlx::postgres::PgRow) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant {
        name: row.try_get("name")?,
        weight: row.try_get("weight")?,
        memory_bytes: row.try_get("memory_bytes")?,
        timeout_ms: row.try_get("timeout_ms")?,
        max_attempts: row.try_get("max_attempts")?,
        max_payload_bytes: row.try_get("max_payload_bytes")?,
        max_state_bytes: row.try_get("max_state_bytes")?,
        max_spawns: row.try_get("max_spawns")?,
        max_tasks: row.try_get("max_tasks")?,
        max_running: row.try_get("max_running")?,
        max_spawns_per_minute: row.try_get("max_spawns_per_minute")?,
        modules: row.try_get("modules")?,
        role: row.try_get("role")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Tenants' payload quotas, by name ([`payload_quotas`]).
pub type PayloadQuotas = std::collections::HashMap<String, usize>;

/// Refuses a payload of `bytes` over `tenant`'s quota in `quotas`, saying so; a tenant
/// without an entry is not refused here.
pub fn check_payload(quotas: &PayloadQuotas, tenant: &str, bytes: usize) -> Result<(), String> {
    match quotas.get(tenant) {
        Some(&quota) if bytes > quota => Err(format!(
            "the payload is {bytes} bytes; tenant {tenant:?} may enqueue at most {quota} (its max_payload_bytes)"
        )),
        _ => Ok(()),
    }
}

/// The payload quota (`max_payload_bytes`) of each tenant in `names` (`None`: every
/// tenant the role connected sees), for the doors that enqueue to check payloads against
/// before they write; a tenant without a row is left out.
pub async fn payload_quotas(
    conn: &mut PgConnection,
    names: Option<&[&str]>,
) -> Result<PayloadQuotas, sqlx::Error> {
    let rows: Vec<(String, i32)> = sqlx::query_as(
        "SELECT name, max_payload_bytes FROM tenants WHERE $1::text[] IS NULL OR name = ANY($1)",
    )
    .bind(names)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, quota)| (name, quota.max(0) as usize))
        .collect())
}
