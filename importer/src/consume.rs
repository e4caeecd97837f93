//! Consumers: one per channel, each taking deliveries from one queue.
//!
//! For every delivery the consumer decodes the body (see
//! `hpn_common::message`), sends what cannot be used to the dead-letter
//! queue with the reason, and routes each good record to the writer that
//! owns its key, together with the delivery's ticket. Acknowledgements come
//! back from the writers through the ticket and go out in order through the
//! [`AckTracker`]. The consumer's prefetch bounds how many deliveries are in
//! hand, and the writers' bounded inboxes push back on the consumer when the
//! database is slower than the broker: memory stays flat however deep the
//! queue.
//!
//! A one-shot consumer stops when its queue is empty: after `idle` with no
//! delivery it asks the broker how many messages are ready; at zero it
//! cancels its subscription, finishes what is in hand and returns. A
//! long-running consumer stops when told to shut down, the same way.

use crate::ack::{AckTracker, Ticket};
use crate::counters::Counters;
use crate::dead_letter::DeadLetters;
use crate::partition::Router;
use crate::write::WorkItem;
use futures::StreamExt;
use hpn_common::message;
use hpn_common::{Error, RecordKind, Result, Topology};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// When a consumer stops.
#[derive(Clone, Debug)]
pub enum StopWhen {
    /// When the queue has been idle this long and then found empty.
    Drained { idle: Duration },
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
    pub prefetch: u16,
    pub max_message_bytes: usize,
    pub stop: StopWhen,
}

impl ConsumerTask {
    pub async fn run(self) -> Result<()> {
        let queue = self.topology.queue(self.kind);
        self.channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = self
            .channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer_tag = consumer.tag();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut tracker = AckTracker::new();
        let mut subscribed = true;
        let mut stream_open = true;
        let (idle, shutdown) = match &self.stop {
            StopWhen::Drained { idle } => (*idle, CancellationToken::new()),
            StopWhen::Shutdown(token) => (Duration::from_secs(3600), token.clone()),
        };
        let drain = matches!(self.stop, StopWhen::Drained { .. });
        let mut idle_deadline = Instant::now() + idle;

        while stream_open || !tracker.is_empty() {
            tokio::select! {
                biased;
                Some(tag) = done_rx.recv() => {
                    // A written batch completes many deliveries at once: take
                    // every completion already waiting, then send one ack.
                    let mut ack = tracker.completed(tag);
                    while let Ok(tag) = done_rx.try_recv() {
                        ack = tracker.completed(tag).or(ack);
                    }
                    if let Some(up_to) = ack {
                        self.channel
                            .basic_ack(up_to, BasicAckOptions { multiple: true })
                            .instrument(tracing::debug_span!(target: "stage", "ack"))
                            .await?;
                    }
                }
                next = consumer.next().instrument(tracing::debug_span!(target: "stage", "broker_to_consumer")), if stream_open => match next {
                    None => stream_open = false,
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(delivery)) => {
                        idle_deadline = Instant::now() + idle;
                        tracker.delivered(delivery.delivery_tag);
                        self.handle(delivery, &done_tx).await?;
                    }
                },
                _ = shutdown.cancelled(), if subscribed => {
                    self.channel.basic_cancel(consumer_tag.clone(), BasicCancelOptions::default()).await?;
                    subscribed = false;
                }
                _ = tokio::time::sleep_until(idle_deadline), if drain && subscribed => {
                    if self.topology.ready_count(&self.channel, &queue).await? == 0 {
                        self.channel.basic_cancel(consumer_tag.clone(), BasicCancelOptions::default()).await?;
                        subscribed = false;
                    } else {
                        idle_deadline = Instant::now() + idle;
                    }
                }
            }
        }
        let _ = self.channel.close(200, "done".into()).await;
        Ok(())
    }

    /// Decode one delivery; dead-letter what cannot be used; route the rest.
    async fn handle(&self, delivery: Delivery, done: &mpsc::UnboundedSender<u64>) -> Result<()> {
        let Delivery {
            delivery_tag,
            properties,
            data,
            ..
        } = delivery;
        let decoded = {
            let _stage = tracing::debug_span!(target: "stage", "decode").entered();
            message::decode(self.kind, &properties, &data, self.max_message_bytes)
        };
        match decoded {
            Err(poison) => {
                self.dead_letters
                    .send(self.kind, &properties, &data, &poison.to_string(), None)
                    .await?;
                self.counters.add_rejected(1);
                let _ = done.send(delivery_tag);
            }
            Ok(decoded) => {
                for invalid in &decoded.invalid {
                    self.dead_letters
                        .send(
                            self.kind,
                            &properties,
                            invalid.json.as_bytes(),
                            &invalid.reason,
                            Some(invalid.index),
                        )
                        .await?;
                }
                self.counters.add_rejected(decoded.invalid.len() as u64);
                let ticket = Ticket::new(delivery_tag, decoded.records.len(), done.clone(), properties);
                let route = async {
                    for record in decoded.records {
                        let item = WorkItem {
                            record,
                            ticket: ticket.clone(),
                        };
                        if self.router.send(item).await.is_err() {
                            return Err(Error::Task(format!("the {} writer stopped", self.kind)));
                        }
                    }
                    Ok(())
                };
                route.instrument(tracing::debug_span!(target: "stage", "route")).await?;
            }
        }
        Ok(())
    }
}
