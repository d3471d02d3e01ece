//! Simulates a web crawler that revisits pages, to exercise the host with many tasks that
//! spawn each other.
//!
//! The key is a page's URL, such as `https://site-3.example/page/17`; the payload is
//! `{"sites": S, "pages": P, "fanout": F, "min_ms": A, "max_ms": B}` (defaults 50, 200, 3,
//! 1000 and 60000). Each run "visits" the page: a hash of (key, runs) decides whether it
//! changed since the last visit (about one visit in three), and picks F linked pages
//! `https://site-{x % S}.example/page/{y % P}`, spawned as tasks of the same type with the
//! same payload (those that exist already are absorbed by the host). Like a real crawler,
//! it revisits a page that changed sooner and one that did not later: the interval starts
//! at A, halves after a change (down to A) and doubles otherwise (up to B). The state is
//! `{"interval_ms": I, "visits": n, "changes": c}`.
use std::time::Duration;

use recur_guest::{Error, Handler, Outcome, Spawn, Task};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(default)]
struct Payload {
    sites: u64,
    pages: u64,
    fanout: u64,
    min_ms: u64,
    max_ms: u64,
}

impl Default for Payload {
    fn default() -> Self {
        Self {
            sites: 50,
            pages: 200,
            fanout: 3,
            min_ms: 1000,
            max_ms: 60_000,
        }
    }
}

#[derive(Deserialize, Serialize)]
struct State {
    interval_ms: u64,
    visits: u64,
    changes: u64,
}

struct Crawler;

impl Handler for Crawler {
    fn run(task: Task) -> Result<Outcome, Error> {
        let p = task.payload_json::<Payload>()?;
        let previous = task.state_json::<State>()?;
        let mut hash = fnv1a(task.key.as_bytes(), task.runs);
        let changed = hash.is_multiple_of(3);
        let state = visit(previous, changed, &p);
        recur_guest::debug!(
            "visited {}: changed={changed}, next in {} ms",
            task.key,
            state.interval_ms
        );

        let mut outcome = recur_guest::reschedule_after(Duration::from_millis(state.interval_ms))
            .with_state_json(&state)?;
        for _ in 0..p.fanout {
            hash = splitmix64(hash);
            let (x, y) = (hash >> 32, hash & 0xffff_ffff);
            // `max(1)`: a payload with no sites or pages must not divide by zero.
            let key = format!(
                "https://site-{}.example/page/{}",
                x % p.sites.max(1),
                y % p.pages.max(1)
            );
            outcome = outcome
                .spawn(Spawn::new(task.task_type.as_str(), key).payload(task.payload.clone()));
        }
        Ok(outcome)
    }
}

/// The state after a visit: the interval halves after a change and doubles otherwise,
/// within [min_ms, max_ms].
fn visit(previous: Option<State>, changed: bool, p: &Payload) -> State {
    let Some(s) = previous else {
        return State {
            interval_ms: p.min_ms,
            visits: 1,
            changes: changed.into(),
        };
    };
    let interval_ms = if changed {
        s.interval_ms / 2
    } else {
        s.interval_ms.saturating_mul(2)
    };
    State {
        // `min` then `max` rather than `clamp`, which panics when min_ms > max_ms.
        interval_ms: interval_ms.min(p.max_ms).max(p.min_ms),
        visits: s.visits + 1,
        changes: s.changes + u64::from(changed),
    }
}

/// FNV-1a over the key and the run count: stable across builds and platforms, unlike
/// std's `DefaultHasher`, so a test can predict what a visit does.
fn fnv1a(key: &[u8], runs: u64) -> u64 {
    key.iter()
        .chain(&runs.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// One step of SplitMix64, to draw several well-mixed numbers from one hash.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

recur_guest::export!(Crawler);
