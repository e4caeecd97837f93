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
//!
//! What is set aside is logged once per message (with the counts, for a
//! message some of whose records were set aside) and at most
//! [`LOG_LINES_PER_SECOND`] lines a second for the whole importer; the lines
//! held back are counted in the next one. A publisher sending garbage fills
//! the dead-letter queue, where an operator can read it, not the log.

use crate::error::Result;
use hpn_common::message::{self, header};
use hpn_common::publisher::publish_confirmed;
use hpn_common::{RecordKind, Topology};
use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Channel, Connection};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// Dead-letter log lines a second, at most, for the whole importer.
pub const LOG_LINES_PER_SECOND: u32 = 10;

/// A channel in confirm mode for dead letters, shared by a run's tasks.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    channel: Channel,
    topology: Topology,
    log: Arc<Mutex<LogLimit>>,
}

impl DeadLetters {
    /// Close the dead-letter channel (a clean shutdown): a channel still
    /// open when its connection closes makes lapin log an error.
    pub async fn close(&self) {
        let _ = self.channel.close(200, "done".into()).await;
    }
}

/// At most [`LOG_LINES_PER_SECOND`] lines in any one-second window, and a
/// count of those held back.
#[derive(Debug)]
struct LogLimit {
    window: Instant,
    lines: u32,
    held_back: u64,
}

impl LogLimit {
    /// Whether a line may go out now; if so, how many were held back before it.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.lines = 0;
        }
        if self.lines >= LOG_LINES_PER_SECOND {
            self.held_back += 1;
            return None;
        }
        self.lines += 1;
        Some(std::mem::take(&mut self.held_back))
    }
}

impl DeadLetters {
    pub async fn open(connection: &Connection, topology: Topology) -> Result<DeadLetters> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(DeadLetters {
            channel,
            topology,
            log: Arc::new(Mutex::new(LogLimit {
                window: Instant::now(),
                lines: 0,
                held_back: 0,
            })),
        })
    }

    /// Log what was set aside, within the rate limit.
    pub fn log(&self, kind: RecordKind, original: &BasicProperties, what: std::fmt::Arguments<'_>) {
        let admitted = self.log.lock().map(|mut l| l.admit(Instant::now())).unwrap_or(Some(0));
        if let Some(held_back) = admitted {
            let queue = self.topology.queue(kind);
            let source = message::header_str(original, header::SOURCE_FILE)
                .zip(message::header_i64(original, header::SOURCE_LINE))
                .map(|(f, l)| format!(" ({f}:{l})"))
                .unwrap_or_default();
            let held = match held_back {
                0 => String::new(),
                n => format!(" [{n} more dead-letter lines held back]"),
            };
            warn!(%queue, "{what}{source}{held}");
        }
    }

    /// Publish `body` to the dead-letter queue of `kind` and wait until the
    /// broker has it, and log it (within the rate limit).
    pub async fn send(
        &self,
        kind: RecordKind,
        original: &BasicProperties,
        body: &[u8],
        reason: &str,
        record_index: Option<usize>,
    ) -> Result<()> {
        self.send_and_log(kind, original, body, reason, record_index, None)
            .await
    }

    /// [`DeadLetters::send`] for a whole message that cannot be used, with
    /// its record counts in the headers when it was refused for its records.
    pub async fn send_poison(
        &self,
        kind: RecordKind,
        original: &BasicProperties,
        body: &[u8],
        poison: &message::Poison,
    ) -> Result<()> {
        self.send_and_log(kind, original, body, &poison.to_string(), None, poison.counts())
            .await
    }

    async fn send_and_log(
        &self,
        kind: RecordKind,
        original: &BasicProperties,
        body: &[u8],
        reason: &str,
        record_index: Option<usize>,
        counts: Option<(usize, usize)>,
    ) -> Result<()> {
        self.send_quietly(kind, original, body, reason, record_index, counts)
            .await?;
        self.log(kind, original, format_args!("dead-lettered: {reason}"));
        Ok(())
    }

    /// Publish a dead letter without logging it: the caller logs once for
    /// the message it came from.
    pub async fn send_quietly(
        &self,
        kind: RecordKind,
        original: &BasicProperties,
        body: &[u8],
        reason: &str,
        record_index: Option<usize>,
        counts: Option<(usize, usize)>,
    ) -> Result<()> {
        let queue = self.topology.queue(kind);
        let properties = message::dead_letter_properties(original, &queue, reason, record_index, counts);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_takes_ten_lines_a_second_and_counts_the_rest() {
        let start = Instant::now();
        let mut limit = LogLimit {
            window: start,
            lines: 0,
            held_back: 0,
        };
        for _ in 0..LOG_LINES_PER_SECOND {
            assert_eq!(limit.admit(start), Some(0));
        }
        for _ in 0..500 {
            assert_eq!(limit.admit(start + Duration::from_millis(900)), None);
        }
        assert_eq!(
            limit.admit(start + Duration::from_secs(1)),
            Some(500),
            "the next line says how many were held back"
        );
        assert_eq!(limit.admit(start + Duration::from_secs(1)), Some(0));
    }
}
