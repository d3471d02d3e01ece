//! A worker thread: takes jobs from the fair queue, runs each in the sandbox (or in the
//! host's native runner), and hands what finished to the commit stage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::handoff::Handoff;
use super::queue::{Queue, Taken};
use super::{Finished, Job, Runner};
use crate::registry::Loaded;
use crate::sandbox::{Carryover, RunError, RunLimits, Sandbox, Task, now_ms};
use crate::stats::{RunTimes, Stats};
use crate::task::ClaimedTask;

/// What one worker thread works with, shared with the other workers.
pub(super) struct Worker<'a> {
    pub sandbox: &'a Sandbox,
    pub runner: &'a Runner,
    pub jobs: &'a Queue<Job>,
    pub stats: &'a Stats,
    /// Set when the host stops: queued jobs are then given back, not started.
    pub stopping: &'a AtomicBool,
}

impl Worker<'_> {
    /// Runs jobs until the queue closes, handing each finished task to `finished`. The
    /// worker's kept instance holds the instance of a module deployed with
    /// `--reuse-instance` for the worker's next task, which reuses it if it is of the
    /// same module version and tenant.
    pub fn work(&self, finished: &mpsc::UnboundedSender<Vec<Finished>>) {
        let mut times = RunTimes::new();
        let mut kept = Carryover::default();
        let mut handoff = Handoff::new(finished);
        let mut idle_since = None;
        let stopping = || self.stopping.load(Ordering::Relaxed);
        // Before a worker waits for work, it hands on what it holds.
        while let Some(Taken {
            job: Job { task, module },
            long,
            give_back,
        }) = self.jobs.take(stopping, || {
            handoff.send();
            idle_since = Some(Instant::now());
        }) {
            if let Some(since) = idle_since.take() {
                self.stats.idle(since.elapsed());
            }
            if give_back || !self.may_start(&task, &module) {
                self.jobs.done(&task.tenant, long);
                handoff.push(Finished::NotRun(task));
                continue;
            }
            // A run not known to be short could hold back what waits here for its whole
            // length.
            if long {
                handoff.send();
            }
            let finished = self.run(&mut kept, &mut times, task, &module, long);
            handoff.push(finished);
        }
        times.flush(self.stats);
    }

    /// Whether a task may start: not while the host stops or its sandbox has halted
    /// (`Sandbox::halted`), and only with enough time left before `run_by` for its
    /// tenant's timeout or at least the last quarter of the claim. Past that, the host
    /// stalled (paused, starved): another host may be running this task already, and a
    /// run cut short would be charged to the task for the host's trouble.
    fn may_start(&self, task: &ClaimedTask, module: &Loaded) -> bool {
        if self.stopping.load(Ordering::Relaxed) || self.sandbox.halted() {
            return false;
        }
        let needs = module.limits.timeout.min(task.deadline - task.run_by);
        if Instant::now() + needs > task.run_by {
            self.stats.expired();
            return false;
        }
        true
    }

    /// Runs one task, taken from the queue as `long` or not, and says how it finished.
    fn run(
        &self,
        kept: &mut Carryover,
        times: &mut RunTimes,
        mut task: ClaimedTask,
        module: &Loaded,
        long: bool,
    ) -> Finished {
        let mut input = run_input(&mut task);
        let lag_ms = now_ms() - input.scheduled_at;
        let started = Instant::now();
        let (limits, capped) = cap_to_claim(module.limits, task.run_by, started);
        let result = match self.runner {
            Runner::Sandbox => self.sandbox.run(
                kept,
                &module.prepared,
                module.version,
                &input,
                limits,
                module.reuse_instance,
            ),
            Runner::Native(logic) => Ok(logic.run(&input)),
        };
        task.tenant = std::mem::take(&mut input.tenant);
        task.task_type = std::mem::take(&mut input.task_type);
        let result = match result {
            Err(RunError::Timeout(ms)) if capped => Err(RunError::PastLease(ms)),
            other => other,
        };
        let took = started.elapsed();
        times.record(self.stats, took, lag_ms);
        module.run_times.record(took);
        self.jobs.done(&task.tenant, long);
        if let Err(err) = &result {
            tracing::debug!(task = task.id, tenant = task.tenant, task_type = task.task_type, error = %err, "run failed");
        }
        Finished::Ran {
            task,
            result,
            max_attempts: module.max_attempts,
            quotas: module.quotas,
        }
    }
}

/// The run's input. The names, key, payload and state move into it, rather than being
/// copied; the caller moves the names back after the run.
fn run_input(task: &mut ClaimedTask) -> Task {
    Task {
        id: task.id,
        tenant: std::mem::take(&mut task.tenant),
        task_type: std::mem::take(&mut task.task_type),
        key: std::mem::take(&mut task.key),
        payload: std::mem::take(&mut task.payload),
        state: task.state.take(),
        attempt: task.attempt.max(1) as u32,
        runs: task.runs.max(0) as u64,
        scheduled_at: task.scheduled_at.timestamp_millis(),
    }
}

/// The limits of a run started at `started`, its timeout cut to end by `run_by` (see
/// `ClaimedTask::run_by`), whatever the tenant's timeout allows; and whether it was cut.
fn cap_to_claim(mut limits: RunLimits, run_by: Instant, started: Instant) -> (RunLimits, bool) {
    let left: Duration = run_by.saturating_duration_since(started);
    let capped = left < limits.timeout;
    if capped {
        limits.timeout = left;
    }
    (limits, capped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_ends_by_its_claims_run_by_whatever_its_tenant_allows() {
        let limits = RunLimits {
            memory_bytes: 1 << 20,
            timeout: Duration::from_secs(5),
        };
        let now = Instant::now();
        let (kept, capped) = cap_to_claim(limits, now + Duration::from_secs(60), now);
        assert_eq!((kept.timeout, capped), (Duration::from_secs(5), false));
        let (cut, capped) = cap_to_claim(limits, now + Duration::from_secs(2), now);
        assert_eq!((cut.timeout, capped), (Duration::from_secs(2), true));
        assert_eq!(cut.memory_bytes, limits.memory_bytes);
        let (none, capped) = cap_to_claim(limits, now, now + Duration::from_secs(1));
        assert_eq!((none.timeout, capped), (Duration::ZERO, true));
    }
}
