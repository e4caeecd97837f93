//! The message format on the queues: a public contract, because upstream
//! systems publish to the same queues as our producer.
//! `docs/message-format.md` is the prose version of this module; keep the two
//! in step.
//!
//! In short: the body is JSON, either one record object or an array of
//! record objects of one kind; `content_type` is `application/json`; the
//! AMQP `type` property names the kind (`customer`, `product`, `rental`);
//! delivery mode 2 (persistent). Optional headers carry where the record came
//! from and when it was published. Each record may carry a version
//! (`_version` in the record, or `x-hpn-version` for the whole message): the
//! store keeps the highest version of each key, whatever order messages are
//! delivered in. A record may also carry the columns a mapping kept, in
//! one `extra` object (see `record.rs`); a customer may lack `zip_code`.
//! A record may also be a delete: its key, `"_deleted": true` and a version
//! (`record::Deletion`), ordered against the key's records by that version.
//!
//! Decoding is strict about what it cannot store and lenient about what it
//! can: a message the importer cannot use at all is [`Poison`] and goes whole
//! to the dead-letter queue; inside an array, each bad record is set aside on
//! its own while the good ones are stored.

use crate::record::{Record, RecordKind};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde_json::value::RawValue;
use std::time::{SystemTime, UNIX_EPOCH};

/// The only content type we publish and accept.
pub const CONTENT_TYPE: &str = "application/json";
/// AMQP delivery mode for persistent messages.
pub const PERSISTENT: u8 = 2;
/// The largest body the importer takes by default; larger is poison.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;

/// The most records one message may hold. A longer array is refused whole
/// (one dead letter) before any of its records is looked at: within the
/// 4 MiB limit a body like `[0,0,0,…]` holds two million items, and one dead
/// letter each took minutes and flooded the log while the good records
/// queued behind it waited.
pub const MAX_RECORDS_PER_MESSAGE: usize = 10_000;

/// The most invalid records of one array set aside one by one. Beyond
/// this, or when more than [`FEW_INVALID`] records and over half of the
/// array are invalid, the message is set aside whole, once, with the counts
/// and the first reasons in its headers: it is a broken publisher's, not a
/// good array with a few bad records.
pub const MAX_INVALID_DEAD_LETTERS: usize = 100;

/// Invalid records an array may hold, whatever its share, before the share
/// counts (see [`MAX_INVALID_DEAD_LETTERS`]).
pub const FEW_INVALID: usize = 10;

/// The invalid records whose reasons a whole-message dead letter names.
const FIRST_REASONS: usize = 3;

/// Header names of the contract.
pub mod header {
    /// Path of the CSV file the records came from (string).
    pub const SOURCE_FILE: &str = "x-source-file";
    /// Line of the first record in that file (integer).
    pub const SOURCE_LINE: &str = "x-source-line";
    /// Milliseconds since the Unix epoch when the message was published
    /// (integer); the importer measures end-to-end latency from it.
    pub const PUBLISHED_MS: &str = "x-published-ms";
    /// The version of every record in the message that carries no
    /// `_version` of its own (integer; see `docs/message-format.md`).
    pub const VERSION: &str = "x-hpn-version";
    /// On dead-lettered messages: why the importer refused it (string).
    pub const ERROR: &str = "x-hpn-error";
    /// On dead-lettered messages: the queue it was taken from (string).
    pub const ORIGINAL_QUEUE: &str = "x-hpn-original-queue";
    /// On dead-lettered records split out of an array: the record's index.
    pub const RECORD_INDEX: &str = "x-hpn-record-index";
    /// On a message set aside whole for its records: how many were invalid
    /// (0 when it held too many to look at), and how many it held.
    pub const INVALID_RECORDS: &str = "x-hpn-invalid-records";
    pub const RECORDS: &str = "x-hpn-records";
    /// On dead-lettered messages: when the importer set it aside
    /// (milliseconds since the Unix epoch).
    pub const DEAD_LETTERED_MS: &str = "x-hpn-dead-lettered-ms";
    /// On replayed messages (`hpn-importer dead-letters replay`): the reason
    /// it was dead-lettered for last time, and how many times it was
    /// replayed.
    pub const LAST_ERROR: &str = "x-hpn-last-error";
    pub const REPLAYS: &str = "x-hpn-replays";
    /// Set by the importer when it puts a copy of a message back on its
    /// queue (a redelivery on a classic queue, or a message held too long
    /// by `serve` while MongoDB was away): how many deliveries of it ended
    /// without it being written (integer). Publishers leave it out.
    pub const ATTEMPTS: &str = "x-hpn-attempts";
    /// Set by the broker on a quorum queue's redeliveries: how many
    /// deliveries of the message ended without an acknowledgement.
    pub const DELIVERY_COUNT: &str = "x-delivery-count";
}

/// Where a message's records came from, for the headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The properties our producer sets on every message of `kind`.
pub fn properties(kind: RecordKind, origin: Option<&Origin>) -> BasicProperties {
    let mut headers = FieldTable::default();
    let now = now_ms();
    headers.insert(header::PUBLISHED_MS.into(), AMQPValue::LongLongInt(now));
    if let Some(origin) = origin {
        headers.insert(
            header::SOURCE_FILE.into(),
            AMQPValue::LongString(origin.file.as_str().into()),
        );
        headers.insert(header::SOURCE_LINE.into(), AMQPValue::LongLongInt(origin.line as i64));
    }
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(PERSISTENT)
        .with_type(kind.as_str().into())
        .with_timestamp((now / 1000) as u64)
        .with_app_id("hpn-producer".into())
        .with_headers(headers)
}

/// Encode records of one kind as a message body: a single object for one
/// record, an array for several.
pub fn encode(records: &[Record]) -> Vec<u8> {
    let result = match records {
        [one] => serde_json::to_vec(one),
        many => serde_json::to_vec(many),
    };
    result.expect("records always serialise to JSON")
}

/// Why a whole message cannot be used. The text goes into the dead-letter
/// header, so it is written for the person who reads the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Poison {
    #[error("content type {0:?} is not application/json")]
    WrongContentType(String),
    #[error("type property {0:?} is not a record kind (customer, product, rental)")]
    UnknownKind(String),
    #[error("type property says {found} but this is the {queue} queue")]
    KindMismatch { queue: RecordKind, found: RecordKind },
    #[error("message of {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is JSON but neither a record object nor an array of them: {0}")]
    WrongShape(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("array of {items} records is over the limit of {limit} records per message")]
    TooManyRecords { items: usize, limit: usize },
    #[error("{invalid} of {records} records are invalid, so the message is set aside whole; the first: {first}")]
    MostlyInvalid {
        invalid: usize,
        records: usize,
        first: String,
    },
}

impl Poison {
    /// (invalid records, records) for a message set aside for its records,
    /// which a dead letter carries in its headers.
    pub fn counts(&self) -> Option<(usize, usize)> {
        match self {
            Poison::MostlyInvalid { invalid, records, .. } => Some((*invalid, *records)),
            Poison::TooManyRecords { items, .. } => Some((0, *items)),
            _ => None,
        }
    }
}

/// A record inside an array message that failed to parse or validate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRecord {
    pub index: usize,
    /// The record's JSON exactly as received.
    pub json: String,
    pub reason: String,
}

/// What a usable message holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub records: Vec<Record>,
    pub invalid: Vec<InvalidRecord>,
}

/// Read a header as a string, whichever AMQP string type it was sent as.
pub fn header_str(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Read a header as an integer, whichever AMQP integer type it was sent as.
pub fn header_i64(properties: &BasicProperties, name: &str) -> Option<i64> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    value
        .as_long_long_int()
        .or_else(|| value.as_long_int().map(i64::from))
        .or_else(|| value.as_long_uint().map(i64::from))
        .or_else(|| value.as_short_int().map(i64::from))
        .or_else(|| value.as_short_uint().map(i64::from))
        .or_else(|| value.as_timestamp().map(|t| t as i64))
}

/// Decode a message taken from the queue of `queue_kind`.
pub fn decode(
    queue_kind: RecordKind,
    properties: &BasicProperties,
    body: &[u8],
    max_bytes: usize,
) -> Result<Decoded, Poison> {
    if body.len() > max_bytes {
        return Err(Poison::TooLarge {
            size: body.len(),
            limit: max_bytes,
        });
    }
    if let Some(content_type) = properties.content_type() {
        let essence = content_type.as_str().split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case(CONTENT_TYPE) {
            return Err(Poison::WrongContentType(content_type.to_string()));
        }
    }
    if let Some(kind) = properties.kind() {
        let found: RecordKind = kind
            .as_str()
            .parse()
            .map_err(|_| Poison::UnknownKind(kind.to_string()))?;
        if found != queue_kind {
            return Err(Poison::KindMismatch {
                queue: queue_kind,
                found,
            });
        }
    }
    let text = std::str::from_utf8(body).map_err(|e| Poison::NotJson(e.to_string()))?;
    let mut decoded = decode_body(queue_kind, text)?;
    if let Some(version) = header_i64(properties, header::VERSION) {
        for record in decoded.records.iter_mut().filter(|r| r.version().is_none()) {
            record.set_version(Some(version));
        }
    }
    Ok(decoded)
}

/// The records of a UTF-8 body: one object, or an array of them.
fn decode_body(queue_kind: RecordKind, text: &str) -> Result<Decoded, Poison> {
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            if let Some(records) = all_valid(queue_kind, text) {
                // The limit holds for valid records too (the conformance
                // test found this path let 10,001 through).
                if records.len() > MAX_RECORDS_PER_MESSAGE {
                    return Err(Poison::TooManyRecords {
                        items: records.len(),
                        limit: MAX_RECORDS_PER_MESSAGE,
                    });
                }
                return Ok(Decoded {
                    records,
                    invalid: Vec::new(),
                });
            }
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| Poison::NotJson(e.to_string()))?;
            if items.len() > MAX_RECORDS_PER_MESSAGE {
                return Err(Poison::TooManyRecords {
                    items: items.len(),
                    limit: MAX_RECORDS_PER_MESSAGE,
                });
            }
            let records = items.len();
            let mut decoded = Decoded {
                records: Vec::with_capacity(items.len()),
                invalid: Vec::new(),
            };
            for (index, item) in items.into_iter().enumerate() {
                match Record::from_json(queue_kind, item.get()) {
                    Ok(record) => decoded.records.push(record),
                    Err(reason) => decoded.invalid.push(InvalidRecord {
                        index,
                        json: item.get().to_string(),
                        reason,
                    }),
                }
            }
            let invalid = decoded.invalid.len();
            if invalid > MAX_INVALID_DEAD_LETTERS || (invalid > FEW_INVALID && 2 * invalid > records) {
                let first: Vec<String> = decoded.invalid[..FIRST_REASONS.min(invalid)]
                    .iter()
                    .map(|i| format!("record {}: {}", i.index, i.reason))
                    .collect();
                return Err(Poison::MostlyInvalid {
                    invalid,
                    records,
                    first: first.join("; "),
                });
            }
            Ok(decoded)
        }
        Some(b'{') => {
            // Make sure it is JSON at all before blaming the record's shape.
            let raw: &RawValue = serde_json::from_str(text).map_err(|e| Poison::NotJson(e.to_string()))?;
            let record = Record::from_json(queue_kind, raw.get()).map_err(Poison::InvalidRecord)?;
            Ok(Decoded {
                records: vec![record],
                invalid: Vec::new(),
            })
        }
        _ => match serde_json::from_str::<&RawValue>(text) {
            Ok(raw) => Err(Poison::WrongShape(truncate(raw.get(), 80))),
            Err(e) => Err(Poison::NotJson(e.to_string())),
        },
    }
}

/// The records of an array body in one pass, when every one of them is
/// well-formed and valid: the common case, and half the parsing of reading
/// each item twice (once to split the array, once as a record). `None`
/// sends the body to the item-by-item path, which says which record is
/// wrong and why.
fn all_valid(kind: RecordKind, text: &str) -> Option<Vec<Record>> {
    let records: Vec<Record> = match kind {
        RecordKind::Customer => serde_json::from_str::<Vec<_>>(text)
            .ok()?
            .into_iter()
            .map(Record::Customer)
            .collect(),
        RecordKind::Product => serde_json::from_str::<Vec<_>>(text)
            .ok()?
            .into_iter()
            .map(Record::Product)
            .collect(),
        RecordKind::Rental => serde_json::from_str::<Vec<_>>(text)
            .ok()?
            .into_iter()
            .map(Record::Rental)
            .collect(),
    };
    records.iter().all(|r| r.validate().is_ok()).then_some(records)
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The properties of a dead-lettered message: the original ones, plus the
/// reason and the queue it came from.
pub fn dead_letter_properties(
    original: &BasicProperties,
    queue: &str,
    reason: &str,
    record_index: Option<usize>,
    counts: Option<(usize, usize)>,
) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    if let Some((invalid, records)) = counts {
        headers.insert(header::INVALID_RECORDS.into(), AMQPValue::LongLongInt(invalid as i64));
        headers.insert(header::RECORDS.into(), AMQPValue::LongLongInt(records as i64));
    }
    headers.insert(header::ERROR.into(), AMQPValue::LongString(LongString::from(reason)));
    headers.insert(header::DEAD_LETTERED_MS.into(), AMQPValue::LongLongInt(now_ms()));
    headers.insert(
        header::ORIGINAL_QUEUE.into(),
        AMQPValue::LongString(LongString::from(queue)),
    );
    if let Some(index) = record_index {
        headers.insert(header::RECORD_INDEX.into(), AMQPValue::LongLongInt(index as i64));
    }
    original.clone().with_headers(headers).with_delivery_mode(PERSISTENT)
}

/// The properties of a copy of a message put back on its queue after
/// `failed` deliveries that ended without it being written: the count in
/// `x-hpn-attempts`, and without the broker's own `x-delivery-count`, which
/// counted the original's deliveries, not the copy's.
pub fn retry_properties(original: &BasicProperties, failed: u32) -> BasicProperties {
    let mut headers: FieldTable = original
        .headers()
        .as_ref()
        .map(|h| {
            let mut kept = h.inner().clone();
            kept.retain(|name, _| name.as_str() != header::DELIVERY_COUNT);
            kept.into()
        })
        .unwrap_or_default();
    headers.insert(header::ATTEMPTS.into(), AMQPValue::LongLongInt(i64::from(failed)));
    original.clone().with_headers(headers).with_delivery_mode(PERSISTENT)
}

/// A short string for AMQP fields, cut to the 255-byte limit.
pub fn short(text: &str) -> ShortString {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::from(&text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Product, Rental};

    fn rental(p: &str, u: &str) -> Record {
        Record::Rental(Rental {
            product_id: p.into(),
            user_id: u.into(),
            extra: Default::default(),
            version: None,
        })
    }

    fn json_props(kind: &str) -> BasicProperties {
        BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_type(kind.into())
    }

    #[test]
    fn one_record_is_an_object_and_several_are_an_array() {
        let one = encode(&[rental("P1", "C1")]);
        assert_eq!(one, br#"{"product_id":"P1","user_id":"C1"}"#);
        let two = encode(&[rental("P1", "C1"), rental("P2", "C2")]);
        assert_eq!(
            two,
            br#"[{"product_id":"P1","user_id":"C1"},{"product_id":"P2","user_id":"C2"}]"#
        );
    }

    #[test]
    fn encode_then_decode_gives_the_records_back() {
        let records = vec![
            Record::Product(Product {
                product_id: "P1".into(),
                description: "Sofa, \"big\"".into(),
                product_type: "livingroom".into(),
                quantity_available: 2,
                extra: Default::default(),
                version: None,
            }),
            Record::Product(Product {
                product_id: "P2".into(),
                description: "Lamp".into(),
                product_type: "livingroom".into(),
                quantity_available: 0,
                extra: Default::default(),
                version: None,
            }),
        ];
        let props = properties(
            RecordKind::Product,
            Some(&Origin {
                file: "products.csv".into(),
                line: 2,
            }),
        );
        let decoded = decode(
            RecordKind::Product,
            &props,
            &encode(&records),
            DEFAULT_MAX_MESSAGE_BYTES,
        )
        .unwrap();
        assert_eq!(decoded.records, records);
        assert!(decoded.invalid.is_empty());
        assert_eq!(header_str(&props, header::SOURCE_FILE).as_deref(), Some("products.csv"));
        assert_eq!(header_i64(&props, header::SOURCE_LINE), Some(2));
        assert!(header_i64(&props, header::PUBLISHED_MS).unwrap() > 1_600_000_000_000);
    }

    #[test]
    fn missing_type_and_content_type_are_taken_from_the_queue() {
        let decoded = decode(
            RecordKind::Rental,
            &BasicProperties::default(),
            br#"{"product_id":"P1","user_id":"C1"}"#,
            1024,
        )
        .unwrap();
        assert_eq!(decoded.records, vec![rental("P1", "C1")]);
    }

    #[test]
    fn each_kind_of_poison_is_named() {
        let body = br#"{"product_id":"P1","user_id":"C1"}"#;
        let k = RecordKind::Rental;
        let text = BasicProperties::default().with_content_type("text/plain".into());
        assert!(matches!(decode(k, &text, body, 1024), Err(Poison::WrongContentType(_))));
        assert!(matches!(
            decode(k, &json_props("invoice"), body, 1024),
            Err(Poison::UnknownKind(_))
        ));
        assert!(matches!(
            decode(k, &json_props("customer"), body, 1024),
            Err(Poison::KindMismatch {
                found: RecordKind::Customer,
                ..
            })
        ));
        assert!(matches!(
            decode(k, &json_props("rental"), body, 10),
            Err(Poison::TooLarge { .. })
        ));
        assert!(matches!(
            decode(k, &json_props("rental"), b"{not json", 1024),
            Err(Poison::NotJson(_))
        ));
        assert!(matches!(
            decode(k, &json_props("rental"), b"\xff\xfe", 1024),
            Err(Poison::NotJson(_))
        ));
        assert!(matches!(
            decode(k, &json_props("rental"), b"42", 1024),
            Err(Poison::WrongShape(_))
        ));
        assert!(matches!(
            decode(k, &json_props("rental"), br#"{"product_id":"P1"}"#, 1024),
            Err(Poison::InvalidRecord(r)) if r.contains("user_id")
        ));
        let charset = BasicProperties::default().with_content_type("application/json; charset=utf-8".into());
        assert!(decode(k, &charset, body, 1024).is_ok());
    }

    #[test]
    fn bad_records_in_an_array_are_set_aside_and_the_rest_kept() {
        let body = br#"[{"product_id":"P1","user_id":"C1"},{"product_id":"","user_id":"C2"},7,{"product_id":"P3","user_id":"C3"}]"#;
        let decoded = decode(RecordKind::Rental, &json_props("rental"), body, 4096).unwrap();
        assert_eq!(decoded.records, vec![rental("P1", "C1"), rental("P3", "C3")]);
        assert_eq!(decoded.invalid.iter().map(|i| i.index).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(decoded.invalid[1].json, "7");
        assert!(
            decoded.invalid[0].reason.contains("product_id"),
            "{}",
            decoded.invalid[0].reason
        );
    }

    #[test]
    fn a_huge_or_mostly_invalid_array_is_set_aside_whole_once() {
        let k = RecordKind::Rental;
        let good = r#"{"product_id":"P1","user_id":"C1"}"#;
        let array = |items: &[&str]| format!("[{}]", items.join(",")).into_bytes();
        let zeros = array(&vec!["0"; MAX_RECORDS_PER_MESSAGE + 1]);
        assert_eq!(
            decode(k, &json_props("rental"), &zeros, 1 << 20),
            Err(Poison::TooManyRecords {
                items: MAX_RECORDS_PER_MESSAGE + 1,
                limit: MAX_RECORDS_PER_MESSAGE
            })
        );
        // As many valid records: the same, whatever path decodes them.
        let valid = array(&vec![good; MAX_RECORDS_PER_MESSAGE + 1]);
        assert_eq!(
            decode(k, &json_props("rental"), &valid, 1 << 20),
            Err(Poison::TooManyRecords {
                items: MAX_RECORDS_PER_MESSAGE + 1,
                limit: MAX_RECORDS_PER_MESSAGE
            })
        );
        let most = array(&vec![good; MAX_RECORDS_PER_MESSAGE]);
        assert_eq!(
            decode(k, &json_props("rental"), &most, 1 << 20).map(|d| d.records.len()),
            Ok(MAX_RECORDS_PER_MESSAGE)
        );
        // Eleven bad of twenty: over half, and more than a few.
        let mut items = vec![good; 9];
        items.extend(vec!["0"; FEW_INVALID + 1]);
        match decode(k, &json_props("rental"), &array(&items), 1 << 20) {
            Err(poison @ Poison::MostlyInvalid { .. }) => {
                assert_eq!(poison.counts(), Some((11, 20)));
                let text = poison.to_string();
                assert!(text.starts_with("11 of 20 records are invalid"), "{text}");
                assert!(text.contains("record 9:") && text.contains("record 11:"), "{text}");
                assert!(!text.contains("record 12:"), "the first three only: {text}");
            }
            other => panic!("{other:?}"),
        }
        // Ten bad of twenty, or eleven bad of a hundred: set aside one by one.
        let mut items = vec![good; 10];
        items.extend(vec!["0"; FEW_INVALID]);
        assert_eq!(
            decode(k, &json_props("rental"), &array(&items), 1 << 20)
                .unwrap()
                .invalid
                .len(),
            10
        );
        let mut items = vec![good; 89];
        items.extend(vec!["0"; FEW_INVALID + 1]);
        assert_eq!(
            decode(k, &json_props("rental"), &array(&items), 1 << 20)
                .unwrap()
                .invalid
                .len(),
            11
        );
        // More than the most set aside one by one, whatever the share.
        let mut items = vec![good; 1000];
        items.extend(vec!["0"; MAX_INVALID_DEAD_LETTERS + 1]);
        assert!(matches!(
            decode(k, &json_props("rental"), &array(&items), 1 << 20),
            Err(Poison::MostlyInvalid {
                invalid: 101,
                records: 1101,
                ..
            })
        ));
    }

    #[test]
    fn a_well_formed_but_invalid_record_is_set_aside_with_its_own_text() {
        // Every item parses, so only validation can catch the bad one.
        let body = br#"[{"product_id":"P1","user_id":"C1"},{"product_id":"P 2","user_id":"C2"}]"#;
        let decoded = decode(RecordKind::Rental, &json_props("rental"), body, 4096).unwrap();
        assert_eq!(decoded.records, vec![rental("P1", "C1")]);
        assert_eq!(decoded.invalid.len(), 1);
        assert_eq!(decoded.invalid[0].index, 1);
        assert_eq!(decoded.invalid[0].json, r#"{"product_id":"P 2","user_id":"C2"}"#);
    }

    #[test]
    fn dead_letter_properties_keep_the_original_and_add_the_reason() {
        let original = properties(RecordKind::Customer, None);
        let dead = dead_letter_properties(
            &original,
            "hp_norton.customers",
            "body is not JSON",
            Some(3),
            Some((2, 9)),
        );
        assert_eq!(header_i64(&dead, header::INVALID_RECORDS), Some(2));
        assert_eq!(header_i64(&dead, header::RECORDS), Some(9));
        assert_eq!(header_str(&dead, header::ERROR).as_deref(), Some("body is not JSON"));
        assert_eq!(
            header_str(&dead, header::ORIGINAL_QUEUE).as_deref(),
            Some("hp_norton.customers")
        );
        assert_eq!(header_i64(&dead, header::RECORD_INDEX), Some(3));
        assert_eq!(dead.kind(), original.kind());
        assert!(header_i64(&dead, header::PUBLISHED_MS).is_some());
    }

    #[test]
    fn versions_travel_in_the_record_and_the_header_fills_in_missing_ones() {
        let versioned = rental("P1", "C1").with_version(7);
        assert_eq!(
            encode(std::slice::from_ref(&versioned)),
            br#"{"product_id":"P1","user_id":"C1","_version":7}"#
        );
        let mut headers = FieldTable::default();
        headers.insert(header::VERSION.into(), AMQPValue::LongLongInt(3));
        let props = json_props("rental").with_headers(headers);
        let body = br#"[{"product_id":"P1","user_id":"C1","_version":7},{"product_id":"P2","user_id":"C2"}]"#;
        let decoded = decode(RecordKind::Rental, &props, body, 4096).unwrap();
        let versions: Vec<_> = decoded.records.iter().map(Record::version).collect();
        assert_eq!(
            versions,
            vec![Some(7), Some(3)],
            "own version first, header for the rest"
        );
        let unversioned = decode(
            RecordKind::Rental,
            &json_props("rental"),
            br#"{"product_id":"P1","user_id":"C1"}"#,
            1024,
        )
        .unwrap();
        assert_eq!(unversioned.records[0].version(), None);
        let not_a_number = br#"{"product_id":"P1","user_id":"C1","_version":"7"}"#;
        assert!(matches!(
            decode(RecordKind::Rental, &json_props("rental"), not_a_number, 1024),
            Err(Poison::InvalidRecord(r)) if r.contains("expected i64")
        ));
    }

    #[test]
    fn short_strings_are_cut_on_a_character_boundary() {
        let long = "é".repeat(200);
        let cut = short(&long);
        assert!(cut.as_str().len() <= 255);
        assert!(cut.as_str().chars().all(|c| c == 'é'));
    }
}
