//! Acknowledging a message only once everything in it is safely written.
//!
//! A message's records can be spread over several writers (they are routed
//! by key) and finish in any order. Each message gets a [`Ticket`] counting
//! its records still to write; the writer that finishes the last one sends
//! the delivery tag back to the consumer that owns the channel. There the
//! [`AckTracker`] turns completions into as few `basic.ack` frames as
//! possible: one ack with `multiple = true` covers every tag up to the
//! highest completed one below the oldest still outstanding, so a tag is
//! never acknowledged while an older message on the channel is unwritten.
//!
//! A ticket can also be *released* before it is done (`serve`, a delivery
//! held too long: see `source::hand_back`): then its records may still be
//! written, but the ticket never sends its tag, which was acknowledged
//! already; the tracker forgets the tag so the deliveries after it can go.

use crate::route::handled::Noted;
use lapin::BasicProperties;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// What a released ticket's count is set to: far above any count of
/// records, so that completing them never brings it to zero.
const RELEASED: usize = usize::MAX / 2;

/// The records of one delivery still to be written.
#[derive(Debug)]
pub struct Ticket {
    tag: u64,
    remaining: AtomicUsize,
    done: UnboundedSender<u64>,
    /// The delivery's properties, for dead-lettering one of its records.
    properties: BasicProperties,
    /// Noted as handled when done (a one-shot run's, see `route::handled`).
    note: Option<Noted>,
}

impl Ticket {
    /// A ticket for `records` records of delivery `tag`; when the last is
    /// written, `tag` is sent on `done`. A ticket for no records is done at once.
    pub fn new(tag: u64, records: usize, done: UnboundedSender<u64>, properties: BasicProperties) -> Arc<Ticket> {
        Ticket::noting(tag, records, done, properties, None)
    }

    /// [`Ticket::new`], noting the message as handled when it is done.
    pub fn noting(
        tag: u64,
        records: usize,
        done: UnboundedSender<u64>,
        properties: BasicProperties,
        note: Option<Noted>,
    ) -> Arc<Ticket> {
        let ticket = Arc::new(Ticket {
            tag,
            remaining: AtomicUsize::new(records),
            done,
            properties,
            note,
        });
        if records == 0 {
            ticket.finish();
        }
        ticket
    }

    pub fn properties(&self) -> &BasicProperties {
        &self.properties
    }

    /// Release the ticket unless it is done already: its tag will never be
    /// sent on `done`, whatever is written after. Returns whether it was
    /// released (false: done, its tag sent or on its way, or released before).
    pub fn release(&self) -> bool {
        let mut remaining = self.remaining.load(Ordering::Acquire);
        loop {
            if remaining == 0 || remaining >= RELEASED / 2 {
                return false;
            }
            match self
                .remaining
                .compare_exchange(remaining, RELEASED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => remaining = now,
            }
        }
    }

    /// Whether the ticket was released (its delivery put back).
    pub fn is_released(&self) -> bool {
        self.remaining.load(Ordering::Acquire) >= RELEASED / 2
    }

    /// One of the ticket's records is written (or dead-lettered).
    pub fn complete_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    /// Every record is written: noted as handled, then acknowledged. The
    /// consumer may be gone (its connection lost, or the run failing); then
    /// the broker redelivers, which the note makes count nothing twice.
    fn finish(&self) {
        if let Some(note) = &self.note {
            note.note();
        }
        let _ = self.done.send(self.tag);
    }
}

/// Which deliveries on one channel are in hand, and which may be acknowledged.
#[derive(Debug, Default)]
pub struct AckTracker {
    outstanding: BTreeSet<u64>,
    completed: BTreeSet<u64>,
}

impl AckTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A delivery arrived and is now in hand.
    pub fn delivered(&mut self, tag: u64) {
        self.outstanding.insert(tag);
    }

    /// A delivery is fully written. Returns the tag to acknowledge with
    /// `multiple = true`, if any tags became acknowledgeable.
    pub fn completed(&mut self, tag: u64) -> Option<u64> {
        if !self.outstanding.remove(&tag) {
            return None;
        }
        self.completed.insert(tag);
        self.acknowledgeable()
    }

    /// A delivery was acknowledged on its own (its ticket released, a copy
    /// put back: see `source::hand_back`): forgotten. Returns the tag to
    /// acknowledge with `multiple = true`, if the deliveries after it that
    /// were waiting for it may go now.
    pub fn released(&mut self, tag: u64) -> Option<u64> {
        if !self.outstanding.remove(&tag) {
            return None;
        }
        self.acknowledgeable()
    }

    /// The highest completed tag below the oldest outstanding, if any; the
    /// tags up to it are no longer tracked.
    fn acknowledgeable(&mut self) -> Option<u64> {
        let oldest_outstanding = self.outstanding.first().copied().unwrap_or(u64::MAX);
        let highest = *self.completed.range(..oldest_outstanding).next_back()?;
        self.completed = self.completed.split_off(&(highest + 1));
        Some(highest)
    }

    /// Deliveries in hand, not yet acknowledged.
    pub fn in_hand(&self) -> usize {
        self.outstanding.len() + self.completed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.in_hand() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_only_a_contiguous_prefix_and_batches_it() {
        let mut t = AckTracker::new();
        for tag in 1..=5 {
            t.delivered(tag);
        }
        assert_eq!(t.completed(2), None, "1 is still being written");
        assert_eq!(t.completed(3), None);
        assert_eq!(t.completed(1), Some(3), "1..=3 go in one ack");
        assert_eq!(t.in_hand(), 2);
        assert_eq!(t.completed(5), None);
        assert_eq!(t.completed(4), Some(5));
        assert!(t.is_empty());
    }

    #[test]
    fn unknown_or_repeated_completions_ack_nothing() {
        let mut t = AckTracker::new();
        t.delivered(7);
        assert_eq!(t.completed(6), None);
        assert_eq!(t.completed(7), Some(7));
        assert_eq!(t.completed(7), None);
    }

    #[test]
    fn a_released_delivery_unblocks_those_after_it_and_is_never_acked_again() {
        let mut t = AckTracker::new();
        for tag in 1..=3 {
            t.delivered(tag);
        }
        assert_eq!(t.completed(2), None, "1 is in hand");
        assert_eq!(t.released(1), Some(2), "1 went on its own: 2 may go");
        assert_eq!(t.completed(1), None, "a released tag completes nothing");
        assert_eq!(t.released(3), None);
        assert!(t.is_empty());
    }

    #[test]
    fn a_released_ticket_never_reports_and_a_done_one_cannot_be_released() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let held = Ticket::new(1, 2, tx.clone(), BasicProperties::default());
        held.complete_one();
        assert!(!held.is_released());
        assert!(held.release());
        assert!(held.is_released());
        assert!(!held.release(), "once");
        held.complete_one();
        held.complete_one();
        assert!(rx.try_recv().is_err(), "written after its release: nothing sent");
        let done = Ticket::new(2, 1, tx, BasicProperties::default());
        done.complete_one();
        assert!(!done.release());
        assert_eq!(rx.try_recv(), Ok(2));
    }

    #[test]
    fn ticket_reports_once_when_its_last_record_is_written() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ticket = Ticket::new(9, 3, tx.clone(), BasicProperties::default());
        ticket.complete_one();
        ticket.complete_one();
        assert!(rx.try_recv().is_err());
        ticket.complete_one();
        assert_eq!(rx.try_recv(), Ok(9));
        let _empty = Ticket::new(10, 0, tx, BasicProperties::default());
        assert_eq!(rx.try_recv(), Ok(10));
    }
}
