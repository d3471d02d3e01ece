//! recur's host: leases recurring tasks from PostgreSQL in atomic batches, runs each in
//! the WebAssembly component its task type names, and commits what each decided.
//!
//! Data flows one way, lease -> execute -> commit, each stage owning its buffer and
//! talking to the next through a channel; slots taken at lease and freed at commit
//! bound what a host holds.
//!
//! # Layout
//!
//! - `host`: wires the stages into a running host, start and graceful stop.
//! - `lease`: claims due tasks in batches (SKIP LOCKED) and prefetches the next batch.
//! - `execute`: the dispatcher and the worker threads that run tasks in the sandbox.
//! - `commit`: bulk write-back of outcomes and spawns, fenced by lease token.
//! - `liveness`: the lock that tells a live host's lost claims from a dead host's.
//! - `maintain`: background duties any host does: counting lost locked batches, vacuum.
//! - `outcome`: what a run's result means for its task; the limits on what a module returns.
//! - `sandbox`: wasmtime engine, linker, limits, epochs, host imports.
//! - `registry`: task type -> prepared component; deploy, validate, cache, hot swap.
//! - `enqueue`: producer API (single and bulk, unique keys).
//! - `requeue`: putting tasks parked as failed back to work.
//! - `status`: per tenant and type counts and lag.
//! - `db`: connecting and migrating.
//! - `demo`: the embedded quick start.
//! - `bench`: `recur bench`, the throughput and latency measurements.
//! - `scratch`: a throwaway database (a private PostgreSQL when none is around).
//! - `examples`: the example modules compiled into the binary.
//! - `cli`: argument parsing and the subcommands.
//! - `task`, `names`, `stats`: the leased task, naming rules, counters.

mod arrays;
pub mod bench;
pub mod cli;
pub mod commit;
pub mod db;
pub mod demo;
pub mod enqueue;
pub mod examples;
pub mod execute;
pub mod host;
pub mod lease;
pub mod liveness;
pub mod maintain;
pub mod names;
pub mod outcome;
pub mod registry;
pub mod requeue;
pub mod sandbox;
pub mod scratch;
pub mod stats;
pub mod status;
pub mod task;

pub use host::{Host, HostConfig};
