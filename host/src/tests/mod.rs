//! The engine's own tests: behaviour below the public API (claims, commit fences,
//! liveness, maintenance, the registry and the sandbox's instances), on a real
//! PostgreSQL with a database per test, as the integration suite runs. What users can
//! reach is tested through the public API in `tests/integration/`.

// Shared with the integration suite, which uses the rest of it.
#[allow(dead_code)]
#[path = "../../../tests/integration/support.rs"]
mod support;

mod claim_bytes;
mod claims;
mod commits;
mod hygiene;
mod liveness;
mod maintenance;
mod refused;
mod registry;
mod sandbox;
