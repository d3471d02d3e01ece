//! The execute stage: a dispatcher that matches each claimed task to its module, a queue
//! fair between tenants (`queue.rs`), and a pool of worker threads (`worker.rs`) that run
//! tasks in the sandbox and hand them to the commit stage (`handoff.rs`). Workers are OS
//! threads, not async tasks: a run is CPU-bound and synchronous, and wasmtime's epoch
//! deadline, not the async runtime, bounds how long it takes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::contract::OutcomeQuotas;
use crate::registry::{self, Loaded, ModuleKey, Registry, Resolved};
use crate::sandbox::{Outcome, RunError, Sandbox, Task};
use crate::stats::Stats;
use crate::task::ClaimedTask;

/// A claimed task on its way to the commit stage.
pub enum Finished {
    /// It ran; the outcome or the error that stopped it.
    Ran {
        /// The task (payload, state and key moved out into the run).
        task: ClaimedTask,
        /// What the module decided, or why it decided nothing.
        result: Result<Outcome, RunError>,
        /// The tenant's limit on tries.
        max_attempts: i32,
        /// The tenant's quotas on what a run decides.
        quotas: OutcomeQuotas,
    },
    /// No runnable module; the error to record.
    NoModule(ClaimedTask, String),
    /// Not run, and to be parked: its earlier attempts went past the tenant's limit
    /// without a result (their hosts died or lost their claims while running it).
    Lost {
        /// The task.
        task: ClaimedTask,
        /// The tenant's limit on tries.
        max_attempts: i32,
    },
    /// Not run because the host is stopping: to be given back.
    NotRun(ClaimedTask),
}

/// What runs a task's logic.
#[derive(Clone, Default)]
pub enum Runner {
    /// The task's module, in the sandbox: what recur is.
    #[default]
    Sandbox,
    /// Logic in the host's own process, in place of every task's module, with no
    /// sandbox at all: for measuring what the database and the pipeline allow around
    /// the sandbox (`recur bench --sql-only`). Never for real work.
    Native(Arc<dyn NativeLogic>),
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Runner::Sandbox => "Sandbox",
            Runner::Native(_) => "Native",
        })
    }
}

/// Task logic a [`Runner::Native`] runs in the host's process.
pub trait NativeLogic: Send + Sync {
    /// What the task decides, as its module would.
    fn run(&self, task: &Task) -> Outcome;
}

mod handoff;
mod queue;
mod worker;

use queue::{Fair, Queue};
use worker::Worker;

/// Tasks of timed leases waiting for their module's compilation, by (tenant, task type).
type Parked = HashMap<ModuleKey, Vec<ClaimedTask>>;

/// One task and the module to run it with.
pub struct Job {
    task: ClaimedTask,
    module: Arc<Loaded>,
}

impl Fair for Job {
    fn tenant(&self) -> &str {
        &self.task.tenant
    }

    fn is_short(&self) -> bool {
        self.module.run_times.is_short()
    }

    fn holds_batch(&self) -> bool {
        self.task.lock.is_some()
    }
}

/// The execute stage.
pub struct Executor {
    /// Shared with the registry; one engine per host.
    pub sandbox: Arc<Sandbox>,
    /// Task type -> prepared module.
    pub registry: Registry,
    /// Worker threads.
    pub workers: usize,
    /// What runs the tasks.
    pub runner: Runner,
    /// Claimed batches from the claim stage; closed when it stops.
    pub batches: mpsc::Receiver<Vec<ClaimedTask>>,
    /// Where finished tasks go, a few at a time (see `Handoff`): the commit stage.
    pub finished: mpsc::UnboundedSender<Vec<Finished>>,
    /// Flips to true when the host shuts down: queued tasks are then given back
    /// instead of started.
    pub shutdown: watch::Receiver<bool>,
    /// Shared counters.
    pub stats: Arc<Stats>,
    /// Where the fair queue publishes the tenants it holds back, for the claim stage.
    pub held_back: watch::Sender<Arc<[String]>>,
}

impl Executor {
    /// Dispatches batches to the workers until the claim stage closes its channel, then
    /// waits for the workers to finish what they started.
    pub async fn run(mut self) {
        let held_back = std::mem::replace(&mut self.held_back, watch::Sender::new(Arc::from([])));
        let jobs = Arc::new(Queue::new(self.workers, held_back));
        let stopping = Arc::new(AtomicBool::new(false));
        let threads = self.start_workers(&jobs, &stopping);

        let mut shutdown = self.shutdown.clone();
        // Tasks of timed leases whose module is being compiled, queued once it is (see
        // registry/mod.rs).
        let mut parked = Parked::new();
        loop {
            let batch = tokio::select! {
                batch = self.batches.recv() => batch,
                keys = self.registry.compiled() => {
                    let tasks: Vec<ClaimedTask> =
                        keys.iter().filter_map(|key| parked.remove(key)).flatten().collect();
                    if !tasks.is_empty() {
                        self.dispatch(tasks, &jobs, &mut parked).await;
                    }
                    continue;
                }
                _ = shutdown.changed(), if !stopping.load(Ordering::Relaxed) => {
                    stopping.store(true, Ordering::Relaxed);
                    jobs.wake();
                    continue;
                }
            };
            let Some(batch) = batch else { break };
            self.dispatch(batch, &jobs, &mut parked).await;
        }
        // The host is stopping: what still waits for a compilation is given back.
        let waiting: Vec<Finished> = parked
            .into_values()
            .flatten()
            .map(Finished::NotRun)
            .collect();
        if !waiting.is_empty() {
            let _ = self.finished.send(waiting);
        }
        stopping.store(true, Ordering::Relaxed);
        jobs.close();
        tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await
        .ok();
    }

    /// Starts the worker threads over `jobs`.
    fn start_workers(
        &self,
        jobs: &Arc<Queue<Job>>,
        stopping: &Arc<AtomicBool>,
    ) -> Vec<thread::JoinHandle<()>> {
        (0..self.workers)
            .map(|n| {
                let (jobs, finished) = (jobs.clone(), self.finished.clone());
                let (sandbox, stats, stopping) =
                    (self.sandbox.clone(), self.stats.clone(), stopping.clone());
                let runner = self.runner.clone();
                thread::Builder::new()
                    .name(format!("recur-worker-{n}"))
                    .spawn(move || {
                        let worker = Worker {
                            sandbox: &sandbox,
                            runner: &runner,
                            jobs: &jobs,
                            stats: &stats,
                            stopping: &stopping,
                        };
                        worker.work(&finished)
                    })
                    .expect("cannot start a worker thread")
            })
            .collect()
    }

    /// Resolves the batch's modules and queues each task, parks it until its module is
    /// compiled, or sends it on as unrunnable.
    async fn dispatch(&mut self, batch: Vec<ClaimedTask>, jobs: &Queue<Job>, parked: &mut Parked) {
        let Some(resolved) = self.resolve(batch_keys(&batch)).await else {
            let _ = self
                .finished
                .send(batch.into_iter().map(Finished::NotRun).collect());
            return;
        };
        let mut ready = Vec::with_capacity(batch.len());
        let mut unrunnable = Vec::new();
        // Consecutive tasks mostly share their module: the last one found is tried first.
        let mut last: Option<(&ModuleKey, &Resolved)> = None;
        for task in batch {
            let found = match last {
                Some((key, found)) if key.0 == task.tenant && key.1 == task.task_type => {
                    Some((key, found))
                }
                _ => resolved.get_key_value(&(task.tenant.clone(), task.task_type.clone())),
            };
            if found.is_some() {
                last = found;
            }
            match route(task, found) {
                Route::Run(job) => ready.push(job),
                Route::Park(key, task) => parked.entry(key.clone()).or_default().push(task),
                Route::Finish(finished) => unrunnable.push(finished),
            }
        }
        if !unrunnable.is_empty() {
            let _ = self.finished.send(unrunnable);
        }
        jobs.push(ready);
    }

    /// The modules of `keys`, retried while the database fails; `None` once the host
    /// stops.
    async fn resolve(&mut self, keys: HashSet<ModuleKey>) -> Option<HashMap<ModuleKey, Resolved>> {
        loop {
            match self.registry.resolve(keys.clone()).await {
                Ok(resolved) => return Some(resolved),
                Err(err) if !*self.shutdown.borrow() => {
                    tracing::warn!(error = %err, "cannot load modules; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(_) => return None,
            }
        }
    }
}

/// The (tenant, task type) pairs of a batch. A batch holds thousands of tasks and
/// usually a few pairs: the names are copied once per pair, not once per task.
fn batch_keys(batch: &[ClaimedTask]) -> HashSet<ModuleKey> {
    let mut keys: HashSet<(&str, &str)> = HashSet::new();
    let mut last = None;
    for task in batch {
        let key = (task.tenant.as_str(), task.task_type.as_str());
        // Consecutive tasks mostly share theirs: each is hashed once per run of them.
        if last != Some(key) {
            keys.insert(key);
            last = Some(key);
        }
    }
    keys.into_iter()
        .map(|(tenant, task_type)| (tenant.to_owned(), task_type.to_owned()))
        .collect()
}

/// Where the dispatcher sends one task.
enum Route<'a> {
    /// To a worker.
    Run(Job),
    /// To wait for its module's compilation.
    Park(&'a ModuleKey, ClaimedTask),
    /// Straight to the commit stage, unrun.
    Finish(Finished),
}

/// Where a task goes, given what the registry `found` for its (tenant, task type).
fn route<'a>(task: ClaimedTask, found: Option<(&'a ModuleKey, &'a Resolved)>) -> Route<'a> {
    match found {
        // Only claims that ran out or never committed take a task this far (a run that
        // returns parks it at its limit): its runs keep ending with their host. Running
        // it again could take this host down too.
        Some((_, Resolved::Ready(module))) if task.lost_too_often(module.max_attempts) => {
            Route::Finish(Finished::Lost {
                task,
                max_attempts: module.max_attempts,
            })
        }
        Some((_, Resolved::Ready(module))) => Route::Run(Job {
            task,
            module: module.clone(),
        }),
        // A task of a locked claim goes back at once: waiting here, it would keep its
        // whole batch from committing (and past the lease timeout, lose the batch's
        // session). It is due again, and this host's claims leave it alone until the
        // module is ready (`Registry::watch_compiling`); its dead hosts' tries stay
        // counted (keep_lost_runs.sql). A timed lease holds nothing else up, so its task
        // waits here for the module.
        Some((_, Resolved::Compiling)) if task.lock.is_some() => {
            Route::Finish(Finished::NotRun(task))
        }
        Some((key, Resolved::Compiling)) => Route::Park(key, task),
        Some((_, Resolved::Unavailable(error))) => {
            Route::Finish(Finished::NoModule(task, error.clone()))
        }
        None => {
            let error = registry::no_module_error(&task.tenant, &task.task_type);
            Route::Finish(Finished::NoModule(task, error))
        }
    }
}
