//! What one consumer's channel has in flight: the subscriptions its
//! deliveries come from, the deliveries not yet acknowledged, and (`serve`)
//! what it has in hand, to put back if MongoDB keeps it too long
//! ([`InHand`]). Shared by the consumer,
//! which takes and acknowledges deliveries, and the hand-back, which puts
//! back what is held too long (see `source::hand_back`).

use crate::error::Result;
use crate::route::ack::{AckTracker, Ticket};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::{Channel, Consumer};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// Every subscription of a consumer's run, oldest first: the current one,
/// and before it any cancelled one whose last deliveries are still coming.
/// Deliveries come out in the order the broker sent them (delivery tag
/// order): the oldest subscription's to its end, then the next one's.
#[derive(Default)]
pub struct Subscriptions(pub VecDeque<Consumer>);

impl Subscriptions {
    /// The next delivery; `None` once the newest subscription has ended too.
    pub async fn next(&mut self) -> Option<lapin::Result<Delivery>> {
        loop {
            let oldest = self.0.front_mut()?;
            match oldest.next().await {
                None if self.0.len() > 1 => {
                    self.0.pop_front();
                }
                next => return next,
            }
        }
    }
}

/// A channel's deliveries in flight.
pub struct Flight {
    pub subscriptions: Subscriptions,
    pub tracker: AckTracker,
    /// `serve`: the deliveries in hand, to put back if held too long.
    pub in_hand: Option<InHand>,
}

impl Flight {
    /// Delivery `tag` is written: the tag to acknowledge up to, if any.
    pub fn completed(&mut self, tag: u64) -> Option<u64> {
        if let Some(in_hand) = self.in_hand.as_mut() {
            in_hand.done(tag);
        }
        self.tracker.completed(tag)
    }
}

/// Acknowledge every delivery on `channel` up to `up_to`, if any, in one frame.
pub async fn acknowledge(channel: &Channel, up_to: Option<u64>) -> Result<()> {
    if let Some(up_to) = up_to {
        channel
            .basic_ack(up_to, BasicAckOptions { multiple: true })
            .instrument(tracing::debug_span!(target: "stage", "ack"))
            .await?;
    }
    Ok(())
}

/// The deliveries one consumer holds, being written, by delivery tag.
#[derive(Debug)]
pub struct InHand {
    limit: Duration,
    held: BTreeMap<u64, Held>,
    /// Rounds of handing back since a delivery was last written: the first
    /// of an outage is logged as a warning, the others as debug lines.
    rounds: u32,
}

/// One delivery in hand: enough to put a copy of it back.
#[derive(Debug)]
pub struct Held {
    since: Instant,
    pub ticket: Arc<Ticket>,
    pub body: Vec<u8>,
    pub redelivered: bool,
}

impl InHand {
    pub fn new(limit: Duration) -> InHand {
        InHand {
            limit,
            held: BTreeMap::new(),
            rounds: 0,
        }
    }

    /// Delivery `tag` is in hand from now, its records on their way to the writers.
    pub fn hold(&mut self, tag: u64, ticket: Arc<Ticket>, body: Vec<u8>, redelivered: bool) {
        self.held.insert(
            tag,
            Held {
                since: Instant::now(),
                ticket,
                body,
                redelivered,
            },
        );
    }

    /// Delivery `tag` is done: written, if it was held (a new outage's
    /// first round is a warning again); else set aside or skipped, which
    /// says nothing of MongoDB.
    pub fn done(&mut self, tag: u64) {
        if self.held.remove(&tag).is_some() {
            self.rounds = 0;
        }
    }

    /// When everything must go back: once the oldest delivery in hand has
    /// been held for the limit. Deliveries are taken in tag order, so the
    /// lowest tag is the oldest.
    pub fn due(&self) -> Option<Instant> {
        self.held.first_key_value().map(|(_, held)| held.since + self.limit)
    }

    /// Every delivery in hand, oldest first; none is held after. Also
    /// returns whether this is the first round since a delivery was written.
    pub fn take_all(&mut self) -> (BTreeMap<u64, Held>, bool) {
        self.rounds = self.rounds.saturating_add(1);
        (std::mem::take(&mut self.held), self.rounds == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;

    #[tokio::test(start_paused = true)]
    async fn everything_is_due_once_the_oldest_has_been_held_for_the_limit() {
        let (done, _rx) = tokio::sync::mpsc::unbounded_channel();
        let ticket = |tag| Ticket::new(tag, 1, done.clone(), BasicProperties::default());
        let mut in_hand = InHand::new(Duration::from_secs(60));
        assert_eq!(in_hand.due(), None, "nothing held: nothing due");
        let first = Instant::now();
        in_hand.hold(1, ticket(1), b"[]".to_vec(), false);
        tokio::time::advance(Duration::from_secs(30)).await;
        in_hand.hold(2, ticket(2), b"[]".to_vec(), true);
        assert_eq!(in_hand.due(), Some(first + Duration::from_secs(60)));
        in_hand.done(1);
        assert_eq!(
            in_hand.due(),
            Some(first + Duration::from_secs(90)),
            "the oldest left decides"
        );
        let (all, first) = in_hand.take_all();
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert!(all[&2].redelivered);
        assert!(first, "the first round of the outage");
        assert_eq!(in_hand.due(), None);
        assert!(!in_hand.take_all().1, "a second round in the same outage");
        in_hand.done(3);
        assert!(
            !in_hand.take_all().1,
            "a delivery never held (set aside) says nothing of MongoDB"
        );
        in_hand.hold(4, ticket(4), b"[]".to_vec(), false);
        in_hand.done(4);
        assert!(
            in_hand.take_all().1,
            "a held delivery was written in between: a new outage"
        );
    }
}
