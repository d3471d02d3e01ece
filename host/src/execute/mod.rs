//! The execute stage: a dispatcher that matches each leased task to its module, a queue
//! fair between tenants (`queue.rs`), and a pool of worker threads that run tasks in the
//! sandbox. Workers are OS threads, not
//! async tasks: a run is CPU-bound and synchronous, and wasmtime's epoch deadline, not
//! the async runtime, bounds how long it takes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::registry::{Loaded, ModuleKey, Registry, Resolved};
use crate::sandbox::{
    Decision, Outcome, Reschedule, RunError, Sandbox, Slot, Spawn, Task, When, now_ms,
};
use crate::stats::{RunTimes, Stats};
use crate::task::LeasedTask;

/// A leased task on its way to the commit stage.
pub enum Finished {
    /// It ran; the outcome or the error that stopped it.
    Ran {
        /// The task (payload, state and key moved out into the run).
        task: LeasedTask,
        /// What the module decided, or why it decided nothing.
        result: Result<Outcome, RunError>,
        /// The tenant's limit on tries.
        max_attempts: i32,
    },
    /// No runnable module; the error to record.
    NoModule(LeasedTask, String),
    /// Not run, and to be parked: its earlier attempts went past the tenant's limit
    /// without a result (their hosts died or lost their claims while running it).
    Lost {
        /// The task.
        task: LeasedTask,
        /// The tenant's limit on tries.
        max_attempts: i32,
    },
    /// Not run because the host is stopping: to be given back.
    NotRun(LeasedTask),
}

/// What runs a task's logic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Runner {
    /// The task's module, in the sandbox: what recur is.
    #[default]
    Sandbox,
    /// An in-process stand-in that behaves like the `noop` module (reschedule every
    /// `every_ms` on the task's phase, else complete; spawn `spawn` children, of them
    /// `new_spawns` keyed after the run) without any sandbox, so that `recur bench
    /// --sql-only` measures the ceiling the database and the pipeline allow. Never for
    /// real work.
    NativeNoop,
}

/// The `noop` module's logic, natively.
fn native_noop(task: &Task) -> Outcome {
    #[derive(serde::Deserialize, Default)]
    struct Payload {
        every_ms: Option<u64>,
        spawn: Option<u32>,
        new_spawns: Option<u32>,
    }
    let Payload {
        every_ms,
        spawn,
        new_spawns,
    } = serde_json::from_slice::<Payload>(&task.payload).unwrap_or_default();
    let decision = match every_ms {
        // On the task's phase while it keeps up, as the module does.
        Some(ms) => Decision::Reschedule(Reschedule {
            when: match task.scheduled_at.saturating_add(ms as i64) {
                next if next > now_ms() => When::At(next),
                _ => When::AfterMs(ms),
            },
            state: None,
        }),
        None => Decision::Complete(None),
    };
    // Keyed as the module keys them: the fixed keys first, then those new every run.
    let spawn = spawn.unwrap_or(0);
    let new = new_spawns.unwrap_or(0).min(spawn);
    let known = (0..spawn - new).map(|i| format!("{}/{i}", task.key));
    let fresh = (0..new).map(|i| format!("{}/run{}/{i}", task.key, task.runs));
    let spawns = known
        .chain(fresh)
        .map(|key| Spawn {
            task_type: task.task_type.clone(),
            key,
            payload: Vec::new(),
            when: None,
        })
        .collect();
    Outcome { decision, spawns }
}

mod outbox;
mod queue;

use outbox::Outbox;
pub use queue::{ModuleTimes, PROVEN_RUNS, SHORT_RUN};
use queue::{Queue, Taken};

/// Timed-lease tasks waiting for their module's compilation, by (tenant, task type).
type Parked = HashMap<ModuleKey, Vec<LeasedTask>>;

/// One task and the module to run it with.
pub struct Job {
    task: LeasedTask,
    module: Arc<Loaded>,
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
    /// Leased batches from the lease stage; closed when it stops.
    pub batches: mpsc::Receiver<Vec<LeasedTask>>,
    /// Where finished tasks go, a few at a time (see `Outbox`, outbox.rs): the commit stage.
    pub finished: mpsc::UnboundedSender<Vec<Finished>>,
    /// Flips to true when the host shuts down: queued tasks are then given back
    /// instead of started.
    pub shutdown: watch::Receiver<bool>,
    /// Shared counters.
    pub stats: Arc<Stats>,
}

impl Executor {
    /// Dispatches batches to the workers until the lease stage closes its channel, then
    /// waits for the workers to finish what they started.
    pub async fn run(mut self) {
        let jobs = Arc::new(Queue::new(self.workers));
        let stopping = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(self.workers);
        for n in 0..self.workers {
            let (jobs, finished) = (jobs.clone(), self.finished.clone());
            let (sandbox, stats, stopping) =
                (self.sandbox.clone(), self.stats.clone(), stopping.clone());
            let runner = self.runner;
            let thread = thread::Builder::new()
                .name(format!("recur-worker-{n}"))
                .spawn(move || work(&sandbox, runner, &jobs, &finished, &stats, &stopping))
                .expect("cannot start a worker thread");
            threads.push(thread);
        }

        let mut shutdown = self.shutdown.clone();
        // Timed-lease tasks whose module is being compiled, queued once it is (see
        // registry/mod.rs).
        let mut parked = Parked::new();
        loop {
            let batch = tokio::select! {
                batch = self.batches.recv() => batch,
                keys = self.registry.compiled() => {
                    let tasks: Vec<LeasedTask> =
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

    /// Resolves the batch's modules and queues each task, parks it until its module is
    /// compiled, or sends it on as unrunnable.
    async fn dispatch(&mut self, batch: Vec<LeasedTask>, jobs: &Queue, parked: &mut Parked) {
        // A batch holds thousands of tasks and usually a few (tenant, type) pairs: the
        // names are copied once per pair, not once per task.
        let mut keys: HashSet<(&str, &str)> = HashSet::new();
        let mut last = None;
        for task in &batch {
            let key = (task.tenant.as_str(), task.task_type.as_str());
            // Consecutive tasks mostly share theirs: each is hashed once per run of them.
            if last != Some(key) {
                keys.insert(key);
                last = Some(key);
            }
        }
        let keys: HashSet<ModuleKey> = keys
            .into_iter()
            .map(|(tenant, task_type)| (tenant.to_owned(), task_type.to_owned()))
            .collect();
        let resolved = loop {
            match self.registry.resolve(keys.clone()).await {
                Ok(resolved) => break resolved,
                Err(err) if !*self.shutdown.borrow() => {
                    tracing::warn!(error = %err, "cannot load modules; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(_) => {
                    let _ = self
                        .finished
                        .send(batch.into_iter().map(Finished::NotRun).collect());
                    return;
                }
            }
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
            let message = match found {
                // Only leases that ran out, or locked batches that never committed, take a
                // task this far (a run that returns parks it at its limit): its runs keep
                // ending with their host. Running it again could take this host down too.
                Some((_, Resolved::Ready(module)))
                    if crate::outcome::exhausted(&task, module.max_attempts) =>
                {
                    Finished::Lost {
                        task,
                        max_attempts: module.max_attempts,
                    }
                }
                Some((_, Resolved::Ready(module))) => {
                    ready.push(Job {
                        task,
                        module: module.clone(),
                    });
                    continue;
                }
                // A task under a row lock goes back at once: waiting here, it would keep
                // its whole batch from committing (and past the lease timeout, lose the
                // batch's session). It is due again, and this host's claims leave it
                // alone until the module is ready (`Registry::watch_compiling`); its
                // dead hosts' tries stay counted (keep_lost_runs.sql). A timed lease
                // holds nothing else up, so its task waits here for the module.
                Some((_, Resolved::Compiling)) if task.lock.is_some() => Finished::NotRun(task),
                Some((key, Resolved::Compiling)) => {
                    parked.entry(key.clone()).or_default().push(task);
                    continue;
                }
                Some((_, Resolved::Unavailable(error))) => Finished::NoModule(task, error.clone()),
                None => {
                    let error = crate::registry::no_module_error(&task.tenant, &task.task_type);
                    Finished::NoModule(task, error)
                }
            };
            unrunnable.push(message);
        }
        if !unrunnable.is_empty() {
            let _ = self.finished.send(unrunnable);
        }
        jobs.push(ready);
    }
}

/// A worker thread's loop: run jobs until the queue closes. The worker's sandbox
/// [`Slot`] keeps the instance of a module deployed with `--reuse-instance` for the
/// worker's next task, which reuses it if it is of the same module version and tenant.
fn work(
    sandbox: &Sandbox,
    runner: Runner,
    jobs: &Queue,
    finished: &mpsc::UnboundedSender<Vec<Finished>>,
    stats: &Stats,
    stopping: &AtomicBool,
) {
    let mut times = RunTimes::new();
    let mut slot = Slot::default();
    let mut outbox = Outbox::new(finished);
    let mut idle_since = None;
    while let Some(Taken {
        job: Job { mut task, module },
        long,
    }) = jobs.take(
        || stopping.load(Ordering::Relaxed),
        || {
            outbox.send();
            idle_since = Some(Instant::now());
        },
    ) {
        if let Some(since) = idle_since.take() {
            stats.idle(since.elapsed());
        }
        if stopping.load(Ordering::Relaxed) {
            jobs.done(&task.tenant, long);
            outbox.push(Finished::NotRun(task));
            continue;
        }
        // A run must end by `run_by`; start it only with enough time left for its
        // tenant's timeout or at least the last quarter of the claim. Past that, the host
        // stalled (paused, starved): another host may be running this task already, and
        // a run cut short would be charged to the task for the host's trouble.
        let needs = module.limits.timeout.min(task.deadline - task.run_by);
        if Instant::now() + needs > task.run_by {
            jobs.done(&task.tenant, long);
            stats.expired();
            outbox.push(Finished::NotRun(task));
            continue;
        }
        // A run not known to be short could hold back what waits here for its whole
        // length.
        if long {
            outbox.send();
        }
        // The names go into the run and come back after it, rather than being copied.
        let mut input = Task {
            id: task.id,
            tenant: std::mem::take(&mut task.tenant),
            task_type: std::mem::take(&mut task.task_type),
            key: std::mem::take(&mut task.key),
            payload: std::mem::take(&mut task.payload),
            state: task.state.take(),
            attempt: task.attempt.max(1) as u32,
            runs: task.runs.max(0) as u64,
            scheduled_at: task.scheduled_at.timestamp_millis(),
        };
        let lag_ms = now_ms() - input.scheduled_at;
        let started = Instant::now();
        // The run ends before its claim does (see `LeasedTask::run_by`), whatever the
        // tenant's timeout allows.
        let mut limits = module.limits;
        let left = task.run_by.saturating_duration_since(started);
        let capped = left < limits.timeout;
        if capped {
            limits.timeout = left;
        }
        let result = match runner {
            Runner::Sandbox => sandbox.run(
                &mut slot,
                &module.prepared,
                &input,
                limits,
                module.reuse_instance,
            ),
            Runner::NativeNoop => Ok(native_noop(&input)),
        };
        task.tenant = std::mem::take(&mut input.tenant);
        task.task_type = std::mem::take(&mut input.task_type);
        let result = match result {
            Err(RunError::Timeout(ms)) if capped => Err(RunError::PastLease(ms)),
            other => other,
        };
        let took = started.elapsed();
        times.record(stats, took, lag_ms);
        module.run_times.record(took);
        jobs.done(&task.tenant, long);
        if let Err(err) = &result {
            tracing::debug!(task = task.id, tenant = task.tenant, task_type = task.task_type, error = %err, "run failed");
        }
        outbox.push(Finished::Ran {
            task,
            result,
            max_attempts: module.max_attempts,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop_task(payload: &str, scheduled_at: i64) -> Task {
        Task {
            id: 1,
            tenant: "default".into(),
            task_type: "noop".into(),
            key: "k".into(),
            payload: payload.as_bytes().to_vec(),
            state: None,
            attempt: 1,
            runs: 0,
            scheduled_at,
        }
    }

    fn when(outcome: Outcome) -> Option<When> {
        match outcome.decision {
            Decision::Reschedule(r) => Some(r.when),
            _ => None,
        }
    }

    #[test]
    fn the_native_noop_keeps_the_phase_as_the_module_does() {
        let now = now_ms();
        let every = r#"{"every_ms": 60000}"#;
        let late = when(native_noop(&noop_task(every, now - 20_000)));
        assert!(matches!(late, Some(When::At(at)) if at == now + 40_000));
        let behind = when(native_noop(&noop_task(every, now - 120_000)));
        assert!(matches!(behind, Some(When::AfterMs(60_000))));
        assert!(matches!(
            native_noop(&noop_task("", now)).decision,
            Decision::Complete(None)
        ));
    }

    #[test]
    fn the_native_noop_spawns_as_the_module_does() {
        let outcome = native_noop(&noop_task(r#"{"spawn": 2}"#, now_ms()));
        assert!(matches!(outcome.decision, Decision::Complete(None)));
        let keys: Vec<_> = outcome.spawns.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["k/0", "k/1"]);
        assert!(
            outcome
                .spawns
                .iter()
                .all(|s| s.task_type == "noop" && s.payload.is_empty() && s.when.is_none())
        );
        let seventh_run = Task {
            runs: 7,
            ..noop_task(r#"{"spawn": 3, "new_spawns": 2}"#, now_ms())
        };
        let keys: Vec<_> = native_noop(&seventh_run)
            .spawns
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(keys, ["k/0", "k/run7/0", "k/run7/1"]);
    }
}
