//! [`Outcome`], what a run decides: the functions that start one ([`reschedule_after`],
//! [`reschedule_at`], [`complete`], [`retry`], [`fail`]) and the methods that add a state
//! and spawns to it.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::bindings::recur::task::types;
use crate::error::EncodeError;
use crate::spawn::Spawn;
use crate::time::When;

/// Everything a run decided: what happens to the task, and which new tasks to create.
/// The host records it in one commit, or not at all.
///
/// Start from one of the functions [`reschedule_after`], [`reschedule_at`],
/// [`complete`], [`retry`] and [`fail`], then add a state and spawns:
///
/// ```
/// use std::time::Duration;
/// use recur_guest::Spawn;
///
/// let outcome = recur_guest::reschedule_after(Duration::from_secs(60))
///     .with_state_json(&serde_json::json!({ "count": 2 }))?
///     .spawn(Spawn::new("noop", "child-0"));
/// # Ok::<(), recur_guest::EncodeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    decision: Decision,
    spawns: Vec<Spawn>,
}

/// The friendly side of the WIT `decision` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Reschedule { when: When, state: Option<Vec<u8>> },
    Complete(Option<Vec<u8>>),
    Retry(String),
    Fail(String),
}

/// Runs the task again `delay` after the host records this outcome (in whole
/// milliseconds, rounded down). The state is kept unless
/// [`with_state`](Outcome::with_state) replaces it.
///
/// ```
/// let outcome = recur_guest::reschedule_after(std::time::Duration::from_secs(30));
/// ```
pub fn reschedule_after(delay: Duration) -> Outcome {
    Outcome::new(Decision::Reschedule {
        when: When::After(delay),
        state: None,
    })
}

/// Runs the task again at `time`. The host refuses a time more than an hour in the past
/// or more than ten years ahead, and fails the task with an error that says so. The
/// state is kept unless [`with_state`](Outcome::with_state) replaces it.
///
/// ```
/// let in_an_hour = recur_guest::now() + std::time::Duration::from_secs(3600);
/// let outcome = recur_guest::reschedule_at(in_an_hour);
/// ```
pub fn reschedule_at(time: SystemTime) -> Outcome {
    Outcome::new(Decision::Reschedule {
        when: When::At(time),
        state: None,
    })
}

/// Finishes the task: it never runs again. The state is kept unless
/// [`with_state`](Outcome::with_state) gives a final one.
///
/// ```
/// let outcome = recur_guest::complete();
/// ```
pub fn complete() -> Outcome {
    Outcome::new(Decision::Complete(None))
}

/// Reports a transient failure: the host runs the task again after an exponential
/// backoff, and parks it as failed after the tenant's maximum attempts. The state is
/// kept, and the outcome's spawns are not created.
///
/// ```
/// let outcome = recur_guest::retry("upstream timed out");
/// ```
pub fn retry(message: impl Into<String>) -> Outcome {
    Outcome::new(Decision::Retry(message.into()))
}

/// Reports a permanent failure: the task is parked as failed with `message`. The state
/// is kept, and the outcome's spawns are not created.
///
/// ```
/// let outcome = recur_guest::fail("payload has no url");
/// ```
pub fn fail(message: impl Into<String>) -> Outcome {
    Outcome::new(Decision::Fail(message.into()))
}

impl Outcome {
    fn new(decision: Decision) -> Self {
        Self {
            decision,
            spawns: Vec::new(),
        }
    }

    /// Sets the state handed to the next run (after a reschedule) or kept as the final
    /// state (after complete).
    ///
    /// It has no effect on [`retry`] and [`fail`]: the contract has them keep the state
    /// the run started with.
    ///
    /// ```
    /// let outcome = recur_guest::complete().with_state(b"done".to_vec());
    /// ```
    pub fn with_state(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        match &mut self.decision {
            Decision::Reschedule { state, .. } | Decision::Complete(state) => {
                *state = Some(bytes.into());
            }
            Decision::Retry(_) | Decision::Fail(_) => {}
        }
        self
    }

    /// Sets the state to `value` serialized as JSON; see [`with_state`](Self::with_state).
    ///
    /// Returns [`EncodeError::State`] if `value` cannot be serialized (a map with
    /// non-string keys, say). In a handler, `?` passes it up, and the task fails with
    /// its message.
    ///
    /// ```
    /// let outcome = recur_guest::complete().with_state_json(&serde_json::json!({ "count": 3 }))?;
    /// # Ok::<(), recur_guest::EncodeError>(())
    /// ```
    pub fn with_state_json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, EncodeError> {
        let bytes = serde_json::to_vec(value).map_err(EncodeError::State)?;
        Ok(self.with_state(bytes))
    }

    /// Adds a new task to create with this outcome. Only a reschedule or a complete
    /// creates its spawns; a run that retries or fails creates none.
    ///
    /// ```
    /// let outcome = recur_guest::complete().spawn(recur_guest::Spawn::new("noop", "child-0"));
    /// ```
    pub fn spawn(mut self, spawn: Spawn) -> Self {
        self.spawns.push(spawn);
        self
    }

    /// Adds several new tasks to create with this outcome; see [`spawn`](Self::spawn).
    ///
    /// ```
    /// use recur_guest::Spawn;
    ///
    /// let outcome = recur_guest::complete()
    ///     .spawns((0..3).map(|i| Spawn::new("noop", format!("child-{i}"))));
    /// ```
    pub fn spawns(mut self, spawns: impl IntoIterator<Item = Spawn>) -> Self {
        self.spawns.extend(spawns);
        self
    }

    /// Converts to the generated record.
    pub(crate) fn into_wit(self) -> types::Outcome {
        let decision = match self.decision {
            Decision::Reschedule { when, state } => {
                types::Decision::Reschedule(types::Reschedule {
                    when: when.to_wit(),
                    state,
                })
            }
            Decision::Complete(state) => types::Decision::Complete(state),
            Decision::Retry(message) => types::Decision::Retry(message),
            Decision::Fail(message) => types::Decision::Fail(message),
        };
        types::Outcome {
            decision,
            spawns: self.spawns.into_iter().map(Spawn::into_wit).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::UNIX_EPOCH;

    use super::*;

    fn decision(outcome: Outcome) -> types::Decision {
        outcome.into_wit().decision
    }

    #[test]
    fn reschedule_after_carries_millis_and_state() {
        let wit = decision(reschedule_after(Duration::from_secs(2)).with_state(b"s".to_vec()));
        let types::Decision::Reschedule(r) = wit else {
            panic!("not a reschedule: {wit:?}");
        };
        assert!(matches!(r.when, types::When::AfterMs(2_000)));
        assert_eq!(r.state.as_deref(), Some(&b"s"[..]));
    }

    #[test]
    fn reschedule_at_carries_the_timestamp() {
        let time = UNIX_EPOCH + Duration::from_millis(42);
        let types::Decision::Reschedule(r) = decision(reschedule_at(time)) else {
            panic!("not a reschedule");
        };
        assert!(matches!(r.when, types::When::At(42)));
        assert_eq!(r.state, None);
    }

    #[test]
    fn complete_with_json_state() {
        let outcome = complete()
            .with_state_json(&serde_json::json!({ "count": 3 }))
            .unwrap();
        let wit = decision(outcome);
        assert!(
            matches!(&wit, types::Decision::Complete(Some(s)) if s == br#"{"count":3}"#),
            "{wit:?}"
        );
    }

    #[test]
    fn failures_ignore_state() {
        let wit = decision(retry("again").with_state(b"x".to_vec()));
        assert!(matches!(&wit, types::Decision::Retry(m) if m == "again"));
        let wit = decision(fail("no").with_state(b"x".to_vec()));
        assert!(matches!(&wit, types::Decision::Fail(m) if m == "no"));
    }

    #[test]
    fn spawns_keep_their_order_and_fields() {
        let outcome = complete()
            .spawn(Spawn::new("noop", "a").payload(b"{}".to_vec()))
            .spawns([Spawn::new("noop", "b").after(Duration::from_millis(5))]);
        let spawns = outcome.into_wit().spawns;
        assert_eq!(spawns.len(), 2);
        assert_eq!(
            (spawns[0].key.as_str(), &spawns[0].payload[..]),
            ("a", &b"{}"[..])
        );
        assert!(spawns[0].when.is_none());
        assert!(matches!(spawns[1].when, Some(types::When::AfterMs(5))));
    }

    #[test]
    fn unserializable_state_is_an_error() {
        let bad: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
        let err = complete().with_state_json(&bad).unwrap_err();
        assert!(matches!(err, EncodeError::State(_)));
        assert!(err.to_string().contains("state"), "{err}");
    }
}
