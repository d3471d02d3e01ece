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
        let runs = self.runs.load(Relaxed);
        runs >= PROVEN_RUNS && self.nanos.load(Relaxed) / runs < SHORT_RUN.as_nanos() as u64
    }
}

#[derive(Default)]
struct State {
    /// Waiting jobs per tenant.
    queues: HashMap<String, VecDeque<Job>>,
    /// Tenants with waiting jobs, in the order workers serve them.
    turns: VecDeque<String>,
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
        for turn in 0..state.turns.len() {
            let tenant = &state.turns[turn];
            let job = state.queues[tenant]
                .front()
                .expect("a tenant in turns has jobs");
            let long = !job.module.run_times.is_short();
            let busy = state.long_running.get(tenant).copied().unwrap_or(0);
            if long && busy >= self.cap && !ignore_cap {
                continue;
            }
            let tenant = state.turns.remove(turn).expect("index in range");
            if long {
                *state.long_running.entry(tenant.clone()).or_default() += 1;
            }
            let queue = state
                .queues
                .get_mut(&tenant)
                .expect("a tenant in turns has a queue");
            let job = queue.pop_front().expect("checked above");
            if queue.is_empty() {
                state.queues.remove(&tenant);
            } else {
                state.turns.push_back(tenant);
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
