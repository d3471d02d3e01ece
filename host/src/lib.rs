//! recur's host: claims recurring tasks from PostgreSQL in atomic batches, runs each in
//! the WebAssembly component its task type names, and commits what each decided.
//!
//! Data flows one way, claim -> execute -> commit, each stage owning its buffer and
//! talking to the next through a channel; in-flight permits taken at the claim and
//! freed at the commit bound what a host holds. The imports follow the same direction:
//! plain data at the bottom, each stage importing only what is below it.
//!
//! # Layout
//!
//! Bottom (plain data and shared bookkeeping, importing no stage):
//! - `task`: what a claimed task is and how its commit is fenced.
//! - `contract`: the contract's limits and naming rule, checked against `wit/recur.wit`.
//! - `stats`: counters, latency histograms and each module version's run times.
//! - `sandbox`: wasmtime narrowed to what recur uses: engine, limits, epochs, imports.
//! - `liveness`: the lock that tells a live host's lost claims from a dead host's.
//! - `text`: a module's text made fit for the host's log and for PostgreSQL.
//!
//! The pipeline, in the order data flows:
//! - `claim`: the claim stage: timed leases and locked claims, and reading their results.
//! - `registry`: task type -> prepared component; the module cache the execute stage uses.
//! - `execute`: the dispatcher, the fair queue and the worker threads.
//! - `commit`: commit rows decided from outcomes, and their bulk write-back.
//! - `host`: wires the stages into a running host, start and graceful stop.
//! - `maintain`: background duties any host does: counting lost locked claims, vacuum.
//! - `room`: counting each tenant's room under its task quota, which spawns draw from.
//! - `roster`: each host's row in the roster of running hosts, and the door that lists
//!   them.
//!
//! Doors for producers and operators:
//! - `db`: connecting and migrating.
//! - `enqueue`: the producer API (single and bulk, unique keys).
//! - `registry::deploy` (re-exported as `deploy`): deploying and listing modules.
//! - `requeue`: putting tasks parked as failed back to work.
//! - `status`: per tenant and type counts and lag.
//! - `inspect`: one task by id or key, and lists of tasks with their last errors.
//! - `tenants`: creating and changing tenants, and the check the other doors make.
//! - `examples`: the example modules compiled into the binary.
//!
//! # Public API
//!
//! The doors above, [`Host`] and its configuration, the sandbox's settings and the
//! types a run decides (`sandbox`), the contract's limits (`contract`), and the
//! in-process [`Runner`] the bench measures the pipeline with. The stages are private:
//! the engine's tests of them are in `src/tests/`, the rest go through this API.
//!
//! The `recur` command is an application of this library, in `src/bin/recur/`: its
//! subcommands, `recur bench`, `recur demo` and the throwaway database they use (`throwaway`).

mod claim;
mod commit;
pub mod contract;
pub mod db;
pub mod enqueue;
pub mod examples;
mod execute;
mod host;
pub mod inspect;
mod liveness;
mod maintain;
mod registry;
pub mod requeue;
mod room;
pub mod roster;
pub mod sandbox;
mod stats;
pub mod status;
mod task;
pub mod tenants;
mod text;

pub use claim::ClaimMode;
pub use execute::{NativeLogic, Runner};
pub use host::{DEFAULT_BATCH, Host, HostConfig, HostError};
pub use registry::deploy;
pub use stats::{Latencies, StatsSnapshot};
pub use task::{LOST_RUN_ALLOWANCE, Status};

// The engine's own tests share the integration suite's support module, which names this
// crate `recur_host` as the suite does.
#[cfg(test)]
extern crate self as recur_host;
#[cfg(test)]
mod tests;
