//! Records into message bodies, bounded in records **and in bytes**.
//!
//! A count alone does not bound a message: 100 records of the brief's
//! customers make about 15 KB, but a mapping may keep 32 columns of 1,024
//! characters each, and 100 such rows in a non-Latin script made a body of
//! 9.9 MB. The brokers refuse a body over their `max_message_size` (4 MiB
//! as `scripts/services` and the compose stack set it, 16 MiB by default on
//! RabbitMQ 4), which closes the channel, so the file never loaded; and the
//! importer dead-letters a body over its `--max-message-bytes`. So a message
//! is closed before the record that would take it over `max_bytes`, which
//! the producer reads from the same variable as the importer
//! (`HPN_MAX_MESSAGE_BYTES`).
//!
//! Each record is serialised straight into the open body, once: the reader
//! thread does the encoding, and the publishing task only sends. A record
//! that does not fit moves (its bytes only) into the next body.
//!
//! One record alone always fits: validation bounds a record (texts of at
//! most 1,024 characters, at most 32 kept columns) to well under
//! [`MIN_MESSAGE_BYTES`], the smallest limit the producer accepts (the
//! test `the_largest_valid_record_fits_the_smallest_limit` builds it).
//!
//! The body is the contract's (docs/message-format.md): one record is an
//! object, several an array.

use hpn_common::record::Record;

/// The smallest `--max-message-bytes` the producer takes: more than the
/// largest record validation lets through, so every record fits a message.
pub const MIN_MESSAGE_BYTES: usize = 1 << 20;

/// One message's body and the lines of the file it covers.
#[derive(Debug)]
pub struct Packed {
    pub body: Vec<u8>,
    pub records: u64,
    /// Line of its first record.
    pub line: u64,
    /// Line of its last record.
    pub last_line: u64,
}

/// The message being filled, and the limits that close it.
pub struct Packer {
    max_records: usize,
    max_bytes: usize,
    /// `[` and the records so far, separated by commas; no closing `]`.
    body: Vec<u8>,
    records: usize,
    line: u64,
    last_line: u64,
}

impl Packer {
    /// Messages of at most `max_records` records (at least 1) and
    /// `max_bytes` bytes of body.
    pub fn new(max_records: usize, max_bytes: usize) -> Self {
        let mut packer = Packer {
            max_records: max_records.max(1),
            max_bytes,
            body: Vec::new(),
            records: 0,
            line: 0,
            last_line: 0,
        };
        packer.open();
        packer
    }

    fn open(&mut self) {
        self.body.clear();
        self.body.push(b'[');
        self.records = 0;
    }

    /// Adds `record`, read at `line`. Returns the message this closed, if
    /// any: the open one, when `record` would take it over the byte limit
    /// (`record` then starts the next), or the one `record` filled to the
    /// record limit. At most one closes per record: with a limit of one
    /// record, every message is closed by the record that filled it.
    pub fn push(&mut self, record: &Record, line: u64) -> Option<Packed> {
        let start = self.body.len();
        if self.records > 0 {
            self.body.push(b',');
        }
        serde_json::to_writer(&mut self.body, record).expect("records always serialise to JSON");
        // With its closing bracket, as it would be sent (a lone record is
        // sent whatever its size: see the module's doc).
        if self.records > 0 && self.body.len() + 1 > self.max_bytes {
            let record_bytes = self.body.split_off(start + 1);
            self.body.truncate(start);
            let full = self.close();
            self.body.extend_from_slice(&record_bytes);
            debug_assert!(self.max_records > 1, "one record a message never shares one");
            (self.records, self.line, self.last_line) = (1, line, line);
            return Some(full);
        }
        if self.records == 0 {
            self.line = line;
        }
        self.records += 1;
        self.last_line = line;
        (self.records == self.max_records).then(|| self.close())
    }

    /// The open message, if it holds any record; the packer is then empty.
    pub fn finish(&mut self) -> Option<Packed> {
        (self.records > 0).then(|| self.close())
    }

    /// Closes the open message (which holds at least one record) and opens
    /// the next, empty.
    fn close(&mut self) -> Packed {
        let body = if self.records == 1 {
            self.body[1..].to_vec()
        } else {
            let capacity = self.body.capacity();
            let mut body = std::mem::replace(&mut self.body, Vec::with_capacity(capacity));
            body.push(b']');
            body
        };
        let packed = Packed {
            body,
            records: self.records as u64,
            line: self.line,
            last_line: self.last_line,
        };
        self.open();
        packed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpn_common::message;
    use hpn_common::record::{Customer, Extra, RecordKind, MAX_EXTRAS, MAX_ID_LEN, MAX_TEXT_LEN};
    use lapin::BasicProperties;

    fn customer(id: &str, name_len: usize) -> Record {
        Record::Customer(Customer {
            user_id: id.into(),
            name: "n".repeat(name_len),
            address: "1 Main St".into(),
            zip_code: None,
            phone_number: "555".into(),
            email: "a@example.com".into(),
            extra: Extra::new(),
            version: Some(7),
        })
    }

    /// Every body decodes, as the importer decodes it, to the records in
    /// the order they went in; returns the messages.
    fn pack(records: &[Record], max_records: usize, max_bytes: usize) -> Vec<Packed> {
        let mut packer = Packer::new(max_records, max_bytes);
        let mut packed = Vec::new();
        for (i, record) in records.iter().enumerate() {
            packed.extend(packer.push(record, i as u64 + 2));
        }
        packed.extend(packer.finish());
        assert!(packer.finish().is_none(), "finish empties the packer");
        let props = BasicProperties::default();
        let mut decoded = Vec::new();
        for p in &packed {
            let body = message::decode(RecordKind::Customer, &props, &p.body, usize::MAX).expect("a valid body");
            assert!(body.invalid.is_empty());
            assert_eq!(body.records.len() as u64, p.records);
            assert_eq!(p.last_line - p.line + 1, p.records, "lines are the records'");
            // The contract: one record is an object, several an array.
            assert_eq!(p.body[0], if p.records == 1 { b'{' } else { b'[' });
            assert_eq!(p.body, message::encode(&body.records), "the body is what encode gives");
            decoded.extend(body.records);
        }
        assert_eq!(decoded, records, "every record once, in order");
        packed
    }

    #[test]
    fn messages_close_at_the_record_limit() {
        let records: Vec<Record> = (0..250).map(|i| customer(&format!("C{i}"), 10)).collect();
        let packed = pack(&records, 100, usize::MAX);
        let sizes: Vec<u64> = packed.iter().map(|p| p.records).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!((packed[1].line, packed[1].last_line), (102, 201));
        let one_each = pack(&records[..3], 1, usize::MAX);
        assert_eq!(one_each.iter().map(|p| p.records).collect::<Vec<_>>(), [1, 1, 1]);
    }

    #[test]
    fn messages_close_before_the_record_that_would_pass_the_byte_limit() {
        // About 1 KB a record: 100 of them would be about 100 KB.
        let records: Vec<Record> = (0..100).map(|i| customer(&format!("C{i}"), 1_000)).collect();
        let limit = 8 * 1024;
        let packed = pack(&records, 100, limit);
        assert!(packed.len() > 1, "the byte limit split the records");
        for p in &packed {
            assert!(p.body.len() <= limit, "a body of {} bytes", p.body.len());
        }
        // Each message as full as the limit allows: one more record would
        // not have fit.
        let one = message::encode(&records[..1]).len();
        for p in &packed[..packed.len() - 1] {
            assert!(
                p.body.len() + one + 1 > limit,
                "a body of {} bytes closed early",
                p.body.len()
            );
        }
        // A limit exactly at a body's size keeps that body whole.
        let two = message::encode(&records[..2]).len();
        assert_eq!(pack(&records[..2], 100, two).len(), 1);
        assert_eq!(pack(&records[..2], 100, two - 1).len(), 2);
    }

    #[test]
    fn the_largest_valid_record_fits_the_smallest_limit() {
        // Four bytes a character (the widest UTF-8 serde_json leaves as it
        // is), and in every text a quote or backslash would be two.
        let widest = |n: usize| "😀".repeat(n);
        let mut extra = Extra::new();
        for i in 0..MAX_EXTRAS {
            let name = format!("{}{i:02}", "漢".repeat(MAX_ID_LEN - 2));
            extra.insert(name, widest(MAX_TEXT_LEN));
        }
        let record = Record::Customer(Customer {
            user_id: "😀".repeat(MAX_ID_LEN),
            name: widest(MAX_TEXT_LEN),
            address: widest(MAX_TEXT_LEN),
            zip_code: Some(widest(MAX_TEXT_LEN)),
            phone_number: widest(MAX_TEXT_LEN),
            email: format!("{}@example.com", widest(MAX_TEXT_LEN - 12)),
            extra,
            version: Some(i64::MAX),
        });
        assert_eq!(record.validate(), Ok(()), "the record is at every limit, not over one");
        let size = message::encode(std::slice::from_ref(&record)).len();
        assert!(
            size * 4 < MIN_MESSAGE_BYTES,
            "the largest record encodes to {size} bytes"
        );
        // Alone, it is sent alone whatever the limit.
        assert_eq!(pack(&[record.clone(), record], 100, size).len(), 2);
    }
}
