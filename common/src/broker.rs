//! Connecting to RabbitMQ.
//!
//! One place that names our connections (they show up by name in the
//! management UI and `rabbitmqctl list_connections`) and sets the heartbeat,
//! so a dead peer is noticed in seconds rather than at the TCP timeout.

use lapin::{Connection, ConnectionProperties};

/// Open a named connection to the broker.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, properties).await
}
