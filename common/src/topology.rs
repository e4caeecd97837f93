//! Queue topology: the exchanges, queues and bindings both sides declare.
//!
//! Producer and importer each declare the whole topology before they touch
//! it. Declaring is idempotent in AMQP (the same name with the same settings
//! is a no-op), so whichever starts first creates it and neither depends on
//! the other having run. Upstream systems that publish to us only need the
//! exchange name and routing keys (see `docs/message-format.md`).
//!
//! ```text
//!                       routing key = kind
//!  publishers ──► {prefix}.records (direct) ──► {prefix}.customers ─┐
//!                                            ──► {prefix}.products  ├─► importer
//!                                            ──► {prefix}.rentals  ─┘
//!  importer (refused message, with reason) ──► {prefix}.dead-letter (direct)
//!        ──► {prefix}.customers.dead-letter / .products.dead-letter / .rentals.dead-letter
//! ```
//!
//! Every queue also names the dead-letter exchange in `x-dead-letter-exchange`,
//! so a message the broker itself discards (rejected without requeue, or
//! expired by an operator's policy) lands in the same place.

use crate::record::RecordKind;
use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// The names of everything in the topology, derived from one prefix so that
/// tests and demonstrations can run side by side with production.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Topology { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The exchange publishers send records to.
    pub fn exchange(&self) -> String {
        format!("{}.records", self.prefix)
    }

    /// The exchange refused messages go to.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    /// The routing key of a kind, on both exchanges.
    pub fn routing_key(&self, kind: RecordKind) -> &'static str {
        kind.as_str()
    }

    pub fn queue(&self, kind: RecordKind) -> String {
        format!("{}.{}", self.prefix, kind.collection())
    }

    pub fn dead_letter_queue(&self, kind: RecordKind) -> String {
        format!("{}.{}.dead-letter", self.prefix, kind.collection())
    }

    /// Declare exchanges, queues and bindings; safe to call any number of times.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        for kind in RecordKind::ALL {
            let key = self.routing_key(kind);
            let mut args = FieldTable::default();
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.dead_letter_exchange().into()),
            );
            channel
                .queue_declare(self.queue(kind).into(), QueueDeclareOptions::durable(), args)
                .await?;
            channel
                .queue_bind(
                    self.queue(kind).into(),
                    self.exchange().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            channel
                .queue_declare(
                    self.dead_letter_queue(kind).into(),
                    QueueDeclareOptions::durable(),
                    FieldTable::default(),
                )
                .await?;
            channel
                .queue_bind(
                    self.dead_letter_queue(kind).into(),
                    self.dead_letter_exchange().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Messages ready in a queue (not counting those delivered and unacknowledged).
    pub async fn ready_count(&self, channel: &Channel, queue: &str) -> lapin::Result<u32> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        Ok(channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await?
            .message_count())
    }

    /// Empty every queue of the topology, dead-letter queues included.
    pub async fn purge(&self, channel: &Channel) -> lapin::Result<u32> {
        let mut purged = 0;
        for name in self.all_queues() {
            purged += channel.queue_purge(name.into(), QueuePurgeOptions::default()).await?;
        }
        Ok(purged)
    }

    /// Remove the whole topology (tests and demonstrations clean up with this).
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        for name in self.all_queues() {
            channel.queue_delete(name.into(), QueueDeleteOptions::default()).await?;
        }
        for exchange in [self.exchange(), self.dead_letter_exchange()] {
            channel.exchange_delete(exchange.into(), Default::default()).await?;
        }
        Ok(())
    }

    fn all_queues(&self) -> Vec<String> {
        RecordKind::ALL
            .into_iter()
            .flat_map(|k| [self.queue(k), self.dead_letter_queue(k)])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_prefix() {
        let t = Topology::new("hp_norton");
        assert_eq!(t.exchange(), "hp_norton.records");
        assert_eq!(t.dead_letter_exchange(), "hp_norton.dead-letter");
        assert_eq!(t.queue(RecordKind::Product), "hp_norton.products");
        assert_eq!(t.dead_letter_queue(RecordKind::Rental), "hp_norton.rentals.dead-letter");
        assert_eq!(t.routing_key(RecordKind::Customer), "customer");
        assert_eq!(t.all_queues().len(), 6);
    }
}
