//! A batch folded to one record per key before it is written, and the
//! guarded statement each winner becomes.

use super::document::{absent_fields, guard_version, key_filter, to_document, versioned_fields, VERSION_FIELD};
use hpn_common::record::{replaces, Record};
use mongodb::bson::{doc, Document};
use std::collections::HashMap;

/// What folding a batch to one record per key left (see [`latest_per_key`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchWinners {
    /// Index of each key's winning record, in batch order.
    pub latest: Vec<usize>,
    /// Records replaced by a later record of their key in the batch: they
    /// would have been applied, then overwritten, so they count as updates
    /// (as deletes, for a delete).
    pub superseded: u64,
    pub superseded_deletes: u64,
    /// Records that lost to an earlier record of their key with an equal or
    /// newer version: stored alone, they would have changed nothing.
    pub stale: u64,
    /// For each winner that took the place of earlier records of its key:
    /// how many (records, deletes). Counted as updates (deletes) above; if
    /// the store turns out to hold a newer version than the winner, they
    /// changed nothing either (see [`settle`]).
    pub folded_into: HashMap<usize, (u64, u64), foldhash::fast::RandomState>,
}

/// A batch's winners (indexes into `records`) split into deletes and the
/// rest. Deletes are rare: a batch without one keeps its list as it is (a
/// partition grew two vectors per batch, 2 % of the importer's CPU at one
/// record per message).
pub(super) fn split_deletes(latest: Vec<usize>, records: &[Record]) -> (Vec<usize>, Vec<usize>) {
    if latest.iter().any(|&i| records[i].is_deletion()) {
        latest.into_iter().partition(|&i| records[i].is_deletion())
    } else {
        (Vec::new(), latest)
    }
}

/// Fold a batch to one record per key, applying the records in batch order
/// by the store's own rule ([`replaces`]). A record's fields replace the
/// stored ones wholesale, so writing only each key's winner ends in the same
/// state as writing them all in order.
pub fn latest_per_key(records: &[Record]) -> BatchWinners {
    use std::collections::hash_map::Entry;
    // foldhash, not SipHash: a lookup per record on the importer's inner
    // loop, keyed by data we validated, needing no defence from crafted keys.
    let mut winner: HashMap<(&str, &str), usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(records.len(), Default::default());
    let (mut superseded, mut superseded_deletes, mut stale) = (0, 0, 0);
    let mut folded_into: HashMap<usize, (u64, u64), foldhash::fast::RandomState> = HashMap::default();
    for (i, record) in records.iter().enumerate() {
        match winner.entry(record.key_parts()) {
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
            Entry::Occupied(mut slot) => {
                if replaces(record.version(), records[*slot.get()].version()) {
                    let beaten = slot.insert(i);
                    let (mut records_folded, mut deletes_folded) = folded_into.remove(&beaten).unwrap_or_default();
                    match records[beaten].is_deletion() {
                        true => {
                            superseded_deletes += 1;
                            deletes_folded += 1;
                        }
                        false => {
                            superseded += 1;
                            records_folded += 1;
                        }
                    }
                    folded_into.insert(i, (records_folded, deletes_folded));
                } else {
                    stale += 1;
                }
            }
        }
    }
    let mut latest: Vec<usize> = winner.into_values().collect();
    latest.sort_unstable();
    BatchWinners {
        latest,
        superseded,
        superseded_deletes,
        stale,
        folded_into,
    }
}

/// Once a batch is written: the records folded into a winner the store
/// found stale (it held an equal or newer version) changed nothing either,
/// so they count as stale, not as updates or deletes (stored K v5, a batch
/// of K v3 and K v4: both stale).
pub(super) fn settle(
    outcome: &mut WriteOutcome,
    folded_into: &HashMap<usize, (u64, u64), foldhash::fast::RandomState>,
) {
    if folded_into.is_empty() {
        return;
    }
    for winner in &outcome.stale_records {
        if let Some((records, deletes)) = folded_into.get(winner) {
            outcome.updated = outcome.updated.saturating_sub(*records);
            outcome.deleted = outcome.deleted.saturating_sub(*deletes);
            outcome.stale += records + deletes;
        }
    }
}

impl BatchWinners {
    /// What the records folded away count as.
    pub(super) fn folded(&self) -> WriteOutcome {
        WriteOutcome {
            updated: self.superseded,
            deleted: self.superseded_deletes,
            stale: self.stale,
            ..WriteOutcome::default()
        }
    }
}

/// One statement of a guarded `update` command (see [`Store::upsert`]).
///
/// The fields a record may lack (an absent zip code, no extras) are unset,
/// so an update replaces the record's fields wholesale, as an insert would:
/// the end state never depends on which version was written first.
/// Fields the import does not own (`rented_to`, from taking stock) are
/// left as they are.
pub(super) fn guarded_upsert(record: &Record) -> Document {
    let mut filter = key_filter(record);
    let mut unset = Document::new();
    for field in absent_fields(record) {
        unset.insert(field, "");
    }
    let set = match record.version() {
        Some(version) => {
            guard_version(&mut filter, version);
            versioned_fields(record)
        }
        None => {
            unset.insert(VERSION_FIELD, "");
            to_document(record)
        }
    };
    let mut update = doc! {"$set": set};
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    doc! {"q": filter, "u": update, "upsert": true}
}

/// A record the server refused, with its words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedWrite {
    /// Index of the record in the batch.
    pub index: usize,
    pub code: i32,
    pub message: String,
}

/// What a batch write did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Records that created a new document.
    pub inserted: u64,
    /// Records whose key already had a document (changed or not; a
    /// tombstone too, which the record then brings back).
    pub updated: u64,
    /// Deletes applied: the key's document is now a tombstone at the
    /// delete's version (it had none, an older one, or was a tombstone).
    pub deleted: u64,
    /// Records that changed nothing: the store, or an earlier record of the
    /// same batch, held an equal or newer version of their key.
    pub stale: u64,
    /// Records the server refused; the caller dead-letters them.
    pub failed: Vec<FailedWrite>,
    /// Statements sent again after a duplicate-key error from a racing
    /// upsert (they then succeeded or are in `failed`).
    pub retried: u64,
    /// Indexes into the batch of the records found stale against the
    /// store: what a key's records folded into them count as too (see
    /// `settle`).
    pub stale_records: Vec<usize>,
}

/// How many times a statement is sent again after a duplicate-key error
/// from a racing writer (see [`Store::upsert`]) before the batch fails, to
/// be tried again whole.
impl WriteOutcome {
    /// Add what another write of the same batch did (its indexes are already
    /// the batch's).
    pub(super) fn add(&mut self, other: WriteOutcome) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.stale += other.stale;
        self.retried += other.retried;
        self.failed.extend(other.failed);
        self.stale_records.extend(other.stale_records);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::document::{stored_document, DELETED_AT_FIELD, DELETED_FIELD};
    use hpn_common::record::{RecordKind, Rental};

    #[test]
    fn only_the_last_record_of_a_key_is_kept() {
        let r = |p: &str, u: &str| {
            Record::Rental(Rental {
                product_id: p.into(),
                user_id: u.into(),
                extra: Default::default(),
                version: None,
            })
        };
        let batch = vec![
            r("P1", "C1"),
            r("P2", "C1"),
            r("P1", "C1"),
            r("P1", "C2"),
            r("P1", "C1"),
        ];
        let winners = latest_per_key(&batch);
        assert_eq!(
            (winners.latest, winners.superseded, winners.stale),
            (vec![1, 3, 4], 2, 0)
        );
        assert_eq!(latest_per_key(&[]), BatchWinners::default());
    }

    #[test]
    fn in_a_batch_the_highest_version_wins_whatever_its_position() {
        let c = |id: &str, v: Option<i64>| {
            let mut r = Record::Rental(Rental {
                product_id: "P".into(),
                user_id: id.into(),
                extra: Default::default(),
                version: None,
            });
            r.set_version(v);
            r
        };
        let batch = vec![
            c("A", Some(5)), // 0: A's newest, first
            c("A", Some(3)), // 1: older than 0: stale
            c("B", Some(2)), // 2
            c("B", Some(2)), // 3: equal to 2: stale, the first stays
            c("C", Some(1)), // 4
            c("C", Some(9)), // 5: newer: supersedes 4
            c("D", Some(7)), // 6
            c("D", None),    // 7: no version: applied on arrival, supersedes 6
            c("D", Some(1)), // 8: replaces a record without a version
        ];
        let winners = latest_per_key(&batch);
        assert_eq!(winners.latest, vec![0, 2, 5, 8]);
        assert_eq!((winners.superseded, winners.stale), (3, 2));
    }

    #[test]
    fn a_versioned_statement_is_guarded_and_an_unversioned_one_clears_the_version() {
        let mut r = Record::Rental(Rental {
            product_id: "P1".into(),
            user_id: "C1".into(),
            extra: Default::default(),
            version: Some(42),
        });
        assert_eq!(stored_document(&r).get_i64(VERSION_FIELD), Ok(42));
        assert_eq!(
            guarded_upsert(&r),
            doc! {
                "q": {"_id": "P1 C1", "_v": {"$not": {"$gte": 42_i64}}},
                "u": {
                    "$set": {"product_id": "P1", "user_id": "C1", "_v": 42_i64},
                    "$unset": {"extra": "", "_deleted": "", "_deleted_at": ""},
                },
                "upsert": true,
            }
        );
        r.set_version(None);
        assert_eq!(
            guarded_upsert(&r),
            doc! {
                "q": {"_id": "P1 C1"},
                "u": {
                    "$set": {"product_id": "P1", "user_id": "C1"},
                    "$unset": {"extra": "", "_deleted": "", "_deleted_at": "", "_v": ""},
                },
                "upsert": true,
            }
        );
    }

    #[test]
    fn a_delete_is_a_guarded_statement_that_leaves_only_the_key() {
        let delete = Record::Deleted(hpn_common::Deletion::of(RecordKind::Customer, "C1").unwrap()).with_version(7);
        let statement = guarded_upsert(&delete);
        assert_eq!(
            statement.get_document("q").unwrap(),
            &doc! {"_id": "C1", "_v": {"$not": {"$gte": 7_i64}}}
        );
        let update = statement.get_document("u").unwrap();
        let set = update.get_document("$set").unwrap();
        assert_eq!(set.get_str("user_id"), Ok("C1"));
        assert_eq!(set.get_bool(DELETED_FIELD), Ok(true));
        assert_eq!(set.get_i64(VERSION_FIELD), Ok(7));
        assert!(set.get_datetime(DELETED_AT_FIELD).is_ok());
        let unset: Vec<&str> = update
            .get_document("$unset")
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(unset, ["name", "address", "zip_code", "phone_number", "email", "extra"]);
        assert_eq!(
            statement.get_bool("upsert"),
            Ok(true),
            "a key never stored gets a tombstone too"
        );
    }

    #[test]
    fn in_a_batch_a_delete_folds_like_any_record() {
        let c = |v: i64| customer_record("C1", v);
        let d = |v: i64| Record::Deleted(hpn_common::Deletion::of(RecordKind::Customer, "C1").unwrap()).with_version(v);
        let winners = latest_per_key(&[c(1), d(3), c(2)]);
        assert_eq!(winners.latest, vec![1], "the delete is the newest");
        assert_eq!(
            (winners.superseded, winners.superseded_deletes, winners.stale),
            (1, 0, 1)
        );
        let winners = latest_per_key(&[d(1), c(2)]);
        assert_eq!(winners.latest, vec![1]);
        assert_eq!((winners.superseded, winners.superseded_deletes), (0, 1));
        assert_eq!(winners.folded().deleted, 1);
    }

    fn customer_record(id: &str, version: i64) -> Record {
        Record::Customer(hpn_common::Customer {
            user_id: id.into(),
            name: "Ann".into(),
            address: String::new(),
            zip_code: None,
            phone_number: String::new(),
            email: "ann@example.com".into(),
            extra: Default::default(),
            version: Some(version),
        })
    }

    #[test]
    fn records_folded_into_a_winner_the_store_found_stale_are_stale() {
        let c = |v: i64| {
            Record::Rental(Rental {
                product_id: "P1".into(),
                user_id: "C1".into(),
                extra: Default::default(),
                version: Some(v),
            })
        };
        let batch = latest_per_key(&[c(3), c(4), c(2)]);
        assert_eq!((batch.superseded, batch.stale), (1, 1));
        assert_eq!(batch.folded_into.get(&1), Some(&(1, 0)), "v3 folded into v4");
        let mut outcome = batch.folded();
        outcome.stale += 1;
        outcome.stale_records.push(1);
        settle(&mut outcome, &batch.folded_into);
        assert_eq!((outcome.updated, outcome.stale), (0, 3), "v4 stale, so v3 too");
        let mut won = batch.folded();
        settle(&mut won, &batch.folded_into);
        assert_eq!((won.updated, won.stale), (1, 1), "v4 won: v3 applied, then overwritten");
    }
}
