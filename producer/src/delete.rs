//! `hpn-producer delete`: the deletes of keys, published like records.
//!
//! A delete is a record of its kind (`docs/message-format.md`, *Deletes*),
//! so it is versioned by the same clock as `publish`: above every record
//! this machine published before it, below every one it publishes after.
//! Whatever order the importer's consumers then write in, a key deleted
//! after its last publish ends deleted, and a key published again after
//! its delete comes back. The keys are checked before anything is sent: one
//! malformed key refuses the whole command, naming where it was; the keys
//! are read twice (check, then send) rather than held, so a keys file of any
//! length is bounded in memory.

use crate::version::{PublishVersions, VersionClock};
use hpn_common::message::{self, Origin};
use hpn_common::publisher::ConfirmedPublisher;
use hpn_common::record::Deletion;
use hpn_common::{broker, BrokerSettings, Error, Record, RecordKind, Result};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// Deletes packed into one message.
const DELETES_PER_MESSAGE: usize = 1000;

/// Where a key was given, for the message that refuses it.
enum KeySource<'a> {
    Argument,
    File(&'a Path, u64),
}

/// The keys to delete, each checked as it comes: from the command line,
/// then from a file of one key per line (blank lines and `#` comments
/// skipped), read as it goes, so a file of any length takes the memory of
/// one message of deletes. A rental's key is its `product_id`, a space, its
/// `user_id` (as its `_id` in the store). A key that fails comes as the
/// error that names where it was.
pub fn keys<'a>(
    kind: RecordKind,
    arguments: &'a [String],
    file: Option<&'a Path>,
) -> Result<impl Iterator<Item = Result<Deletion>> + 'a> {
    let given = arguments.iter().map(move |key| check(kind, key, KeySource::Argument));
    let lines = match file {
        None => None,
        Some(path) => {
            let reading = |e: std::io::Error| input(format!("reading keys from {}: {e}", path.display()));
            let reader = BufReader::new(File::open(path).map_err(reading)?);
            Some(reader.lines().enumerate().filter_map(move |(n, line)| {
                let line = match line {
                    Ok(line) => line,
                    Err(e) => return Some(Err(reading(e))),
                };
                let key = line.trim_end_matches('\r');
                if key.trim().is_empty() || key.trim_start().starts_with('#') {
                    return None;
                }
                Some(check(kind, key, KeySource::File(path, n as u64 + 1)))
            }))
        }
    };
    Ok(given.chain(lines.into_iter().flatten()))
}

fn check(kind: RecordKind, key: &str, from: KeySource) -> Result<Deletion> {
    Deletion::of(kind, key).map_err(|why| {
        let at = match from {
            KeySource::Argument => "on the command line".to_string(),
            KeySource::File(path, line) => format!("at {}:{line}", path.display()),
        };
        input(format!("{kind} key {key:?} {at}: {why}"))
    })
}

/// An error in what was given to delete (the input, not a server).
fn input(message: String) -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, message))
}

/// Publish the deletes of `keys` (checked whole before anything is sent:
/// `keys` is called twice, once to check, once to send), versioned by
/// `clock`, with confirms; returns how many.
pub async fn publish_deletes<I>(
    settings: &BrokerSettings,
    kind: RecordKind,
    keys: impl Fn() -> Result<I>,
    clock: VersionClock,
) -> Result<u64>
where
    I: Iterator<Item = Result<Deletion>>,
{
    let mut expected = 0u64;
    for key in keys()? {
        key.map_err(|e| input(format!("{e}; nothing was sent")))?;
        expected += 1;
    }
    if expected == 0 {
        return Ok(0);
    }
    let connection = broker::connect(&settings.amqp_url, "hpn-producer (delete)").await?;
    settings.topology().declare_if_allowed(&connection).await?;
    let mut publisher = ConfirmedPublisher::open(&connection, 64).await?;
    let exchange = settings.topology().exchange();
    let origin = Origin {
        file: "hpn-producer delete".into(),
        line: 1,
    };
    let versions = PublishVersions::reserve(&clock, 1).file(0);
    let mut sent = 0u64;
    let mut chunk = Vec::with_capacity(DELETES_PER_MESSAGE);
    let mut keys = keys()?;
    loop {
        let key = keys.next().transpose().map_err(|e| changed(e, sent))?;
        if let Some(key) = key {
            chunk.push(Record::Deleted(key).with_version(versions.version(sent + chunk.len() as u64 + 1)));
            if chunk.len() < DELETES_PER_MESSAGE {
                continue;
            }
        }
        if chunk.is_empty() {
            break;
        }
        let properties = message::properties(kind, Some(&origin));
        publisher
            .publish(&exchange, kind.as_str(), &message::encode(&chunk), properties)
            .await?;
        sent += chunk.len() as u64;
        chunk.clear();
    }
    publisher.close().await?;
    broker::close(&connection, "done").await;
    if sent != expected {
        return Err(input(format!(
            "the keys file changed while its deletes were sent: {expected} keys checked, {sent} deletes sent"
        )));
    }
    Ok(sent)
}

/// A key that passed the check and then failed while sending (its file
/// changed, or could no longer be read).
fn changed(e: Error, sent: u64) -> Error {
    input(format!(
        "reading the keys again to send them: {e}; {sent} deletes had been sent"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_arguments_then_the_file_line_by_line_and_a_bad_one_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.txt");
        std::fs::write(
            &path,
            "# customers to forget\r\nC000001\r\n\n   \nC000002\nnot a key\nC000003\n",
        )
        .unwrap();
        let arguments = vec!["C000009".to_string()];
        let read: Vec<Result<Deletion>> = keys(RecordKind::Customer, &arguments, Some(&path)).unwrap().collect();
        let ids: Vec<Option<&str>> = read.iter().map(|k| k.as_ref().ok().map(|d| d.key.0.as_str())).collect();
        assert_eq!(
            ids,
            [Some("C000009"), Some("C000001"), Some("C000002"), None, Some("C000003")]
        );
        let refused = read[3].as_ref().unwrap_err().to_string();
        assert!(refused.contains(&format!("{}:6", path.display())), "{refused}");
    }

    #[test]
    fn a_keys_file_that_cannot_be_read_is_refused_before_any_key() {
        let missing = Path::new("/nonexistent/keys.txt");
        let Err(refused) = keys(RecordKind::Product, &[], Some(missing)) else {
            panic!("a missing keys file was read");
        };
        assert!(
            refused.to_string().contains("reading keys from /nonexistent/keys.txt"),
            "{refused}"
        );
    }
}
