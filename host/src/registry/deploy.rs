//! Deploying a module: validate the component against the task world, then store it as
//! the next version of its (tenant, task type) and make it the active one, all in one
//! transaction, so a refused or failed deploy stores nothing. Hosts pick the new
//! version up within their registry's refresh interval.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use crate::contract::check_name;
use crate::sandbox::{Sandbox, ValidationError, human_bytes};
use crate::tenants;

const DEPLOY_LOCK_SQL: &str = include_str!("../sql/deploy_lock.sql");
const DEPLOY_ACTIVE_SQL: &str = include_str!("../sql/deploy_active.sql");
const DEPLOY_DEACTIVATE_SQL: &str = include_str!("../sql/deploy_deactivate.sql");
const DEPLOY_INSERT_SQL: &str = include_str!("../sql/deploy_insert.sql");
const LIST_MODULES_SQL: &str = include_str!("../sql/list_modules.sql");

/// Largest component accepted.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// Why a deploy was refused. Nothing is stored in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The tenant or task type breaks the naming rule.
    #[error("{0}")]
    BadName(String),
    /// The file is empty or over [`MAX_COMPONENT_BYTES`].
    #[error("the file is {0} bytes; a component must be 1 byte to {max} long", max = human_bytes(MAX_COMPONENT_BYTES))]
    Size(usize),
    /// The component does not match the task world.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The database refused the tenant ([`crate::tenants::require`]): it does not exist
    /// and the fleet does not create tenants on deploy, or the role connected acts for
    /// another tenant.
    #[error("{0}")]
    Refused(String),
    /// The database failed.
    #[error("database error while deploying: {0}")]
    Database(#[from] sqlx::Error),
}

/// How a deployed version runs, chosen at deploy time and fixed for that version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeployOptions {
    /// Let a worker keep an instance for the tenant's next task of this version instead of
    /// instantiating afresh for every task. Faster, but the guest's statics and heap then
    /// carry over between the tenant's tasks (never another tenant's); see
    /// sandbox/carryover.rs. Off by default.
    pub reuse_instance: bool,
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The tenant the module serves.
    pub tenant: String,
    /// The task type it runs.
    pub task_type: String,
    /// Its version, now active.
    pub version: i32,
    /// Hex sha256 of the component.
    pub sha256: String,
    /// True when this exact component, with the same options, was already the active
    /// version (nothing changed).
    pub unchanged: bool,
    /// Whether the version reuses instances.
    pub reuse_instance: bool,
}

/// One active module, as `recur module list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleInfo {
    /// Owning tenant.
    pub tenant: String,
    /// Task type.
    pub task_type: String,
    /// Active version.
    pub version: i32,
    /// Hex sha256.
    pub sha256: String,
    /// Component size in bytes.
    pub size_bytes: i32,
    /// Whether workers may reuse an instance between the tenant's tasks.
    pub reuse_instance: bool,
    /// When this version was deployed.
    pub deployed_at: DateTime<Utc>,
}

/// Validates `component` and stores it as the active module for `(tenant, task_type)`,
/// with the default options (a fresh instance for every task).
pub async fn deploy(
    pool: &PgPool,
    sandbox: &Sandbox,
    tenant: &str,
    task_type: &str,
    component: &[u8],
) -> Result<Deployed, DeployError> {
    deploy_with(
        pool,
        sandbox,
        tenant,
        task_type,
        component,
        DeployOptions::default(),
    )
    .await
}

/// [`deploy`] with options. The same component deployed with other options becomes a
/// new version, which is how running hosts notice the change.
pub async fn deploy_with(
    pool: &PgPool,
    sandbox: &Sandbox,
    tenant: &str,
    task_type: &str,
    component: &[u8],
    options: DeployOptions,
) -> Result<Deployed, DeployError> {
    check_name("tenant", tenant).map_err(DeployError::BadName)?;
    check_name("task type", task_type).map_err(DeployError::BadName)?;
    if component.is_empty() || component.len() > MAX_COMPONENT_BYTES {
        return Err(DeployError::Size(component.len()));
    }
    sandbox.prepare(component)?;
    let sha256 = sha256(component);

    let mut tx = pool.begin().await?;
    tenants::require(&mut tx, &[tenant])
        .await
        .map_err(|e| match tenants::refusal(&e) {
            Some(message) => DeployError::Refused(message),
            None => DeployError::Database(e),
        })?;
    sqlx::query(DEPLOY_LOCK_SQL)
        .bind(tenant)
        .bind(task_type)
        .execute(&mut *tx)
        .await?;
    let active = sqlx::query(DEPLOY_ACTIVE_SQL)
        .bind(tenant)
        .bind(task_type)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(row) = &active
        && row.try_get::<String, _>("sha256")? == sha256
        && row.try_get::<bool, _>("reuse_instance")? == options.reuse_instance
    {
        let version = row.try_get("version")?;
        tx.rollback().await?;
        return Ok(Deployed {
            tenant: tenant.into(),
            task_type: task_type.into(),
            version,
            sha256,
            unchanged: true,
            reuse_instance: options.reuse_instance,
        });
    }
    sqlx::query(DEPLOY_DEACTIVATE_SQL)
        .bind(tenant)
        .bind(task_type)
        .execute(&mut *tx)
        .await?;
    let version: i32 = sqlx::query_scalar(DEPLOY_INSERT_SQL)
        .bind(tenant)
        .bind(task_type)
        .bind(&sha256)
        .bind(component)
        .bind(options.reuse_instance)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Deployed {
        tenant: tenant.into(),
        task_type: task_type.into(),
        version,
        sha256,
        unchanged: false,
        reuse_instance: options.reuse_instance,
    })
}

/// The active module of every (tenant, task type).
pub async fn list(pool: &PgPool) -> Result<Vec<ModuleInfo>, sqlx::Error> {
    let rows = sqlx::query(LIST_MODULES_SQL).fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            Ok(ModuleInfo {
                tenant: row.try_get("tenant")?,
                task_type: row.try_get("task_type")?,
                version: row.try_get("version")?,
                sha256: row.try_get("sha256")?,
                size_bytes: row.try_get("size_bytes")?,
                reuse_instance: row.try_get("reuse_instance")?,
                deployed_at: row.try_get("created_at")?,
            })
        })
        .collect()
}

/// A component's sha256 in hex, as the `modules` table keeps it.
pub(crate) fn sha256(component: &[u8]) -> String {
    Sha256::digest(component)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
