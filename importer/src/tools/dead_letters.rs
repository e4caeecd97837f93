//! `hpn-importer dead-letters`: what an operator does with the dead-letter
//! queues once the importer has set messages aside: see why (`list`, grouped
//! by reason; `show`, whole messages), put them back once the cause is fixed
//! (`replay`), or drop them (`purge`).
//!
//! Every command is one **pass** over each dead-letter queue: it takes the
//! messages that were there when it began, one by one, decides for each
//! (keep, replay, drop), and acknowledges a message only once the broker
//! has confirmed what was published for it: its copy at the tail of the same
//! queue (keep) or on the records exchange (replay). So a pass that dies
//! half-way, even by SIGKILL, loses nothing: what it held unacknowledged
//! returns to the queue, and at worst a message is both copied and returned
//! (a duplicate dead letter, or a replayed record written twice, which the
//! keyed, versioned writes make harmless). Reading this way, rather than
//! returning messages unacknowledged, also never counts as a failed
//! delivery: a quorum queue drops a message past its delivery limit.
//!
//! **No replay loop.** A replayed message that is still bad is dead-lettered
//! again with its new reason, and carries `x-hpn-replays` (how often it was
//! replayed) and `x-hpn-last-error`; nothing replays by itself, and `list`
//! shows the replays, so a message that keeps coming back is seen, not
//! cycled.

mod action;

use crate::Result;
pub use action::{apply, DeadLetterAction};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use hpn_common::message::{self, header};
use hpn_common::publisher::ConfirmedPublisher;
use hpn_common::{broker, BrokerSettings, RecordKind, Topology};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection};
use serde::Serialize;
use std::collections::BTreeMap;

/// Messages published before their confirms are awaited and the originals
/// acknowledged together.
const BATCH: usize = 100;

/// Headers a dead letter carries that a replayed message must not: the
/// importer's and the broker's dead-lettering marks.
const DEAD_LETTER_HEADERS: [&str; 10] = [
    header::ERROR,
    header::ORIGINAL_QUEUE,
    header::RECORD_INDEX,
    header::INVALID_RECORDS,
    header::RECORDS,
    header::DEAD_LETTERED_MS,
    header::ATTEMPTS,
    header::DELIVERY_COUNT,
    "x-death",
    "x-first-death-reason",
];

/// One dead letter, as a pass sees it.
pub struct DeadLetter {
    /// The importer's reason, or the broker's when it dead-lettered the
    /// message itself (a quorum queue's delivery limit).
    pub reason: String,
    pub dead_lettered_ms: Option<i64>,
    pub replays: i64,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl DeadLetter {
    fn from_delivery(delivery: &Delivery) -> DeadLetter {
        let properties = delivery.properties.clone();
        let reason = message::header_str(&properties, header::ERROR)
            .or_else(|| {
                message::header_str(&properties, "x-first-death-reason")
                    .map(|why| format!("dead-lettered by the broker ({why})"))
            })
            .unwrap_or_else(|| "no reason given".into());
        DeadLetter {
            dead_lettered_ms: message::header_i64(&properties, header::DEAD_LETTERED_MS),
            replays: message::header_i64(&properties, header::REPLAYS).unwrap_or(0),
            reason,
            properties,
            body: delivery.data.clone(),
        }
    }

    /// Whether `pattern` (none: every one) is in its reason, ignoring case.
    pub fn matches(&self, pattern: Option<&str>) -> bool {
        pattern.is_none_or(|p| self.reason.to_lowercase().contains(&p.to_lowercase()))
    }
}

/// What a pass does with one dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Leave it in the queue (a confirmed copy at its tail).
    Keep,
    /// Put it back on the records exchange for its collection.
    Replay,
    /// Remove it.
    Drop,
}

/// What a pass did, per collection.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Moved {
    pub collection: String,
    pub seen: u64,
    pub kept: u64,
    pub replayed: u64,
    pub dropped: u64,
}

/// A reason in a form that groups: numbers become `N`, quoted values `"…"`,
/// so "line 12: 'abc' is not a number" and "line 40: 'x' is not a number"
/// count as one reason.
pub fn fold(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut chars = reason.chars().peekable();
    let mut previous: Option<char> = None;
    while let Some(c) = chars.next() {
        // A quote opens after a space, a bracket or the start, so the
        // apostrophe of "can't" is a letter.
        let opens = matches!(c, '"' | '\'' | '`') && previous.is_none_or(|p| !p.is_alphanumeric());
        match c {
            '0'..='9' => {
                while chars.peek().is_some_and(|c| c.is_ascii_digit() || *c == '.') {
                    chars.next();
                }
                out.push('N');
            }
            _ if opens => {
                let mut quoted = String::new();
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == c {
                        closed = true;
                        break;
                    }
                    quoted.push(d);
                }
                out.push(c);
                if closed {
                    out.push('…');
                    out.push(c);
                } else {
                    out.push_str(&fold(&quoted));
                }
            }
            c => out.push(c),
        }
        previous = Some(c);
    }
    out
}

/// Go once over the dead-letter queue of `kind`, as the module says.
/// `decide` sees every message that was in it when the pass began.
pub async fn pass(
    connection: &Connection,
    topology: &Topology,
    kind: RecordKind,
    mut decide: impl FnMut(&DeadLetter) -> Action,
) -> Result<Moved> {
    let queue = topology.dead_letter_queue(kind);
    let channel = connection.create_channel().await?;
    let mut publisher = ConfirmedPublisher::open(connection, BATCH).await?;
    let mut moved = Moved {
        collection: kind.collection().to_string(),
        ..Moved::default()
    };
    let mut left: Option<u32> = None;
    let mut unacked = None;
    let mut in_batch = 0;
    while left != Some(0) {
        let Some(got) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        // basic.get-ok counts the messages behind this one.
        let remaining = *left.get_or_insert(got.message_count + 1) - 1;
        left = Some(remaining);
        let letter = DeadLetter::from_delivery(&got.delivery);
        moved.seen += 1;
        match decide(&letter) {
            Action::Keep => {
                publisher
                    .publish("", &queue, &letter.body, letter.properties.clone())
                    .await?;
                moved.kept += 1;
            }
            Action::Replay => {
                let properties = replay_properties(&letter);
                publisher
                    .publish(
                        &topology.exchange(),
                        topology.routing_key(kind),
                        &letter.body,
                        properties,
                    )
                    .await?;
                moved.replayed += 1;
            }
            Action::Drop => moved.dropped += 1,
        }
        unacked = Some(got.delivery.delivery_tag);
        in_batch += 1;
        if in_batch == BATCH {
            settle(&channel, &mut publisher, unacked.take()).await?;
            in_batch = 0;
        }
    }
    settle(&channel, &mut publisher, unacked).await?;
    publisher.close().await?;
    let _ = channel.close(200, "done".into()).await;
    Ok(moved)
}

/// Wait for every confirm, then acknowledge the originals up to `last`.
async fn settle(channel: &lapin::Channel, publisher: &mut ConfirmedPublisher, last: Option<u64>) -> Result<()> {
    publisher.flush().await?;
    if let Some(tag) = last {
        channel.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
    }
    Ok(())
}

/// The dead letter's properties as a message again: the dead-lettering
/// marks removed, its reason kept as `x-hpn-last-error`, its replays counted.
fn replay_properties(letter: &DeadLetter) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(old) = letter.properties.headers() {
        for (key, value) in old.inner() {
            if !DEAD_LETTER_HEADERS.contains(&key.as_str()) && !key.as_str().starts_with("x-last-death") {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    headers.insert(
        header::LAST_ERROR.into(),
        AMQPValue::LongString(LongString::from(letter.reason.as_str())),
    );
    headers.insert(header::REPLAYS.into(), AMQPValue::LongLongInt(letter.replays + 1));
    letter.properties.clone().with_headers(headers)
}

/// One reason of one collection in `list`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Group {
    pub collection: String,
    pub reason: String,
    pub count: u64,
    /// When the first and the last of them were dead-lettered (RFC 3339;
    /// none for dead letters from before the importer stamped them).
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    /// How many of them had been replayed before.
    pub replayed_before: u64,
}

/// The kinds to go over: those asked for, or all three.
fn kinds(asked: &[RecordKind]) -> Vec<RecordKind> {
    if asked.is_empty() {
        RecordKind::ALL.to_vec()
    } else {
        asked.to_vec()
    }
}

async fn connect(settings: &BrokerSettings, what: &str) -> Result<Connection> {
    Ok(broker::connect(&settings.amqp_url, &format!("hpn-importer (dead-letters {what})")).await?)
}

/// Every dead letter of `collections`, grouped by folded reason, the
/// largest groups first.
pub async fn list(settings: &BrokerSettings, collections: &[RecordKind]) -> Result<Vec<Group>> {
    let connection = connect(settings, "list").await?;
    let topology = settings.topology();
    let mut groups = Vec::new();
    for kind in kinds(collections) {
        let mut by_reason: BTreeMap<String, (u64, Option<i64>, Option<i64>, u64)> = BTreeMap::new();
        pass(&connection, &topology, kind, |letter| {
            let entry = by_reason.entry(fold(&letter.reason)).or_default();
            entry.0 += 1;
            if let Some(at) = letter.dead_lettered_ms {
                entry.1 = Some(entry.1.map_or(at, |t| t.min(at)));
                entry.2 = Some(entry.2.map_or(at, |t| t.max(at)));
            }
            entry.3 += u64::from(letter.replays > 0);
            Action::Keep
        })
        .await?;
        let mut of_kind: Vec<Group> = by_reason
            .into_iter()
            .map(|(reason, (count, first, last, replayed))| Group {
                collection: kind.collection().to_string(),
                reason,
                count,
                first_seen: first.map(rfc3339),
                last_seen: last.map(rfc3339),
                replayed_before: replayed,
            })
            .collect();
        of_kind.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        groups.extend(of_kind);
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(groups)
}

fn rfc3339(ms: i64) -> String {
    mongodb::bson::DateTime::from_millis(ms)
        .try_to_rfc3339_string()
        .unwrap_or_else(|_| ms.to_string())
}

/// One whole dead letter in `show`.
#[derive(Clone, Debug, Serialize)]
pub struct Shown {
    pub collection: String,
    pub reason: String,
    pub headers: BTreeMap<String, serde_json::Value>,
    /// The body as text (bodies that are not UTF-8 are shown lossily),
    /// cut at [`SHOWN_BODY_BYTES`].
    pub body: String,
    pub body_bytes: usize,
}

/// The most of a body `show` prints.
pub const SHOWN_BODY_BYTES: usize = 64 * 1024;

/// Up to `limit` dead letters whose reason contains `reason`, whole.
pub async fn show(
    settings: &BrokerSettings,
    collections: &[RecordKind],
    reason: Option<&str>,
    limit: usize,
) -> Result<Vec<Shown>> {
    let connection = connect(settings, "show").await?;
    let topology = settings.topology();
    let mut shown = Vec::new();
    for kind in kinds(collections) {
        pass(&connection, &topology, kind, |letter| {
            if shown.len() < limit && letter.matches(reason) {
                let cut = letter.body.len().min(SHOWN_BODY_BYTES);
                shown.push(Shown {
                    collection: kind.collection().to_string(),
                    reason: letter.reason.clone(),
                    headers: headers_json(&letter.properties),
                    body: String::from_utf8_lossy(&letter.body[..cut]).into_owned(),
                    body_bytes: letter.body.len(),
                });
            }
            Action::Keep
        })
        .await?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(shown)
}

fn headers_json(properties: &BasicProperties) -> BTreeMap<String, serde_json::Value> {
    let Some(headers) = properties.headers() else {
        return BTreeMap::new();
    };
    headers
        .inner()
        .iter()
        .map(|(key, value)| {
            let value = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned().into(),
                AMQPValue::ShortString(s) => s.as_str().into(),
                AMQPValue::LongLongInt(n) => (*n).into(),
                AMQPValue::LongInt(n) => (*n).into(),
                AMQPValue::ShortInt(n) => (*n).into(),
                AMQPValue::Boolean(b) => (*b).into(),
                other => format!("{other:?}").into(),
            };
            (key.as_str().to_string(), value)
        })
        .collect()
}

/// Put back on their queues up to `limit` dead letters whose reason
/// contains `reason` (the rest stay); with `dry_run`, only count them.
pub async fn replay(
    settings: &BrokerSettings,
    collections: &[RecordKind],
    reason: Option<&str>,
    limit: Option<u64>,
    dry_run: bool,
) -> Result<Vec<Moved>> {
    select(
        settings,
        collections,
        reason,
        limit,
        if dry_run { Action::Keep } else { Action::Replay },
        "replay",
    )
    .await
}

/// Remove the dead letters whose reason contains `reason` (all of them
/// without one).
pub async fn purge(settings: &BrokerSettings, collections: &[RecordKind], reason: Option<&str>) -> Result<Vec<Moved>> {
    select(settings, collections, reason, None, Action::Drop, "purge").await
}

/// A pass per collection doing `action` to up to `limit` matching dead
/// letters in all and keeping the rest. The counts say what matched even
/// when `action` is [`Action::Keep`] (a dry run): `replayed` / `dropped`.
async fn select(
    settings: &BrokerSettings,
    collections: &[RecordKind],
    reason: Option<&str>,
    limit: Option<u64>,
    action: Action,
    what: &str,
) -> Result<Vec<Moved>> {
    let connection = connect(settings, what).await?;
    let topology = settings.topology();
    let mut taken = 0;
    let mut all = Vec::new();
    for kind in kinds(collections) {
        let mut matched = 0;
        let mut moved = pass(&connection, &topology, kind, |letter| {
            if letter.matches(reason) && limit.is_none_or(|l| taken < l) {
                taken += 1;
                matched += 1;
                action
            } else {
                Action::Keep
            }
        })
        .await?;
        if action == Action::Keep {
            // A dry run: say what would have gone.
            moved.kept -= matched;
            if what == "replay" {
                moved.replayed = matched;
            } else {
                moved.dropped = matched;
            }
        }
        all.push(moved);
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(all)
}

/// `list` as a table.
pub fn groups_table(groups: &[Group]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "collection",
        "reason",
        "count",
        "first seen",
        "last seen",
        "replayed before",
    ]);
    for g in groups {
        table.add_row(vec![
            g.collection.clone(),
            g.reason.clone(),
            g.count.to_string(),
            g.first_seen.clone().unwrap_or_else(|| "-".into()),
            g.last_seen.clone().unwrap_or_else(|| "-".into()),
            g.replayed_before.to_string(),
        ]);
    }
    if groups.is_empty() {
        "no dead letters".into()
    } else {
        table.to_string()
    }
}

/// What `replay` or `purge` did, as a table.
pub fn moved_table(moved: &[Moved], dry_run: bool) -> String {
    let mut table = Table::new();
    let verb = if dry_run { "would replay" } else { "replayed" };
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["collection", "dead letters seen", verb, "dropped", "left"]);
    for m in moved {
        table.add_row(vec![
            m.collection.clone(),
            m.seen.to_string(),
            m.replayed.to_string(),
            m.dropped.to_string(),
            m.kept.to_string(),
        ]);
    }
    table.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fold_numbers_and_quoted_values_so_alike_ones_group() {
        assert_eq!(
            fold("record 12: 'abc' is not a number"),
            fold("record 7: 'x' is not a number")
        );
        assert_eq!(
            fold("record 12: 'abc' is not a number"),
            "record N: '…' is not a number"
        );
        assert_eq!(
            fold("MongoDB refused the record (code 16755): Can't extract geo keys"),
            "MongoDB refused the record (code N): Can't extract geo keys"
        );
        assert_eq!(
            fold("name: longer than 1024 characters"),
            "name: longer than N characters"
        );
        assert_ne!(fold("not JSON"), fold("name: missing"));
        assert_eq!(fold("an unclosed 'quote 12"), "an unclosed 'quote N", "nothing lost");
        // The server's words with the refused document in them.
        let refused = |id: &str| {
            format!("MongoDB refused the record (code 16755): Can't extract geo keys: {{ _id: \"{id}\", name: \"N\" }}")
        };
        assert_eq!(fold(&refused("R00001")), fold(&refused("R02999")));
        assert_eq!(
            fold(&refused("R00001")),
            "MongoDB refused the record (code N): Can't extract geo keys: { _id: \"…\", name: \"…\" }"
        );
    }

    #[test]
    fn a_replayed_message_loses_the_dead_letter_marks_and_keeps_the_rest() {
        let mut headers = FieldTable::default();
        for (key, value) in [
            (header::ERROR, "name: missing"),
            (header::ORIGINAL_QUEUE, "hp.customers"),
            (header::SOURCE_FILE, "customers.csv"),
        ] {
            headers.insert(key.into(), AMQPValue::LongString(value.into()));
        }
        headers.insert(header::VERSION.into(), AMQPValue::LongLongInt(42));
        headers.insert(header::REPLAYS.into(), AMQPValue::LongLongInt(1));
        let letter = DeadLetter {
            reason: "name: missing".into(),
            dead_lettered_ms: None,
            replays: 1,
            properties: BasicProperties::default().with_headers(headers),
            body: b"{}".to_vec(),
        };
        let replayed = replay_properties(&letter);
        let str_of = |name| message::header_str(&replayed, name);
        assert_eq!(str_of(header::ERROR), None);
        assert_eq!(str_of(header::ORIGINAL_QUEUE), None);
        assert_eq!(str_of(header::SOURCE_FILE).as_deref(), Some("customers.csv"));
        assert_eq!(str_of(header::LAST_ERROR).as_deref(), Some("name: missing"));
        assert_eq!(
            message::header_i64(&replayed, header::VERSION),
            Some(42),
            "the version is kept"
        );
        assert_eq!(message::header_i64(&replayed, header::REPLAYS), Some(2));
    }
}
