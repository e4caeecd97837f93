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
//! | `rentals`   | `{product_id, user_id}`, in that field order |
//!
//! A rental's `_id` is a sub-document rather than a joined string: no
//! separator to escape, its parts readable as they are, and the `_id`
//! index, ordered by `product_id` first, also answers "who rented this
//! product" with a range (see [`rentals_of_product`]). MongoDB compares
//! sub-documents field by field in order, so the order is part of the key:
//! readers who look a rental up by `_id` must write `product_id` first.
//!
//! The documents also keep `user_id` / `product_id` as ordinary fields, as
//! before the change: whoever reads the store (a report, a person in
//! `mongosh`, the brief's queries) sees the same fields as the CSV's, and
//! no field has an index but `_id`. They cost a few bytes a document.

use hpn_common::record::Record;
use hpn_common::RecordKind;
use mongodb::bson::{doc, Bson, Document};

/// The field that holds a document's version (absent: written without one).
/// Short because MongoDB stores every field name in every document, so a
/// long name costs every insert; what the version costs a fresh load in all
/// is the bench's `version_guard_cost` target (see findings.md). On the wire
/// the record's field is `_version`.
pub const VERSION_FIELD: &str = "_v";

/// Where a document keeps the columns its record was told to keep: one
/// sub-document, replaced whole by a newer version.
pub const EXTRA_FIELD: &str = "extra";

/// The name MongoDB gives the `_id` index, the only unique index: a
/// duplicate-key error on it means "a document of this key exists".
pub const KEY_INDEX: &str = "_id_";

/// A record's business key as its document's `_id`.
pub fn key_id(record: &Record) -> Bson {
    match record {
        Record::Customer(c) => Bson::String(c.user_id.clone()),
        Record::Product(p) => Bson::String(p.product_id.clone()),
        Record::Rental(r) => Bson::Document(rental_id(&r.product_id, &r.user_id)),
    }
}

/// A rental's `_id`: the field order is part of it.
pub fn rental_id(product_id: &str, user_id: &str) -> Document {
    doc! {"product_id": product_id, "user_id": user_id}
}

/// The `_id` a document of `kind` should have, from its named key fields:
/// how a document of the old shape (an `ObjectId` as `_id`) is keyed.
/// `None` when a key field is missing or not a string.
pub fn key_of(kind: RecordKind, document: &Document) -> Option<Bson> {
    let field = |name| document.get_str(name).ok();
    Some(match kind {
        RecordKind::Customer => Bson::String(field("user_id")?.to_string()),
        RecordKind::Product => Bson::String(field("product_id")?.to_string()),
        RecordKind::Rental => Bson::Document(rental_id(field("product_id")?, field("user_id")?)),
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

/// The filter for every rental of `product_id`: a range of the `_id`
/// index (MinKey and MaxKey sort below and above any `user_id`).
pub fn rentals_of_product(product_id: &str) -> Document {
    doc! {"_id": {
        "$gte": {"product_id": product_id, "user_id": Bson::MinKey},
        "$lte": {"product_id": product_id, "user_id": Bson::MaxKey},
    }}
}

/// The document stored for a record: its key as `_id`, its fields and,
/// when it has one, its version in [`VERSION_FIELD`].
pub fn stored_document(record: &Record) -> Document {
    let mut document = doc! {"_id": key_id(record)};
    document.extend(versioned_fields(record));
    document
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
/// [`EXTRA_FIELD`]: what readers of the store see, less the `_id` and the
/// version. An absent zip code is no field at all.
pub fn to_document(record: &Record) -> Document {
    let mut document = match record {
        Record::Customer(c) => {
            let mut d = doc! {
                "user_id": &c.user_id,
                "name": &c.name,
                "address": &c.address,
            };
            if let Some(zip_code) = &c.zip_code {
                d.insert("zip_code", zip_code);
            }
            d.insert("phone_number", &c.phone_number);
            d.insert("email", &c.email);
            d
        }
        Record::Product(p) => doc! {
            "product_id": &p.product_id,
            "description": &p.description,
            "product_type": &p.product_type,
            "quantity_available": i64::from(p.quantity_available),
        },
        Record::Rental(r) => doc! {
            "product_id": &r.product_id,
            "user_id": &r.user_id,
        },
    };
    let extra = record.extra();
    if !extra.is_empty() {
        let kept: Document = extra
            .iter()
            .map(|(k, v)| (k.clone(), Bson::String(v.clone())))
            .collect();
        document.insert(EXTRA_FIELD, kept);
    }
    document
}

/// The record's optional fields it does not have: an update unsets them.
pub fn absent_fields(record: &Record) -> impl Iterator<Item = &'static str> {
    let zip_code = matches!(record, Record::Customer(c) if c.zip_code.is_none()).then_some("zip_code");
    let extra = record.extra().is_empty().then_some(EXTRA_FIELD);
    zip_code.into_iter().chain(extra)
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
        assert_eq!(key_filter(&rental), doc! {"_id": {"product_id": "P1", "user_id": "C1"}});
        assert_eq!(
            stored_document(&rental),
            doc! {"_id": {"product_id": "P1", "user_id": "C1"}, "product_id": "P1", "user_id": "C1"}
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
        assert_eq!(absent_fields(&c).collect::<Vec<_>>(), ["zip_code"]);
        assert_eq!(absent_fields(&product()).collect::<Vec<_>>(), [EXTRA_FIELD]);
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
