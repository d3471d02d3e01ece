//! A worker's handoff to the commit stage: finished tasks sent a few at a time rather
//! than one message (and one wake-up of the commit stage) per run.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Finished;

/// Most finished tasks a worker holds before it hands them on.
const SEND_EVERY: usize = 64;
/// Longest a finished task waits in a worker's handoff while the worker keeps running
/// short tasks.
const SEND_WITHIN: Duration = Duration::from_millis(2);

/// A worker's finished tasks on their way to the commit stage, sent a few at a time.
///
/// One message per task would wake the commit stage's thread once per run, a context
/// switch per execution. A few milliseconds of holding back cost nothing against a
/// commit's round trip, and a worker sends what it holds before it waits for work or
/// starts a run that may be long, so nothing is held for longer than that.
pub struct Handoff<'a> {
    to: &'a mpsc::UnboundedSender<Vec<Finished>>,
    held: Vec<Finished>,
    /// When the oldest held task arrived.
    oldest: Instant,
}

impl<'a> Handoff<'a> {
    pub fn new(to: &'a mpsc::UnboundedSender<Vec<Finished>>) -> Self {
        Handoff {
            to,
            held: Vec::with_capacity(SEND_EVERY),
            oldest: Instant::now(),
        }
    }

    /// Holds `finished`, and sends everything held once there are enough or the oldest
    /// has waited long enough.
    pub fn push(&mut self, finished: Finished) {
        if self.held.is_empty() {
            self.oldest = Instant::now();
        }
        self.held.push(finished);
        if self.held.len() >= SEND_EVERY || self.oldest.elapsed() >= SEND_WITHIN {
            self.send();
        }
    }

    /// Sends everything held.
    pub fn send(&mut self) {
        if !self.held.is_empty() {
            let held = std::mem::replace(&mut self.held, Vec::with_capacity(SEND_EVERY));
            // The commit stage outlives the workers; if it is gone, the host is dying.
            let _ = self.to.send(held);
        }
    }
}

impl Drop for Handoff<'_> {
    fn drop(&mut self) {
        self.send();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::ClaimedTask;

    fn not_run(id: i64) -> Finished {
        Finished::NotRun(ClaimedTask::sample(id, 0))
    }

    fn ids(sent: Vec<Finished>) -> Vec<i64> {
        sent.iter()
            .map(|f| match f {
                Finished::NotRun(task) => task.id,
                _ => unreachable!("only NotRun is pushed here"),
            })
            .collect()
    }

    #[test]
    fn a_handoff_sends_when_full_when_its_oldest_waited_long_enough_and_when_told() {
        let (to, mut from) = mpsc::unbounded_channel();
        let mut handoff = Handoff::new(&to);
        for id in 0..SEND_EVERY as i64 - 1 {
            handoff.push(not_run(id));
        }
        assert!(from.try_recv().is_err(), "sent before it was full");
        handoff.push(not_run(99));
        assert_eq!(from.try_recv().unwrap().len(), SEND_EVERY);

        handoff.push(not_run(1));
        std::thread::sleep(SEND_WITHIN);
        handoff.push(not_run(2));
        assert_eq!(ids(from.try_recv().unwrap()), [1, 2]);

        handoff.push(not_run(3));
        assert!(from.try_recv().is_err());
        handoff.send();
        assert_eq!(ids(from.try_recv().unwrap()), [3]);
        handoff.send();
        assert!(from.try_recv().is_err(), "sent an empty message");

        handoff.push(not_run(4));
        drop(handoff);
        assert_eq!(ids(from.try_recv().unwrap()), [4]);
    }
}
