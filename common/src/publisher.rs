//! Publishing with confirms: the one way this project puts a message on
//! RabbitMQ. Every publish is `mandatory` (an unroutable message comes back
//! instead of vanishing) and counts as delivered only once the broker has
//! confirmed it (for a durable queue: written it to disk).
//!
//! Waiting for each confirm before the next publish would cap a publisher at
//! one message per round trip, so [`ConfirmedPublisher`] keeps up to a window
//! of publishes in flight and awaits the oldest when the window is full.
//! [`publish_confirmed`] is the same with a window of one, for the rare
//! publish that must be confirmed before anything else happens (a dead
//! letter, before the original is acknowledged).

use crate::error::{Error, Result};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, PublisherConfirm};
use std::collections::VecDeque;
use tracing::Instrument;

const MANDATORY: BasicPublishOptions = BasicPublishOptions {
    mandatory: true,
    immediate: false,
};

/// A channel in confirm mode with a window of publishes awaiting confirm.
pub struct ConfirmedPublisher {
    channel: Channel,
    window: usize,
    in_flight: VecDeque<PublisherConfirm>,
    confirmed: u64,
}

impl ConfirmedPublisher {
    /// A new channel on `connection`, in confirm mode.
    pub async fn open(connection: &Connection, window: usize) -> Result<ConfirmedPublisher> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(ConfirmedPublisher {
            channel,
            window: window.max(1),
            in_flight: VecDeque::with_capacity(window.max(1)),
            confirmed: 0,
        })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// How many publishes, the oldest first, the broker has confirmed so far:
    /// confirms are awaited in publishing order, so these are the first ones.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// Publish; if the window is full, wait for the oldest confirm first.
    pub async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<()> {
        let confirm = self
            .channel
            .basic_publish(exchange.into(), routing_key.into(), MANDATORY, body, properties)
            .await?;
        self.in_flight.push_back(confirm);
        while self.in_flight.len() >= self.window {
            let oldest = self.in_flight.pop_front().expect("the window is not empty");
            check(oldest, exchange, routing_key).await?;
            self.confirmed += 1;
        }
        Ok(())
    }

    /// Wait until every publish so far is confirmed.
    pub async fn flush(&mut self) -> Result<()> {
        while let Some(confirm) = self.in_flight.pop_front() {
            check(confirm, "", "").await?;
            self.confirmed += 1;
        }
        Ok(())
    }

    /// Flush, then close the channel.
    pub async fn close(mut self) -> Result<()> {
        self.flush().await?;
        let _ = self.channel.close(200, "done".into()).await;
        Ok(())
    }
}

/// Publish one message on `channel` (in confirm mode) and wait for its confirm.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<()> {
    let confirm = channel
        .basic_publish(exchange.into(), routing_key.into(), MANDATORY, body, properties)
        .await?;
    check(confirm, exchange, routing_key).await
}

/// An ack is success; a nack, or a message returned as unroutable, is an
/// error that names where it was sent (when known).
async fn check(confirm: PublisherConfirm, exchange: &str, routing_key: &str) -> Result<()> {
    let confirmation = confirm
        .instrument(tracing::debug_span!(target: "stage", "confirm"))
        .await?;
    let to = if exchange.is_empty() && routing_key.is_empty() {
        String::new()
    } else {
        format!(" for exchange {exchange:?}, routing key {routing_key:?}")
    };
    if confirmation.is_nack() {
        return Err(Error::NotConfirmed(format!("refused a message{to}")));
    }
    if let Some(returned) = confirmation.take_message() {
        return Err(Error::Unroutable(format!(
            "could not route a message to {:?}: {}",
            returned.delivery.routing_key.as_str(),
            returned.reply_text
        )));
    }
    Ok(())
}
