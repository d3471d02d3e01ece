//! [`Handler`], the trait a module implements, and [`export!`](crate::export), which
//! makes a handler the component's `run` export.

use crate::bindings;
use crate::error::Error;
use crate::outcome::{self, Outcome};
use crate::task::Task;

/// The task logic of a module: one call per run of a task.
///
/// `run` gets the [`Task`] (its payload, and the state the last run left) and returns
/// the [`Outcome`]: when to run next and with what state, or that the task is done, or
/// that it failed, and which new tasks to create. An `Err` fails the task with the
/// error's message (see [`Error`]), so `?` works on the errors of reading and writing
/// JSON and of any other crate.
///
/// ```
/// use recur_guest::{Error, Handler, Outcome, Task};
///
/// struct Once;
///
/// impl Handler for Once {
///     fn run(task: Task) -> Result<Outcome, Error> {
///         recur_guest::info!("running {}", task.key);
///         Ok(recur_guest::complete())
///     }
/// }
/// ```
///
/// # What lasts from one run to the next
///
/// Only what the outcome carries: the state, which the task's next run receives, and
/// the tasks it spawns. Whether anything else in the module's memory (statics, the
/// heap) survives depends on how the module was deployed, and a module must be correct
/// either way:
///
/// - By default every run gets a fresh instance of the component, which is dropped when
///   the run ends: nothing a run leaves in memory reaches another run.
/// - Deployed with `recur module deploy ... --reuse-instance`, a worker may keep the
///   instance after a run and call `run` on it again for its next task, if that task is
///   of the same module version and the same tenant. Statics and heap then survive from
///   one task to another task of the same tenant (never of another tenant, never of
///   another version). The worker drops the kept instance, and its next task gets a fresh
///   one, when a run did not return an outcome (it panicked or trapped, ran past its
///   deadline or over its memory limit), when a run wrote anything to stderr, when the
///   instance has served 1000 runs (the host's `REUSE_MAX_RUNS`), when its memory has
///   grown more than 4 MiB past its size after its first run (`REUSE_MAX_GROWTH`), when
///   it holds more memory than the tenant's limit now allows, and whenever the worker's
///   next task needs another module, version or tenant. A run that returns
///   [`fail`](crate::fail) or `Err` returned an outcome: its instance may be kept. A host
///   runs many workers, and a tenant's tasks spread over them and over hosts.
///
/// So never rely on memory either way: not on a static being kept (any run may be the
/// first of its instance), nor on it being reset (with `--reuse-instance`, a run may see
/// what another of the tenant's tasks left). A cache in a static is fine if it is only
/// ever a cache; anything a task needs next time goes in its state.
pub trait Handler {
    /// Runs one execution of `task` and says what happens next.
    fn run(task: Task) -> Result<Outcome, Error>;
}

/// Exports a [`Handler`] as the component's `run` function. Call it once per module
/// crate, at the top level.
///
/// ```
/// struct Noop;
///
/// impl recur_guest::Handler for Noop {
///     fn run(_task: recur_guest::Task) -> Result<recur_guest::Outcome, recur_guest::Error> {
///         Ok(recur_guest::complete())
///     }
/// }
///
/// recur_guest::export!(Noop);
/// ```
///
/// A type that is not a [`Handler`] is refused, with the error on its name:
///
/// ```compile_fail
/// struct NotAHandler;
///
/// recur_guest::export!(NotAHandler); // the trait `Handler` is not implemented
/// ```
#[macro_export]
macro_rules! export {
    ($handler:ty) => {
        // The generated `Guest` trait is implemented on a private type rather than on the
        // handler itself: the handler would then have two `run` methods, and a module's
        // own tests calling `Handler::run` as `MyHandler::run(..)` would be ambiguous.
        const _: () = {
            struct __RecurGuestExport;

            impl $crate::bindings::Guest for __RecurGuestExport {
                fn run(task: $crate::bindings::Task) -> $crate::bindings::Outcome {
                    $crate::__run::<$handler>(task)
                }
            }

            $crate::bindings::__export_task_module!(
                __RecurGuestExport with_types_in $crate::bindings
            );
        };
    };
}

/// Converts the generated task, runs the handler and converts its outcome back, an
/// `Err` into a [`fail`](crate::fail) with the error's message; what
/// [`export!`](crate::export) expands to.
#[doc(hidden)]
pub fn run<H: Handler>(task: bindings::Task) -> bindings::Outcome {
    decide::<H>(Task::from_wit(task)).into_wit()
}

/// Runs the handler, turning its error into the outcome the [`Error`] docs promise.
fn decide<H: Handler>(task: Task) -> Outcome {
    H::run(task).unwrap_or_else(|error| outcome::fail(error.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    struct ReadsPayload;

    impl Handler for ReadsPayload {
        fn run(task: Task) -> Result<Outcome, Error> {
            let n: u32 = task.payload_json()?;
            Ok(outcome::complete().with_state(n.to_string()))
        }
    }

    fn task(payload: &[u8]) -> Task {
        Task {
            id: 1,
            tenant: "t".into(),
            task_type: "reads-payload".into(),
            key: "k".into(),
            payload: payload.to_vec(),
            state: None,
            attempt: 1,
            runs: 0,
            scheduled_at: UNIX_EPOCH,
        }
    }

    #[test]
    fn ok_is_the_outcome() {
        assert_eq!(
            decide::<ReadsPayload>(task(b"7")),
            outcome::complete().with_state("7")
        );
    }

    #[test]
    fn err_fails_the_task_with_its_message() {
        let message = task(b"\"seven\"")
            .payload_json::<u32>()
            .unwrap_err()
            .to_string();
        assert_eq!(
            decide::<ReadsPayload>(task(b"\"seven\"")),
            outcome::fail(message)
        );
    }
}
