//! The store's shapes before the business key became the `_id` as it is
//! now, how they are recognised, and how they are rewritten
//! (`hpn-importer migrate`).
//!
//! The old shapes:
//! - every document had an `ObjectId` as `_id`, and each collection a
//!   second unique index on the business key (`user_id_1`, `product_id_1`,
//!   `product_id_1_user_id_1`). Writes of the new shape into it would be
//!   refused by that index (a new-shape document and an old one of the same
//!   key);
//! - for a while after that, rentals were keyed by a sub-document
//!   `{product_id, user_id}` rather than the string `"P1 C1"`: a write of
//!   the new shape would not find such a document and add a second one.
//!
//! So the importer checks the shape when it connects and refuses to start
//! on an old one, saying what to run.
//!
//! Migrating a collection, with every importer stopped:
//! 1. drop the old key index (so a keyed copy and the old document of the
//!    same key may live side by side for a moment);
//! 2. read old documents (an `ObjectId` `_id`; a rental's sub-document
//!    `_id`) a batch at a time; for each,
//!    write a copy keyed by its business key, the same fields, `rented_to`
//!    and the version included, with the version guard of the importer's
//!    own writes: where a keyed document of that key is already there with
//!    an equal or newer version, it stays;
//! 3. delete the batch's old documents.
//!
//! Each step is safe to repeat, so a migration stopped at any point (a
//! crash, a kill) is finished by running it again: an old document whose
//! copy was written but which was not yet deleted is copied again (changing
//! nothing) and then deleted. Nothing is deleted before its copy is written.

use super::document::{guard_version, key_of, VERSION_FIELD};
use super::{Store, StoreError};
use futures::TryStreamExt;
use hpn_common::RecordKind;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, Document};

/// The unique key indexes of the old shape, by kind.
pub const OLD_KEY_INDEXES: [(RecordKind, &str); 3] = [
    (RecordKind::Customer, "user_id_1"),
    (RecordKind::Product, "product_id_1"),
    (RecordKind::Rental, "product_id_1_user_id_1"),
];

/// Old documents rewritten per round trip.
const MIGRATE_BATCH: usize = 1000;

/// MongoDB's "no such collection" / "no such index" codes.
const NAMESPACE_NOT_FOUND: i32 = 26;
const INDEX_NOT_FOUND: i32 = 27;

/// What migrating one collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Migrated {
    pub collection: &'static str,
    /// Documents of the old shape found and rewritten keyed (and then deleted).
    pub rewritten: u64,
    /// Of those, the ones whose key already had a keyed document with an
    /// equal or newer version: that document stayed.
    pub kept_newer: u64,
    /// Whether the old unique key index was there and was dropped.
    pub dropped_index: bool,
    /// Documents in the collection afterwards.
    pub documents: u64,
}

fn old_key_index(kind: RecordKind) -> &'static str {
    OLD_KEY_INDEXES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, name)| *name)
        .expect("every kind has an old index name")
}

/// Matches the documents of `kind` keyed the old way, and only them: those
/// whose `_id` is an `ObjectId` and, for rentals, a sub-document. A
/// comparison matches values of its own BSON type only (the smallest
/// `ObjectId`, the empty document), so each is one range of the `_id` index,
/// however large the collection.
fn old_documents(kind: RecordKind) -> Document {
    let object_ids = doc! {"_id": {"$gte": ObjectId::from_bytes([0; 12])}};
    match kind {
        RecordKind::Rental => doc! {"$or": [object_ids, {"_id": {"$gte": {}}}]},
        RecordKind::Customer | RecordKind::Product => object_ids,
    }
}

fn not_found(error: &mongodb::error::Error, code: i32) -> bool {
    matches!(error.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == code)
}

impl Store {
    /// Refuse a store of the old shape (see the module docs) with
    /// [`StoreError::OldShape`]. Two cheap reads per collection: its index
    /// names and one probe of the `_id` index.
    pub async fn check_shape(&self) -> Result<(), StoreError> {
        for kind in RecordKind::ALL {
            let collection = kind.collection();
            if self.has_old_index(kind).await? {
                let why = format!("a unique index {} beside the _id", old_key_index(kind));
                return Err(StoreError::OldShape { collection, why });
            }
            if let Some(old) = self.collection(kind).find_one(old_documents(kind)).await? {
                let why = format!(
                    "documents keyed the old way, such as _id {}",
                    old.get("_id").unwrap_or(&Bson::Null)
                );
                return Err(StoreError::OldShape { collection, why });
            }
        }
        Ok(())
    }

    async fn has_old_index(&self, kind: RecordKind) -> Result<bool, StoreError> {
        match self.collection(kind).list_index_names().await {
            Ok(names) => Ok(names.iter().any(|n| n == old_key_index(kind))),
            Err(e) if not_found(&e, NAMESPACE_NOT_FOUND) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Rewrite `kind`'s collection into the shape keyed by `_id` (see the
    /// module docs). Run with every importer stopped; safe to run again,
    /// and a no-op on a collection already migrated.
    pub async fn migrate(&self, kind: RecordKind) -> Result<Migrated, StoreError> {
        let collection = self.collection(kind);
        let mut migrated = Migrated {
            collection: kind.collection(),
            ..Migrated::default()
        };
        if self.has_old_index(kind).await? {
            match collection.drop_index(old_key_index(kind)).await {
                Ok(()) => migrated.dropped_index = true,
                Err(e) if not_found(&e, INDEX_NOT_FOUND) => {}
                Err(e) => return Err(e.into()),
            }
        }
        loop {
            let old: Vec<Document> = collection
                .find(old_documents(kind))
                .sort(doc! {"_id": 1})
                .limit(MIGRATE_BATCH as i64)
                .await?
                .try_collect()
                .await?;
            if old.is_empty() {
                break;
            }
            let mut statements = Vec::with_capacity(old.len());
            let mut ids = Vec::with_capacity(old.len());
            for document in &old {
                let id = document.get("_id").cloned().unwrap_or(Bson::Null);
                let Some(key) = key_of(kind, document) else {
                    return Err(StoreError::OldShape {
                        collection: kind.collection(),
                        why: format!(
                            "document {id} has no {} to key it by; fix or remove it and migrate again",
                            kind.key_fields().join(" and ")
                        ),
                    });
                };
                statements.push(keyed_copy(key, document));
                ids.push(id);
            }
            let reply = self.run_update(kind.collection(), statements).await?;
            for error in reply.errors {
                if error.key_conflict {
                    migrated.kept_newer += 1;
                } else {
                    return Err(StoreError::Refused {
                        code: error.code,
                        message: error.message,
                    });
                }
            }
            collection.delete_many(doc! {"_id": {"$in": ids}}).await?;
            migrated.rewritten += old.len() as u64;
        }
        migrated.documents = self.count(kind).await?;
        Ok(migrated)
    }
}

/// The statement that writes an old document keyed by `key`: a whole
/// replacement (every field kept, whatever it is), guarded by the version
/// as the importer's writes are, so a keyed document with an equal or newer
/// version is left as it is (E11000 on the `_id`: counted as kept).
fn keyed_copy(key: Bson, old: &Document) -> Document {
    let mut replacement = old.clone();
    replacement.remove("_id");
    let mut filter = doc! {"_id": key};
    if let Some(version) = old.get(VERSION_FIELD).and_then(Bson::as_i64) {
        guard_version(&mut filter, version);
    }
    doc! {"q": filter, "u": replacement, "upsert": true}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_document_is_copied_whole_under_its_key_and_guarded_by_its_version() {
        let old = doc! {"_id": ObjectId::new(), "product_id": "P1", "quantity_available": 2_i64, "rented_to": ["C1"], "_v": 5_i64};
        let key = key_of(RecordKind::Product, &old).unwrap();
        assert_eq!(
            keyed_copy(key.clone(), &old),
            doc! {
                "q": {"_id": "P1", "_v": {"$not": {"$gte": 5_i64}}},
                "u": {"product_id": "P1", "quantity_available": 2_i64, "rented_to": ["C1"], "_v": 5_i64},
                "upsert": true,
            }
        );
        let unversioned = doc! {"_id": ObjectId::new(), "product_id": "P1"};
        assert_eq!(
            keyed_copy(key, &unversioned).get_document("q").unwrap(),
            &doc! {"_id": "P1"}
        );
        assert_eq!(old_key_index(RecordKind::Rental), "product_id_1_user_id_1");
    }
}
