//! recur's integration tests: real PostgreSQL (a database per test, DATABASE_URL or
//! the local default), real components built from `modules/`, and, where a test is
//! about the command line, the real `recur` binary.

mod bad_input;
mod bench;
mod cli;
mod compiling;
mod containment;
mod deploy;
mod enqueue;
mod faults;
mod fleet_quotas;
mod hosts;
mod inspect;
mod migrations;
mod outcomes;
mod racing_writers;
mod roles;
mod roster;
mod sandbox;
mod support;
mod tenancy;
mod tenants;
