//! Sending refused messages and records to the dead-letter queue of their
//! kind, with the reason in a header; and putting redelivered messages back
//! on their queue with a count of failed deliveries (see `attempts`).
//!
//! RabbitMQ can dead-letter a rejected message by itself, but it records
//! only "rejected", not why; an operator needs the why. So the importer
//! publishes the refused body to the dead-letter exchange itself, with the
//! original properties plus `x-hpn-error`, waits for the broker's confirm,
//! and only then acknowledges the original. A crash in between leaves the
//! original in its queue to be refused again: a possible duplicate in the
//! dead-letter queue, never a loss.

use crate::error::Result;
use hpn_common::message::{self, header};
use hpn_common::publisher::publish_confirmed;
use hpn_common::{RecordKind, Topology};
use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Channel, Connection};
use tracing::warn;

/// A channel in confirm mode for dead letters, shared by a run's tasks.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    channel: Channel,
    topology: Topology,
}

impl DeadLetters {
    pub async fn open(connection: &Connection, topology: Topology) -> Result<DeadLetters> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(DeadLetters { channel, topology })
    }

    /// Publish `body` to the dead-letter queue of `kind` and wait until the
    /// broker has it.
    pub async fn send(
        &self,
        kind: RecordKind,
        original: &BasicProperties,
        body: &[u8],
        reason: &str,
        record_index: Option<usize>,
    ) -> Result<()> {
        let queue = self.topology.queue(kind);
        let source = message::header_str(original, header::SOURCE_FILE)
            .zip(message::header_i64(original, header::SOURCE_LINE))
            .map(|(f, l)| format!(" ({f}:{l})"))
            .unwrap_or_default();
        warn!(%queue, record_index, "dead-lettered{source}: {reason}");
        let properties = message::dead_letter_properties(original, &queue, reason, record_index);
        self.publish(self.topology.dead_letter_exchange(), kind, body, properties)
            .await
    }

    /// Put a redelivered message back on its own queue, counting `failed`
    /// failed deliveries (see `attempts`), and wait until the broker has it.
    pub async fn retry(&self, kind: RecordKind, original: &BasicProperties, body: &[u8], failed: u32) -> Result<()> {
        let properties = message::retry_properties(original, failed);
        self.publish(self.topology.exchange(), kind, body, properties).await
    }

    async fn publish(
        &self,
        exchange: String,
        kind: RecordKind,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<()> {
        publish_confirmed(
            &self.channel,
            &exchange,
            self.topology.routing_key(kind),
            body,
            properties,
        )
        .await?;
        Ok(())
    }
}
