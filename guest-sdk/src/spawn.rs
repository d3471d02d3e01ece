//! [`Spawn`], a builder for a new task that a run creates along with its outcome.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::bindings::recur::task::types;
use crate::error::EncodeError;
use crate::time::When;

/// A new task to create, in the running task's tenant, when the host records the outcome
/// it is added to with [`Outcome::spawn`](crate::Outcome::spawn).
///
/// Tasks are unique by (tenant, task type, key): spawning one that already exists is
/// absorbed and changes nothing, so a module may spawn the same key again without
/// checking. By default the payload is empty and the task runs as soon as it is created.
///
/// ```
/// use std::time::Duration;
/// use recur_guest::Spawn;
///
/// let child = Spawn::new("crawler", "https://site-1.example/page/4")
///     .payload_json(&serde_json::json!({ "fanout": 2 }))?
///     .after(Duration::from_secs(5));
/// let outcome = recur_guest::complete().spawn(child);
/// # Ok::<(), recur_guest::EncodeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawn {
    task_type: String,
    key: String,
    payload: Vec<u8>,
    when: Option<When>,
}

impl Spawn {
    /// Starts a spawn of a task of `task_type` with `key`, an empty payload, due now.
    ///
    /// ```
    /// let child = recur_guest::Spawn::new("noop", "child-0");
    /// ```
    pub fn new(task_type: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            task_type: task_type.into(),
            key: key.into(),
            payload: Vec::new(),
            when: None,
        }
    }

    /// Sets the payload to these bytes.
    ///
    /// ```
    /// let child = recur_guest::Spawn::new("noop", "child-0").payload(r#"{"every_ms": 1000}"#);
    /// ```
    pub fn payload(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.payload = bytes.into();
        self
    }

    /// Sets the payload to `value` serialized as JSON.
    ///
    /// Returns [`EncodeError::SpawnPayload`] if `value` cannot be serialized (a map with
    /// non-string keys, say). In a handler, `?` passes it up, and the task fails with
    /// its message.
    ///
    /// ```
    /// let child = recur_guest::Spawn::new("counter", "c-1")
    ///     .payload_json(&serde_json::json!({ "runs": 5, "every_ms": 100 }))?;
    /// # Ok::<(), recur_guest::EncodeError>(())
    /// ```
    pub fn payload_json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, EncodeError> {
        match serde_json::to_vec(value) {
            Ok(bytes) => Ok(self.payload(bytes)),
            Err(source) => Err(EncodeError::SpawnPayload {
                task_type: self.task_type,
                key: self.key,
                source,
            }),
        }
    }

    /// Makes the new task first run this long after the outcome is recorded.
    ///
    /// ```
    /// let child = recur_guest::Spawn::new("noop", "later")
    ///     .after(std::time::Duration::from_secs(60));
    /// ```
    pub fn after(mut self, delay: Duration) -> Self {
        self.when = Some(When::After(delay));
        self
    }

    /// Makes the new task first run at `time`. The host refuses a time more than an hour
    /// in the past or more than ten years ahead.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// let new_year = UNIX_EPOCH + Duration::from_secs(1_893_456_000); // 2030-01-01
    /// let child = recur_guest::Spawn::new("noop", "new-year").at(new_year);
    /// ```
    pub fn at(mut self, time: SystemTime) -> Self {
        self.when = Some(When::At(time));
        self
    }

    /// Converts to the generated record.
    pub(crate) fn into_wit(self) -> types::Spawn {
        types::Spawn {
            task_type: self.task_type,
            key: self.key,
            payload: self.payload,
            when: self.when.map(When::to_wit),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn json_payload_is_serialized() {
        let spawn = Spawn::new("noop", "a")
            .payload_json(&serde_json::json!({ "n": 1 }))
            .unwrap();
        assert_eq!(spawn.into_wit().payload, br#"{"n":1}"#);
    }

    #[test]
    fn unserializable_payload_is_an_error_naming_the_spawn() {
        let bad: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
        let err = Spawn::new("noop", "a").payload_json(&bad).unwrap_err();
        assert!(
            matches!(&err, EncodeError::SpawnPayload { task_type, key, .. }
                if task_type == "noop" && key == "a")
        );
        assert!(err.to_string().contains("(noop, a)"), "{err}");
    }
}
