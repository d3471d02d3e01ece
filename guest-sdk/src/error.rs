//! The errors of a run: [`DecodeError`] (the payload or state is not the JSON the module
//! asked for), [`EncodeError`] (a state or spawn payload cannot be written as JSON), and
//! [`Error`], what a [`Handler`](crate::Handler) returns to fail its task with `?`.

use std::error::Error as StdError;
use std::fmt;

/// What a [`Handler`](crate::Handler) returns when its run cannot go on: any error that
/// implements [`std::error::Error`] converts into it, so `?` works in a handler on
/// [`DecodeError`], [`EncodeError`] and the errors of other crates alike.
///
/// A handler that returns `Err(error)` fails its task permanently, exactly as if it had
/// returned `Ok(fail(error.to_string()))`: the task is parked as failed with the error's
/// message, its state is kept and nothing is spawned. An error that a later try could
/// get past (an upstream that timed out) is better answered with
/// [`retry`](crate::retry), by matching on it instead of passing it up with `?`.
///
/// ```
/// use recur_guest::{Error, Outcome, Task};
///
/// fn run(task: Task) -> Result<Outcome, Error> {
///     let every_ms: u64 = task.payload_json()?;
///     let every = std::time::Duration::from_millis(every_ms);
///     Ok(recur_guest::reschedule_after(every))
/// }
///
/// # let task = |payload: &[u8]| Task { id: 1, tenant: "t".into(), task_type: "noop".into(),
/// #     key: "k".into(), payload: payload.to_vec(), state: None, attempt: 1, runs: 0,
/// #     scheduled_at: std::time::UNIX_EPOCH };
/// let err = run(task(b"\"soon\"")).unwrap_err();
/// assert!(err.to_string().starts_with("the task's payload is not the expected JSON"));
/// ```
pub struct Error(Box<dyn StdError + Send + Sync + 'static>);

impl<E: StdError + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        Self(Box::new(error))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The payload or the state is not the JSON the module asked for; what
/// [`Task::payload_json`](crate::Task::payload_json) and
/// [`Task::state_json`](crate::Task::state_json) return.
///
/// Its message says which one and why. Passed up with `?`, it fails the task with that
/// message:
///
/// ```
/// # let task = recur_guest::Task { id: 1, tenant: "t".into(), task_type: "noop".into(),
/// #     key: "k".into(), payload: b"not json".to_vec(), state: None,
/// #     attempt: 1, runs: 0, scheduled_at: std::time::UNIX_EPOCH };
/// let err = task.payload_json::<serde_json::Value>().unwrap_err();
/// assert!(matches!(err, recur_guest::DecodeError::Payload(_)));
/// ```
#[derive(Debug)]
pub enum DecodeError {
    /// The payload is not valid JSON for the requested type.
    Payload(serde_json::Error),
    /// The state is not valid JSON for the requested type.
    State(serde_json::Error),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Payload(e) => write!(f, "the task's payload is not the expected JSON: {e}"),
            Self::State(e) => write!(f, "the task's state is not the expected JSON: {e}"),
        }
    }
}

impl StdError for DecodeError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Payload(e) | Self::State(e) => Some(e),
        }
    }
}

/// A value could not be serialized as JSON (a map with non-string keys, say); what
/// [`Outcome::with_state_json`](crate::Outcome::with_state_json) and
/// [`Spawn::payload_json`](crate::Spawn::payload_json) return instead of an outcome or a
/// spawn, so that nothing is sent to the host that the module did not mean.
///
/// ```
/// use std::collections::HashMap;
///
/// let bad = HashMap::from([((1, 2), 3)]);
/// let err = recur_guest::complete().with_state_json(&bad).unwrap_err();
/// assert!(matches!(err, recur_guest::EncodeError::State(_)));
/// ```
#[derive(Debug)]
pub enum EncodeError {
    /// The state given to [`Outcome::with_state_json`](crate::Outcome::with_state_json).
    State(serde_json::Error),
    /// The payload given to [`Spawn::payload_json`](crate::Spawn::payload_json), with
    /// the spawn it was for.
    SpawnPayload {
        /// The task type of the spawn.
        task_type: String,
        /// The key of the spawn.
        key: String,
        /// Why serde_json refused the value.
        source: serde_json::Error,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::State(e) => write!(f, "the state could not be serialized as JSON: {e}"),
            Self::SpawnPayload {
                task_type,
                key,
                source,
            } => write!(
                f,
                "the payload of spawn ({task_type}, {key}) could not be serialized as JSON: \
                 {source}"
            ),
        }
    }
}

impl StdError for EncodeError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::State(e) | Self::SpawnPayload { source: e, .. } => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_error() -> serde_json::Error {
        serde_json::from_slice::<u8>(b"{").unwrap_err()
    }

    #[test]
    fn error_shows_the_message_of_what_it_wraps() {
        let err = Error::from(DecodeError::State(json_error()));
        assert!(
            err.to_string()
                .starts_with("the task's state is not the expected JSON: "),
            "{err}"
        );
    }

    #[test]
    fn encode_error_names_the_spawn() {
        let err = EncodeError::SpawnPayload {
            task_type: "noop".into(),
            key: "a".into(),
            source: json_error(),
        };
        assert!(err.to_string().contains("spawn (noop, a)"), "{err}");
        assert!(err.source().is_some());
    }
}
