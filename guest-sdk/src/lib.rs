//! Write recur task modules in Rust.
//!
//! A module is a WebAssembly component holding the logic of one task type. The recur host
//! calls it once per run of a task, each time in a fresh instance, and records the
//! [`Outcome`] it returns: when to run next and with what state, that the task is done,
//! that it failed, and which new tasks to create. The contract is the WIT world
//! `recur:task/task-module@0.1.0`; this crate hides it behind plain Rust types.
//!
//! # Example
//!
//! A module that counts its runs in its state and completes after five:
//!
//! ```
//! use std::time::Duration;
//!
//! use recur_guest::{Handler, Outcome, Task};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Deserialize, Serialize)]
//! struct State {
//!     count: u64,
//! }
//!
//! struct Counter;
//!
//! impl Handler for Counter {
//!     fn run(task: Task) -> Outcome {
//!         let mut state: State = match task.state_json() {
//!             Ok(state) => state.unwrap_or_default(),
//!             Err(e) => return recur_guest::fail(e.to_string()),
//!         };
//!         state.count += 1;
//!         recur_guest::info!("run {} of {}", state.count, task.key);
//!         let next = if state.count >= 5 {
//!             recur_guest::complete()
//!         } else {
//!             recur_guest::reschedule_after(Duration::from_secs(1))
//!         };
//!         next.with_state_json(&state)
//!     }
//! }
//!
//! recur_guest::export!(Counter);
//! ```
//!
//! The module crate has `crate-type = ["cdylib"]`, depends on this crate (and on serde
//! if it reads JSON), and is built with `cargo build --release --target wasm32-wasip2`,
//! which writes a component to `target/wasm32-wasip2/release/<crate>.wasm`.
//!
//! The crate also compiles for other targets, so a module's unit tests can run natively:
//! they call the handler (`Counter::run(task)`) and compare what it returns with the
//! [`Outcome`] they expect. There [`now`] reads the system clock and log lines go to
//! stderr.
//!
//! # Layout
//!
//! - `bindings`: the code `wit_bindgen` generates for the world, and nothing else.
//! - `task`: [`Task`] and its JSON helpers, with [`DecodeError`].
//! - `outcome`: [`Outcome`] and the free functions that build one.
//! - `spawn`: [`Spawn`], a new task created with an outcome.
//! - `handler`: the [`Handler`] trait and the [`export!`] macro.
//! - `logging`: [`log`], [`Level`] and the `trace!` to `error!` macros.
//! - `time`: [`now`], and the conversions between WIT timestamps and `SystemTime`.
#![deny(missing_docs)]

#[doc(hidden)]
pub mod bindings;
mod handler;
mod logging;
mod outcome;
mod spawn;
mod task;
mod time;

pub use handler::Handler;
pub use logging::{Level, log};
pub use outcome::{Outcome, complete, fail, reschedule_after, reschedule_at, retry};
pub use spawn::Spawn;
pub use task::{DecodeError, Task};
pub use time::now;

#[doc(hidden)]
pub use handler::run as __run;
#[doc(hidden)]
pub use logging::log_args as __log_args;
// Re-exported so that module crates never depend on (and pin) wit-bindgen themselves.
#[doc(hidden)]
pub use wit_bindgen;
