//! The contract's limits: what a module may return and what a task may be named, in one
//! place. The host enforces them at every door (deploy, enqueue, a run's outcome and
//! spawns, a run's log lines), and `wit/recur.wit` documents them to module authors; a
//! test below holds the two together.

use std::time::Duration;

/// Largest state a run may keep.
pub const MAX_STATE_BYTES: usize = 256 << 10;
/// Most tasks one run may spawn.
pub const MAX_SPAWNS: usize = 1000;
/// Largest payload of a spawned task.
pub const MAX_SPAWN_PAYLOAD_BYTES: usize = 256 << 10;

/// A tenant's quotas on what one of its runs may decide, within the limits above
/// (`tenants.max_state_bytes`, `max_spawns`, `max_payload_bytes`): the host checks an
/// outcome against them before anything of it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeQuotas {
    /// The largest state a run may keep.
    pub max_state_bytes: usize,
    /// The most tasks one run may spawn.
    pub max_spawns: usize,
    /// The largest payload a spawn may carry (as an enqueue may).
    pub max_payload_bytes: usize,
    /// The most tasks its runs may spawn per minute, fleet-wide, if it has that quota
    /// (drawn from a budget in the database as outcomes are committed).
    pub max_spawns_per_minute: Option<usize>,
    /// The most scheduled tasks it may have, if it has that quota: spawns are drawn from
    /// its room under it too.
    pub max_tasks: Option<i64>,
}

impl Default for OutcomeQuotas {
    fn default() -> Self {
        OutcomeQuotas {
            max_state_bytes: MAX_STATE_BYTES,
            max_spawns: MAX_SPAWNS,
            max_payload_bytes: MAX_SPAWN_PAYLOAD_BYTES,
            max_spawns_per_minute: None,
            max_tasks: None,
        }
    }
}
/// Longest key (the schema's CHECK constraint says the same).
pub const MAX_KEY_BYTES: usize = 2048;
/// Longest tenant name or task type, in bytes (the schema checks the same).
pub const MAX_NAME_BYTES: usize = 200;
/// How far in the past an absolute next time may lie (it then means "as soon as
/// possible"); further back is almost certainly a unit or clock bug in the module.
pub const MAX_PAST: Duration = Duration::from_secs(3600);
/// How far ahead a next time may lie.
pub const MAX_FUTURE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Most log lines one run may write; the rest are dropped and counted.
pub const MAX_LOG_LINES: u32 = 100;
/// Longest log line a run may write; longer lines are cut.
pub const MAX_LOG_LINE_BYTES: usize = 4096;
/// Longest retry or fail message a run may return. The host's own errors about a task
/// are cut to it too, so that every error a task keeps fits.
pub const MAX_MESSAGE_BYTES: usize = 16 << 10;

/// Checks a tenant name or task type: 1 to [`MAX_NAME_BYTES`] bytes of ASCII letters,
/// digits and `. _ - : /`, starting with a letter or digit, so that a task can always be
/// matched to a module someone could deploy. `what` names the field in the error.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c));
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !ok_start || !ok_chars {
        return Err(format!(
            "{what} {name:?} is not valid: use 1 to {MAX_NAME_BYTES} ASCII letters, digits and . _ - : /, starting with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("task type", "crawler").is_ok());
        assert!(check_name("task type", "billing/v2.monthly").is_ok());
        for bad in ["", "-x", "has space", "quote'", "nul\0", &"x".repeat(201)] {
            assert!(check_name("task type", bad).is_err(), "{bad:?}");
        }
    }

    /// The WIT's doc comments, joined into one line of prose.
    fn wit_prose() -> String {
        include_str!("../../wit/recur.wit")
            .lines()
            .filter_map(|line| line.trim().strip_prefix("///"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The table bounds a task's payload and state as the doors do.
    #[test]
    fn the_schema_bounds_payloads_and_states_as_the_doors_do() {
        let migration = include_str!("../../migrations/0009_task_sizes.sql");
        let payload = crate::enqueue::MAX_PAYLOAD_BYTES;
        assert!(migration.contains(&format!("octet_length(payload) <= {payload})")));
        assert!(migration.contains(&format!("octet_length(state) <= {MAX_STATE_BYTES})")));
        assert!(MAX_SPAWN_PAYLOAD_BYTES <= payload);
    }

    /// Every limit module authors are told of is the limit the host enforces.
    #[test]
    fn the_wit_documents_the_limits_the_host_enforces() {
        let prose = wit_prose();
        let kib = |bytes: usize| format!("{} KiB", bytes >> 10);
        let documented = [
            format!(
                "a state over {}; more than {MAX_SPAWNS} spawns",
                kib(MAX_STATE_BYTES)
            ),
            format!(
                "a retry or fail message over {} or holding a NUL character",
                kib(MAX_MESSAGE_BYTES)
            ),
            format!(
                "at most {MAX_LOG_LINES} lines of at most {} each",
                kib(MAX_LOG_LINE_BYTES)
            ),
            format!("1 to {MAX_NAME_BYTES} bytes of ASCII letters, digits and . _ - : /"),
            format!("1 to {MAX_KEY_BYTES} bytes"),
            format!("at most {}", kib(MAX_SPAWN_PAYLOAD_BYTES)),
        ];
        for phrase in &documented {
            assert!(
                prose.contains(phrase.as_str()),
                "recur.wit does not say {phrase:?}"
            );
        }
        assert_eq!(MAX_PAST, Duration::from_secs(60 * 60));
        assert_eq!(MAX_FUTURE, Duration::from_secs(10 * 365 * 24 * 60 * 60));
        assert!(prose.contains("more than an hour in the past or more than ten years ahead"));
    }
}
