//! Task type -> prepared component. Deploy and listing live in `deploy.rs`; this file
//! is the host's cache: it loads the active version of each (tenant, task type) the
//! first time a task needs it, compiles it once, and notices new deployments (hot swap)
//! and changed tenant limits by re-reading the small `modules` index every few seconds.
//! Tenants that deploy the same component (by its sha256) share one compilation.
//!
//! Compiling takes a large component seconds, so it happens in the background, one
//! component at a time (wasmtime already spreads one compilation over the cores): [`Registry::resolve`] answers
//! [`Resolved::Compiling`] for a module not compiled yet, and [`Registry::compiled`]
//! says when it is. Meanwhile every other tenant's tasks keep running: one tenant's new
//! deployment, or a host meeting hundreds of modules at start, holds back only the tasks
//! that need those modules, and the claim stage stops claiming those until they are
//! ready ([`Registry::watch_compiling`]).

pub mod deploy;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{PgPool, Row};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::claim::Compiling;
use crate::contract::OutcomeQuotas;
use crate::sandbox::{CompileError, Prepared, RunLimits, Sandbox, ValidationError};
use crate::stats::ModuleTimes;

const ACTIVE_SQL: &str = include_str!("../sql/active_modules.sql");
const LOAD_SQL: &str = include_str!("../sql/load_modules.sql");

/// (tenant, task type).
pub type ModuleKey = (String, String);

/// A module version ready to run, with the limits of its tenant.
pub struct Loaded {
    /// The deployed version this was compiled from.
    pub version: i32,
    /// The component's sha256, which names its compilation in [`Registry`]'s cache.
    pub sha256: String,
    /// The compiled, linked component.
    pub prepared: Prepared,
    /// Memory and time limits for each run.
    pub limits: RunLimits,
    /// Tries of one run before the task is parked.
    pub max_attempts: i32,
    /// The tenant's quotas on what a run decides.
    pub quotas: OutcomeQuotas,
    /// Whether a worker may keep an instance of this version for the same tenant's next
    /// task instead of instantiating afresh (`recur module deploy --reuse-instance`; see
    /// sandbox/carryover.rs for the isolation this gives up). Fixed per version.
    pub reuse_instance: bool,
    /// How long its runs take, which decides how many workers one tenant's runs of it
    /// may hold (see execute/queue.rs). Kept across limit changes.
    pub run_times: Arc<ModuleTimes>,
}

/// What the registry knows about one (tenant, task type).
#[derive(Clone)]
pub enum Resolved {
    /// Ready to run.
    Ready(Arc<Loaded>),
    /// Nothing runnable, and the error to record on the task.
    Unavailable(String),
    /// Its component is being compiled: [`Registry::compiled`] names it when it is done.
    Compiling,
}

/// Why a stored component cannot load on this host.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The bytes do not hash to the sha256 the deploy recorded: the row was changed
    /// outside `recur deploy`, and the host runs nothing it was not given.
    #[error(
        "its stored bytes hash to {computed}, not to the sha256 {stored} it was deployed with, so they were changed after the deploy; deploy the module again"
    )]
    Altered { stored: String, computed: String },
    /// The bytes are not a component this host can run.
    #[error(transparent)]
    Invalid(ValidationError),
}

/// Checks that `component` hashes to `sha256`, as recorded when it was deployed.
fn verified(sha256: &str, component: &[u8]) -> Result<(), LoadError> {
    let computed = deploy::sha256(component);
    if computed != sha256 {
        return Err(LoadError::Altered {
            stored: sha256.to_owned(),
            computed,
        });
    }
    Ok(())
}

/// A (tenant, task type) waiting for its component's compilation, with what its row said.
struct Waiting {
    key: ModuleKey,
    version: i32,
    reuse_instance: bool,
    limits: RunLimits,
    max_attempts: i32,
    quotas: OutcomeQuotas,
}

/// A finished compilation: the component's sha256 and the result.
type Compiled = (String, Result<Prepared, LoadError>);

/// The cache of prepared modules. Owned by the execute stage's dispatcher, which is its
/// only user, so it needs no lock.
pub struct Registry {
    pool: PgPool,
    sandbox: Arc<Sandbox>,
    /// The host's memory ceiling; a tenant may not raise its limit above it.
    max_memory_bytes: usize,
    modules: HashMap<ModuleKey, Resolved>,
    /// One compilation per distinct component (by sha256), shared by every tenant and
    /// version that deployed it. Besides the compile time, sharing keeps the pooling
    /// allocator's memory slots warm: a slot that last held the same compilation is
    /// reused with its memory image mapped, while another compilation's image must be
    /// mapped in first, under the process's memory-map lock, which every worker
    /// contends for.
    compiled: HashMap<String, Prepared>,
    /// Components being compiled or queued for it, by sha256, with the keys that wait.
    waiting: HashMap<String, Vec<Waiting>>,
    /// Components queued for compilation behind the one in `compiling`.
    queued: VecDeque<(String, Vec<u8>)>,
    /// The compilation in progress, if any: at most one.
    compiling: JoinSet<Compiled>,
    /// The keys in `waiting`, for the claim stage (`None` when there are none).
    compiling_keys: watch::Sender<Option<Arc<Compiling>>>,
    /// How often to look for new deployments; also how long "no module" is believed.
    refresh_every: Duration,
    /// Components whose compile ran out of time, by sha256: not compiled again on this
    /// host, since each try would take as long again.
    too_slow: HashMap<String, LoadError>,
    refreshed_at: Instant,
}

impl Registry {
    /// An empty cache over `pool`, compiling with `sandbox`.
    pub fn new(
        pool: PgPool,
        sandbox: Arc<Sandbox>,
        max_memory_bytes: usize,
        refresh_every: Duration,
    ) -> Self {
        Registry {
            pool,
            sandbox,
            max_memory_bytes,
            modules: HashMap::new(),
            compiled: HashMap::new(),
            waiting: HashMap::new(),
            queued: VecDeque::new(),
            compiling: JoinSet::new(),
            compiling_keys: watch::Sender::new(None),
            refresh_every,
            too_slow: HashMap::new(),
            refreshed_at: Instant::now(),
        }
    }

    /// Resolves every (tenant, task type) in `keys`, loading what is not cached yet and
    /// queueing what needs compiling ([`Resolved::Compiling`]). A database error leaves
    /// the keys unresolved and is returned.
    pub async fn resolve(
        &mut self,
        keys: HashSet<ModuleKey>,
    ) -> Result<HashMap<ModuleKey, Resolved>, sqlx::Error> {
        if self.refreshed_at.elapsed() >= self.refresh_every {
            self.refresh().await?;
        }
        let missing: Vec<&ModuleKey> = keys
            .iter()
            .filter(|k| !self.modules.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            let tenants: Vec<&str> = missing.iter().map(|k| k.0.as_str()).collect();
            let types: Vec<&str> = missing.iter().map(|k| k.1.as_str()).collect();
            // The bytes of a component this host has compiled, or is compiling, already
            // stay in the database: many tenants may have deployed the same one.
            let known: Vec<&str> = self
                .compiled
                .keys()
                .chain(self.waiting.keys())
                .map(String::as_str)
                .collect();
            let rows = sqlx::query(LOAD_SQL)
                .bind(tenants)
                .bind(types)
                .bind(known)
                .fetch_all(&self.pool)
                .await?;
            for row in rows {
                let key: ModuleKey = (row.try_get("tenant")?, row.try_get("task_type")?);
                let sha256: String = row.try_get("sha256")?;
                let (limits, max_attempts, quotas) = self.limits(&row)?;
                let waiting = Waiting {
                    key: key.clone(),
                    version: row.try_get("version")?,
                    reuse_instance: row.try_get("reuse_instance")?,
                    limits,
                    max_attempts,
                    quotas,
                };
                if let Some(prepared) = self.compiled.get(&sha256) {
                    let ready = Ok(prepared.clone());
                    self.install(waiting, &sha256, ready);
                    continue;
                }
                if let Some(err) = self.too_slow.get(&sha256) {
                    let refused = Err(err.clone());
                    self.install(waiting, &sha256, refused);
                    continue;
                }
                self.modules.insert(key, Resolved::Compiling);
                if let Some(others) = self.waiting.get_mut(&sha256) {
                    others.push(waiting);
                    continue;
                }
                let component: Vec<u8> = row
                    .try_get::<Option<Vec<u8>>, _>("component")?
                    .expect("a component's bytes are left out only once compiled or queued");
                self.waiting.insert(sha256.clone(), vec![waiting]);
                self.queued.push_back((sha256, component));
            }
            for key in keys.iter() {
                self.modules
                    .entry(key.clone())
                    .or_insert_with(|| Resolved::Unavailable(no_module_error(&key.0, &key.1)));
            }
            self.compile_next();
            self.publish_compiling();
        }
        Ok(keys
            .into_iter()
            .filter_map(|k| self.modules.get(&k).cloned().map(|r| (k, r)))
            .collect())
    }

    /// Waits for the compilation in progress to finish, and returns the keys it
    /// resolved (ready, or unavailable with the error). Never returns while nothing is
    /// being compiled. Cancel-safe: a `select!` may drop it and call it again.
    pub async fn compiled(&mut self) -> Vec<ModuleKey> {
        let Some(done) = self.compiling.join_next().await else {
            return std::future::pending().await;
        };
        let (sha256, result) = done.expect("compiling a module panicked");
        if let Err(err @ LoadError::Invalid(ValidationError::Compile(CompileError::TooSlow(_)))) =
            &result
        {
            self.too_slow.insert(sha256.clone(), err.clone());
        }
        self.compile_next();
        let mut keys = Vec::new();
        for waiting in self.waiting.remove(&sha256).unwrap_or_default() {
            keys.push(waiting.key.clone());
            self.install(waiting, &sha256, result.clone());
        }
        if let Ok(prepared) = result {
            self.compiled.insert(sha256, prepared);
        }
        self.publish_compiling();
        keys
    }

    /// Follows the (tenant, task type) pairs being compiled, for the claim stage.
    pub fn watch_compiling(&self) -> watch::Receiver<Option<Arc<Compiling>>> {
        self.compiling_keys.subscribe()
    }

    /// Tells the claim stage what is being compiled now.
    fn publish_compiling(&self) {
        let keys = self.waiting.values().flatten().map(|w| &w.key);
        let compiling = keys.fold(Compiling::default(), |mut pairs, (tenant, task_type)| {
            pairs.tenants.push(tenant.clone());
            pairs.types.push(task_type.clone());
            pairs
        });
        let compiling = (!compiling.tenants.is_empty()).then(|| Arc::new(compiling));
        self.compiling_keys.send_if_modified(|current| {
            let changed = *current != compiling;
            *current = compiling;
            changed
        });
    }

    /// Starts compiling the next queued component, unless one is being compiled.
    fn compile_next(&mut self) {
        if !self.compiling.is_empty() {
            return;
        }
        let Some((sha256, component)) = self.queued.pop_front() else {
            return;
        };
        let sandbox = self.sandbox.clone();
        // Compiling takes tens to hundreds of milliseconds of CPU: keep it off the async
        // threads.
        self.compiling.spawn_blocking(move || {
            let prepared = verified(&sha256, &component)
                .and_then(|()| sandbox.prepare(&component).map_err(LoadError::Invalid));
            (sha256, prepared)
        });
    }

    /// Records what a key resolved to, once its component is compiled (or failed to).
    fn install(&mut self, waiting: Waiting, sha256: &str, prepared: Result<Prepared, LoadError>) {
        let Waiting {
            key,
            version,
            reuse_instance,
            limits,
            max_attempts,
            quotas,
        } = waiting;
        let resolved = match prepared {
            Ok(prepared) => {
                tracing::info!(
                    tenant = key.0,
                    task_type = key.1,
                    version,
                    reuse_instance,
                    "module loaded"
                );
                Resolved::Ready(Arc::new(Loaded {
                    version,
                    sha256: sha256.to_owned(),
                    prepared,
                    limits,
                    max_attempts,
                    quotas,
                    reuse_instance,
                    run_times: Arc::default(),
                }))
            }
            Err(err) => {
                tracing::error!(tenant = key.0, task_type = key.1, version, error = %err, "module cannot load");
                Resolved::Unavailable(format!(
                    "module '{}' version {version} of tenant '{}' cannot load on this host: {err}",
                    key.1, key.0
                ))
            }
        };
        self.modules.insert(key, resolved);
    }

    /// Drops cached entries that a deployment replaced, forgets every "no module", and
    /// applies changed tenant limits in place.
    async fn refresh(&mut self) -> Result<(), sqlx::Error> {
        let rows = sqlx::query(ACTIVE_SQL).fetch_all(&self.pool).await?;
        let mut active = HashMap::with_capacity(rows.len());
        for row in &rows {
            let key: ModuleKey = (row.try_get("tenant")?, row.try_get("task_type")?);
            active.insert(key, (row.try_get::<i32, _>("version")?, self.limits(row)?));
        }
        self.modules
            .retain(|key, resolved| match (resolved, active.get(key)) {
                (Resolved::Ready(loaded), Some((version, limits)))
                    if loaded.version == *version =>
                {
                    if (loaded.limits, loaded.max_attempts, loaded.quotas) != *limits {
                        let updated = Loaded {
                            version: loaded.version,
                            sha256: loaded.sha256.clone(),
                            prepared: loaded.prepared.clone(),
                            limits: limits.0,
                            max_attempts: limits.1,
                            quotas: limits.2,
                            reuse_instance: loaded.reuse_instance,
                            run_times: loaded.run_times.clone(),
                        };
                        *loaded = Arc::new(updated);
                    }
                    true
                }
                // Resolved when its compilation ends; a version deployed meanwhile is
                // loaded at the refresh after that.
                (Resolved::Compiling, _) => true,
                _ => false,
            });
        // A compilation no loaded version uses any more goes with its last user.
        let used: HashSet<&str> = self
            .modules
            .values()
            .filter_map(|resolved| match resolved {
                Resolved::Ready(loaded) => Some(loaded.sha256.as_str()),
                Resolved::Unavailable(_) | Resolved::Compiling => None,
            })
            .collect();
        self.compiled
            .retain(|sha256, _| used.contains(sha256.as_str()));
        self.refreshed_at = Instant::now();
        Ok(())
    }

    fn limits(
        &self,
        row: &sqlx::postgres::PgRow,
    ) -> Result<(RunLimits, i32, OutcomeQuotas), sqlx::Error> {
        let memory: i64 = row.try_get("memory_bytes")?;
        let timeout: i32 = row.try_get("timeout_ms")?;
        let limits = RunLimits {
            memory_bytes: (memory.max(0) as usize).min(self.max_memory_bytes),
            timeout: Duration::from_millis(timeout.max(1) as u64),
        };
        let quotas = OutcomeQuotas {
            max_state_bytes: row.try_get::<i32, _>("max_state_bytes")?.max(0) as usize,
            max_spawns: row.try_get::<i32, _>("max_spawns")?.max(0) as usize,
            max_payload_bytes: row.try_get::<i32, _>("max_payload_bytes")?.max(0) as usize,
            max_spawns_per_minute: row
                .try_get::<Option<i32>, _>("max_spawns_per_minute")?
                .map(|n| n.max(0) as usize),
            max_tasks: row.try_get("max_tasks")?,
        };
        Ok((limits, row.try_get("max_attempts")?, quotas))
    }
}

/// The error recorded on a task whose type has no module deployed in its tenant.
pub fn no_module_error(tenant: &str, task_type: &str) -> String {
    format!(
        "no module is deployed for task type '{task_type}' in tenant '{tenant}'; deploy one with `recur module deploy {task_type} <file.wasm> --tenant {tenant}`"
    )
}
