//! Connecting to RabbitMQ.
//!
//! One place that names our connections (they show up by name in the
//! management UI and `rabbitmqctl list_connections`), sets the heartbeat so
//! a dead peer is noticed in seconds rather than at the TCP timeout, and
//! walks a list of addresses: the nodes of a cluster, given as one
//! comma-separated `HPN_AMQP_URL`. Each connect tries them in order and
//! keeps the first that answers, so when the node in use is lost, the
//! caller's reconnect (the importer's service loop) lands on the next one
//! that is up. Which node a client is connected to does not matter for
//! quorum queues: any node serves any queue, forwarding to its leader.

use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use std::time::Duration;

/// How long one address may take to accept a connection before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses in a comma-separated list, blanks dropped.
pub fn addresses(urls: &str) -> Vec<&str> {
    urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

/// An AMQP URL without its password, for logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Open a named connection to the first address of `urls` (one AMQP URL,
/// or several separated by commas) that answers.
pub async fn connect(urls: &str, name: &str) -> lapin::Result<Connection> {
    let addresses = addresses(urls);
    let mut last_error = None;
    for (i, url) in addresses.iter().enumerate() {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await;
        let error = match attempt {
            Ok(Ok(connection)) => {
                // News only when an earlier address did not answer.
                if i == 0 {
                    tracing::debug!(broker = %redacted(url), name, "connected to RabbitMQ");
                } else {
                    tracing::info!(broker = %redacted(url), position = i + 1, name, "connected to a later RabbitMQ address");
                }
                return Ok(connection);
            }
            Ok(Err(e)) => e,
            Err(_) => io_error(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {CONNECT_TIMEOUT:?}"),
            ),
        };
        if addresses.len() > 1 {
            tracing::warn!(broker = %redacted(url), error = %error, "broker address not answering, trying the next");
        }
        last_error = Some(error);
    }
    Err(last_error.unwrap_or_else(|| {
        io_error(
            std::io::ErrorKind::InvalidInput,
            format!("no broker address in {urls:?}"),
        )
    }))
}

/// Subscribe to `queue` on `channel` as every consumer here does: a tag
/// the broker names, and manual acknowledgements.
pub async fn subscribe(channel: &Channel, queue: &str) -> lapin::Result<Consumer> {
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

fn io_error(kind: std::io::ErrorKind, message: String) -> lapin::Error {
    lapin::ErrorKind::IOError(std::sync::Arc::new(std::io::Error::new(kind, message))).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_splits_on_commas_and_logs_without_passwords() {
        assert_eq!(
            addresses("amqp://a:1/%2f, amqp://b:2/%2f,,"),
            vec!["amqp://a:1/%2f", "amqp://b:2/%2f"]
        );
        assert_eq!(
            redacted("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redacted("amqp://host:5672"), "amqp://host:5672");
    }

    #[tokio::test]
    async fn an_empty_list_is_an_error_that_says_so() {
        let empty = connect(" , ", "test").await.unwrap_err();
        assert!(empty.to_string().contains("no broker address"), "{empty}");
    }
}
