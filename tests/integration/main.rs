//! recur's integration tests: real PostgreSQL (a database per test, DATABASE_URL or
//! the local default), real components built from `modules/`, and, where a test is
//! about the command line, the real `recur` binary.

mod bench;
mod claims;
mod cli;
mod commits;
mod deploy;
mod doors;
mod enqueue;
mod faults;
mod hosts;
mod keys_at_once;
mod liveness;
mod outcomes;
mod sandbox;
mod support;
mod tenancy;
