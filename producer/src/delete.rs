//! `hpn-producer delete`: the deletes of keys, published like records.
//!
//! A delete is a record of its kind (`docs/message-format.md`, *Deletes*),
//! so it is versioned by the same clock as `publish`: above every record
//! this machine published before it, below every one it publishes after.
//! Whatever order the importer's consumers then write in, a key deleted
//! after its last publish ends deleted, and a key published again after
//! its delete comes back. The keys are checked before anything is sent: one
//! malformed key refuses the whole command, naming where it was.

use crate::version::{FileVersions, VersionClock};
use hpn_common::message::{self, Origin};
use hpn_common::publisher::ConfirmedPublisher;
use hpn_common::record::Deletion;
use hpn_common::{broker, BrokerSettings, Error, Record, RecordKind, Result};
use std::path::Path;
use std::time::Duration;

/// Deletes packed into one message.
const DELETES_PER_MESSAGE: usize = 1000;

/// Where a key was given, for the message that refuses it.
pub enum KeySource<'a> {
    Argument,
    File(&'a Path, u64),
}

/// The keys to delete, checked: from the command line, then from a file of
/// one key per line (blank lines and `#` comments skipped). A rental's key
/// is its `product_id`, a space, its `user_id` (as its `_id` in the store).
pub fn read_keys(kind: RecordKind, arguments: &[String], file: Option<&Path>) -> Result<Vec<Deletion>> {
    let mut keys = Vec::new();
    let mut add = |key: &str, from: KeySource| -> Result<()> {
        let deletion = Deletion::of(kind, key).map_err(|why| {
            let at = match from {
                KeySource::Argument => "on the command line".to_string(),
                KeySource::File(path, line) => format!("at {}:{line}", path.display()),
            };
            input(format!("{kind} key {key:?} {at}: {why}; nothing was sent"))
        })?;
        keys.push(deletion);
        Ok(())
    };
    for key in arguments {
        add(key, KeySource::Argument)?;
    }
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).map_err(|e| input(format!("reading keys from {}: {e}", path.display())))?;
        for (n, line) in text.lines().enumerate() {
            let key = line.trim_end_matches('\r');
            if key.trim().is_empty() || key.trim_start().starts_with('#') {
                continue;
            }
            add(key, KeySource::File(path, n as u64 + 1))?;
        }
    }
    Ok(keys)
}

/// An error in what was given to delete (the input, not a server).
fn input(message: String) -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, message))
}

/// Publish the deletes of `keys`, versioned by `clock`, with confirms;
/// returns how many.
pub async fn publish_deletes(
    settings: &BrokerSettings,
    kind: RecordKind,
    keys: Vec<Deletion>,
    clock: VersionClock,
) -> Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let mut versions = FileVersions::start(clock);
    let records: Vec<Record> = keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| Record::Deleted(key).with_version(versions.version(i as u64 + 1)))
        .collect();
    let connection = broker::connect(&settings.amqp_url, "hpn-producer (delete)").await?;
    settings.topology().declare_if_allowed(&connection).await?;
    let mut publisher = ConfirmedPublisher::open(&connection, 64).await?;
    let exchange = settings.topology().exchange();
    let origin = Origin {
        file: "hpn-producer delete".into(),
        line: 1,
    };
    for chunk in records.chunks(DELETES_PER_MESSAGE) {
        let properties = message::properties(kind, Some(&origin));
        publisher
            .publish(&exchange, kind.as_str(), &message::encode(chunk), properties)
            .await?;
    }
    publisher.close().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), connection.close(200, "done".into())).await;
    Ok(records.len() as u64)
}
