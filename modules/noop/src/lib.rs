//! The smallest useful module: with payload `{"every_ms": N}` it reschedules itself every
//! N milliseconds, keeping its state; without `every_ms` it completes. With `"spawn": S`
//! it also spawns S one-shot noop tasks keyed `<its key>/0` .. `<its key>/S-1`, which
//! complete when they run: `recur bench --spawns` measures the spawn path with it. A
//! recurring task spawns the same keys every run, and all but the first run's are
//! absorbed by the unique key, as a crawler's links to pages it knows are. With
//! `"new_spawns": M` as well, M of the S are keyed after the run instead
//! (`<its key>/run<runs>/0` .. `/run<runs>/M-1`), new every run, as a crawler's links to
//! pages it has not seen are; the other S-M keep their fixed keys.
//!
//! It keeps its phase: the next run is due N ms after this one was due, not after it
//! ran, so a schedule keeps its spacing however late its runs start (and `recur bench`
//! offers the load it says, even after a start with a backlog). A task that fell a whole
//! interval behind starts a new phase N ms after this run instead of running back to
//! back to catch up.
use std::time::Duration;

use recur_guest::{Error, Handler, Outcome, Spawn, Task};

#[derive(serde::Deserialize)]
struct Payload {
    every_ms: Option<u64>,
    spawn: Option<u32>,
    new_spawns: Option<u32>,
}

struct Noop;

impl Handler for Noop {
    fn run(task: Task) -> Result<Outcome, Error> {
        let payload = task.payload_json::<Payload>()?;
        let outcome = match payload.every_ms {
            Some(ms) => {
                let every = Duration::from_millis(ms);
                let next = task.scheduled_at + every;
                if next > recur_guest::now() {
                    recur_guest::reschedule_at(next)
                } else {
                    recur_guest::reschedule_after(every)
                }
            }
            None => recur_guest::complete(),
        };
        let spawns = payload.spawn.unwrap_or(0);
        let new = payload.new_spawns.unwrap_or(0).min(spawns);
        if spawns == 0 {
            return Ok(outcome);
        }
        let known = (0..spawns - new).map(|i| format!("{}/{i}", task.key));
        let fresh = (0..new).map(|i| format!("{}/run{}/{i}", task.key, task.runs));
        Ok(outcome.spawns(
            known
                .chain(fresh)
                .map(|key| Spawn::new(task.task_type.as_str(), key)),
        ))
    }
}

recur_guest::export!(Noop);
