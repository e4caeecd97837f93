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
//!
//! Queues come in two types ([`QueueType`]): classic queues live on one
//! broker and are the fastest there; quorum queues are replicated across a
//! cluster (Raft), survive the loss of a minority of nodes and count
//! deliveries themselves. A queue's type and arguments are fixed when it is
//! first declared: declaring it again with other ones fails
//! (`PRECONDITION_FAILED`), so every publisher declares exactly
//! [`Topology::queue_arguments`] (see `docs/message-format.md`).

use crate::record::RecordKind;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

/// The type of every queue in the topology.
/// Quorum is the default because it measured faster here as well as safer:
/// on one broker, importing from quorum queues ran 1.5× the rate of classic
/// version 2 queues at one record per message and 1.26× at a hundred
/// (`hpn-bench`, `findings.md`, "Queue types and prefetch"), and quorum
/// queues count deliveries themselves and dead-letter at least once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// One broker's queues (declared as version 2, the leaner storage).
    Classic,
    /// Replicated queues (Raft) with a native delivery count; on one broker,
    /// a queue of one member.
    #[default]
    Quorum,
}

impl QueueType {
    /// The declaration arguments that make a queue of this type.
    pub fn arguments(self) -> FieldTable {
        let mut args = FieldTable::default();
        match self {
            QueueType::Classic => args.insert("x-queue-version".into(), AMQPValue::LongLongInt(2)),
            QueueType::Quorum => args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into())),
        };
        args
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often a quorum queue delivers a message before the broker itself
/// dead-letters it (`x-delivery-limit`). A backstop: the importer sets a
/// message aside after its own `--max-attempts`, which may not exceed it.
/// It is part of the queue's declaration, so it cannot follow a per-run flag.
pub const QUORUM_DELIVERY_LIMIT: u32 = 20;

/// The names of everything in the topology, derived from one prefix so that
/// tests and demonstrations can run side by side with production, and the
/// type of its queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    queue_type: QueueType,
}

impl Topology {
    pub fn new(prefix: impl Into<String>, queue_type: QueueType) -> Self {
        Topology {
            prefix: prefix.into(),
            queue_type,
        }
    }

    pub fn queue_type(&self) -> QueueType {
        self.queue_type
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

    /// [`Topology::declare`], for a user that may only publish (the
    /// producer's least privilege: write on the records exchange, nothing
    /// to configure or read): when the broker refuses the declarations for
    /// want of permission, the topology is left to whoever may declare it
    /// (the importer, an operator). Nothing is lost by that: every publish
    /// is mandatory, so a message no queue takes comes back as an error.
    /// Returns whether the topology was declared.
    pub async fn declare_if_allowed(&self, connection: &Connection) -> crate::Result<bool> {
        match self.declare(connection).await {
            Ok(()) => Ok(true),
            Err(crate::Error::Broker(e)) if crate::broker::access_refused(&e) => {
                tracing::info!(
                    prefix = %self.prefix,
                    "not allowed to declare the exchanges and queues ({e}); publishing to them as they are"
                );
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Declare exchanges, queues and bindings; safe to call any number of
    /// times. Uses channels of its own on `connection`, since a refused
    /// declaration closes its channel.
    pub async fn declare(&self, connection: &Connection) -> crate::Result<()> {
        let mut channel = connection.create_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in [self.exchange(), self.dead_letter_exchange()] {
            channel
                .exchange_declare(exchange.into(), ExchangeKind::Direct, durable, FieldTable::default())
                .await?;
        }
        for kind in RecordKind::ALL {
            let key = self.routing_key(kind);
            let queues = [
                (self.queue(kind), self.exchange(), self.queue_arguments()),
                (
                    self.dead_letter_queue(kind),
                    self.dead_letter_exchange(),
                    self.dead_letter_queue_arguments(),
                ),
            ];
            for (queue, exchange, args) in queues {
                self.declare_queue(connection, &mut channel, &queue, args).await?;
                channel
                    .queue_bind(
                        queue.into(),
                        exchange.into(),
                        key.into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// Declare one queue. A classic queue created before we declared
    /// version 2 keeps version 1, and RabbitMQ refuses to declare it again
    /// with another version: that one is used as it is, with a warning
    /// (an operator converts it in place with a `queue-version` policy).
    /// Any other mismatch, a classic queue declared as quorum above all, is
    /// an error: the two types count deliveries differently.
    async fn declare_queue(
        &self,
        connection: &Connection,
        channel: &mut Channel,
        queue: &str,
        args: FieldTable,
    ) -> crate::Result<()> {
        let declared = channel
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), args.clone())
            .await;
        match declared {
            Err(e) if self.queue_type == QueueType::Classic && e.to_string().contains("'x-queue-version'") => {
                tracing::warn!(
                    queue,
                    "queue exists as a version 1 classic queue; using it as it is \
                     (a 'queue-version' policy of 2 converts it in place)"
                );
                *channel = connection.create_channel().await?;
                let mut older = FieldTable::default();
                for (key, value) in args.inner().iter().filter(|(k, _)| k.as_str() != "x-queue-version") {
                    older.insert(key.clone(), value.clone());
                }
                channel
                    .queue_declare(queue.into(), QueueDeclareOptions::durable(), older)
                    .await?;
                Ok(())
            }
            Err(e) if e.to_string().contains("inequivalent arg") => Err(crate::Error::Inequivalent {
                queue: queue.to_string(),
                queue_type: self.queue_type,
                source: e,
            }),
            other => Ok(other.map(drop)?),
        }
    }

    /// The arguments every record queue is declared with.
    ///
    /// Classic: version 2 (RabbitMQ 3.10 and later; older brokers ignore the
    /// argument) and the dead-letter exchange. Quorum: the type, the
    /// dead-letter exchange with at-least-once dead-lettering (the broker
    /// keeps a dead-lettered message until the dead-letter queue has
    /// confirmed it, which needs `x-overflow: reject-publish`), and the
    /// broker's delivery limit as a backstop.
    pub fn queue_arguments(&self) -> FieldTable {
        let mut args = self.dead_letter_queue_arguments();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange().into()),
        );
        if self.queue_type == QueueType::Quorum {
            args.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString("at-least-once".into()),
            );
            args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(i64::from(QUORUM_DELIVERY_LIMIT)),
            );
        }
        args
    }

    /// The arguments every dead-letter queue is declared with: its type.
    pub fn dead_letter_queue_arguments(&self) -> FieldTable {
        self.queue_type.arguments()
    }

    /// Messages ready in a queue (not counting those delivered and
    /// unacknowledged). For a quorum queue a zero may mean "unknown": see
    /// [`QueueCounts::maybe_unknown`].
    pub async fn ready_count(&self, channel: &Channel, queue: &str) -> lapin::Result<u32> {
        Ok(queue_counts(channel, queue).await?.ready)
    }

    /// Remove the whole topology, whatever its queues' type (tests and
    /// `hpn-importer reset` clean up with this). Returns the messages the
    /// queues held.
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<u32> {
        let mut deleted = 0;
        for name in self.all_queues() {
            deleted += channel.queue_delete(name.into(), QueueDeleteOptions::default()).await?;
        }
        for exchange in [self.exchange(), self.dead_letter_exchange()] {
            channel.exchange_delete(exchange.into(), Default::default()).await?;
        }
        Ok(deleted)
    }

    fn all_queues(&self) -> Vec<String> {
        RecordKind::ALL
            .into_iter()
            .flat_map(|k| [self.queue(k), self.dead_letter_queue(k)])
            .collect()
    }
}

/// What a passive `queue.declare` says of a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages ready (not counting those delivered and unacknowledged).
    pub ready: u32,
    /// Consumers subscribed.
    pub consumers: u32,
}

impl QueueCounts {
    /// Whether this may be RabbitMQ's stand-in for "the queue did not
    /// answer" rather than the queue's state. For a quorum queue the broker
    /// asks the queue's leader with a 250 ms time-out and, when that runs
    /// out or the leader is unreachable, replies 0 messages and 0 consumers
    /// (`rabbit_quorum_queue:stat/1`, RabbitMQ 3.8 to 4.x). A busy leader
    /// (a deep queue taking publishes and acknowledgements at full speed)
    /// does that, and a one-shot import that took the zero for "drained"
    /// stopped with most of its queue left (seen with 100,000 one-record
    /// messages). A caller that is itself subscribed knows the real answer
    /// has at least one consumer; such a caller should take this as "ask
    /// again", not "empty".
    pub fn maybe_unknown(&self) -> bool {
        self.ready == 0 && self.consumers == 0
    }

    /// The ready messages, unless the answer may be that stand-in: for
    /// callers that are not subscribed and would rather know nothing.
    pub fn known_ready(&self) -> Option<u32> {
        (!self.maybe_unknown()).then_some(self.ready)
    }
}

/// Ask the broker how many messages and consumers `queue` has (a passive
/// declare: it fails if the queue does not exist, and creates nothing).
pub async fn queue_counts(channel: &Channel, queue: &str) -> lapin::Result<QueueCounts> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    Ok(QueueCounts {
        ready: declared.message_count(),
        consumers: declared.consumer_count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_prefix() {
        let t = Topology::new("hp_norton", QueueType::Classic);
        assert_eq!(t.exchange(), "hp_norton.records");
        assert_eq!(t.dead_letter_exchange(), "hp_norton.dead-letter");
        assert_eq!(t.queue(RecordKind::Product), "hp_norton.products");
        assert_eq!(t.dead_letter_queue(RecordKind::Rental), "hp_norton.rentals.dead-letter");
        assert_eq!(t.routing_key(RecordKind::Customer), "customer");
        assert_eq!(t.all_queues().len(), 6);
    }

    #[test]
    fn quorum_queues_declare_their_type_and_at_least_once_dead_lettering() {
        let quorum = Topology::new("q", QueueType::Quorum).queue_arguments();
        let text = |key: &str| match quorum.inner().get(key) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(text("x-queue-type"), "quorum");
        assert_eq!(text("x-dead-letter-strategy"), "at-least-once");
        assert_eq!(text("x-overflow"), "reject-publish");
        assert_eq!(text("x-dead-letter-exchange"), "q.dead-letter");
        let classic = Topology::new("c", QueueType::Classic).queue_arguments();
        assert_eq!(classic.inner().get("x-queue-version"), Some(&AMQPValue::LongLongInt(2)));
        assert!(!classic.inner().contains_key("x-queue-type"));
    }
}
