//! How a record becomes a document: its business key as `_id`, its fields
//! under the CSV's names, its kept columns, its version.
//!
//! The key is the `_id`, so each collection has one unique index, the one
//! every MongoDB collection has anyway: no second index to maintain on
//! every insert (what a second unique index cost a fresh load is in
//! findings.md), none to forget after a collection is dropped and created
//! again, and the natural shard key for a sharded cluster is the `_id`
//! itself (docs/scaling.md).
//!
//! | collection  | `_id`                                        |
//! |-------------|----------------------------------------------|
//! | `customers` | the `user_id`, a string                      |
//! | `products`  | the `product_id`, a string                   |
//! | `rentals`   | `"{product_id} {user_id}"`, one space between  |
//!
//! A rental's `_id` is one string, not a sub-document. Measured once, by
//! hand, with a one-off probe that is not kept (issue 14's closing note;
//! the bench's careful-loader row shows the whole pipeline): inserting
//! 100,000 rentals keyed by a `{product_id, user_id}` sub-document took the
//! test server (secantusd-rs, 2 cores, batches of 1,000 beside the other
//! two files) 5.4–5.9 s, keyed by a string 3.5–4.4 s, as long as with
//! `ObjectId`s. And a sub-document `_id` asks every reader to write its
//! fields in the stored order. The space needs no escaping: a key may not
//! contain whitespace (`hpn_common::record`'s id rule, checked by the
//! producer and again by the importer on every message), so the joined
//! string names exactly one pair. Starting with the `product_id`, the `_id`
//! index also answers "who rented this product" with one range (see
//! [`rentals_of_product`]).
//!
//! The documents also keep `user_id` / `product_id` as ordinary fields, as
//! before the change: whoever reads the store (a report, a person in
//! `mongosh`, the brief's queries) sees the same fields as the CSV's, and
//! no field has an index but `_id`. They cost a few bytes a document.
//!
//! A delete leaves a tombstone: the key's `_id` and fields, `_deleted:
//! true`, when (`_deleted_at`, the importer's clock) and the delete's
//! version in `_v`, and none of the record's other fields. It stays so
//! that an older record of the key, arriving later, finds a newer version
//! and changes nothing; [`live`] is the filter every reader and count uses
//! to pass over it, and `hpn-importer compact` removes old ones.

use hpn_common::record::Record;
use hpn_common::RecordKind;
use mongodb::bson::{doc, Bson, DateTime, Document, RawDocumentBuf};

/// The field that holds a document's version (absent: written without one).
/// Short because MongoDB stores every field name in every document, so a
/// long name costs every insert; what the version costs a fresh load in all
/// is the bench's `version_guard_cost` target (see findings.md). On the wire
/// the record's field is `_version`.
pub const VERSION_FIELD: &str = "_v";

/// Where a document keeps the columns its record was told to keep: one
/// sub-document, replaced whole by a newer version.
pub const EXTRA_FIELD: &str = "extra";

/// The field that marks a tombstone (`true`; absent on a live document).
pub const DELETED_FIELD: &str = hpn_common::record::DELETED_FIELD;

/// When a tombstone was written (a date, by the importer's clock), which
/// `hpn-importer compact --older-than` reads.
pub const DELETED_AT_FIELD: &str = "_deleted_at";

/// The filter of the documents that are not tombstones: what queries,
/// counts and reports see.
pub fn live() -> Document {
    doc! {DELETED_FIELD: {"$ne": true}}
}

/// The name MongoDB gives the `_id` index, the only unique index: a
/// duplicate-key error on it means "a document of this key exists".
pub const KEY_INDEX: &str = "_id_";

/// A record's business key as its document's `_id`.
pub fn key_id(record: &Record) -> Bson {
    match record {
        Record::Customer(c) => Bson::String(c.user_id.clone()),
        Record::Product(p) => Bson::String(p.product_id.clone()),
        Record::Rental(r) => Bson::String(rental_id(&r.product_id, &r.user_id)),
        Record::Deleted(d) if d.kind == RecordKind::Rental => Bson::String(rental_id(&d.key.0, &d.key.1)),
        Record::Deleted(d) => Bson::String(d.key.0.clone()),
    }
}

/// What separates the two parts of a rental's `_id`: a character no key
/// may contain, and the lowest one a key may (see [`rentals_of_product`]).
pub const RENTAL_ID_SEPARATOR: char = ' ';

/// A rental's `_id`: `product_id`, a space, `user_id`.
pub fn rental_id(product_id: &str, user_id: &str) -> String {
    format!("{product_id}{RENTAL_ID_SEPARATOR}{user_id}")
}

/// The `_id` a document of `kind` should have, from its named key fields:
/// how a document of the old shape (an `ObjectId` as `_id`) is keyed.
/// `None` when a key field is missing or not a string.
pub fn key_of(kind: RecordKind, document: &Document) -> Option<Bson> {
    let field = |name| document.get_str(name).ok();
    Some(match kind {
        RecordKind::Customer => Bson::String(field("user_id")?.to_string()),
        RecordKind::Product => Bson::String(field("product_id")?.to_string()),
        RecordKind::Rental => Bson::String(rental_id(field("product_id")?, field("user_id")?)),
    })
}

/// Narrow `filter` to a document whose stored version is absent or lower
/// than `version`: the version guard of every versioned write (see
/// `Store::upsert`), checked by the server in the same step as the write.
pub fn guard_version(filter: &mut Document, version: i64) {
    filter.insert(VERSION_FIELD, doc! {"$not": {"$gte": version}});
}

/// The filter that finds a record's document: its `_id`.
pub fn key_filter(record: &Record) -> Document {
    doc! {"_id": key_id(record)}
}

/// The filter for every rental of `product_id`: one range of the `_id`
/// index, from `"P1 "` up to, not including, `"P1!"`. MongoDB compares
/// strings byte by byte; every rental of P1 has an `_id` of `"P1 "` and then
/// a `user_id`, and no other rental falls in between: another product's
/// `_id` differs from `"P1 "` before or at the space, and what a key may
/// hold there is above the space (`!` is the next character), so it sorts
/// at or above `"P1!"` (`"P10 C1"`, `"P1! C1"`) or below `"P1 "` (`"P0 C1"`).
pub fn rentals_of_product(product_id: &str) -> Document {
    let from = format!("{product_id}{RENTAL_ID_SEPARATOR}");
    let below = format!("{product_id}{}", char::from(RENTAL_ID_SEPARATOR as u8 + 1));
    doc! {"_id": {"$gte": from, "$lt": below}}
}

/// The document stored for a record, as the BSON bytes the driver sends:
/// its key as `_id`, its fields and, when it has one, its version in
/// [`VERSION_FIELD`]. Built straight into one buffer because this is the
/// importer's inner loop: building a [`Document`] (a map of owned values)
/// and serialising it was a third of the importer's CPU at 100,000
/// records per file (the bench's flamegraph), and on a machine the
/// importer shares with the database every core it uses is one the
/// database does not get.
pub fn stored_raw(record: &Record) -> RawDocumentBuf {
    let mut raw = RawDocumentBuf::new();
    match record {
        Record::Customer(c) => raw.append_ref("_id", c.user_id.as_str()),
        Record::Product(p) => raw.append_ref("_id", p.product_id.as_str()),
        Record::Rental(r) => raw.append("_id", rental_id(&r.product_id, &r.user_id)),
        Record::Deleted(d) if d.kind == RecordKind::Rental => raw.append("_id", rental_id(&d.key.0, &d.key.1)),
        Record::Deleted(d) => raw.append_ref("_id", d.key.0.as_str()),
    }
    append_fields(&mut raw, record);
    if let Some(version) = record.version() {
        raw.append(VERSION_FIELD, version);
    }
    raw
}

/// [`stored_raw`] as a [`Document`], for code that reads or edits it.
pub fn stored_document(record: &Record) -> Document {
    document(stored_raw(record))
}

/// [`to_document`] plus the version when the record has one: what an
/// update sets (the `_id` comes from the filter).
pub fn versioned_fields(record: &Record) -> Document {
    let mut document = to_document(record);
    if let Some(version) = record.version() {
        document.insert(VERSION_FIELD, version);
    }
    document
}

/// A record's business fields, with the same names as the CSV columns
/// (quantities as 64-bit integers), and its kept columns under
/// `EXTRA_FIELD`: what readers of the store see, less the `_id` and the
/// version. An absent zip code is no field at all.
pub fn to_document(record: &Record) -> Document {
    document(fields_raw(record))
}

/// [`to_document`] as BSON bytes.
pub fn fields_raw(record: &Record) -> RawDocumentBuf {
    let mut raw = RawDocumentBuf::new();
    append_fields(&mut raw, record);
    raw
}

/// The one place that says which fields a record's document has, and in
/// what order.
fn append_fields(raw: &mut RawDocumentBuf, record: &Record) {
    match record {
        Record::Customer(c) => {
            raw.append_ref("user_id", c.user_id.as_str());
            raw.append_ref("name", c.name.as_str());
            raw.append_ref("address", c.address.as_str());
            if let Some(zip_code) = &c.zip_code {
                raw.append_ref("zip_code", zip_code.as_str());
            }
            raw.append_ref("phone_number", c.phone_number.as_str());
            raw.append_ref("email", c.email.as_str());
        }
        Record::Product(p) => {
            raw.append_ref("product_id", p.product_id.as_str());
            raw.append_ref("description", p.description.as_str());
            raw.append_ref("product_type", p.product_type.as_str());
            raw.append("quantity_available", i64::from(p.quantity_available));
        }
        Record::Rental(r) => {
            raw.append_ref("product_id", r.product_id.as_str());
            raw.append_ref("user_id", r.user_id.as_str());
        }
        Record::Deleted(d) => {
            let fields = d.kind.key_fields();
            raw.append_ref(fields[0], d.key.0.as_str());
            if let Some(second) = fields.get(1) {
                raw.append_ref(*second, d.key.1.as_str());
            }
            raw.append(DELETED_FIELD, true);
            raw.append(DELETED_AT_FIELD, DateTime::now());
        }
    }
    let extra = record.extra();
    if !extra.is_empty() {
        let mut kept = RawDocumentBuf::new();
        for (name, value) in extra.iter() {
            // Names are checked on the way in (letters, digits, `_`, `-`:
            // `hpn_common::record::check_extra_name`), so none holds the NUL
            // that `append_ref` refuses.
            kept.append_ref(name, value.as_str());
        }
        raw.append(EXTRA_FIELD, kept);
    }
}

/// Bytes [`RawDocumentBuf::append`] wrote are well-formed BSON by
/// construction, so reading them back cannot fail.
fn document(raw: RawDocumentBuf) -> Document {
    Document::try_from(raw).expect("a document built by RawDocumentBuf::append is valid BSON")
}

/// The fields a record's document must not have, which an update unsets:
/// a record's optional fields it lacks and the tombstone's marks (an
/// upsert over a tombstone brings the key back); a delete's, every field
/// but the key's.
pub fn absent_fields(record: &Record) -> Vec<&'static str> {
    if let Record::Deleted(d) = record {
        let kind = d.kind;
        let others = kind.columns().iter().filter(|c| !kind.key_fields().contains(*c));
        return others.copied().chain([EXTRA_FIELD]).collect();
    }
    let zip_code = matches!(record, Record::Customer(c) if c.zip_code.is_none()).then_some("zip_code");
    let extra = record.extra().is_empty().then_some(EXTRA_FIELD);
    zip_code
        .into_iter()
        .chain(extra)
        .chain([DELETED_FIELD, DELETED_AT_FIELD])
        .collect()
}

/// The fields the import owns in a document of `kind`: those a record may
/// write (every column, its kept columns, the tombstone's marks) and the
/// version. A write replaces these and leaves any other field as it is
/// (`rented_to`, which taking stock keeps on a product, say).
pub fn owned_fields(kind: RecordKind) -> impl Iterator<Item = &'static str> {
    kind.columns()
        .iter()
        .copied()
        .chain([EXTRA_FIELD, DELETED_FIELD, DELETED_AT_FIELD, VERSION_FIELD])
}

/// Whether a duplicate-key error is about the `_id`, the record's business
/// key (a document of that key exists), rather than another unique index
/// someone added, which is a refusal of the record. Servers name the index
/// in the message (`… index: _id_ dup key: …`) and, since 4.2, give its key
/// pattern in the error; either decides.
pub fn on_key_index(message: &str, key_pattern: Option<&Document>) -> bool {
    if let Some(pattern) = key_pattern {
        return pattern.keys().map(String::as_str).eq(["_id"]);
    }
    message.contains(&format!("index: {KEY_INDEX} "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpn_common::record::{Customer, Product, Rental};

    fn product() -> Record {
        Record::Product(Product {
            product_id: "P1".into(),
            description: "Sofa".into(),
            product_type: "livingroom".into(),
            quantity_available: 4,
            extra: Default::default(),
            version: Some(3),
        })
    }

    #[test]
    fn the_business_key_is_the_id_and_the_named_fields_stay() {
        let rental = Record::Rental(Rental::new("P1", "C1"));
        assert_eq!(key_filter(&rental), doc! {"_id": "P1 C1"});
        assert_eq!(
            stored_document(&rental),
            doc! {"_id": "P1 C1", "product_id": "P1", "user_id": "C1"}
        );
        let product = product();
        let stored = stored_document(&product);
        assert_eq!(stored.get_str("_id"), Ok("P1"));
        assert_eq!(stored.get_str("product_id"), Ok("P1"));
        assert_eq!(stored.get_i64("quantity_available"), Ok(4));
        assert_eq!(stored.get_i64(VERSION_FIELD), Ok(3));
        assert!(
            !versioned_fields(&product).contains_key("_id"),
            "an update never sets the _id"
        );
        assert_eq!(key_of(RecordKind::Product, &stored), Some(key_id(&product)));
        assert_eq!(key_of(RecordKind::Rental, &to_document(&rental)), Some(key_id(&rental)));
        assert_eq!(key_of(RecordKind::Rental, &doc! {"product_id": "P1"}), None);
        assert_eq!(key_of(RecordKind::Customer, &doc! {"user_id": 7}), None);
    }

    #[test]
    fn the_rentals_of_a_product_are_one_range_of_the_id() {
        let range = rentals_of_product("P1");
        let range = range.get_document("_id").unwrap();
        let (from, below) = (range.get_str("$gte").unwrap(), range.get_str("$lt").unwrap());
        // MongoDB's default string order is byte order, as Rust's `str` is.
        let inside = |id: &str| from <= id && id < below;
        for id in ["P1 C1", "P1 C0000009", "P1 ~", "P1 é"] {
            assert!(inside(id), "{id}");
        }
        for id in ["P10 C1", "P1! C1", "P1- C1", "P0 C1", "P C1", "P2 C1", "Q1 C1"] {
            assert!(!inside(id), "{id}");
        }
        assert_eq!(rental_id("P1", "C1"), "P1 C1");
    }

    #[test]
    fn kept_columns_are_one_sub_document_and_an_absent_zip_code_is_no_field() {
        let mut extra = hpn_common::Extra::new();
        extra.insert("status".into(), "Active".into());
        let c = Record::Customer(Customer {
            user_id: "C1".into(),
            name: "Ann".into(),
            address: "".into(),
            zip_code: None,
            phone_number: "".into(),
            email: "ann@example.com".into(),
            extra,
            version: Some(7),
        });
        let stored = stored_document(&c);
        assert_eq!(stored.get_document(EXTRA_FIELD).unwrap(), &doc! {"status": "Active"});
        assert!(!stored.contains_key("zip_code"));
        assert_eq!(absent_fields(&c), ["zip_code", DELETED_FIELD, DELETED_AT_FIELD]);
        assert_eq!(
            absent_fields(&product()),
            [EXTRA_FIELD, DELETED_FIELD, DELETED_AT_FIELD]
        );
    }

    #[test]
    fn a_tombstone_keeps_the_key_and_the_version_and_nothing_else() {
        let delete = Record::Deleted(hpn_common::Deletion::of(RecordKind::Rental, "P1 C1").unwrap()).with_version(9);
        let stored = stored_document(&delete);
        assert_eq!(stored.get_str("_id"), Ok("P1 C1"));
        assert_eq!(stored.get_str("product_id"), Ok("P1"));
        assert_eq!(stored.get_str("user_id"), Ok("C1"));
        assert_eq!(stored.get_bool(DELETED_FIELD), Ok(true));
        assert!(stored.get_datetime(DELETED_AT_FIELD).is_ok());
        assert_eq!(stored.get_i64(VERSION_FIELD), Ok(9));
        assert_eq!(stored.len(), 6, "{stored}");
        let customer = Record::Deleted(hpn_common::Deletion::of(RecordKind::Customer, "C1").unwrap());
        assert_eq!(key_id(&customer), Bson::String("C1".into()));
        assert_eq!(
            absent_fields(&customer),
            ["name", "address", "zip_code", "phone_number", "email", EXTRA_FIELD]
        );
    }

    #[test]
    fn only_a_duplicate_on_the_id_is_a_key_conflict() {
        let message = "E11000 duplicate key error collection: db.customers index: _id_ dup key: { _id: \"C1\" }";
        assert!(on_key_index(message, None));
        let other = "E11000 duplicate key error collection: db.customers index: email_1 dup key: { email: \"a@b.c\" }";
        assert!(!on_key_index(other, None));
        let compound = "E11000 duplicate key error collection: db.customers index: _id_1_email_1 dup key: {}";
        assert!(!on_key_index(compound, None));
        assert!(on_key_index("", Some(&doc! {"_id": 1})));
        assert!(!on_key_index(message, Some(&doc! {"email": 1})));
        assert!(!on_key_index(message, Some(&doc! {"_id": 1, "email": 1})));
    }
}
