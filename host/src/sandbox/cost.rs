//! What runs of a module cost in the sandbox alone: one thread, no database, no pipeline.
//!
//! The `sandbox_cost` example prints it for any component. `recur bench` measures a
//! fresh `noop` this way before it loads anything (`noop_alone_us` in its report): the
//! machine runs at very different speeds from one hour to the next, and this figure
//! says how fast it ran the sandbox when the rest of the report was measured.

use std::time::{Duration, Instant};

use super::{Carryover, Prepared, RunError, RunLimits, Sandbox, Task};

/// One run in this many, those at the start, is not counted: the first use of the pool's
/// slots and of the code's pages costs more than a steady run.
const WARMUP_SHARE: usize = 10;

/// The cost of the counted runs, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct RunCost {
    /// Runs counted (all but the first tenth).
    pub runs: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub mean_us: f64,
}

/// A run that failed while its cost was measured.
#[derive(Debug, thiserror::Error)]
#[error("run {run} of the module failed: {error}")]
pub struct CostError {
    pub run: usize,
    pub error: RunError,
}

/// Runs `modules` in turn `runs` times in all, each run of module `i` in tenant
/// `tenant-i`, with a `{}` payload and no state, and measures the runs after the first
/// tenth. Each run gets a fresh store and instance, as a task does by default, unless
/// `reuse` (the worker's kept instance, as with `--reuse-instance`). `runs` and
/// `modules` must not be empty.
pub fn measure(
    sandbox: &Sandbox,
    modules: &[Prepared],
    runs: usize,
    reuse: bool,
) -> Result<RunCost, CostError> {
    assert!(
        runs > 0 && !modules.is_empty(),
        "measure needs runs and a module to run"
    );
    let mut carry = Carryover::default();
    let limits = RunLimits {
        memory_bytes: 64 << 20,
        timeout: Duration::from_secs(5),
    };
    let tenants: Vec<String> = (0..modules.len()).map(|i| format!("tenant-{i}")).collect();
    let mut nanos = Vec::with_capacity(runs);
    for run in 0..runs {
        let which = run % modules.len();
        let task = Task {
            id: run as i64,
            tenant: tenants[which].clone(),
            task_type: "module".into(),
            key: format!("task-{run}"),
            payload: b"{}".to_vec(),
            state: None,
            attempt: 1,
            runs: 0,
            scheduled_at: 0,
        };
        let started = Instant::now();
        let result = sandbox.run(&mut carry, &modules[which], 1, &task, limits, reuse);
        nanos.push(started.elapsed().as_nanos() as u64);
        result.map_err(|error| CostError { run, error })?;
    }
    let mut steady = nanos.split_off(runs / WARMUP_SHARE);
    steady.sort_unstable();
    let us = |nanos: f64| (nanos / 1e3 * 100.0).round() / 100.0;
    let at = |q: f64| us(steady[((steady.len() - 1) as f64 * q) as usize] as f64);
    Ok(RunCost {
        runs: steady.len(),
        p50_us: at(0.5),
        p90_us: at(0.9),
        mean_us: us(steady.iter().sum::<u64>() as f64 / steady.len() as f64),
    })
}
