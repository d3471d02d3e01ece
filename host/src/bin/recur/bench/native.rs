//! The bench's stand-in for the `noop` module: its logic run in the host's process,
//! without any sandbox, so that `recur bench --sql-only` measures the ceiling the
//! database and the pipeline allow around the sandbox. Never for real work.

use recur_host::NativeLogic;
use recur_host::sandbox::{Decision, Outcome, Reschedule, Spawn, Task, When, now_ms};

/// The `noop` module's logic, natively: reschedule every `every_ms` on the task's phase,
/// else complete; spawn `spawn` children, of them `new_spawns` keyed after the run.
pub struct NativeNoop;

impl NativeLogic for NativeNoop {
    fn run(&self, task: &Task) -> Outcome {
        native_noop(task)
    }
}

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
