//! The queue between the dispatcher and the worker threads, fair between tenants.
//!
//! Jobs wait in one FIFO per tenant, and workers take from the tenants in turn, so one
//! tenant's big batch does not make the others wait behind it. Turns alone do not stop
//! a tenant whose runs are long (a module spinning to its deadline) from occupying every
//! worker while the other tenants have nothing queued yet, and then holding them for
//! seconds. So a tenant may have at most `workers - 1` runs in progress of a module not
//! yet known to be short; a module is short once it has run [`PROVEN_RUNS`] times with a
//! mean under [`SHORT_RUN`]. Short modules use every worker: the reserve costs throughput
//! only while a module is new or slow, which is when it protects the others.
//!
//! A turn is one job, or up to [`TURN_JOBS`] of a module whose runs are brief (a mean
//! under [`BRIEF_RUN`]): on a host serving hundreds of modules, a module run again at
//! once finds its code still in the processor's caches, and a run of noop takes 6 µs
//! instead of 25. The other tenants wait at most a few milliseconds longer for it.
//!
//! A std Mutex and Condvar, not a channel: a worker's choice depends on every queue and
//! on what runs, which one lock over all of it makes simple. It is held for a few
//! hundred nanoseconds per job.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::Job;

/// Below this mean run time a module may use every worker.
pub const SHORT_RUN: Duration = Duration::from_millis(20);
/// Runs of a module measured before it counts as short.
pub const PROVEN_RUNS: u64 = 20;
/// Most jobs of brief modules one tenant's turn may take before the next tenant's: a
/// module run again straight away finds its code and the sandbox's data for it still in
/// the processor's caches, which a host serving hundreds of modules in strict rotation
/// never does (see [`Queue::next`]).
pub const TURN_JOBS: usize = 8;
/// Below this mean run time a module is brief: a turn of [`TURN_JOBS`] of its runs keeps
/// the other tenants waiting at most a few milliseconds more than a turn of one. Longer
/// runs gain nothing from warm caches and take one job a turn.
pub const BRIEF_RUN: Duration = Duration::from_millis(1);

/// Run times of one module version, shared by every worker.
#[derive(Debug, Default)]
pub struct ModuleTimes {
    runs: AtomicU64,
    nanos: AtomicU64,
}

impl ModuleTimes {
    /// Adds one run.
    pub fn record(&self, took: Duration) {
        self.runs.fetch_add(1, Relaxed);
        self.nanos.fetch_add(took.as_nanos() as u64, Relaxed);
    }

    /// Whether the module has proven its runs short.
    pub fn is_short(&self) -> bool {
        self.proven_under(SHORT_RUN)
    }

    /// Whether the module has run at least [`PROVEN_RUNS`] times, with a mean under `limit`.
    fn proven_under(&self, limit: Duration) -> bool {
        let runs = self.runs.load(Relaxed);
        runs >= PROVEN_RUNS && self.nanos.load(Relaxed) / runs < limit.as_nanos() as u64
    }
}

#[derive(Default)]
struct State {
    /// Waiting jobs per tenant.
    queues: HashMap<String, VecDeque<Job>>,
    /// Tenants with waiting jobs, in the order workers serve them.
    turns: VecDeque<String>,
    /// Jobs the tenant at the front of `turns` has been given in its current turn.
    streak: usize,
    /// Runs in progress per tenant, of modules not proven short.
    long_running: HashMap<String, usize>,
    /// No more jobs will come; workers exit once the queues are empty.
    closed: bool,
}

/// The fair queue.
pub struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    /// Most runs of unproven modules one tenant may have in progress.
    cap: usize,
}

/// A job taken by a worker; give it back with [`Queue::done`] when it has run.
pub struct Taken {
    /// The job.
    pub job: Job,
    /// Whether it counts against its tenant's cap (pass it back to `done`).
    pub long: bool,
}

impl Queue {
    /// A queue for `workers` worker threads.
    pub fn new(workers: usize) -> Queue {
        Queue {
            state: Mutex::default(),
            ready: Condvar::new(),
            cap: workers.saturating_sub(1).max(1),
        }
    }

    /// Adds jobs and wakes the workers.
    pub fn push(&self, jobs: impl IntoIterator<Item = Job>) {
        let mut state = self.state.lock().expect("queue lock poisoned");
        for job in jobs {
            // Clone the tenant's name only when it gets a queue, not once per job.
            if let Some(queue) = state.queues.get_mut(&job.task.tenant) {
                queue.push_back(job);
            } else {
                let tenant = job.task.tenant.clone();
                state.turns.push_back(tenant.clone());
                state.queues.insert(tenant, VecDeque::from([job]));
            }
        }
        drop(state);
        self.ready.notify_all();
    }

    /// No more jobs: workers drain what is queued, then [`Queue::take`] returns `None`.
    pub fn close(&self) {
        self.state.lock().expect("queue lock poisoned").closed = true;
        self.ready.notify_all();
    }

    /// The next job a worker may start, waiting for one; `None` once closed and empty.
    /// When `any` is true (the host is stopping and jobs are only handed back) the
    /// per-tenant cap does not apply. `idle` is called, without the lock, before the
    /// worker waits: the worker sends on what it holds (see `Outbox`).
    pub fn take(&self, any: impl Fn() -> bool, mut idle: impl FnMut()) -> Option<Taken> {
        let mut state = self.state.lock().expect("queue lock poisoned");
        let mut told = false;
        loop {
            if let Some(taken) = self.next(&mut state, any()) {
                return Some(taken);
            }
            if state.closed && state.turns.is_empty() {
                return None;
            }
            if !told {
                // Looked at again after the call: a job pushed meanwhile is not missed.
                drop(state);
                idle();
                told = true;
                state = self.state.lock().expect("queue lock poisoned");
                continue;
            }
            state = self.ready.wait(state).expect("queue lock poisoned");
        }
    }

    /// The next job a worker may start now, if any.
    fn next(&self, state: &mut State, ignore_cap: bool) -> Option<Taken> {
        let State {
            queues,
            turns,
            streak,
            long_running,
            ..
        } = state;
        for turn in 0..turns.len() {
            let tenant = &turns[turn];
            let queue = queues
                .get_mut(tenant)
                .expect("a tenant in turns has a queue");
            let times = &queue
                .front()
                .expect("a tenant in turns has jobs")
                .module
                .run_times;
            let (long, brief) = (!times.is_short(), times.proven_under(BRIEF_RUN));
            let busy = long_running.get(tenant).copied().unwrap_or(0);
            if long && busy >= self.cap && !ignore_cap {
                continue;
            }
            if long {
                *long_running.entry(tenant.clone()).or_default() += 1;
            }
            let job = queue.pop_front().expect("checked above");
            let emptied = queue.is_empty();
            if emptied {
                queues.remove(tenant);
            }
            // The front tenant keeps its turn for up to TURN_JOBS jobs of brief modules.
            // Measured here, recurring over 300 tenants each running its own module:
            // 31-33k/s with one job a turn, a run 24-26 µs (the module's code evicted
            // from the caches by the 299 others since its last run); 37-43k/s and
            // 6.4-9 µs with turns of 8. One tenant, or 50 sharing a module: no change.
            if turn == 0 && brief && !emptied && *streak + 1 < TURN_JOBS {
                *streak += 1;
            } else {
                let tenant = turns.remove(turn).expect("index in range");
                if !emptied {
                    turns.push_back(tenant);
                }
                if turn == 0 {
                    *streak = 0;
                }
            }
            return Some(Taken { job, long });
        }
        None
    }

    /// Wakes waiting workers to look again (the host began stopping).
    pub fn wake(&self) {
        self.ready.notify_all();
    }

    /// Marks a taken job's run as over (its tenant may start another long run).
    pub fn done(&self, tenant: &str, taken_long: bool) {
        if !taken_long {
            return;
        }
        let mut state = self.state.lock().expect("queue lock poisoned");
        if let Some(busy) = state.long_running.get_mut(tenant) {
            *busy -= 1;
            if *busy == 0 {
                state.long_running.remove(tenant);
            }
        }
        drop(state);
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};
    use std::time::{Duration, Instant};

    use super::{BRIEF_RUN, Job, PROVEN_RUNS, Queue, TURN_JOBS};
    use crate::registry::Loaded;
    use crate::sandbox::{Prepared, RunLimits, Sandbox, SandboxConfig};
    use crate::task::LeasedTask;

    /// noop, compiled once for every test here.
    fn noop() -> Prepared {
        static NOOP: OnceLock<Prepared> = OnceLock::new();
        NOOP.get_or_init(|| {
            let sandbox = Sandbox::new(&SandboxConfig {
                concurrent_runs: 1,
                ..SandboxConfig::default()
            })
            .expect("a sandbox");
            let noop = crate::examples::example("noop").expect("noop is built in");
            sandbox.prepare(noop.component).expect("noop is valid")
        })
        .clone()
    }

    /// A module whose runs took `each` so far ([`PROVEN_RUNS`] of them), or none if zero.
    fn module(each: Duration) -> Arc<Loaded> {
        let module = Loaded {
            version: 1,
            sha256: String::new(),
            prepared: noop(),
            limits: RunLimits {
                memory_bytes: 1 << 20,
                timeout: Duration::from_secs(5),
            },
            max_attempts: 1,
            reuse_instance: false,
            run_times: Arc::default(),
        };
        if !each.is_zero() {
            for _ in 0..PROVEN_RUNS {
                module.run_times.record(each);
            }
        }
        Arc::new(module)
    }

    fn jobs(tenant: &str, module: &Arc<Loaded>, n: usize) -> Vec<Job> {
        (0..n)
            .map(|i| Job {
                task: LeasedTask {
                    id: i as i64,
                    tenant: tenant.into(),
                    task_type: "noop".into(),
                    key: format!("{tenant}-{i}"),
                    payload: Vec::new(),
                    state: None,
                    attempt: 1,
                    runs: 0,
                    scheduled_at: chrono::Utc::now(),
                    token: None,
                    version: None,
                    lock: None,
                    deadline: Instant::now() + Duration::from_secs(60),
                    run_by: Instant::now() + Duration::from_secs(45),
                },
                module: module.clone(),
            })
            .collect()
    }

    /// The tenants of the jobs a worker takes until the queue is empty, each marked done
    /// before the next is taken.
    fn order(queue: &Queue) -> String {
        queue.close();
        let mut order = String::new();
        while let Some(taken) = queue.take(|| false, || {}) {
            order.push_str(&taken.job.task.tenant);
            queue.done(&taken.job.task.tenant, taken.long);
        }
        order
    }

    #[test]
    fn a_turn_takes_several_jobs_of_a_brief_module_and_one_of_any_other() {
        assert_eq!(TURN_JOBS, 8, "the expected orders below assume 8");
        let queue = Queue::new(2);
        let short = module(Duration::from_micros(10));
        queue.push(jobs("a", &short, 10));
        queue.push(jobs("b", &short, 10));
        queue.push(jobs("c", &short, 1));
        assert_eq!(order(&queue), "aaaaaaaabbbbbbbbcaabb");

        // Not yet measured, or short but not brief: one job a turn.
        let queue = Queue::new(2);
        let (new_a, new_b) = (module(Duration::ZERO), module(Duration::ZERO));
        queue.push(jobs("a", &new_a, 3));
        queue.push(jobs("b", &new_b, 3));
        assert_eq!(order(&queue), "ababab");

        let queue = Queue::new(2);
        let (slow_a, slow_b) = (module(BRIEF_RUN), module(BRIEF_RUN));
        assert!(slow_a.run_times.is_short());
        queue.push(jobs("a", &slow_a, 3));
        queue.push(jobs("b", &slow_b, 3));
        assert_eq!(order(&queue), "ababab");
    }
}
