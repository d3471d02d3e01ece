//! One execution, and what a worker thread keeps from one execution to the next.
//!
//! By default every task runs in a fresh `Store` with a fresh instance, which is dropped
//! when the run ends: nothing a run leaves in the guest's memory reaches the next. Only
//! the store's host-side state (the WASI context, see `imports.rs`) may be recycled,
//! and only into the next fresh store of the same tenant.
//!
//! A module deployed with `--reuse-instance` trades some of that isolation for speed:
//! the worker keeps the store and instance after a run and calls `run` on it again for
//! its next task, if that task is of the same module version and tenant. Statics and
//! heap then survive from one task to the next (one tenant's own tasks, never another
//! tenant's), while everything the host tracks per run (the task its logs name, the log
//! budget, the memory ceiling, the deadline) is reset before each call. A kept instance
//! is dropped, and the next task gets a fresh one, after any error (trap, timeout,
//! memory overrun), after a run that wrote to stderr (its capture must start empty to
//! explain a later trap), after [`REUSE_MAX_RUNS`] runs, and once its memory has grown
//! [`REUSE_MAX_GROWTH`] past its size after its first run, so a guest that leaks cannot
//! grow without end.
//!
//! A worker holds at most one instance at a time: a kept instance that cannot serve the
//! next task is dropped before the next one is made, so the pooling allocator's slots,
//! sized to the number of workers, are enough.

use wasmtime::Store;
use wasmtime::component::{Func, TypedFunc};

use super::imports::RunState;
use super::ticker::EPOCH_TICK;
use super::{Outcome, Prepared, RunError, RunLimits, Sandbox, Task};
use crate::contract::MAX_LOG_LINES;

/// Most runs one kept instance serves before it is dropped and the next task gets a
/// fresh one. Instantiating from the pool is cheap (a slot kept warm, a copy-on-write
/// image), so one instantiation in a thousand runs is nothing next to the runs, while a
/// bound on its life bounds how long anything a guest keeps (a cache, a leak, a slowly
/// corrupted static) can last.
pub const REUSE_MAX_RUNS: u32 = 1000;

/// How far a kept instance's linear memory may grow past its size after its first run
/// before it is dropped. Wasm memory never shrinks, so a guest that leaks a little each
/// run would otherwise hold more and more of the host for as long as it is kept; a
/// guest that merely meets a larger payload than before grows a little, once.
pub const REUSE_MAX_GROWTH: usize = 4 << 20;

/// What one worker thread carries from run to run. Owned by the thread, never shared.
#[derive(Default)]
pub struct Carryover {
    /// The instance kept for the next task of the same module version and tenant.
    kept: Option<Kept>,
    /// The host-side state of the last fresh run, to recycle into the next fresh store
    /// of the same tenant. Building a WASI context seeds its random generators twice
    /// over (its builder makes a second context and throws it away); recycling it spares
    /// a fresh run of the same tenant both. (A state makes its context only when the
    /// guest first calls WASI, so for modules that never do, what is recycled is small.)
    spare: Option<RunState>,
}

/// A store and instance kept by a worker for the next run of its module.
struct Kept {
    store: Store<RunState>,
    /// Its `run` export.
    run: Func,
    /// [`Prepared::id`] of the module version it was instantiated from.
    module: u64,
    /// Runs it has served.
    runs: u32,
    /// Its linear memory after its first run, the base for [`REUSE_MAX_GROWTH`].
    first_size: usize,
}

impl Carryover {
    /// Host-side state for a fresh store of `tenant`: the spare if it served the same
    /// tenant (the WASI context holds random generators a guest draws from, which are
    /// never handed from one tenant to another), else a new one.
    fn state_for(&mut self, tenant: &str) -> RunState {
        match self.spare.take() {
            Some(mut state) if state.tenant == tenant => {
                state.recycle();
                state
            }
            _ => RunState::new(tenant),
        }
    }
}

impl Sandbox {
    /// Runs one execution of `task` and returns what the module decided. With `reuse`
    /// (the module was deployed with `--reuse-instance`) the run may use the instance
    /// `carry` kept from the worker's last run and leave its own there; without it the
    /// run gets a fresh store and instance. `version` is the deployed version `module` was
    /// compiled from, which the run's log lines name.
    pub(crate) fn run(
        &self,
        carry: &mut Carryover,
        module: &Prepared,
        version: i32,
        task: &Task,
        limits: RunLimits,
        reuse: bool,
    ) -> Result<Outcome, RunError> {
        let ticks = limits.timeout.as_millis().div_ceil(EPOCH_TICK.as_millis()) as u64 + 1;
        // Whatever kept instance cannot serve this run goes before a new one is made. One
        // that holds more memory than the tenant now allows goes too, as a fresh one
        // would start below the limit.
        let kept = carry.kept.take().filter(|kept| {
            let state = kept.store.data();
            reuse
                && kept.module == module.id
                && state.tenant == task.tenant
                && state.limiter.size <= limits.memory_bytes
        });
        let (mut store, run, runs, first_size) = match kept {
            Some(Kept {
                mut store,
                run,
                runs,
                first_size,
                ..
            }) => {
                store
                    .data_mut()
                    .begin(task.id, &task.task_type, version, limits);
                store.set_epoch_deadline(ticks);
                (store, Ok(run), runs, first_size)
            }
            None => {
                let mut store = Store::new(&self.engine, carry.state_for(&task.tenant));
                store.limiter(|state| &mut state.limiter);
                store.epoch_deadline_trap();
                store
                    .data_mut()
                    .begin(task.id, &task.task_type, version, limits);
                // Instantiating runs guest code (start functions): the deadline covers it.
                store.set_epoch_deadline(ticks);
                let run = module.instantiate(&mut store);
                (store, run, 0, 0)
            }
        };

        let result = match run {
            Ok(run) => match call_run(run, &mut store, task) {
                Ok(outcome) => Ok((outcome, run)),
                Err(err) => Err((err, false)),
            },
            Err(err) => Err((err, true)),
        };
        let dropped = store.data().log_dropped;
        if dropped > 0 {
            tracing::warn!(
                task = task.id,
                dropped,
                "module exceeded {MAX_LOG_LINES} log lines; the rest were dropped"
            );
        }
        let (outcome, run) = match result {
            Ok(ran) => ran,
            // The store, and the instance in it, are dropped: a guest that failed may
            // have left anything behind.
            Err((err, instantiating)) => {
                return Err(super::classify(err, instantiating, store.data(), limits));
            }
        };
        let state = store.data();
        let size = state.limiter.size;
        let first_size = if runs == 0 { size } else { first_size };
        let runs = runs + 1;
        let clean = !state.wrote_stderr();
        if reuse && clean && runs < REUSE_MAX_RUNS && size <= first_size + REUSE_MAX_GROWTH {
            carry.kept = Some(Kept {
                store,
                run,
                module: module.id,
                runs,
                first_size,
            });
        } else if clean {
            // Dropping the store here (inside `into_data`) resets the instance's memory.
            carry.spare = Some(store.into_data());
        }
        Ok(outcome)
    }
}

impl Prepared {
    /// Instantiates the module in `store` and returns its `run` export. Not through the
    /// generated `TaskModulePre::instantiate`, which type-checks `run` again for every
    /// instance, where `TaskModulePre::new` checked it once for the module already.
    fn instantiate(&self, store: &mut Store<RunState>) -> wasmtime::Result<Func> {
        let instance = self.pre.instance_pre().instantiate(&mut *store)?;
        instance
            .get_func(&mut *store, self.run)
            .ok_or_else(|| wasmtime::Error::msg("the component lost its run export"))
    }
}

/// Calls a module's `run` export.
fn call_run(run: Func, store: &mut Store<RunState>, task: &Task) -> wasmtime::Result<Outcome> {
    // SAFETY: `run` is the `run` export of an instance of a component whose `run`
    // `TaskModulePre::new` type-checked against these types when it was prepared (see
    // `Sandbox::prepare`), and an instance's exports have its component's types. This
    // is what the generated `call_run` does too.
    let typed = unsafe { TypedFunc::<(&Task,), (Outcome,)>::new_unchecked(run) };
    let (outcome,) = typed.call(store, (task,))?;
    Ok(outcome)
}
