//! Commit rows: turns what a run produced (an outcome, or the error that stopped it)
//! into the row the commit writes, enforcing the contract's limits on what a module may
//! return. A module that breaks a limit fails its own task with a message that names the
//! limit; nothing it returned is written.

use std::time::Duration;

use super::limits::check;
use crate::contract::MAX_MESSAGE_BYTES;
use crate::contract::OutcomeQuotas;
use crate::sandbox::{Decision, Outcome, RunError, Spawn, When};
use crate::stats::Decided;
use crate::task::{ClaimedTask, Fence, LOST_RUN_ALLOWANCE, Status};
use crate::text;

/// First retry delay; each further attempt doubles it.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
/// How long a task whose type has no module waits before it is tried again.
pub const NO_MODULE_RETRY: Duration = Duration::from_secs(30);

/// The update of one task, as the commit statement's arrays want it.
#[derive(Debug, Clone)]
pub struct CommitRow {
    pub id: i64,
    /// What the row must still hold for the update to apply.
    pub fence: Fence,
    pub status: Status,
    /// Next run as an absolute time (ms since the epoch), or
    pub at_ms: Option<i64>,
    /// as a delay from the commit (used when `at_ms` is `None`).
    pub delay_ms: Option<i64>,
    /// `Some` replaces the state; `None` keeps it.
    pub state: Option<Vec<u8>>,
    pub attempt: i32,
    /// 1 when the run succeeded, else 0.
    pub runs_inc: i32,
    pub error: Option<String>,
}

/// A task to create, written only if its parent's row applies.
#[derive(Debug, Clone)]
pub struct SpawnRow {
    pub parent: i64,
    pub task_type: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub at_ms: Option<i64>,
    pub delay_ms: Option<i64>,
}

/// Everything one finished task writes.
#[derive(Debug, Clone)]
pub struct Write {
    pub kind: Decided,
    pub row: CommitRow,
    pub spawns: Vec<SpawnRow>,
    /// For spawns of a tenant with a quota on its spawns per minute or its scheduled
    /// tasks: what drawing them from its budgets needs (see `budget.rs`). `None` for
    /// every other write.
    pub budget: Option<SpawnBudget>,
}

/// A spawning write's tenant and the limits its draw from the spawn budgets goes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnBudget {
    pub tenant: String,
    /// The tenant's quotas, as the host last read them (the draw reads them afresh).
    pub per_minute: Option<usize>,
    pub max_tasks: Option<i64>,
    /// The run's attempt, and the tenant's attempts: a task refused at its last one is
    /// parked.
    pub attempt: i32,
    pub max_attempts: i32,
}

/// Decides what to write for a task that ran. `now_ms` is the host's clock, used to
/// check absolute times; `max_attempts` and `quotas` are the tenant's.
pub fn decide(
    task: &ClaimedTask,
    result: Result<Outcome, RunError>,
    max_attempts: i32,
    quotas: &OutcomeQuotas,
    now_ms: i64,
) -> Write {
    let outcome = match result {
        Ok(outcome) => outcome,
        // A sandbox fault may be transient (a timeout under load), so it takes the retry
        // path; a deterministic bug exhausts the attempts quickly and is parked.
        Err(err) => return retry(task, err.to_string(), max_attempts),
    };
    match check(&outcome, now_ms, quotas) {
        Ok(()) => {}
        Err(problem) => return fail(task, format!("invalid outcome: {problem}")),
    }
    let spawns: Vec<SpawnRow> = outcome
        .spawns
        .into_iter()
        .map(|s| spawn_row(task.id, s))
        .collect();
    let budgeted = quotas.max_spawns_per_minute.is_some() || quotas.max_tasks.is_some();
    let budget = (budgeted && !spawns.is_empty()).then(|| SpawnBudget {
        tenant: task.tenant.clone(),
        per_minute: quotas.max_spawns_per_minute,
        max_tasks: quotas.max_tasks,
        attempt: task.attempt,
        max_attempts,
    });
    let success = |kind, status, (at_ms, delay_ms), state| Write {
        kind,
        row: CommitRow {
            id: task.id,
            fence: task.fence,
            status,
            at_ms,
            delay_ms,
            state,
            attempt: 0,
            runs_inc: 1,
            error: None,
        },
        spawns,
        budget,
    };
    match outcome.decision {
        Decision::Reschedule(r) => success(
            Decided::Rescheduled,
            Status::Scheduled,
            when(&r.when),
            r.state,
        ),
        Decision::Complete(state) => {
            success(Decided::Completed, Status::Done, (None, Some(0)), state)
        }
        Decision::Retry(message) => retry(task, message, max_attempts),
        Decision::Fail(message) => fail(task, message),
    }
}

/// The write for a task that has no runnable module (none deployed for its type, or
/// the deployed one cannot load): it stays scheduled and visible with `error`, tried
/// again after `NO_MODULE_RETRY`, and the claim's attempt is undone.
pub fn no_module(task: &ClaimedTask, error: String) -> Write {
    Write {
        kind: Decided::NoModule,
        row: CommitRow {
            id: task.id,
            fence: task.fence,
            status: Status::Scheduled,
            at_ms: None,
            delay_ms: Some(NO_MODULE_RETRY.as_millis() as i64),
            state: None,
            attempt: (task.attempt - 1).max(0),
            runs_inc: 0,
            error: Some(storable(error)),
        },
        spawns: Vec::new(),
        budget: None,
    }
}

/// The write for a task whose claims kept ending without a result (the host running it
/// died, or lost its claim or connection): parked unrun, since running it again may end
/// the same way.
pub fn lost(task: &ClaimedTask, max_attempts: i32) -> Write {
    fail(
        task,
        format!(
            "parked without running: {} attempts ended without a result (its limit is {max_attempts}, and {LOST_RUN_ALLOWANCE} more for runs lost with their host); the hosts that ran it died, stalled past their lease or lost their database connection: see their logs",
            task.attempt - 1
        ),
    )
}

/// The write for a transient failure: back off exponentially, or park the task once
/// it has used its attempts.
fn retry(task: &ClaimedTask, message: String, max_attempts: i32) -> Write {
    if task.attempt >= max_attempts {
        return fail(
            task,
            format!("{message} (gave up after {} attempts)", task.attempt),
        );
    }
    let delay = backoff(task.id, task.attempt);
    Write {
        kind: Decided::Retried,
        row: CommitRow {
            id: task.id,
            fence: task.fence,
            status: Status::Scheduled,
            at_ms: None,
            delay_ms: Some(delay.as_millis() as i64),
            state: None,
            attempt: task.attempt,
            runs_inc: 0,
            error: Some(storable(message)),
        },
        spawns: Vec::new(),
        budget: None,
    }
}

/// The write for a permanent failure: the task is parked with its message.
fn fail(task: &ClaimedTask, message: String) -> Write {
    Write {
        kind: Decided::Failed,
        row: CommitRow {
            id: task.id,
            fence: task.fence,
            status: Status::Failed,
            at_ms: None,
            delay_ms: Some(0),
            state: None,
            attempt: task.attempt,
            runs_inc: 0,
            error: Some(storable(message)),
        },
        spawns: Vec::new(),
        budget: None,
    }
}

/// The write that replaces `write` when the database refused to store it: the task is
/// parked as failed with the database's reason, and nothing the run returned is kept.
pub fn refused(write: &Write, error: &sqlx::Error) -> Write {
    Write {
        kind: Decided::Failed,
        row: CommitRow {
            status: Status::Failed,
            at_ms: None,
            delay_ms: Some(0),
            state: None,
            runs_inc: 0,
            error: Some(storable(format!(
                "the database refused to store this run's outcome: {error}"
            ))),
            ..write.row.clone()
        },
        spawns: Vec::new(),
        budget: None,
    }
}

/// A task's error as the commit can always store it. An outcome's own message was
/// checked already; this covers the host's errors, which quote what a module wrote.
pub(super) fn storable(message: String) -> String {
    text::storable(message, MAX_MESSAGE_BYTES)
}

/// The delay before attempt `attempt + 1`: `RETRY_BASE * 2^(attempt-1)`, capped at
/// `RETRY_MAX`, spread by up to ±10% (from the task id, so it is reproducible) so that
/// tasks that failed together do not all come back in the same instant.
pub fn backoff(task_id: i64, attempt: i32) -> Duration {
    let exp = (attempt.max(1) - 1).min(30) as u32;
    let delay = RETRY_BASE.saturating_mul(1 << exp).min(RETRY_MAX);
    let spread = (task_id
        .wrapping_mul(2654435761)
        .wrapping_add(attempt as i64))
    .rem_euclid(201)
        - 100;
    delay.mul_f64(1.0 + spread as f64 / 1000.0)
}

/// `(at_ms, delay_ms)` for the commit statement.
fn when(when: &When) -> (Option<i64>, Option<i64>) {
    match *when {
        When::At(at) => (Some(at), None),
        When::AfterMs(ms) => (None, Some(ms as i64)),
    }
}

fn spawn_row(parent: i64, spawn: Spawn) -> SpawnRow {
    let (at_ms, delay_ms) = spawn.when.as_ref().map(when).unwrap_or((None, Some(0)));
    SpawnRow {
        parent,
        task_type: spawn.task_type,
        key: spawn.key,
        payload: spawn.payload,
        at_ms,
        delay_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{MAX_SPAWNS, MAX_STATE_BYTES};
    use crate::sandbox::Reschedule;

    #[test]
    fn backoff_doubles_and_caps() {
        let secs = |a| backoff(7, a).as_secs_f64();
        assert!((0.9..=1.1).contains(&secs(1)));
        assert!((1.8..=2.2).contains(&secs(2)));
        assert!((7.2..=8.8).contains(&secs(4)));
        assert!(secs(40) <= RETRY_MAX.as_secs_f64() * 1.1);
    }

    fn task(attempt: i32) -> ClaimedTask {
        ClaimedTask::sample(42, attempt)
    }

    fn outcome(decision: Decision, spawns: usize) -> Outcome {
        let spawns = (0..spawns)
            .map(|i| Spawn {
                task_type: "child".into(),
                key: format!("k{i}"),
                payload: Vec::new(),
                when: None,
            })
            .collect();
        Outcome { decision, spawns }
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_reschedule_keeps_its_time_state_and_spawns_and_counts_a_run() {
        let reschedule = Decision::Reschedule(Reschedule {
            when: When::At(NOW + 1000),
            state: Some(b"s".to_vec()),
        });
        let write = decide(
            &task(2),
            Ok(outcome(reschedule, 2)),
            5,
            &OutcomeQuotas::default(),
            NOW,
        );
        assert_eq!(write.kind, Decided::Rescheduled);
        assert_eq!(write.row.status, Status::Scheduled);
        assert_eq!(
            (write.row.at_ms, write.row.delay_ms),
            (Some(NOW + 1000), None)
        );
        assert_eq!(write.row.state.as_deref(), Some(&b"s"[..]));
        assert_eq!((write.row.attempt, write.row.runs_inc), (0, 1));
        assert_eq!(write.spawns.len(), 2);
        assert!(
            write
                .spawns
                .iter()
                .all(|s| s.parent == 42 && s.delay_ms == Some(0))
        );
    }

    #[test]
    fn a_complete_is_done_at_once() {
        let write = decide(
            &task(1),
            Ok(outcome(Decision::Complete(None), 0)),
            5,
            &OutcomeQuotas::default(),
            NOW,
        );
        assert_eq!(
            (write.kind, write.row.status),
            (Decided::Completed, Status::Done)
        );
        assert_eq!(write.row.state, None, "none keeps the current state");
    }

    #[test]
    fn a_retry_backs_off_until_the_last_attempt_then_parks() {
        let retry = || Ok(outcome(Decision::Retry("busy".into()), 1));
        let write = decide(&task(2), retry(), 3, &OutcomeQuotas::default(), NOW);
        assert_eq!(
            (write.kind, write.row.status),
            (Decided::Retried, Status::Scheduled)
        );
        assert_eq!(write.row.delay_ms, Some(backoff(42, 2).as_millis() as i64));
        assert_eq!(write.row.error.as_deref(), Some("busy"));
        assert!(write.spawns.is_empty(), "a run that retries spawns nothing");
        let last = decide(&task(3), retry(), 3, &OutcomeQuotas::default(), NOW);
        assert_eq!(
            (last.kind, last.row.status),
            (Decided::Failed, Status::Failed)
        );
        assert_eq!(
            last.row.error.as_deref(),
            Some("busy (gave up after 3 attempts)")
        );
    }

    #[test]
    fn a_sandbox_fault_takes_the_retry_path() {
        let write = decide(
            &task(1),
            Err(RunError::Timeout(1000)),
            3,
            &OutcomeQuotas::default(),
            NOW,
        );
        assert_eq!(write.kind, Decided::Retried);
        assert_eq!(write.row.error.as_deref(), Some("timed out after 1000 ms"));
    }

    #[test]
    fn a_fail_parks_the_task_with_its_message() {
        let write = decide(
            &task(1),
            Ok(outcome(Decision::Fail("no".into()), 0)),
            3,
            &OutcomeQuotas::default(),
            NOW,
        );
        assert_eq!(
            (write.kind, write.row.status),
            (Decided::Failed, Status::Failed)
        );
        assert_eq!(write.row.error.as_deref(), Some("no"));
    }

    #[test]
    fn an_outcome_over_a_limit_fails_its_task_and_keeps_nothing() {
        let big = Decision::Complete(Some(vec![0; MAX_STATE_BYTES + 1]));
        let write = decide(
            &task(1),
            Ok(outcome(big, 1)),
            3,
            &OutcomeQuotas::default(),
            NOW,
        );
        assert_eq!(write.kind, Decided::Failed);
        assert!(
            write
                .row
                .error
                .unwrap()
                .starts_with("invalid outcome: state of")
        );
        assert!(write.spawns.is_empty() && write.row.state.is_none());
        let many = outcome(Decision::Complete(None), MAX_SPAWNS + 1);
        let write = decide(&task(1), Ok(many), 3, &OutcomeQuotas::default(), NOW);
        assert!(write.row.error.unwrap().contains("spawns in one run"));
    }

    #[test]
    fn a_missing_module_undoes_the_claims_attempt() {
        let write = no_module(&task(3), "none".into());
        assert_eq!(
            (write.kind, write.row.status),
            (Decided::NoModule, Status::Scheduled)
        );
        assert_eq!(write.row.attempt, 2);
        assert_eq!(write.row.delay_ms, Some(NO_MODULE_RETRY.as_millis() as i64));
    }

    #[test]
    fn a_task_lost_too_often_is_parked_unrun() {
        assert!(!task(5 + LOST_RUN_ALLOWANCE).lost_too_often(5));
        assert!(task(6 + LOST_RUN_ALLOWANCE).lost_too_often(5));
        let write = lost(&task(11), 5);
        assert_eq!(
            (write.kind, write.row.status),
            (Decided::Failed, Status::Failed)
        );
        assert!(
            write
                .row
                .error
                .unwrap()
                .contains("10 attempts ended without a result")
        );
    }
}
