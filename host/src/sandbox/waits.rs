//! WASI's waits, bounded by the run's deadline. A guest waiting in a WASI call (a sleep,
//! a clock subscription polled or blocked on, a stream's readiness) is in host code,
//! where the epoch interrupt that ends guest code at its deadline cannot reach, and
//! wasmtime-wasi's own `poll` and `pollable.block` wait as long as they are asked to.
//! These replace them: a wait ends when what it waits for is ready or at the run's
//! deadline, whichever comes first, and at the deadline the run traps as a timeout, as
//! a busy loop does. Every way a module can wait goes through them: the streams' own
//! blocking calls wait on the same pollables, and the outbound HTTP of WASI does too.

use std::future::Future;
use std::time::Instant;

use wasmtime::Trap;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::poll;
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi_io::bindings::wasi::io::poll as waits;
use wasmtime_wasi_io::poll::DynPollable;

use super::imports::RunState;

/// The guest's pollables, with the time its run must end by.
struct Bounded<'a> {
    table: &'a mut ResourceTable,
    deadline: Instant,
}

/// Runs `wait` until it is done or `deadline` comes; then the run traps as a timeout.
fn until<R>(
    deadline: Instant,
    wait: impl Future<Output = wasmtime::Result<R>>,
) -> wasmtime::Result<R> {
    in_tokio(async {
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(done) => done,
            Err(_) => Err(Trap::Interrupt.into()),
        }
    })
}

impl poll::Host for Bounded<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        until(self.deadline, waits::Host::poll(self.table, pollables))
    }
}

impl poll::HostPollable for Bounded<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        // Looks once and never waits.
        in_tokio(waits::HostPollable::ready(self.table, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        until(
            self.deadline,
            waits::HostPollable::block(self.table, pollable),
        )
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        waits::HostPollable::drop(self.table, pollable)
    }
}

struct BoundedWaits;

impl HasData for BoundedWaits {
    type Data<'a> = Bounded<'a>;
}

/// Puts the bounded `wasi:io/poll` in `linker` in place of wasmtime-wasi's, which
/// `add_to_linker_sync` put there.
pub(super) fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = poll::add_to_linker::<RunState, BoundedWaits>(linker, |state| Bounded {
        table: &mut state.table,
        deadline: state.deadline,
    });
    linker.allow_shadowing(false);
    added
}
