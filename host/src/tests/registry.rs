//! The registry compiles a component once however many tenants deploy it, in the
//! background, and tells the claim stage which tasks to leave alone meanwhile.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::examples::artifacts::{COUNTER_COMPONENT, NOOP_COMPONENT};
use crate::registry::{ModuleKey, Registry, Resolved};
use crate::sandbox::{Sandbox, SandboxConfig};

use super::support::TestDb;

/// Tenants that deploy the same component share its compilation (and so the pool's warm
/// memory slots); another component, or a tenant's next version with other bytes, gets
/// its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_that_deploy_the_same_component_share_its_compilation() {
    let db = TestDb::new().await;
    db.deploy_for("acme", "noop", NOOP_COMPONENT).await;
    db.deploy_for("globex", "ticker", NOOP_COMPONENT).await;
    db.deploy_for("initech", "noop", COUNTER_COMPONENT).await;
    let sandbox = Arc::new(Sandbox::new(&SandboxConfig::default()).unwrap());
    let mut registry = Registry::new(db.pool.clone(), sandbox, 64 << 20, Duration::from_secs(60));
    let keys = [("acme", "noop"), ("globex", "ticker"), ("initech", "noop")];
    let keys: HashSet<ModuleKey> = keys
        .iter()
        .map(|(t, k)| (t.to_string(), k.to_string()))
        .collect();
    // Two components to compile, one at a time: the first resolve queues both.
    let first = registry.resolve(keys.clone()).await.unwrap();
    assert!(
        first.values().all(|r| matches!(r, Resolved::Compiling)),
        "resolve queues compilations instead of waiting for them"
    );
    let compiling = registry.watch_compiling();
    let pairs = compiling.borrow().clone().expect("the claim stage is told");
    let mut told: Vec<ModuleKey> = pairs
        .tenants
        .iter()
        .cloned()
        .zip(pairs.types.clone())
        .collect();
    told.sort();
    let mut expected: Vec<ModuleKey> = keys.iter().cloned().collect();
    expected.sort();
    assert_eq!(told, expected, "the pairs whose tasks to leave unclaimed");
    let mut done = registry.compiled().await;
    done.extend(registry.compiled().await);
    done.sort();
    let mut expected: Vec<ModuleKey> = keys.iter().cloned().collect();
    expected.sort();
    assert_eq!(
        done, expected,
        "each compilation names the keys it resolved"
    );
    let resolved = registry.resolve(keys).await.unwrap();
    let compilation = |tenant: &str, task_type: &str| match &resolved
        [&(tenant.to_owned(), task_type.to_owned())]
    {
        Resolved::Ready(loaded) => loaded.prepared.compilation(),
        Resolved::Unavailable(error) => panic!("{tenant}/{task_type}: {error}"),
        Resolved::Compiling => panic!("{tenant}/{task_type}: still compiling"),
    };
    assert_eq!(compilation("acme", "noop"), compilation("globex", "ticker"));
    assert_ne!(compilation("acme", "noop"), compilation("initech", "noop"));

    // A fourth tenant deploying noop too is ready at once: nothing to compile.
    db.deploy_for("hooli", "noop", NOOP_COMPONENT).await;
    let key = ("hooli".to_owned(), "noop".to_owned());
    let resolved = registry
        .resolve(HashSet::from([key.clone()]))
        .await
        .unwrap();
    assert!(
        matches!(resolved[&key], Resolved::Ready(_)),
        "shares the compilation"
    );
}
