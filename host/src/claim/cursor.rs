//! Where a host's next locked claim starts in each tenant's queue ([`ClaimCursor`]):
//! pure bookkeeping over the last claim's result, so its rules are tested without a
//! database.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::task::RowAt;

/// How long a claim cursor may stay ahead of the rows behind it.
const CURSOR_RESET: Duration = Duration::from_secs(1);

/// A position in a tenant's queue: a due time, and where the last row taken at it lies.
pub type QueuePosition = (DateTime<Utc>, RowAt);

/// Where a host's next locked claim starts: in each tenant's queue, just past the last
/// row its previous claim took from that tenant, in the order of the due index (due
/// time, then where the row lies).
///
/// A host's own batches in flight are the oldest due rows of their tenants, and they
/// stay locked until they commit. A claim from the front of a queue fetches each of those
/// rows and tries its lock only to skip it: under load, three to five times the rows it
/// claims. Starting at the last claim's due time skips most of that work. Rows due at
/// that very time are many where one commit rescheduled a batch, or one statement
/// enqueued many tasks: the index keeps rows of one tenant and due time in the order they
/// lie in the table (`ctid`), so the claim also passes over those at the cursor's time
/// that lie at or before the last one it took, without trying their locks (they are
/// still fetched: the index does not hold `ctid` as a column, and a wider index would
/// cost every write). Rows behind the cursor can come free again (a batch rolled back, a
/// task given back, another host's claim that died), so every queue starts over from the
/// front after a claim that came back short, which is when the host has caught up, and
/// at least every `CURSOR_RESET`, which bounds how late such a row runs while the host
/// is behind. A tenant the last claim took nothing from starts from the front too.
#[derive(Debug, Default)]
pub struct ClaimCursor {
    /// Per tenant, the position of the last row the previous claim took from it.
    after: HashMap<String, QueuePosition>,
    /// When `after` was first set since the last start from the front.
    since: Option<Instant>,
}

/// Where the next claim starts, as the claim statement takes it: a tenant, a due time
/// and a row position at each index. A tenant not named starts from the front.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CursorStart {
    /// The tenants whose queue starts past the front.
    pub tenants: Vec<String>,
    /// Their due times.
    pub due: Vec<DateTime<Utc>>,
    /// Where the last row taken at that time lies.
    pub at: Vec<RowAt>,
}

impl ClaimCursor {
    /// Where the next claim starts.
    pub(super) fn start(&mut self) -> CursorStart {
        if self
            .since
            .is_some_and(|since| since.elapsed() >= CURSOR_RESET)
        {
            *self = Self::default();
        }
        let mut start = CursorStart::default();
        for (tenant, (due, at)) in &self.after {
            start.tenants.push(tenant.clone());
            start.due.push(*due);
            start.at.push(*at);
        }
        start
    }

    /// Moves to a claim that asked for `wanted` rows and took `took`; `last` holds, per
    /// tenant it took from, the position of the last row it took (in the due index's
    /// order).
    pub(super) fn advance(
        &mut self,
        wanted: i64,
        took: usize,
        last: HashMap<String, QueuePosition>,
    ) {
        if took as i64 >= wanted && !last.is_empty() {
            self.after = last;
            self.since.get_or_insert_with(Instant::now);
        } else {
            *self = Self::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, page: u32) -> (DateTime<Utc>, RowAt) {
        let mut bytes = [0; 6];
        bytes[..4].copy_from_slice(&page.to_be_bytes());
        (
            DateTime::from_timestamp(secs, 0).unwrap(),
            RowAt::from_bytes(bytes),
        )
    }

    fn last(positions: &[(&str, QueuePosition)]) -> HashMap<String, QueuePosition> {
        positions
            .iter()
            .map(|(tenant, at)| (tenant.to_string(), *at))
            .collect()
    }

    fn starts_at(tenant: &str, (due, row): QueuePosition) -> CursorStart {
        CursorStart {
            tenants: vec![tenant.into()],
            due: vec![due],
            at: vec![row],
        }
    }

    #[test]
    fn a_full_claim_moves_each_tenants_cursor_past_its_last_row() {
        let mut cursor = ClaimCursor::default();
        assert_eq!(
            cursor.start(),
            CursorStart::default(),
            "a new cursor starts at the front"
        );
        cursor.advance(10, 10, last(&[("a", at(5, 3))]));
        assert_eq!(cursor.start(), starts_at("a", at(5, 3)));
        cursor.advance(10, 10, last(&[("a", at(6, 1)), ("b", at(2, 7))]));
        let mut start = cursor.start();
        let mut pairs: Vec<_> = (0..start.tenants.len())
            .map(|i| (start.tenants[i].clone(), (start.due[i], start.at[i])))
            .collect();
        pairs.sort();
        assert_eq!(
            pairs,
            vec![("a".into(), at(6, 1)), ("b".into(), at(2, 7))],
            "each tenant's queue starts past the last row taken from it"
        );
        cursor.advance(10, 10, last(&[("b", at(3, 1))]));
        start = cursor.start();
        assert_eq!(
            start,
            starts_at("b", at(3, 1)),
            "a tenant the claim took nothing from starts from the front"
        );
    }

    #[test]
    fn a_short_or_empty_claim_starts_the_next_from_the_front() {
        let mut cursor = ClaimCursor::default();
        cursor.advance(10, 10, last(&[("a", at(5, 3))]));
        cursor.advance(10, 9, last(&[("a", at(7, 2))]));
        assert_eq!(
            cursor.start(),
            CursorStart::default(),
            "caught up: rows behind may have come free"
        );
        cursor.advance(10, 10, last(&[("a", at(5, 3))]));
        cursor.advance(10, 0, HashMap::new());
        assert_eq!(cursor.start(), CursorStart::default());
    }

    #[test]
    fn a_cursor_ahead_for_too_long_starts_over() {
        let mut cursor = ClaimCursor::default();
        cursor.advance(10, 10, last(&[("a", at(5, 3))]));
        // As if the first full claim had been a reset's length ago.
        cursor.since = Some(Instant::now() - CURSOR_RESET);
        cursor.advance(10, 10, last(&[("a", at(6, 1))]));
        assert_eq!(
            cursor.start(),
            CursorStart::default(),
            "stayed ahead past CURSOR_RESET"
        );
        assert_eq!(cursor.start(), CursorStart::default());
    }
}
