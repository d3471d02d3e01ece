//! [`Handler`], the trait a module implements, and [`export!`](crate::export), which
//! makes a handler the component's `run` export.

use crate::bindings;
use crate::outcome::Outcome;
use crate::task::Task;

/// The task logic of a module: one call per run of a task.
///
/// A fresh instance of the component serves each call, so nothing survives between runs
/// but what the outcome carries (the state, and the tasks it spawns).
///
/// ```
/// use recur_guest::{Handler, Outcome, Task};
///
/// struct Once;
///
/// impl Handler for Once {
///     fn run(task: Task) -> Outcome {
///         recur_guest::info!("running {}", task.key);
///         recur_guest::complete()
///     }
/// }
/// ```
pub trait Handler {
    /// Runs one execution of `task` and says what happens next.
    fn run(task: Task) -> Outcome;
}

/// Exports a [`Handler`] as the component's `run` function. Call it once per module
/// crate, at the top level.
///
/// ```
/// struct Noop;
///
/// impl recur_guest::Handler for Noop {
///     fn run(_task: recur_guest::Task) -> recur_guest::Outcome {
///         recur_guest::complete()
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

/// Converts the generated task, runs the handler and converts its outcome back; what
/// [`export!`](crate::export) expands to.
#[doc(hidden)]
pub fn run<H: Handler>(task: bindings::Task) -> bindings::Outcome {
    H::run(Task::from_wit(task)).into_wit()
}
