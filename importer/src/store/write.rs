//! The importer's write: a batch of one kind, keyed and guarded by version.

use super::batch::{guarded_upsert, latest_per_key, settle, split_deletes, FailedWrite, WriteOutcome};
use super::document::{key_id, on_key_index, stored_raw, VERSION_FIELD};
use super::error::{is_transient, DUPLICATE_KEY, RECORD_REFUSALS};
use super::replace::{stored_version, IN_CHUNK};
use super::{Store, StoreError};
use futures::TryStreamExt;
use hpn_common::record::{replaces, Record, RecordKind};
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf};
use mongodb::error::ErrorKind;
use std::collections::HashMap;

/// One record of a batch the server refused on its merits.
const DUPLICATE_KEY_RETRIES: usize = 3;

/// How long to wait before each read that settles a write whose answer was
/// lost (see [`Store::settle_unknown`]): the first at once, then while a
/// dropped connection is replaced or a new primary elected.
const SETTLE_READ_WAITS: [std::time::Duration; 4] = [
    std::time::Duration::ZERO,
    std::time::Duration::from_millis(250),
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(2),
];

impl Store {
    /// Write a batch of records of one kind, keyed on their business keys
    /// and guarded by version: the importer's write.
    ///
    /// New keys go in with one unordered `insert_many`, which is several
    /// times faster than upserting (the server need not look for a document
    /// to update first); the records whose key already exists come back as
    /// duplicate-key errors and are applied with guarded updates (see
    /// [`Store::upsert`]). The end state is the one a guarded upsert of every
    /// record would give: absent keys inserted, present keys updated where
    /// the record is newer, left alone where it is stale.
    ///
    /// Within one batch only the winner of each key is sent (see
    /// `latest_per_key`), so the result does not depend on the order the
    /// server applies an unordered batch in.
    ///
    /// Where the collection's last batch found most of its keys stored (a
    /// re-import), and the server runs transactions, the batch is written
    /// the re-import's way instead (see `store::replace`): its stored
    /// versions read, stale records counted without a write, the rest
    /// replaced, all in one transaction; what that cannot write takes the
    /// insert-first path.
    ///
    /// Deletes skip the insert: each is one guarded statement (see
    /// [`Store::upsert`]), which leaves a tombstone where the key had no
    /// document or an older one.
    pub async fn write(&self, kind: RecordKind, records: &[Record]) -> Result<WriteOutcome, StoreError> {
        let batch = latest_per_key(records);
        let folded = batch.folded();
        let mut outcome = self.write_winners(kind, records, batch.latest, folded).await?;
        settle(&mut outcome, &batch.folded_into);
        Ok(outcome)
    }

    /// [`Store::write`] of a batch's winners, `outcome` holding what was
    /// folded away.
    async fn write_winners(
        &self,
        kind: RecordKind,
        records: &[Record],
        winners: Vec<usize>,
        mut outcome: WriteOutcome,
    ) -> Result<WriteOutcome, StoreError> {
        let (deletes, mut latest) = split_deletes(winners, records);
        if !deletes.is_empty() {
            outcome.add(self.delete(kind, records, deletes).await?);
        }
        if latest.is_empty() {
            return Ok(outcome);
        }
        // In key order: the server writes (and reads) a batch of keys
        // scattered over the collection (rentals keyed by product, exported
        // by customer) far faster sorted than in arrival order.
        latest.sort_unstable_by(|a, b| records[*a].key_parts().cmp(&records[*b].key_parts()));
        if self.takes_transactions() && self.mostly_stored(kind).await? {
            let written = latest.len() as u64;
            let replaced = self.replace(kind, records, latest).await?;
            let stored = replaced.outcome.updated + replaced.outcome.stale;
            outcome.add(replaced.outcome);
            latest = replaced.left;
            if latest.is_empty() {
                self.seen.met(kind, stored, written);
                return Ok(outcome);
            }
        }
        let documents: Vec<RawDocumentBuf> = latest.iter().map(|&i| stored_raw(&records[i])).collect();
        let mut conflicts = Vec::new();
        let collection = self.db.collection::<RawDocumentBuf>(kind.collection());
        match collection.insert_many(documents).ordered(false).await {
            Ok(_) => outcome.inserted += latest.len() as u64,
            Err(e) => {
                let ErrorKind::InsertMany(failure) = e.kind.as_ref() else {
                    return Err(e.into());
                };
                if let Some(wce) = &failure.write_concern_error {
                    return Err(StoreError::WriteConcern(wce.message.clone()));
                }
                let errors = failure.write_errors.as_deref().unwrap_or_default();
                outcome.inserted += (latest.len() - errors.len()) as u64;
                let mut unknown = Vec::new();
                for error in errors {
                    let index = latest[error.index];
                    let failed = FailedWrite {
                        index,
                        code: error.code,
                        message: error.message.clone(),
                    };
                    if error.code == DUPLICATE_KEY && on_key_index(&error.message, None) {
                        conflicts.push(index);
                    } else if !RECORD_REFUSALS.contains(&error.code) {
                        unknown.push(failed);
                    } else {
                        outcome.failed.push(failed);
                    }
                }
                let all_refused = unknown.len() == latest.len();
                outcome
                    .failed
                    .extend(self.whose_refusal(kind, unknown, all_refused).await?);
            }
        }
        self.seen.met(kind, conflicts.len() as u64, latest.len() as u64);
        if !conflicts.is_empty() {
            conflicts.sort_unstable();
            let guarded = self.apply(kind, records, conflicts).await?;
            outcome.add(guarded);
        }
        Ok(outcome)
    }

    /// Whether a batch of `kind` will find most of its keys stored: as the
    /// collection's last batch did, or before its first, whether the
    /// collection holds any document (see [`super::replace`]).
    async fn mostly_stored(&self, kind: RecordKind) -> Result<bool, StoreError> {
        match self.seen.mostly_stored(kind) {
            Some(mostly) => Ok(mostly),
            None => Ok(self.collection(kind).estimated_document_count().await? > 0),
        }
    }

    /// Upsert a batch of records of one kind, guarded by version: one
    /// statement per key, keyed on the `_id` (the business key), in one
    /// unordered `update` command.
    ///
    /// Each statement's filter is the key plus, for a versioned record,
    /// "stored version absent or lower" (`_v: {$not: {$gte: v}}`).
    /// A document that passes is updated; when none passes the server tries
    /// to insert, and the `_id` index refuses that with E11000 if the
    /// key exists with an equal or newer version: the record is stale, and
    /// nothing changed. A record without a version matches on its key alone
    /// and clears the stored version (see `docs/message-format.md`).
    ///
    /// So E11000 alone does not say "stale": another writer may have put
    /// the document there after the statement looked (two upserts of a new
    /// key racing), or be replacing it (the re-import's transaction deletes
    /// and inserts a document, so a statement running beside it can miss
    /// the document and then meet the new one). A statement that met E11000
    /// is settled by reading its key's stored version: stale when that is
    /// equal or newer, else sent again, up to `DUPLICATE_KEY_RETRIES`
    /// times; a key that keeps changing fails the batch as contended (a
    /// transient error: the writer tries it again).
    ///
    /// A delete is the same statement with the tombstone's fields (see
    /// `document`): applied only over an older version, it unsets the
    /// record's other fields; a newer record's statement unsets the
    /// tombstone's marks.
    pub async fn upsert(&self, kind: RecordKind, records: &[Record]) -> Result<WriteOutcome, StoreError> {
        let batch = latest_per_key(records);
        let mut outcome = batch.folded();
        let (deletes, latest) = split_deletes(batch.latest, records);
        if !deletes.is_empty() {
            outcome.add(self.delete(kind, records, deletes).await?);
        }
        outcome.add(self.apply(kind, records, latest).await?);
        settle(&mut outcome, &batch.folded_into);
        Ok(outcome)
    }

    /// Apply the deletes `records[i]`, `i` in `pending` (one per key), as
    /// guarded statements: what they changed counts as deleted.
    async fn delete(
        &self,
        kind: RecordKind,
        records: &[Record],
        pending: Vec<usize>,
    ) -> Result<WriteOutcome, StoreError> {
        let applied = self.apply(kind, records, pending).await?;
        Ok(WriteOutcome {
            inserted: 0,
            updated: 0,
            deleted: applied.inserted + applied.updated,
            ..applied
        })
    }

    /// Send guarded upserts for `records[i]`, `i` in `pending` (one per key),
    /// settling each duplicate-key error (see [`Store::upsert`]).
    async fn apply(
        &self,
        kind: RecordKind,
        records: &[Record],
        mut pending: Vec<usize>,
    ) -> Result<WriteOutcome, StoreError> {
        let mut outcome = WriteOutcome::default();
        for attempt in 0..=DUPLICATE_KEY_RETRIES {
            if pending.is_empty() {
                return Ok(outcome);
            }
            if attempt > 0 {
                outcome.retried += pending.len() as u64;
            }
            let statements: Vec<Document> = pending
                .iter()
                .map(|&i| {
                    debug_assert_eq!(records[i].kind(), kind);
                    guarded_upsert(&records[i])
                })
                .collect();
            let reply = match self.run_update(kind.collection(), statements).await {
                Ok(reply) => reply,
                // The statements' fate is unknown: settled from the store.
                Err(e) if e.is_transient() => {
                    pending = self.settle_unknown(kind, records, pending, &mut outcome, e).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            outcome.inserted += reply.upserted;
            outcome.updated += reply.matched.saturating_sub(reply.upserted);
            let mut conflicts = Vec::new();
            let mut unknown = Vec::new();
            for error in reply.errors {
                let record_index = pending[error.index];
                if error.key_conflict {
                    conflicts.push(record_index);
                    continue;
                }
                let failed = FailedWrite {
                    index: record_index,
                    code: error.code,
                    message: error.message,
                };
                if RECORD_REFUSALS.contains(&error.code) {
                    outcome.failed.push(failed);
                } else {
                    unknown.push(failed);
                }
            }
            let all_refused = unknown.len() == pending.len();
            outcome
                .failed
                .extend(self.whose_refusal(kind, unknown, all_refused).await?);
            let stored = self.stored_versions(kind, records, &conflicts).await?;
            pending = conflicts
                .into_iter()
                .filter(|&i| {
                    let key = key_id(&records[i]);
                    let stale = stored
                        .get(key.as_str().unwrap_or_default())
                        .is_some_and(|stored| !replaces(records[i].version(), *stored));
                    if stale {
                        outcome.stale += 1;
                        outcome.stale_records.push(i);
                    }
                    !stale
                })
                .collect();
            pending.sort_unstable();
        }
        if pending.is_empty() {
            return Ok(outcome);
        }
        Err(StoreError::Contended {
            collection: kind.collection(),
            records: pending.len(),
        })
    }

    /// Settle `records[i]`, `i` in `pending`, whose guarded statements went
    /// out but whose answer did not come back (`lost`: the connection
    /// dropped, the primary stepped down): the server may have applied
    /// any of them. Sent again as they are, those it applied would match
    /// nothing and count as stale, and the batch's figures would be wrong.
    /// So the stored versions are read: a key holding the record's own
    /// version was written by the lost command and counts as updated (an
    /// upsert that inserted it is counted as updated too: the store keeps
    /// no trace of which it was); one holding a newer version counts as
    /// stale; the rest are returned, to be sent again. When the store does
    /// not answer the read either (after a few tries), the batch fails with
    /// `lost`, to be tried again whole.
    async fn settle_unknown(
        &self,
        kind: RecordKind,
        records: &[Record],
        pending: Vec<usize>,
        outcome: &mut WriteOutcome,
        lost: StoreError,
    ) -> Result<Vec<usize>, StoreError> {
        let mut stored = None;
        for wait in SETTLE_READ_WAITS {
            tokio::time::sleep(wait).await;
            if let Ok(read) = self.stored_versions(kind, records, &pending).await {
                stored = Some(read);
                break;
            }
        }
        let Some(stored) = stored else {
            return Err(lost);
        };
        tracing::debug!(%kind, records = pending.len(), "settled a write whose answer was lost by reading the store");
        let mut left = Vec::new();
        for i in pending {
            let key = key_id(&records[i]);
            let version = records[i].version();
            match stored.get(key.as_str().unwrap_or_default()) {
                Some(held) if version.is_some() && *held == version => outcome.updated += 1,
                Some(held) if !replaces(version, *held) => {
                    outcome.stale += 1;
                    outcome.stale_records.push(i);
                }
                _ => left.push(i),
            }
        }
        Ok(left)
    }

    /// The stored version of each key of `records[i]`, `i` in `which`, that
    /// has a document (`None` inside: a document written without one).
    async fn stored_versions(
        &self,
        kind: RecordKind,
        records: &[Record],
        which: &[usize],
    ) -> Result<HashMap<String, Option<i64>>, StoreError> {
        let mut stored = HashMap::with_capacity(which.len());
        let keys: Vec<Bson> = which.iter().map(|&i| key_id(&records[i])).collect();
        let collection = self.db.collection::<RawDocumentBuf>(kind.collection());
        for some in keys.chunks(IN_CHUNK) {
            let mut cursor = collection
                .find(doc! {"_id": {"$in": some}})
                .projection(doc! {VERSION_FIELD: 1})
                .await?;
            while let Some(document) = cursor.try_next().await? {
                // Every `_id` the import writes is a string (see `key_id`).
                if let Ok(id) = document.get_str("_id") {
                    stored.insert(id.to_string(), stored_version(&document));
                }
            }
        }
        Ok(stored)
    }

    /// Whose fault the `refused` records are, refused with codes not known
    /// to be a record's ([`RECORD_REFUSALS`]): returned as the records' (to
    /// be dead-lettered with the server's code and words) when the store
    /// took or judged other records of the same write, or, when it refused
    /// every one (`all_refused`), when it still takes a write that changes
    /// nothing; otherwise the store refuses writes as such, and the batch
    /// fails whole with its first refusal, to be held and tried again.
    async fn whose_refusal(
        &self,
        kind: RecordKind,
        refused: Vec<FailedWrite>,
        all_refused: bool,
    ) -> Result<Vec<FailedWrite>, StoreError> {
        if refused.is_empty() || !all_refused || self.takes_writes(kind).await? {
            return Ok(refused);
        }
        let first = refused.into_iter().next().expect("not empty");
        Err(StoreError::Refused {
            code: first.code,
            message: first.message,
        })
    }

    /// Whether the collection takes a write at all: an update that matches
    /// nothing and inserts nothing, refused by the same causes as any
    /// write (a view, no permission, a read-only or full server).
    async fn takes_writes(&self, kind: RecordKind) -> Result<bool, StoreError> {
        let nothing = doc! {"q": {"_id": {"$in": []}}, "u": {"$set": {VERSION_FIELD: 0}}, "upsert": false};
        match self.run_update(kind.collection(), vec![nothing]).await {
            Ok(reply) => Ok(reply.errors.is_empty()),
            // A refusal of the write as such; a time-out or an election is
            // an outage, retried as one, never taken for a refusal.
            Err(StoreError::Mongo(e)) if matches!(e.kind.as_ref(), ErrorKind::Command(_)) && !is_transient(&e) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}
