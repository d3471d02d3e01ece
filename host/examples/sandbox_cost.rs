//! What one run of a module costs in the sandbox alone: no database, no pipeline, one
//! thread. Each run gets a fresh store and instance, as a task does by default (or, with
//! `--reuse-instance`, the worker's kept one), with a `{}` payload and no state. With
//! `--tenants N` consecutive runs belong to N tenants in turn, as on a host that serves
//! many: a worker recycles a run's host-side state only into the same tenant's next.
//! Each tenant gets a compilation of its own, so to wasmtime they run N different modules
//! (a host shares one among tenants that deploy the same bytes); `--warm-modules N` sets
//! how many of them the pool keeps a memory ready for (`recur host --warm-modules`), and
//! `--compile-cache DIR` loads them from (and keeps them in) a compilation cache, as
//! `recur host --compile-cache` does: it prints how long preparing them took.
//!
//! ```text
//! cargo run --release --example sandbox_cost -- target/release/build/recur-host-*/out/noop.wasm
//! ```
//!
//! Prints the median, the 90th percentile and the mean of the runs after the first tenth
//! (compilation and the pool's first use), then the pool's warm memories and the pages
//! they keep resident, and how memories were reset (the page scan, or madvise where
//! swap is on). `recur bench` reports the same span as
//! `exec_us_p50`, measured inside a full host, where two workers and PostgreSQL share
//! the cores, and times a fresh noop alone as this does, before and after its runs
//! (`noop_alone_us`); this one is for profiling the sandbox by itself (`perf record`).

use std::time::Instant;

use anyhow::Context;
use recur_host::sandbox::{Sandbox, SandboxConfig, cost};

fn main() {
    if let Err(err) = run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: sandbox_cost COMPONENT.wasm [RUNS] [--reuse-instance] [--tenants N] [--warm-modules N] [--compile-cache DIR]";
    let path = args.next().context(usage)?;
    let (mut runs, mut reuse, mut tenants) = (200_000_usize, false, 1_usize);
    // The page scan where it can, as `recur bench`'s yardstick `noop_alone_us` has it.
    let mut config = SandboxConfig {
        memory_reset: None,
        ..SandboxConfig::default()
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reuse-instance" => reuse = true,
            "--tenants" => tenants = args.next().context(usage)?.parse().context(usage)?,
            "--warm-modules" => {
                config.warm_modules = args.next().context(usage)?.parse().context(usage)?
            }
            "--compile-cache" => config.compile_cache = Some(args.next().context(usage)?.into()),
            n => runs = n.parse().context(usage)?,
        }
    }
    anyhow::ensure!(tenants >= 1, "--tenants must be at least 1");
    anyhow::ensure!(runs >= 10, "RUNS must be at least 10");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {path}"))?;

    let sandbox = Sandbox::new(&config)?;
    // One compilation per tenant, as a host's registry makes them.
    let preparing = Instant::now();
    let modules = (0..tenants)
        .map(|_| sandbox.prepare(&bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let prepared = preparing.elapsed();
    let how = sandbox.compilations();
    println!(
        "prepared {tenants} in {:.1} ms, {:.2} ms each ({} compiled, {} from the cache)",
        prepared.as_secs_f64() * 1e3,
        prepared.as_secs_f64() * 1e3 / tenants as f64,
        how.compiled,
        how.cached
    );
    let cost = cost::measure(&sandbox, &modules, runs, reuse)?;
    println!(
        "{} runs: p50 {:.2} µs, p90 {:.2} µs, mean {:.2} µs",
        cost.runs, cost.p50_us, cost.p90_us, cost.mean_us
    );
    let (warm, resident) = sandbox.warm_memories();
    println!(
        "warm memories: {warm}, keeping {:.1} KiB resident ({:.1} KiB each)",
        resident as f64 / 1024.0,
        resident as f64 / 1024.0 / f64::from(warm.max(1))
    );
    println!("memory reset: {}", sandbox.memory_reset().name());
    Ok(())
}
