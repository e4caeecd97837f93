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
        let confirm = match self
            .channel
            .basic_publish(exchange.into(), routing_key.into(), MANDATORY, body, properties)
            .await
        {
            Ok(confirm) => confirm,
            Err(e) => return Err(self.why_closed(e).await),
        };
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

    /// Why a publish failed. Once the broker has closed the channel over
    /// one message, the next publish fails only with "channel closed"; the
    /// broker's reason went to the confirms still in flight, so those are
    /// settled first (the ones confirmed before it still count).
    async fn why_closed(&mut self, error: lapin::Error) -> Error {
        while let Some(confirm) = self.in_flight.pop_front() {
            match tokio::time::timeout(WHY_CLOSED_WAIT, check(confirm, "", "")).await {
                Ok(Ok(())) => self.confirmed += 1,
                Ok(Err(reason)) => return reason,
                Err(_) => break,
            }
        }
        refusal(error)
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
        .await
        .map_err(refusal)?;
    check(confirm, exchange, routing_key).await
}

/// How long a closed channel's confirms may take to say why it closed:
/// lapin fails them as soon as the close arrives, so this only bounds a
/// connection that is gone without a word.
const WHY_CLOSED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A publish's lapin error as ours: the broker closing the channel with
/// `406 PRECONDITION_FAILED` refused the message itself (most often: a body
/// over its `max_message_size`), which no retry mends; anything else is the
/// broker or the connection failing, which one may.
fn refusal(error: lapin::Error) -> Error {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) if e.get_id() == PRECONDITION_FAILED => {
            let mut reason = e.get_message().to_string();
            if reason.contains("larger than configured max size") {
                reason.push_str(
                    " (HPN_MAX_MESSAGE_BYTES, the producer's --max-message-bytes, must not be above the \
                     broker's max_message_size)",
                );
            }
            Error::MessageRefused(reason)
        }
        _ => Error::Broker(error),
    }
}

/// AMQP's reply code for a precondition the message did not meet.
const PRECONDITION_FAILED: u16 = 406;

/// An ack is success; a nack, or a message returned as unroutable, is an
/// error that names where it was sent (when known).
async fn check(confirm: PublisherConfirm, exchange: &str, routing_key: &str) -> Result<()> {
    let confirmation = confirm
        .instrument(tracing::debug_span!(target: "stage", "confirm"))
        .await
        .map_err(refusal)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};

    fn closed_with(code: AMQPSoftError, text: &str) -> lapin::Error {
        lapin::ErrorKind::ProtocolError(AMQPError::new(AMQPErrorKind::Soft(code), text.into())).into()
    }

    #[test]
    fn a_message_over_the_brokers_limit_is_refused_for_good_in_its_words() {
        let error = refusal(closed_with(
            AMQPSoftError::PRECONDITIONFAILED,
            "PRECONDITION_FAILED - message size 9642281 is larger than configured max size 4194304",
        ));
        let Error::MessageRefused(reason) = &error else {
            panic!("not a refusal: {error}");
        };
        assert!(reason.contains("message size 9642281"), "{reason}");
        assert!(reason.contains("HPN_MAX_MESSAGE_BYTES"), "{reason}");
        assert_eq!(error.origin(), crate::error::Origin::Broker);
    }

    #[test]
    fn other_channel_closes_stay_broker_failures() {
        // An exchange deleted under the publisher: declaring it again mends that.
        let error = refusal(closed_with(AMQPSoftError::NOTFOUND, "NOT_FOUND - no exchange"));
        assert!(matches!(error, Error::Broker(_)), "{error}");
    }
}
