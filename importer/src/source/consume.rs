//! Consumers: one per channel, each taking deliveries from one queue.
//!
//! For every delivery the consumer decodes the body (see
//! `hpn_common::message`), sends what cannot be used to the dead-letter
//! queue with the reason, and routes each good record to the writer that
//! owns its key, together with the delivery's ticket. Acknowledgements come
//! back from the writers through the ticket and go out in order through the
//! [`AckTracker`]. The consumer's prefetch bounds how many deliveries are in
//! hand (in records, see [`Prefetch`]), and the writers' bounded inboxes
//! push back on the consumer when the database is slower than the broker:
//! memory stays flat however deep the queue.
//!
//! The prefetch is the consumer's own (`basic.qos` with `global = false`):
//! quorum queues refuse a channel-wide one. RabbitMQ applies a per-consumer
//! limit only to consumers created after it is set, so when the limit the
//! consumer wants moves, it subscribes again: it cancels its subscription
//! and opens a new one under the new limit. Deliveries already sent to the
//! old subscription still arrive (lapin ends a cancelled consumer's stream
//! only after them: the `basic.cancel-ok` that ends it follows them on the
//! channel) and are acknowledged on the same channel as any other. The old
//! subscription's deliveries are taken to the end before the new one's
//! ([`Subscriptions`]): delivery tags must reach the [`AckTracker`] in
//! order, or a multiple ack would cover a tag not yet seen. That happens
//! once or twice per run, when the consumer learns how many records a
//! message holds.
//!
//! Why re-subscribe rather than fix the prefetch once: a fixed prefetch
//! large enough for one-record messages (2,000) holds 50 times the records
//! at 100 records per message, for no speed (100,000 per file, two
//! alternating runs each of `hpn-importer run`: 3.6-4.0 s and 69 MiB peak
//! with 2,000 messages in hand against 3.9-4.1 s and 31 MiB adapted to
//! 4,000 records). Correctness does not rest on the re-subscription: each
//! subscription gets a fresh tag from the broker (the quorum-queue bug of
//! RabbitMQ before 3.11.23 / 3.12.4, PR 9158, needs a tag used again), and
//! a delivery that arrives after its subscription's `cancel-ok` (lapin
//! drops those) or never arrives stays unacknowledged until the channel
//! closes, goes back to the queue, and is counted as left by a one-shot
//! run's final check (see [`crate::source::drain`]).
//!
//! A redelivered message is counted (by the broker on a quorum queue, by
//! the importer on a classic one) and processed, or put back on a classic
//! queue with its count, or dead-lettered once it has failed too often (see
//! [`crate::source::attempts`]).
//!
//! In `serve`, a delivery MongoDB keeps unwritten past the hold limit (an
//! outage) goes back to its queue as a confirmed copy, with everything
//! else the channel holds, before the broker's `consumer_timeout` would
//! close the channel and count it as failed (see
//! [`crate::source::hand_back`]). So the consumer never waits on a full
//! writer inbox without also watching that limit.
//!
//! A one-shot consumer stops when its queue is drained: after `idle` with no
//! delivery and nothing in hand it asks the broker, on another channel so
//! that acknowledgements keep flowing, and stops after two answers of zero
//! ready that count it as a consumer, with nothing delivered in between (see
//! [`crate::source::drain`], which also says why a quorum queue's `0/0` is
//! never taken for empty). A long-running consumer stops when told to shut
//! down, the same way.

use crate::config::{PrefetchScope, Tuning};
use crate::error::{Error, Result};
use crate::observe::counters::Counters;
use crate::route::ack::{AckTracker, Ticket};
use crate::route::dead_letter::DeadLetters;
use crate::route::handled::{self, Handled, Noted, Ring};
use crate::route::partition::Router;
use crate::route::partition::WorkItem;
use crate::source::attempts::{self, Verdict};
use crate::source::drain::{self, Drain, Step};
use crate::source::flight::{acknowledge, Flight, InHand, Subscriptions};
use crate::source::hand_back::PutBack;
use crate::source::prefetch::Prefetch;
use hpn_common::message;
use hpn_common::topology::queue_counts;
use hpn_common::{Record, RecordKind, Topology};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicQosOptions};
use lapin::types::ShortString;
use lapin::Channel;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long the broker may take to answer a consumer's request (a cancel,
/// a prefetch, a subscription) before the connection is taken as lost:
/// lapin waits for a reply with no end, and a reply can be lost in a
/// partition between the broker's nodes (a one-shot run hung for 13
/// minutes after a cut in tests/tests/partition.rs, its consumers
/// subscribed and given nothing; such a wait is the suspected cause, not
/// a proven one).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// `request`'s answer, or [`hpn_common::Error::NoAnswer`] after [`ANSWER_WITHIN`].
async fn answered<T>(what: &'static str, request: impl std::future::Future<Output = lapin::Result<T>>) -> Result<T> {
    match tokio::time::timeout(ANSWER_WITHIN, request).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(hpn_common::Error::NoAnswer {
            what,
            after: ANSWER_WITHIN,
        }
        .into()),
    }
}

/// When a consumer stops.
#[derive(Clone, Debug)]
pub enum StopWhen {
    /// When the queue is drained (see [`crate::source::drain`]): asked
    /// after `idle` without deliveries, on `checker` (a channel of its own,
    /// so acknowledgements are not held up behind the question); after
    /// `patience` with neither a delivery nor a sure answer, the consumer
    /// stops and the run's final check says what is left.
    Drained {
        idle: Duration,
        patience: Duration,
        checker: Channel,
    },
    /// When the token is cancelled.
    Shutdown(CancellationToken),
}

/// One consumer on one channel.
pub struct ConsumerTask {
    pub kind: RecordKind,
    pub channel: Channel,
    pub topology: Topology,
    pub router: Router,
    pub dead_letters: DeadLetters,
    pub counters: Arc<Counters>,
    /// The most messages in hand, the records to aim for, and the bytes of
    /// bodies this consumer may have in hand or on the way (see [`Prefetch`]).
    pub prefetch: u16,
    pub prefetch_records: usize,
    pub body_share: usize,
    pub prefetch_scope: PrefetchScope,
    pub max_message_bytes: usize,
    /// Failed deliveries of one message allowed (see [`crate::source::attempts`]).
    pub max_attempts: u32,
    /// The writers' batch size: a one-shot run uses one writer per batch of
    /// its backlog (see [`Router::size_for`]).
    pub batch_size: usize,
    /// Messages in the queue when a one-shot run began, if known: the first
    /// message routed sizes the router for them (see [`Router::size_for`]).
    pub backlog: Option<u32>,
    /// A one-shot run's record of the messages its consumers handled, and
    /// this consumer's place in it: a message delivered again after a lost
    /// connection is acknowledged, not counted twice (see [`Handled`]).
    pub handled: Option<(Arc<Handled>, Ring)>,
    /// `serve`: how long a delivery may be held unwritten before it is put
    /// back (see [`crate::source::hand_back`]); one-shot runs: none.
    pub hold_limit: Option<Duration>,
    pub stop: StopWhen,
}

impl ConsumerTask {
    /// A consumer of `kind`'s queue on `channel`, limits from `tuning`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: RecordKind,
        channel: Channel,
        topology: Topology,
        router: Router,
        dead_letters: DeadLetters,
        counters: Arc<Counters>,
        tuning: &Tuning,
        stop: StopWhen,
    ) -> ConsumerTask {
        ConsumerTask {
            kind,
            channel,
            topology,
            router,
            dead_letters,
            counters,
            prefetch: tuning.prefetch,
            prefetch_records: tuning.prefetch_records,
            body_share: tuning.body_share(Tuning::CONSUMERS_IN_PROCESS * tuning.consumers),
            prefetch_scope: tuning.prefetch_scope,
            max_message_bytes: tuning.max_message_bytes,
            max_attempts: tuning.max_attempts,
            batch_size: tuning.batch_size,
            backlog: None,
            handled: None,
            hold_limit: matches!(stop, StopWhen::Shutdown(_)).then(|| tuning.hold_limit()),
            stop,
        }
    }

    pub async fn run(self) -> Result<()> {
        let queue = self.topology.queue(self.kind);
        let mut prefetch = Prefetch::new(
            self.prefetch,
            self.prefetch_records,
            self.body_share,
            self.max_message_bytes,
        );
        let mut flight = Flight {
            subscriptions: Subscriptions::default(),
            tracker: AckTracker::new(),
            in_hand: self.hold_limit.map(InHand::new),
        };
        let mut consumer_tag = self
            .subscribe(&queue, prefetch.current, &mut flight.subscriptions)
            .await?;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut subscribed = true;
        let mut stream_open = true;
        let (mut drain, checker, idle, shutdown) = match &self.stop {
            StopWhen::Drained {
                idle,
                patience,
                checker,
            } => (
                Some(Drain::new(*idle, *patience, Instant::now())),
                Some(checker.clone()),
                *idle,
                CancellationToken::new(),
            ),
            StopWhen::Shutdown(token) => (None, None, Duration::from_secs(3600), token.clone()),
        };
        let mut next_ask = Instant::now() + idle;
        // The question in flight, if any: answered off this loop, so
        // acknowledgements go out while the broker thinks.
        let mut asking: Option<(
            Instant,
            tokio::task::JoinHandle<Option<hpn_common::topology::QueueCounts>>,
        )> = None;

        while stream_open || !flight.tracker.is_empty() {
            let hand_back_due = flight.in_hand.as_ref().and_then(InHand::due);
            tokio::select! {
                biased;
                Some(tag) = done_rx.recv() => {
                    // A written batch completes many deliveries at once: take
                    // every completion already waiting, then send one ack.
                    let mut ack = flight.completed(tag);
                    while let Ok(tag) = done_rx.try_recv() {
                        ack = flight.completed(tag).or(ack);
                    }
                    acknowledge(&self.channel, ack).await?;
                }
                // Held too long (MongoDB away): everything goes back.
                () = tokio::time::sleep_until(hand_back_due.unwrap_or_else(Instant::now)), if hand_back_due.is_some() => {
                    self.hand_back(&mut flight).await?;
                }
                next = flight.subscriptions.next().instrument(tracing::debug_span!(target: "stage", "broker_to_consumer")), if stream_open => match next {
                    // Ended while still subscribed: not by our cancel, so the
                    // channel, the connection or the queue is gone. Taken for
                    // "done", a long-running importer would never reconnect.
                    None if subscribed => return Err(hpn_common::Error::SubscriptionEnded(queue.clone()).into()),
                    None => stream_open = false,
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(delivery)) => {
                        next_ask = Instant::now() + idle;
                        if let Some(drain) = drain.as_mut() {
                            drain.delivered(Instant::now());
                        }
                        self.counters.message_consumed();
                        flight.tracker.delivered(delivery.delivery_tag);
                        let body_bytes = delivery.data.len();
                        let records = self.handle(delivery, &done_tx, &mut flight).await?;
                        if let Some(change) = prefetch.observe(records, body_bytes) {
                            if subscribed {
                                tracing::debug!(queue = %queue, prefetch = change, scope = ?self.prefetch_scope, "prefetch changed");
                                consumer_tag = self.resize(&queue, change, consumer_tag, &mut flight.subscriptions).await?;
                            }
                        }
                    }
                },
                _ = shutdown.cancelled(), if subscribed => {
                    answered("a cancel", self.channel.basic_cancel(consumer_tag.clone(), BasicCancelOptions::default())).await?;
                    subscribed = false;
                }
                // Nothing delivered for `idle` and nothing in hand: ask.
                _ = tokio::time::sleep_until(next_ask), if subscribed && asking.is_none() && flight.tracker.is_empty() && checker.is_some() => {
                    let (checker, queue) = (checker.clone().expect("guarded"), queue.clone());
                    asking = Some((Instant::now(), tokio::spawn(async move {
                        tokio::time::timeout(drain::ASK_TIMEOUT, queue_counts(&checker, &queue)).await.ok()?.ok()
                    })));
                }
                answer = async { (&mut asking.as_mut().expect("guarded").1).await }, if asking.is_some() => {
                    let asked = asking.take().expect("guarded").0;
                    let answer = answer.ok().flatten();
                    let drain = drain.as_mut().expect("asking only while draining");
                    match drain.answer(answer, asked, Instant::now()) {
                        Step::AskAgainIn(wait) => {
                            if answer.is_none_or(|counts| counts.consumers == 0) {
                                tracing::debug!(queue = %queue, "the broker did not say how many messages are ready; asking again");
                            }
                            next_ask = Instant::now() + wait;
                        }
                        step => {
                            if step == Step::GiveUp {
                                tracing::warn!(queue = %queue, "no delivery and no sure count of ready messages for a while: stopping this consumer; the run checks what is left");
                            }
                            answered("a cancel", self.channel.basic_cancel(consumer_tag.clone(), BasicCancelOptions::default())).await?;
                            subscribed = false;
                        }
                    }
                }
            }
        }
        if let Some((_, question)) = asking {
            question.abort();
        }
        let _ = self.channel.close(200, "done".into()).await;
        Ok(())
    }

    /// Put back everything the channel holds (see [`PutBack::everything`]).
    async fn hand_back(&self, flight: &mut Flight) -> Result<()> {
        let put = PutBack {
            kind: self.kind,
            topology: &self.topology,
            channel: &self.channel,
            dead_letters: &self.dead_letters,
        };
        put.everything(flight, &self.counters).await
    }

    /// Set the prefetch to `limit` and subscribe to `queue`; the new
    /// subscription joins `subscriptions`. Returns its consumer tag.
    async fn subscribe(&self, queue: &str, limit: u16, subscriptions: &mut Subscriptions) -> Result<ShortString> {
        answered("a prefetch", self.channel.basic_qos(limit, self.qos())).await?;
        let consumer = answered("a subscription", hpn_common::broker::subscribe(&self.channel, queue)).await?;
        let tag = consumer.tag();
        subscriptions.0.push_back(consumer);
        Ok(tag)
    }

    /// Move the prefetch to `limit`: in place for a channel-wide one; for a
    /// per-consumer one, by cancelling subscription `current` and
    /// subscribing again under the new limit. Returns the tag now in use.
    async fn resize(
        &self,
        queue: &str,
        limit: u16,
        current: ShortString,
        subscriptions: &mut Subscriptions,
    ) -> Result<ShortString> {
        match self.prefetch_scope {
            PrefetchScope::Channel => {
                answered("a prefetch", self.channel.basic_qos(limit, self.qos())).await?;
                Ok(current)
            }
            PrefetchScope::PerConsumer => {
                answered(
                    "a cancel",
                    self.channel.basic_cancel(current, BasicCancelOptions::default()),
                )
                .await?;
                self.subscribe(queue, limit, subscriptions).await
            }
        }
    }

    fn qos(&self) -> BasicQosOptions {
        BasicQosOptions {
            global: self.prefetch_scope == PrefetchScope::Channel,
        }
    }

    /// Handle one delivery, unless it is a message this run handled before
    /// a lost connection (see [`Handled`]): that one is acknowledged as it
    /// is. Returns how many records the message held (1 for one skipped).
    async fn handle(
        &self,
        delivery: Delivery,
        done: &mpsc::UnboundedSender<u64>,
        flight: &mut Flight,
    ) -> Result<usize> {
        let Some((handled, ring)) = &self.handled else {
            return self.handle_new(delivery, done, None, flight).await;
        };
        let digest = handled::digest(&delivery.properties, &delivery.data);
        if delivery.redelivered && handled.contains(digest) {
            tracing::debug!(kind = %self.kind, "a message handled before the connection was lost came again: acknowledged");
            let _ = done.send(delivery.delivery_tag);
            return Ok(1);
        }
        let note = Noted {
            handled: handled.clone(),
            ring: ring.clone(),
            digest,
        };
        self.handle_new(delivery, done, Some(note), flight).await
    }

    /// Decode one delivery; dead-letter what cannot be used; route the rest
    /// (the first message routed sizes the router for the backlog, see
    /// [`Router::size_for`]). Returns how many records the message held.
    /// While a writer's inbox is full, the message is held; if MongoDB keeps
    /// it past the hold limit, it goes back with everything else in hand
    /// (see [`crate::source::hand_back`]) and the rest of it is not routed.
    async fn handle_new(
        &self,
        delivery: Delivery,
        done: &mpsc::UnboundedSender<u64>,
        note: Option<Noted>,
        flight: &mut Flight,
    ) -> Result<usize> {
        // Set aside or put back whole: handled once that is confirmed.
        let set_aside = |tag: u64| {
            if let Some(note) = &note {
                note.note();
            }
            let _ = done.send(tag);
        };
        let Delivery {
            delivery_tag,
            properties,
            data,
            redelivered,
            ..
        } = delivery;
        match attempts::verdict(self.topology.queue_type(), &properties, redelivered, self.max_attempts) {
            Verdict::Process => {}
            Verdict::Retry { failed } => {
                // Counted and put back; acknowledged only once the copy is confirmed.
                self.dead_letters.retry(self.kind, &properties, &data, failed).await?;
                set_aside(delivery_tag);
                return Ok(1);
            }
            Verdict::GiveUp { failed } => {
                let reason = attempts::give_up_reason(failed);
                self.dead_letters
                    .send(self.kind, &properties, &data, &reason, None)
                    .await?;
                let held = records_held(self.kind, &properties, &data, self.max_message_bytes);
                self.counters.add_rejected(held as u64);
                set_aside(delivery_tag);
                return Ok(held);
            }
        }
        let decoded = {
            let _stage = tracing::debug_span!(target: "stage", "decode").entered();
            message::decode(self.kind, &properties, &data, self.max_message_bytes)
        };
        match decoded {
            Err(poison) => {
                self.dead_letters
                    .send_poison(self.kind, &properties, &data, &poison)
                    .await?;
                let held = poison_held(&poison);
                self.counters.add_rejected(held as u64);
                set_aside(delivery_tag);
                Ok(held)
            }
            Ok(decoded) => {
                // A few bad records of a good array (the decoder sets larger
                // shares aside whole): one dead letter each, one log line.
                for invalid in &decoded.invalid {
                    self.dead_letters
                        .send_quietly(
                            self.kind,
                            &properties,
                            invalid.json.as_bytes(),
                            &invalid.reason,
                            Some(invalid.index),
                            None,
                        )
                        .await?;
                }
                if let Some(first) = decoded.invalid.first() {
                    self.dead_letters.log(
                        self.kind,
                        &properties,
                        format_args!(
                            "dead-lettered {} of {} records of a message, one by one; the first, record {}: {}",
                            decoded.invalid.len(),
                            decoded.invalid.len() + decoded.records.len(),
                            first.index,
                            first.reason
                        ),
                    );
                }
                self.counters.add_rejected(decoded.invalid.len() as u64);
                if self.counters.has_metrics() {
                    let unversioned = decoded.records.iter().filter(|r| r.version().is_none()).count();
                    self.counters
                        .add_unversioned(unversioned as u64, properties.app_id().as_ref().map(|a| a.as_str()));
                }
                let records = decoded.records.len() + decoded.invalid.len();
                if let Some(messages) = self.backlog {
                    self.router
                        .size_for(u64::from(messages) * records.max(1) as u64, self.batch_size);
                }
                let ticket = Ticket::noting(delivery_tag, decoded.records.len(), done.clone(), properties, note);
                if let Some(in_hand) = flight.in_hand.as_mut().filter(|_| !decoded.records.is_empty()) {
                    in_hand.hold(delivery_tag, ticket.clone(), data, redelivered);
                }
                let route = async {
                    for record in decoded.records {
                        let Some(room) = self.room_for(&record, &ticket, flight).await? else {
                            break;
                        };
                        room.send(WorkItem {
                            record,
                            ticket: ticket.clone(),
                        });
                    }
                    Ok::<_, Error>(())
                };
                route.instrument(tracing::debug_span!(target: "stage", "route")).await?;
                Ok(records)
            }
        }
    }

    /// Room for `record` in its writer's inbox, waiting while the inbox is
    /// full; `None` when, waiting, the message went back to its queue (see
    /// [`ConsumerTask::hand_back`]).
    async fn room_for<'r>(
        &'r self,
        record: &Record,
        ticket: &Ticket,
        flight: &mut Flight,
    ) -> Result<Option<mpsc::Permit<'r, WorkItem>>> {
        loop {
            let due = flight.in_hand.as_ref().and_then(InHand::due);
            tokio::select! {
                room = self.router.reserve(record) => {
                    return room.map(Some).map_err(|_| Error::WriterStopped(self.kind));
                }
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.hand_back(flight).await?;
                    if ticket.is_released() {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// The records a message set aside whole held, each counted as rejected:
/// an array's length where it was read as one (over the limit, mostly
/// invalid), else one (not JSON, too large to read, not an array).
fn poison_held(poison: &message::Poison) -> usize {
    poison.counts().map_or(1, |(_, records)| records.max(1))
}

/// The records a message given up after too many deliveries held: it is
/// read for the count alone (it was never written, whatever it holds).
fn records_held(kind: RecordKind, properties: &lapin::BasicProperties, data: &[u8], max_bytes: usize) -> usize {
    match message::decode(kind, properties, data, max_bytes) {
        Ok(decoded) => (decoded.records.len() + decoded.invalid.len()).max(1),
        Err(poison) => poison_held(&poison),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_set_aside_whole_counts_every_record_it_held() {
        let props = message::properties(RecordKind::Customer, None);
        let too_many = format!("[{}]", vec!["{}"; message::MAX_RECORDS_PER_MESSAGE + 1].join(","));
        let poison = message::decode(RecordKind::Customer, &props, too_many.as_bytes(), usize::MAX).unwrap_err();
        assert_eq!(poison_held(&poison), message::MAX_RECORDS_PER_MESSAGE + 1);
        let not_json = message::decode(RecordKind::Customer, &props, b"{not json", usize::MAX).unwrap_err();
        assert_eq!(poison_held(&not_json), 1, "nothing to count: one");
        let rentals = message::properties(RecordKind::Rental, None);
        let good = message::encode(&[
            hpn_common::Record::Rental(hpn_common::Rental::new("P1", "C1")),
            hpn_common::Record::Rental(hpn_common::Rental::new("P1", "C2")),
        ]);
        assert_eq!(records_held(RecordKind::Rental, &rentals, &good, usize::MAX), 2);
    }
}
