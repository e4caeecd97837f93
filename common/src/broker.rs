//! Connecting to RabbitMQ.
//!
//! One place that names our connections (they show up by name in the
//! management UI and `rabbitmqctl list_connections`), sets a 10 s heartbeat so
//! a dead peer is noticed in seconds rather than at the TCP timeout, and
//! walks a list of addresses: the nodes of a cluster, given as one
//! comma-separated `HPN_AMQP_URL`. Each connect tries them in order and
//! keeps the first that answers, so when the node in use is lost, the
//! caller's reconnect (the importer's service loop) lands on the next one
//! that is up. Which node a client is connected to does not matter for
//! quorum queues: any node serves any queue, forwarding to its leader.
//!
//! TLS is asked for as RabbitMQ's own URI convention has it: `amqps://`,
//! and the files in the query (`cacertfile`, `certfile`, `keyfile`, the
//! names RabbitMQ's Erlang client and `rabbitmqadmin` read), so one setting,
//! or one secret file, carries everything a connection needs, as the
//! MongoDB connection string does with `tlsCAFile`. The CA file is trusted
//! beside the system's roots (set `SSL_CERT_FILE` to the same file to trust
//! it alone); a client certificate and key make the connection mutual TLS.

use crate::address::{addresses, redacted};
use lapin::options::BasicConsumeOptions;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use std::time::Duration;

/// The query parameters that name TLS files, as RabbitMQ's URI spec names them.
const TLS_FILES: [&str; 3] = ["cacertfile", "certfile", "keyfile"];

/// The heartbeat asked for unless the URL names one (`heartbeat=`): a
/// connection whose peer is silent for twice this long is taken as lost.
const HEARTBEAT_SECONDS: u16 = 10;

/// How long one address may take to accept a connection before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long closing may wait for the broker's answer: a connection the
/// broker has dropped (a node gone, a partition) may never give one.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Close `connection`, waiting at most [`CLOSE_TIMEOUT`] for the broker.
pub async fn close(connection: &Connection, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await;
}

/// One address: the URL lapin is given (the TLS files taken out of its
/// query, the heartbeat added when it names none) and the TLS settings read
/// from those files.
fn address_and_tls(url: &str) -> lapin::Result<(String, OwnedTLSConfig)> {
    let invalid = |message: String| io_error(std::io::ErrorKind::InvalidInput, message);
    // The settings checked it already; a library caller may not have, and
    // lapin's own words would print the whole address, password and all.
    crate::address::check_amqp_urls(url).map_err(invalid)?;
    let parsed = url::Url::parse(url).map_err(|e| invalid(format!("RabbitMQ address {}: {e}", redacted(url))))?;
    let (files, mut rest): (Vec<_>, Vec<_>) = parsed
        .query_pairs()
        .into_owned()
        .partition(|(key, _)| TLS_FILES.contains(&key.as_str()));
    // A dead peer noticed in seconds, not at the TCP time-out: a broker
    // killed with its network (a container, a node) sends no FIN.
    if !rest.iter().any(|(key, _)| key == "heartbeat") {
        rest.push(("heartbeat".into(), HEARTBEAT_SECONDS.to_string()));
    }
    let with_rest = |mut url: url::Url, rest: Vec<(String, String)>| {
        url.query_pairs_mut().clear().extend_pairs(rest);
        url.to_string()
    };
    if files.is_empty() {
        return Ok((with_rest(parsed, rest), OwnedTLSConfig::default()));
    }
    if parsed.scheme() != "amqps" {
        return Err(invalid(format!(
            "RabbitMQ address {}: TLS files are given but the scheme is {}://, not amqps://",
            redacted(url),
            parsed.scheme()
        )));
    }
    let read = |key: &str| -> lapin::Result<Option<Vec<u8>>> {
        files
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, path)| {
                std::fs::read(path)
                    .map_err(|e| io_error(e.kind(), format!("RabbitMQ TLS: cannot read {key} {path}: {e}")))
            })
            .transpose()
    };
    let cert_chain = read("cacertfile")?
        .map(|pem| String::from_utf8(pem).map_err(|_| invalid("RabbitMQ TLS: cacertfile is not PEM text".into())))
        .transpose()?;
    let identity = match (read("certfile")?, read("keyfile")?) {
        (Some(pem), Some(key)) => Some(OwnedIdentity::PKCS8 { pem, key }),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "RabbitMQ TLS: certfile and keyfile go together (a client certificate and its key)".into(),
            ))
        }
    };
    Ok((with_rest(parsed, rest), OwnedTLSConfig { identity, cert_chain }))
}

/// Whether a failed connect is one that trying again cannot mend: the
/// broker's certificate not trusted or not for this host, our certificate
/// refused, the login refused, the TLS settings unreadable. The importer's
/// service stops on these rather than retrying for ever.
pub fn refused_for_good(error: &lapin::Error) -> bool {
    if access_refused(error) {
        return true;
    }
    let text = error.to_string();
    [
        "certificate",
        "CertificateRequired",
        "HandshakeFailure",
        "ACCESS_REFUSED",
        "Login was refused",
        "RabbitMQ TLS:",
        "RabbitMQ address",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// Whether the broker refused an operation for want of permission (AMQP
/// 403, `ACCESS_REFUSED`): the user's configure, write or read patterns
/// do not cover the resource.
pub fn access_refused(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 403)
}

/// Open a named connection to the first address of `urls` (one AMQP URL,
/// or several separated by commas) that answers.
pub async fn connect(urls: &str, name: &str) -> lapin::Result<Connection> {
    let addresses = addresses(urls);
    let mut last_error = None;
    for (i, url) in addresses.iter().enumerate() {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let (address, tls) = address_and_tls(url)?;
        let connecting = async {
            Connection::connect_with_config(&address, properties, tls, lapin::runtime::default_runtime()?).await
        };
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, connecting).await;
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
            Ok(Err(e)) if address.starts_with("amqps://") && cut_short(&e).is_some() => io_error(
                std::io::ErrorKind::ConnectionReset,
                format!(
                    "{} (the TLS handshake or the login was cut short: a broker that requires client \
                     certificates does this to a client without one; give certfile and keyfile)",
                    cut_short(&e).expect("guarded")
                ),
            ),
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

/// The I/O error of a connection the peer closed under us (reset, or
/// ended mid-frame).
fn cut_short(error: &lapin::Error) -> Option<&std::io::Error> {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    match error.kind() {
        lapin::ErrorKind::IOError(e) if matches!(e.kind(), ConnectionReset | UnexpectedEof | BrokenPipe) => Some(e),
        _ => None,
    }
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

    #[test]
    fn tls_files_come_out_of_the_query_and_into_the_tls_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let (ca, cert, key) = (file("ca.pem", "CA"), file("c.pem", "CERT"), file("k.pem", "KEY"));
        let url = format!("amqps://u:p@h:5671/%2f?heartbeat=5&cacertfile={ca}&certfile={cert}&keyfile={key}");
        let (address, tls) = address_and_tls(&url).unwrap();
        assert_eq!(
            address, "amqps://u:p@h:5671/%2f?heartbeat=5",
            "lapin gets the rest of the query"
        );
        assert_eq!(tls.cert_chain.as_deref(), Some("CA"));
        assert_eq!(
            tls.identity,
            Some(OwnedIdentity::PKCS8 {
                pem: b"CERT".to_vec(),
                key: b"KEY".to_vec()
            })
        );
        let (address, tls) = address_and_tls(&format!("amqps://h/%2f?cacertfile={ca}")).unwrap();
        assert_eq!(address, "amqps://h/%2f?heartbeat=10", "a heartbeat unless one is named");
        assert!(tls.identity.is_none());
        let (plain, tls) = address_and_tls("amqp://u:p@h:5672/%2f").unwrap();
        assert_eq!(
            plain, "amqp://u:p@h:5672/%2f?heartbeat=10",
            "a URL without TLS files gets the heartbeat only"
        );
        assert!(tls.cert_chain.is_none() && tls.identity.is_none());

        let refused = |url: String, says: &str| {
            let error = address_and_tls(&url).unwrap_err();
            assert!(error.to_string().contains(says), "{url}: {error}");
            assert!(refused_for_good(&error), "{error}");
            assert!(!error.to_string().contains(":p@"), "no password in {error}");
        };
        refused(format!("amqp://u:p@h/%2f?cacertfile={ca}"), "not amqps://");
        refused(format!("amqps://u:p@h/%2f?certfile={cert}"), "go together");
        refused(
            "amqps://u:p@h/%2f?cacertfile=/no/such/ca.pem".into(),
            "cannot read cacertfile /no/such/ca.pem",
        );
    }

    #[tokio::test]
    async fn an_empty_list_is_an_error_that_says_so() {
        let empty = connect(" , ", "test").await.unwrap_err();
        assert!(empty.to_string().contains("no broker address"), "{empty}");
    }
}
