//! Where a host's next locked claim starts ([`ClaimCursor`]): pure bookkeeping over the
//! last claim's result, so its rules are tested without a database.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::task::RowAt;

/// How long a claim cursor may stay ahead of the rows behind it.
const CURSOR_RESET: Duration = Duration::from_secs(1);

/// Where a host's next locked claim starts: just past the last row its previous claim
/// took, in the order of the due index (due time, then where the row lies).
///
/// A host's own batches in flight are the oldest due rows, and they stay locked until
/// they commit. A claim from the front of the due index fetches each of those rows and
/// tries its lock only to skip it: under load, three to five times the rows it claims.
/// Starting at the last claim's due time skips most of that work. Rows due at that very
/// time are many where one commit rescheduled a batch, or one statement enqueued many
/// tasks: the index keeps rows of one due time in the order they lie in the table
/// (`ctid`), so the claim also passes over those at the cursor's time that lie at or
/// before the last one it took, without trying their locks (they are still fetched: the
/// index does not hold `ctid` as a column, and a wider index would cost every write).
/// Rows behind the cursor can come free again (a
/// batch rolled back, a task given back, another host's claim that died), so the cursor
/// starts over from the front after a claim that came back short, which is when the
/// host has caught up, and at least every `CURSOR_RESET`, which bounds how late such a
/// row runs while the host is behind.
#[derive(Debug, Default)]
pub struct ClaimCursor {
    /// The due time of the last row the previous claim took, and where that row lies.
    after: Option<(DateTime<Utc>, RowAt)>,
    /// When `after` was first set since the last start from the front.
    since: Option<Instant>,
}

impl ClaimCursor {
    /// Where the next claim starts: a due time and where the last row taken at it lies;
    /// `None` is the front.
    pub(super) fn start(&mut self) -> Option<(DateTime<Utc>, RowAt)> {
        if self
            .since
            .is_some_and(|since| since.elapsed() >= CURSOR_RESET)
        {
            *self = Self::default();
        }
        self.after
    }

    /// Moves to a claim that asked for `wanted` rows and took `took`, the last of them
    /// (in the due index's order) due at and lying at `last`.
    pub(super) fn advance(
        &mut self,
        wanted: i64,
        took: usize,
        last: Option<(DateTime<Utc>, RowAt)>,
    ) {
        match last {
            Some(last) if took as i64 >= wanted => {
                self.after = Some(last);
                self.since.get_or_insert_with(Instant::now);
            }
            _ => *self = Self::default(),
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

    #[test]
    fn a_full_claim_moves_the_cursor_past_its_last_row() {
        let mut cursor = ClaimCursor::default();
        assert_eq!(cursor.start(), None, "a new cursor starts at the front");
        cursor.advance(10, 10, Some(at(5, 3)));
        assert_eq!(cursor.start(), Some(at(5, 3)));
        cursor.advance(10, 10, Some(at(6, 1)));
        assert_eq!(cursor.start(), Some(at(6, 1)));
    }

    #[test]
    fn a_short_or_empty_claim_starts_the_next_from_the_front() {
        let mut cursor = ClaimCursor::default();
        cursor.advance(10, 10, Some(at(5, 3)));
        cursor.advance(10, 9, Some(at(7, 2)));
        assert_eq!(
            cursor.start(),
            None,
            "caught up: rows behind may have come free"
        );
        cursor.advance(10, 10, Some(at(5, 3)));
        cursor.advance(10, 0, None);
        assert_eq!(cursor.start(), None);
    }

    #[test]
    fn a_cursor_ahead_for_too_long_starts_over() {
        let mut cursor = ClaimCursor::default();
        cursor.advance(10, 10, Some(at(5, 3)));
        // As if the first full claim had been a reset's length ago.
        cursor.since = Some(Instant::now() - CURSOR_RESET);
        cursor.advance(10, 10, Some(at(6, 1)));
        assert_eq!(cursor.start(), None, "stayed ahead past CURSOR_RESET");
        assert_eq!(cursor.start(), None);
    }
}
