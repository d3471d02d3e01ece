//! [`Task`], one execution of a task as the module sees it, with the helpers that read
//! its payload and state as JSON.

use std::time::SystemTime;

use serde::de::DeserializeOwned;

use crate::bindings;
use crate::error::DecodeError;
use crate::time::from_millis;

/// One execution of a task, as the host hands it to [`Handler::run`](crate::Handler::run).
///
/// Every field is public, so a module's unit tests can build one with a struct literal.
///
/// ```
/// use std::time::UNIX_EPOCH;
/// use recur_guest::Task;
///
/// let task = Task {
///     id: 1,
///     tenant: "acme".into(),
///     task_type: "counter".into(),
///     key: "k".into(),
///     payload: br#"{"runs": 5}"#.to_vec(),
///     state: None,
///     attempt: 1,
///     runs: 0,
///     scheduled_at: UNIX_EPOCH,
/// };
/// assert_eq!(task.state_json::<u32>().unwrap(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The task's id, unique in its database.
    pub id: i64,
    /// The tenant that owns the task; spawned tasks always land in this tenant.
    pub tenant: String,
    /// The task type, which names the module that runs it.
    pub task_type: String,
    /// The task's key, unique within (tenant, task type).
    pub key: String,
    /// The payload given when the task was enqueued, usually JSON: see
    /// [`payload_json`](Self::payload_json).
    pub payload: Vec<u8>,
    /// The state this module returned last time, or `None` before the first run: see
    /// [`state_json`](Self::state_json).
    pub state: Option<Vec<u8>>,
    /// 1 on the first try of this run; higher after a retry or a crashed host.
    pub attempt: u32,
    /// How many runs of this task have succeeded before this one.
    pub runs: u64,
    /// The time this run was due, to the millisecond.
    pub scheduled_at: SystemTime,
}

impl Task {
    /// Reads the payload as JSON.
    ///
    /// An empty payload reads as `{}`: tasks are often enqueued without one, and a struct
    /// whose fields all have `#[serde(default)]` then gets its defaults instead of an
    /// error. (Reading it as `null` was the alternative; it would make such structs fail.)
    ///
    /// ```
    /// # let task = recur_guest::Task { id: 1, tenant: "t".into(), task_type: "noop".into(),
    /// #     key: "k".into(), payload: br#"{"every_ms": 500}"#.to_vec(), state: None,
    /// #     attempt: 1, runs: 0, scheduled_at: std::time::UNIX_EPOCH };
    /// #[derive(serde::Deserialize)]
    /// struct Payload {
    ///     #[serde(default)]
    ///     every_ms: Option<u64>,
    /// }
    ///
    /// let payload: Payload = task.payload_json()?;
    /// assert_eq!(payload.every_ms, Some(500));
    /// # Ok::<(), recur_guest::DecodeError>(())
    /// ```
    pub fn payload_json<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        if self.payload.iter().all(u8::is_ascii_whitespace) {
            return T::deserialize(serde_json::Value::Object(Default::default()))
                .map_err(DecodeError::Payload);
        }
        serde_json::from_slice(&self.payload).map_err(DecodeError::Payload)
    }

    /// Reads the state as JSON, or returns `Ok(None)` when there is no state yet (or it
    /// is empty).
    ///
    /// ```
    /// # let task = recur_guest::Task { id: 1, tenant: "t".into(), task_type: "counter".into(),
    /// #     key: "k".into(), payload: Vec::new(), state: Some(br#"{"count": 2}"#.to_vec()),
    /// #     attempt: 1, runs: 2, scheduled_at: std::time::UNIX_EPOCH };
    /// #[derive(Default, serde::Deserialize)]
    /// struct State {
    ///     count: u64,
    /// }
    ///
    /// let state: State = task.state_json()?.unwrap_or_default();
    /// assert_eq!(state.count, 2);
    /// # Ok::<(), recur_guest::DecodeError>(())
    /// ```
    pub fn state_json<T: DeserializeOwned>(&self) -> Result<Option<T>, DecodeError> {
        match &self.state {
            Some(bytes) if !bytes.is_empty() => serde_json::from_slice(bytes)
                .map(Some)
                .map_err(DecodeError::State),
            _ => Ok(None),
        }
    }

    /// Converts the generated record into this one.
    pub(crate) fn from_wit(task: bindings::Task) -> Self {
        Self {
            id: task.id,
            tenant: task.tenant,
            task_type: task.task_type,
            key: task.key,
            payload: task.payload,
            state: task.state,
            attempt: task.attempt,
            runs: task.runs,
            scheduled_at: from_millis(task.scheduled_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    struct Every {
        #[serde(default)]
        every_ms: Option<u64>,
    }

    fn task(payload: &[u8], state: Option<&[u8]>) -> Task {
        Task {
            id: 7,
            tenant: "t".into(),
            task_type: "noop".into(),
            key: "k".into(),
            payload: payload.to_vec(),
            state: state.map(<[u8]>::to_vec),
            attempt: 1,
            runs: 0,
            scheduled_at: UNIX_EPOCH,
        }
    }

    #[test]
    fn empty_payload_reads_as_empty_object() {
        assert_eq!(
            task(b"", None).payload_json::<Every>().unwrap(),
            Every::default()
        );
        assert_eq!(
            task(b" \n", None).payload_json::<Every>().unwrap(),
            Every::default()
        );
    }

    #[test]
    fn payload_fields_are_read() {
        let every: Every = task(br#"{"every_ms": 5}"#, None).payload_json().unwrap();
        assert_eq!(every.every_ms, Some(5));
    }

    #[test]
    fn bad_payload_names_the_payload() {
        let err = task(b"{", None).payload_json::<Every>().unwrap_err();
        assert!(matches!(err, DecodeError::Payload(_)));
        assert!(err.to_string().starts_with("the task's payload"), "{err}");
    }

    #[test]
    fn missing_or_empty_state_is_none() {
        assert_eq!(task(b"", None).state_json::<Every>().unwrap(), None);
        assert_eq!(task(b"", Some(b"")).state_json::<Every>().unwrap(), None);
    }

    #[test]
    fn bad_state_names_the_state() {
        let err = task(b"", Some(br#""text""#))
            .state_json::<Every>()
            .unwrap_err();
        assert!(matches!(err, DecodeError::State(_)));
    }

    #[test]
    fn converts_from_the_generated_record() {
        let wit = bindings::Task {
            id: 3,
            tenant: "acme".into(),
            task_type: "counter".into(),
            key: "k".into(),
            payload: b"{}".to_vec(),
            state: Some(b"{}".to_vec()),
            attempt: 2,
            runs: 9,
            scheduled_at: 1_500,
        };
        let task = Task::from_wit(wit);
        assert_eq!((task.id, task.attempt, task.runs), (3, 2, 9));
        assert_eq!(
            task.scheduled_at,
            UNIX_EPOCH + std::time::Duration::from_millis(1_500)
        );
    }
}
