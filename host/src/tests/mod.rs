//! The engine's own tests: behaviour below the public API (claims, commit fences,
//! liveness, maintenance, the registry and the sandbox's instances), on a real
//! PostgreSQL with a database per test, as the integration suite runs. What users can
//! reach is tested through the public API in `tests/integration/`.

// Shared with the integration suite, which uses the rest of it.
#[allow(dead_code)]
#[path = "../../../tests/integration/support.rs"]
mod support;

use crate::claim::{CLAIM_MAX_BYTES, ClaimRequest};

/// A claim of up to `limit` tasks of any type and tenant, with a minute's lease, made
/// outside a host (so it always counts), as the engine's tests make them.
fn claim_request(limit: i64) -> ClaimRequest {
    ClaimRequest {
        limit,
        lease_timeout: std::time::Duration::from_secs(60),
        types: None,
        tenants: None,
        skip: None,
        held_back: std::sync::Arc::from([]),
        host: 0,
        max_bytes: CLAIM_MAX_BYTES,
    }
}

mod claim_bytes;
mod claims;
mod commits;
mod fairness;
mod hygiene;
mod liveness;
mod maintenance;
mod refused;
mod registry;
mod sandbox;
