//! Long store outages spend no delivery attempts: what `serve` holds too
//! long goes back to its queue as a copy before the broker takes it back.
//!
//! While MongoDB is away `serve` holds its deliveries unacknowledged, for
//! as long as the outage lasts (see `service::serve`). RabbitMQ does not
//! wait for ever: a delivery left unacknowledged past its
//! `consumer_timeout` (30 minutes by default, checked once a minute) makes
//! it close the channel with `PRECONDITION_FAILED`, and every delivery the
//! channel held returns to its queue as a *failed* delivery: the quorum
//! queue raises its `x-delivery-count`, a classic queue sets `redelivered`
//! (see `source::attempts`). A few such outages would dead-letter good
//! records, against the contract ("a store-side failure dead-letters
//! nothing").
//!
//! So each consumer of `serve` keeps what it has in hand (`InHand` in
//! `source::flight`: the delivery tag, when it was taken, its ticket and
//! its body). When the oldest has been held for the hold limit
//! (`--hold-limit-ms`, 10 minutes by default), the consumer hands back
//! *everything* the channel holds: each delivery in hand, and each one the
//! broker has sent that the consumer has not read yet (it waits on the
//! writers, whose inboxes are full). For each one, a copy goes to the same
//! queue with the failed deliveries so far in `x-hpn-attempts` (and without
//! the broker's `x-delivery-count`, which counted the original's),
//! confirmed by the broker; then the original is acknowledged on its own
//! and its ticket released ([`crate::route::ack::Ticket::release`]), so
//! that whatever of it the writers still write later is never acknowledged
//! twice. Nothing is lost: a crash between the copy and the acknowledgement
//! leaves both, which the keyed, versioned writes make harmless; records
//! already in a writer's batch are written when MongoDB returns, and their
//! copies then count as `stale`.
//!
//! The price is a round of publishes once per hold limit per consumer
//! while the outage lasts (a prefetch's worth at most), and copies that
//! wait behind newer messages of the same keys: the version guard makes
//! that order harmless. A delivery read late (it waited behind another for
//! up to one hold limit) can be held up to twice the limit, so the limit
//! must stay under half the broker's `consumer_timeout`.
//!
//! One-shot runs do not hand back: their writers give up after the store
//! patience, which the settings keep under the hold limit
//! (`Config::check`), and a copy would be counted twice in their report.

use crate::error::Result;
use crate::observe::counters::Counters;
use crate::route::dead_letter::DeadLetters;
use crate::source::attempts;
use crate::source::flight::{acknowledge, Flight};
use futures::FutureExt;
use hpn_common::{RecordKind, Topology};
use lapin::options::BasicAckOptions;
use lapin::{BasicProperties, Channel};

/// Where copies go and where the originals are acknowledged.
pub struct PutBack<'a> {
    pub kind: RecordKind,
    pub topology: &'a Topology,
    pub channel: &'a Channel,
    pub dead_letters: &'a DeadLetters,
}

impl PutBack<'_> {
    /// Put back everything the channel holds, MongoDB having kept the
    /// oldest of it past the hold limit: each delivery in hand, and each one
    /// the broker has sent that is not read yet. A delivery whose records
    /// were all written meanwhile is left to its acknowledgement.
    pub async fn everything(&self, flight: &mut Flight, counters: &Counters) -> Result<()> {
        let Some(in_hand) = flight.in_hand.as_mut() else {
            return Ok(());
        };
        // What the broker has sent and the consumer has not read, read
        // first, before any acknowledgement of this round lets the broker
        // send more (the copies themselves, often): bounded by the prefetch.
        let mut unread = Vec::new();
        while let Some(Some(next)) = flight.subscriptions.next().now_or_never() {
            let delivery = next?;
            counters.message_consumed();
            flight.tracker.delivered(delivery.delivery_tag);
            unread.push(delivery);
        }
        let mut handed = 0u64;
        let (held, first_round) = in_hand.take_all();
        for (tag, held) in held {
            if held.ticket.release() {
                self.put_back(tag, held.ticket.properties(), &held.body, held.redelivered)
                    .await?;
                handed += 1;
                acknowledge(self.channel, flight.tracker.released(tag)).await?;
            }
        }
        for delivery in unread {
            let tag = delivery.delivery_tag;
            self.put_back(tag, &delivery.properties, &delivery.data, delivery.redelivered)
                .await?;
            handed += 1;
            acknowledge(self.channel, flight.tracker.released(tag)).await?;
        }
        counters.handed_back(handed);
        let queue = self.topology.queue(self.kind);
        if first_round {
            tracing::warn!(
                %queue,
                messages = handed,
                "MongoDB has kept messages unwritten past the hold limit: copies went back to the queue and \
                 the originals were acknowledged, so that the broker's consumer_timeout counts no failed \
                 delivery; the same again every hold limit until MongoDB takes writes"
            );
        } else {
            tracing::debug!(%queue, messages = handed, "handed back again: MongoDB still takes no writes");
        }
        Ok(())
    }

    /// Put a confirmed copy of delivery `tag` back on its queue, carrying
    /// its failed deliveries so far, then acknowledge the original alone.
    async fn put_back(&self, tag: u64, properties: &BasicProperties, body: &[u8], redelivered: bool) -> Result<()> {
        let failed = attempts::failed_so_far(self.topology.queue_type(), properties, redelivered);
        self.dead_letters.retry(self.kind, properties, body, failed).await?;
        self.channel.basic_ack(tag, BasicAckOptions { multiple: false }).await?;
        Ok(())
    }
}
