//! Checks an outcome against the contract's limits (`contract.rs`) before anything of it
//! is written: the error names the first limit broken, and fails the task that ran.

use crate::contract::{
    MAX_FUTURE, MAX_KEY_BYTES, MAX_MESSAGE_BYTES, MAX_NAME_BYTES, MAX_PAST,
    MAX_SPAWN_PAYLOAD_BYTES, MAX_SPAWNS, MAX_STATE_BYTES, OutcomeQuotas,
};
use crate::sandbox::{Decision, Outcome, Spawn, When, human_bytes};
use crate::text;

/// Checks an outcome against the limits; the error names the first one broken.
pub(super) fn check(outcome: &Outcome, now_ms: i64, quotas: &OutcomeQuotas) -> Result<(), String> {
    let state = match &outcome.decision {
        Decision::Reschedule(r) => {
            check_when(&r.when, now_ms, "next run time")?;
            r.state.as_ref()
        }
        Decision::Complete(state) => state.as_ref(),
        Decision::Retry(message) => {
            check_message(message, "retry")?;
            None
        }
        Decision::Fail(message) => {
            check_message(message, "fail")?;
            None
        }
    };
    if let Some(state) = state
        && state.len() > MAX_STATE_BYTES
    {
        return Err(format!(
            "state of {} bytes is over the limit of {}",
            state.len(),
            human_bytes(MAX_STATE_BYTES)
        ));
    }
    if let Some(state) = state
        && state.len() > quotas.max_state_bytes
    {
        return Err(format!(
            "state of {} bytes is over its tenant's quota of {} bytes (max_state_bytes)",
            state.len(),
            quotas.max_state_bytes
        ));
    }
    if outcome.spawns.len() > MAX_SPAWNS {
        return Err(format!(
            "{} spawns in one run is over the limit of {MAX_SPAWNS}",
            outcome.spawns.len()
        ));
    }
    if outcome.spawns.len() > quotas.max_spawns {
        return Err(format!(
            "{} spawns in one run is over its tenant's quota of {} (max_spawns)",
            outcome.spawns.len(),
            quotas.max_spawns
        ));
    }
    for spawn in &outcome.spawns {
        check_spawn(spawn, now_ms)?;
        if spawn.payload.len() > quotas.max_payload_bytes {
            return Err(format!(
                "a spawn's payload of {} bytes is over its tenant's quota of {} bytes (max_payload_bytes)",
                spawn.payload.len(),
                quotas.max_payload_bytes
            ));
        }
    }
    Ok(())
}

/// A retry or fail message is kept as the task's error, in a `text` column: PostgreSQL
/// refuses a NUL byte there, and would refuse the whole commit statement with it.
fn check_message(message: &str, what: &str) -> Result<(), String> {
    let start = || text::escaped(&text::cut(message, 200)).into_owned();
    if let Some(at) = message.find('\0') {
        return Err(format!(
            "its {what} message holds a NUL character at byte {at}, which PostgreSQL cannot store; it began: \"{}\"",
            start()
        ));
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "its {what} message of {} bytes is over the limit of {}; it began: \"{}\"",
            message.len(),
            human_bytes(MAX_MESSAGE_BYTES),
            start()
        ));
    }
    Ok(())
}

fn check_spawn(spawn: &Spawn, now_ms: i64) -> Result<(), String> {
    if spawn.task_type.is_empty() || spawn.task_type.len() > MAX_NAME_BYTES {
        return Err(format!(
            "a spawn's task type must be 1 to {MAX_NAME_BYTES} bytes, not {}",
            spawn.task_type.len()
        ));
    }
    if spawn.key.is_empty() || spawn.key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "a spawn's key must be 1 to {MAX_KEY_BYTES} bytes, not {}",
            spawn.key.len()
        ));
    }
    if spawn.key.contains('\0') || spawn.task_type.contains('\0') {
        return Err("a spawn's key or task type contains a NUL character".into());
    }
    if spawn.payload.len() > MAX_SPAWN_PAYLOAD_BYTES {
        return Err(format!(
            "a spawn's payload of {} bytes is over the limit of {}",
            spawn.payload.len(),
            human_bytes(MAX_SPAWN_PAYLOAD_BYTES)
        ));
    }
    if let Some(when) = &spawn.when {
        check_when(when, now_ms, "spawn time")?;
    }
    Ok(())
}

fn check_when(when: &When, now_ms: i64, what: &str) -> Result<(), String> {
    match *when {
        When::At(at) if at < now_ms - MAX_PAST.as_millis() as i64 => Err(format!(
            "{what} {} is more than an hour in the past",
            format_ms(at)
        )),
        When::At(at) if at > now_ms + MAX_FUTURE.as_millis() as i64 => Err(format!(
            "{what} {} is more than ten years ahead",
            format_ms(at)
        )),
        When::AfterMs(ms) if ms > MAX_FUTURE.as_millis() as u64 => Err(format!(
            "{what} {ms} ms from now is more than ten years ahead"
        )),
        _ => Ok(()),
    }
}

/// An epoch-milliseconds time as RFC 3339, or the raw number if it is out of range.
fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_postgresql_cannot_store_are_refused_with_what_is_wrong() {
        let fail = |message: String| Outcome {
            decision: Decision::Fail(message),
            spawns: Vec::new(),
        };
        let err = check(
            &fail("bad\0byte\nforged".into()),
            0,
            &OutcomeQuotas::default(),
        )
        .unwrap_err();
        assert!(
            err.contains("NUL character at byte 3") && err.contains(r"bad\0byte\nforged"),
            "{err}"
        );
        let err = check(
            &fail("x".repeat(MAX_MESSAGE_BYTES + 1)),
            0,
            &OutcomeQuotas::default(),
        )
        .unwrap_err();
        assert!(err.contains("over the limit of 16 KiB"), "{err}");
        assert!(
            check(
                &fail("x".repeat(MAX_MESSAGE_BYTES)),
                0,
                &OutcomeQuotas::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn times_out_of_range_are_refused() {
        let now = 1_800_000_000_000;
        assert!(
            check_when(&When::At(0), now, "t")
                .unwrap_err()
                .contains("in the past")
        );
        assert!(check_when(&When::At(now + MAX_FUTURE.as_millis() as i64 + 1), now, "t").is_err());
        assert!(check_when(&When::At(now - 1000), now, "t").is_ok());
        assert!(check_when(&When::AfterMs(u64::MAX), now, "t").is_err());
    }

    #[test]
    fn a_tenants_quotas_bound_what_its_run_decides_within_the_contracts_limits() {
        let quotas = OutcomeQuotas {
            max_state_bytes: 4,
            max_spawns: 1,
            max_payload_bytes: 2,
            max_spawns_per_minute: None,
            max_tasks: None,
        };
        let state = Outcome {
            decision: Decision::Complete(Some(vec![0; 5])),
            spawns: Vec::new(),
        };
        let err = check(&state, 0, &quotas).unwrap_err();
        assert!(err.contains("quota of 4 bytes (max_state_bytes)"), "{err}");
        let spawn = |payload: &[u8]| Spawn {
            task_type: "noop".into(),
            key: "k".into(),
            payload: payload.to_vec(),
            when: None,
        };
        let two = Outcome {
            decision: Decision::Complete(None),
            spawns: vec![spawn(b""), spawn(b"")],
        };
        let err = check(&two, 0, &quotas).unwrap_err();
        assert!(err.contains("quota of 1 (max_spawns)"), "{err}");
        let heavy = Outcome {
            decision: Decision::Complete(None),
            spawns: vec![spawn(b"abc")],
        };
        let err = check(&heavy, 0, &quotas).unwrap_err();
        assert!(
            err.contains("quota of 2 bytes (max_payload_bytes)"),
            "{err}"
        );
        let within = Outcome {
            decision: Decision::Complete(Some(vec![0; 4])),
            spawns: vec![spawn(b"ab")],
        };
        assert!(check(&within, 0, &quotas).is_ok());
    }
}
