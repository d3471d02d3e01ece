//! The queue between the dispatcher and the worker threads, fair between tenants.
//!
//! Jobs wait in one FIFO per tenant, and workers take from the tenants in turn, so one
//! tenant's big batch does not make the others wait behind it. Turns alone do not stop
//! a tenant whose runs are long (a module spinning to its deadline) from occupying every
//! worker while the other tenants have nothing queued yet, and then holding them for
//! seconds. So a tenant may have at most `workers - 1` runs in progress of a module not
//! yet known to be short (see `ModuleTimes` in stats/module_times.rs). Short modules use
//! every worker: the reserve costs throughput only while a module is new or slow, which
//! is when it protects the others.
//!
//! The claim stage must know of such a tenant too: a fair claim gives every tenant with
//! due work its share of each batch, and a tenant whose runs are long would gather the
//! host's in-flight permits in jobs waiting here behind its cap, until none were left
//! for the others. So the queue publishes the tenants it holds back (a job of theirs
//! waits for their cap), and the claim stage claims none of their tasks meanwhile
//! (`ClaimRequest::held_back`).
//!
//! A std Mutex and Condvar, not a channel: a worker's choice depends on every queue and
//! on what runs, which one lock over all of it makes simple. It is held only to pick or
//! add jobs, never while a job runs.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;

/// What the queue needs to know of a job to be fair.
pub trait Fair {
    /// The tenant the job belongs to.
    fn tenant(&self) -> &str;
    /// Whether its module has proven its runs short.
    fn is_short(&self) -> bool;
    /// Whether other jobs' outcomes wait for it: it belongs to a locked claim, whose
    /// batch commits once all of its tasks are done.
    fn holds_batch(&self) -> bool;
}

struct State<J> {
    /// Waiting jobs per tenant.
    queues: HashMap<String, VecDeque<J>>,
    /// Tenants with waiting jobs, in the order workers serve them.
    turns: VecDeque<String>,
    /// Runs in progress per tenant, of modules not proven short.
    long_running: HashMap<String, usize>,
    /// No more jobs will come; workers exit once the queues are empty.
    closed: bool,
    /// The tenants held back when last published.
    held_back: BTreeSet<String>,
}

impl<J> Default for State<J> {
    fn default() -> Self {
        State {
            queues: HashMap::new(),
            turns: VecDeque::new(),
            long_running: HashMap::new(),
            closed: false,
            held_back: BTreeSet::new(),
        }
    }
}

/// The fair queue.
pub struct Queue<J> {
    state: Mutex<State<J>>,
    ready: Condvar,
    /// Most runs of unproven modules one tenant may have in progress.
    cap: usize,
    /// Where the tenants held back are published, sorted, each time they change.
    held_back: watch::Sender<Arc<[String]>>,
}

/// A job taken by a worker; give it back with [`Queue::done`] when it has run.
pub struct Taken<J> {
    /// The job.
    pub job: J,
    /// Whether it counts against its tenant's cap (pass it back to `done`).
    pub long: bool,
    /// Whether to give it back unrun instead: a long job of a tenant at its cap, which
    /// would otherwise wait here holding its whole batch's commit.
    pub give_back: bool,
}

impl<J: Fair> Queue<J> {
    /// A queue for `workers` worker threads, which publishes the tenants it holds back
    /// (a job of theirs waits because they have their cap of long runs in progress) to
    /// `held_back`.
    pub fn new(workers: usize, held_back: watch::Sender<Arc<[String]>>) -> Self {
        Queue {
            state: Mutex::default(),
            ready: Condvar::new(),
            cap: workers.saturating_sub(1).max(1),
            held_back,
        }
    }

    /// Publishes the tenants held back, if they changed. Called with the lock held, after
    /// whatever may change them: jobs added, a long run started or ended.
    fn publish_held_back(&self, state: &mut State<J>) {
        let held_back: BTreeSet<String> = state
            .long_running
            .iter()
            .filter(|&(tenant, running)| {
                *running >= self.cap
                    && state
                        .queues
                        .get(tenant)
                        .and_then(|queue| queue.front())
                        .is_some_and(|job| !job.is_short())
            })
            .map(|(tenant, _)| tenant.clone())
            .collect();
        if held_back != state.held_back {
            self.held_back
                .send_replace(held_back.iter().cloned().collect());
            state.held_back = held_back;
        }
    }

    /// Adds jobs and wakes the workers.
    pub fn push(&self, jobs: impl IntoIterator<Item = J>) {
        let mut state = self.state.lock().expect("queue lock poisoned");
        for job in jobs {
            // Copy the tenant's name only when it gets a queue, not once per job.
            if let Some(queue) = state.queues.get_mut(job.tenant()) {
                queue.push_back(job);
            } else {
                let tenant = job.tenant().to_owned();
                state.turns.push_back(tenant.clone());
                state.queues.insert(tenant, VecDeque::from([job]));
            }
        }
        self.publish_held_back(&mut state);
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
    /// worker waits: the worker hands on what it holds (see `Handoff`).
    pub fn take(&self, any: impl Fn() -> bool, mut idle: impl FnMut()) -> Option<Taken<J>> {
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
    fn next(&self, state: &mut State<J>, ignore_cap: bool) -> Option<Taken<J>> {
        for turn in 0..state.turns.len() {
            let tenant = &state.turns[turn];
            let job = state.queues[tenant]
                .front()
                .expect("a tenant in turns has jobs");
            let long = !job.is_short();
            let busy = state.long_running.get(tenant).copied().unwrap_or(0);
            if long && busy >= self.cap && !ignore_cap {
                // A job of a locked claim goes back, due again at once, rather than
                // hold the outcomes of every other tenant's tasks in its batch for as
                // long as its tenant's runs ahead of it take.
                if !job.holds_batch() {
                    continue;
                }
                let job = self.pop(state, turn);
                self.publish_held_back(state);
                return Some(Taken {
                    job,
                    long: false,
                    give_back: true,
                });
            }
            if long {
                let tenant = tenant.clone();
                *state.long_running.entry(tenant).or_default() += 1;
            }
            let job = self.pop(state, turn);
            if long {
                self.publish_held_back(state);
            }
            return Some(Taken {
                job,
                long,
                give_back: false,
            });
        }
        None
    }

    /// Takes the first job of the tenant at `turn` out of the queue.
    fn pop(&self, state: &mut State<J>, turn: usize) -> J {
        let tenant = state.turns.remove(turn).expect("index in range");
        let queue = state
            .queues
            .get_mut(&tenant)
            .expect("a tenant in turns has a queue");
        let job = queue.pop_front().expect("a tenant in turns has jobs");
        if queue.is_empty() {
            state.queues.remove(&tenant);
        } else {
            state.turns.push_back(tenant);
        }
        job
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
        self.publish_held_back(&mut state);
        drop(state);
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job of `tenant`, numbered, short or not.
    struct Job(&'static str, u32, bool);

    impl Fair for Job {
        fn tenant(&self) -> &str {
            self.0
        }
        fn is_short(&self) -> bool {
            self.2
        }
        fn holds_batch(&self) -> bool {
            false
        }
    }

    fn queue(workers: usize) -> Queue<Job> {
        Queue::new(workers, watch::Sender::new(Arc::from([])))
    }

    fn take(queue: &Queue<Job>) -> Taken<Job> {
        queue.take(|| false, || {}).expect("a job is queued")
    }

    #[test]
    fn tenants_take_turns_whatever_their_backlog() {
        let queue = queue(4);
        queue.push((0..100).map(|n| Job("big", n, true)));
        queue.push([Job("small", 0, true), Job("small", 1, true)]);
        let order: Vec<_> = (0..5)
            .map(|_| take(&queue).job)
            .map(|j| (j.0, j.1))
            .collect();
        assert_eq!(
            order,
            [
                ("big", 0),
                ("small", 0),
                ("big", 1),
                ("small", 1),
                ("big", 2)
            ]
        );
    }

    #[test]
    fn a_tenant_of_unproven_modules_leaves_a_worker_for_the_others() {
        let (sender, held_back) = watch::channel(Arc::from([]));
        let queue = Queue::new(3, sender);
        queue.push((0..10).map(|n| Job("slow", n, false)));
        let first = take(&queue);
        assert!(held_back.borrow().is_empty(), "below its cap");
        let second = take(&queue);
        assert!(first.long && second.long);
        assert_eq!(
            &**held_back.borrow(),
            ["slow".to_string()],
            "its jobs wait for its cap: the claim stage is told"
        );
        // Both of the cap's runs are in progress: the third waits, though jobs are queued.
        let mut state = queue.state.lock().unwrap();
        assert!(queue.next(&mut state, false).is_none());
        drop(state);
        queue.push([Job("other", 0, false)]);
        assert_eq!(take(&queue).job.0, "other");
        queue.done("slow", first.long);
        let third = take(&queue);
        assert_eq!(third.job.0, "slow", "a finished run frees the cap");
        // At the cap again; a stopping host hands jobs back, cap or not.
        let handed_back = queue.take(|| true, || {}).expect("jobs are queued");
        assert_eq!(handed_back.job.0, "slow");
    }

    #[test]
    fn short_modules_use_every_worker() {
        let queue = queue(2);
        queue.push((0..3).map(|n| Job("fast", n, true)));
        for _ in 0..3 {
            assert!(!take(&queue).long);
        }
    }

    #[test]
    fn a_closed_queue_drains_then_ends() {
        let queue = queue(2);
        queue.push([Job("t", 0, true)]);
        queue.close();
        assert_eq!(take(&queue).job.1, 0);
        assert!(queue.take(|| false, || {}).is_none());
    }
}
