//! The re-import's write: a batch whose keys mostly exist already, written
//! as one transaction that reads the stored versions, counts the stale
//! records without writing them, and replaces the rest (a delete and an
//! insert of the keys the batch wins).
//!
//! Why not the guarded update every other path sends: on the server we
//! measure on, an update of any shape costs several inserts, and a stale
//! record sent as a guarded statement costs more than an update (it fails
//! the guard, then the upsert's insert fails on the `_id`); reading the
//! versions costs little, and a delete and an insert cost less than one
//! update. What the re-import costs end to end, against a careful upsert
//! loader, is findings.md's *The daily re-import* (`hpn-bench reimport`).
//!
//! What keeps it right:
//! - **Atomic to readers.** The delete and the insert commit together: no
//!   reader, count or query ever sees a key missing.
//! - **Guarded by the transaction, not by a filter.** The versions are read
//!   in the transaction's snapshot; if another writer (a racing importer)
//!   changes or inserts one of its keys before it commits, the server fails
//!   the transaction with a write conflict (`TransientTransactionError`) and
//!   it is run again from the read. So the newest version wins whatever the
//!   order, as with the guarded statements.
//! - **Fields the import does not own stay.** The read returns every field
//!   but those a record writes ([`owned_fields`]), and the new document
//!   carries them over (`rented_to` on a product).
//! - **Anything unexpected falls back.** A record the server refuses (a
//!   validator, a size limit) fails the whole transaction: it is aborted and
//!   its records go the guarded way, which dead-letters that record alone.
//!   So does a run whose transaction keeps conflicting. Transactions need a
//!   replica set or `mongos`; on a standalone server this path is never
//!   taken.
//! - **Bounded.** A transaction holds at most one command's worth of
//!   documents (`maxBsonObjectSize` bytes, see [`super::command`]).
//!
//! Which path a batch takes is decided by what the collection's last batch
//! met ([`KeysSeen`]): a first load stays on the insert-first path, which
//! is cheapest for new keys. A collection's first batch in a process goes
//! this way when the collection holds documents: a wrong guess costs a
//! read of keys that are not there, the other wrong guess (a batch of
//! stored keys sent insert-first) a failed insert and a guarded update of
//! every record.

use super::batch::WriteOutcome;
use super::document::{key_id, owned_fields, stored_raw, VERSION_FIELD};
use super::error::is_transient;
use super::{Store, StoreError};
use futures::TryStreamExt;
use hpn_common::record::{replaces, Record, RecordKind};
use mongodb::bson::{doc, Bson, Document, RawBsonRef, RawDocumentBuf};
use mongodb::error::{Error as MongoError, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::ReadConcern;
use mongodb::ClientSession;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// Times a transaction is run again after a write conflict before its
/// records go the guarded way.
const CONFLICT_ATTEMPTS: usize = 4;

/// Times a commit whose outcome is unknown is sent again (the server
/// applies a transaction's commit once however often it is sent).
const COMMIT_ATTEMPTS: usize = 4;

/// Re-import transactions one store (every writer of an importer process)
/// keeps open at once. The server's work per transaction grows with the
/// snapshots open beside it (each read and write checks what the others
/// may see); one at a time leaves it idle between our commands when it
/// has cores to spare. Measured with `hpn-importer run --mode parallel`
/// re-importing the bench's changed export (100,000 records per file over
/// the first load) on the local MongoDB-compatible server, 2026-12-07:
/// with the database on its own core (hpn-bench's pinned layout), 3 at
/// once (a writer per collection) 13.0–14.1 s, median 13.8 s, 2 at once
/// 12.6–13.3 s, 1 at once 12.6–12.7 s; on shared cores 3 at once 7.7–8.1 s,
/// 2 at once 7.6–7.7 s, 1 at once 10.5 s.
pub(super) const TRANSACTIONS_AT_ONCE: usize = 2;

/// What each collection's last batches met: whether most of their keys
/// were stored already, and whether their keys were scattered over the
/// collection (see [`KeySpan`]). Shared by every writer of a store (the
/// partitions of a collection see the same mix).
#[derive(Debug, Default)]
pub struct KeysSeen([Seen; 3]);

#[derive(Debug, Default)]
struct Seen {
    /// [`UNSEEN`] until the collection's first batch, then [`FEW`] or [`MOSTLY`].
    stored: AtomicU8,
    /// Batches left before a range is read again after one held too much.
    skip_ranges: AtomicU32,
}

const UNSEEN: u8 = 0;
const FEW: u8 = 1;
const MOSTLY: u8 = 2;

/// Batches that read their keys by `$in` after one whose range held too
/// many other documents, before a range is tried again: a collection's
/// keys stay scattered or ordered for a whole export, and a range read
/// that held too much cost a scan of the range (the server we measure on
/// does not stop at the limit; a real `mongod` does).
const SKIP_RANGES_AFTER_SCATTERED: u32 = 256;

impl KeysSeen {
    fn slot(&self, kind: RecordKind) -> &Seen {
        &self.0[RecordKind::ALL.iter().position(|k| *k == kind).expect("a kind of ALL")]
    }

    /// Whether the last batch of `kind` found most of its keys stored;
    /// `None` before its first batch.
    pub fn mostly_stored(&self, kind: RecordKind) -> Option<bool> {
        match self.slot(kind).stored.load(Ordering::Relaxed) {
            UNSEEN => None,
            met => Some(met == MOSTLY),
        }
    }

    /// Note what a batch of `kind` met: `stored` of its `written` keys existed.
    pub fn met(&self, kind: RecordKind, stored: u64, written: u64) {
        if written > 0 {
            let met = if stored * 2 >= written { MOSTLY } else { FEW };
            self.slot(kind).stored.store(met, Ordering::Relaxed);
        }
    }

    /// Whether this batch of `kind` reads its keys' range (counting down
    /// the batches left after a scattered one).
    fn reads_range(&self, kind: RecordKind) -> bool {
        let skip = &self.slot(kind).skip_ranges;
        skip.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
            .is_err()
    }

    /// A range of `kind` held more documents than it could read whole.
    fn scattered(&self, kind: RecordKind) {
        self.slot(kind)
            .skip_ranges
            .store(SKIP_RANGES_AFTER_SCATTERED, Ordering::Relaxed);
    }
}

/// What [`Store::replace`] did, and the records it left to the guarded path.
pub struct Replaced {
    pub outcome: WriteOutcome,
    /// Indexes into the batch, in the order they were given.
    pub left: Vec<usize>,
}

/// Why a transaction ended without committing.
enum Abandoned {
    /// A write conflict or another error the server says a new attempt may mend.
    Conflict,
    /// The server refused something in it: its records go the guarded way.
    Refused,
    /// An outage: the batch fails, to be retried whole by the writer.
    Outage(StoreError),
}

impl Store {
    /// Whether a transaction can be used at all (a replica set or `mongos`).
    pub(super) fn takes_transactions(&self) -> bool {
        self.transactions
    }

    /// Write `latest` (indexes into `records`, one per key, no deletes) in
    /// transactions (see the module's docs). What could not be written
    /// that way is returned in [`Replaced::left`] for the guarded path.
    pub(super) async fn replace(
        &self,
        kind: RecordKind,
        records: &[Record],
        latest: Vec<usize>,
    ) -> Result<Replaced, StoreError> {
        let _slot = self
            .transaction_slots
            .acquire()
            .await
            .expect("the store never closes its transaction slots");
        let mut session = self.client.start_session().await?;
        let mut done = Replaced {
            outcome: WriteOutcome::default(),
            left: Vec::new(),
        };
        for run in self.transaction_runs(records, latest) {
            match self.replace_run(&mut session, kind, records, &run).await? {
                Some(outcome) => done.outcome.add(outcome),
                None => done.left.extend(run.iter().map(|(i, _)| *i)),
            }
        }
        Ok(done)
    }

    /// Each of `latest` with its document, built once, cut into runs of
    /// at most one command's worth of documents (see [`super::command`]).
    fn transaction_runs(&self, records: &[Record], latest: Vec<usize>) -> Vec<Vec<(usize, RawDocumentBuf)>> {
        let mut runs = Vec::new();
        let (mut run, mut bytes) = (Vec::new(), 0);
        for i in latest {
            let document = stored_raw(&records[i]);
            let size = document.as_bytes().len();
            if self.limits.full(run.len(), bytes, size) {
                runs.push(std::mem::take(&mut run));
                bytes = 0;
            }
            bytes += size;
            run.push((i, document));
        }
        if !run.is_empty() {
            runs.push(run);
        }
        runs
    }

    /// One run in one transaction, run again on a write conflict. `None`:
    /// the run is left to the guarded path.
    async fn replace_run(
        &self,
        session: &mut ClientSession,
        kind: RecordKind,
        records: &[Record],
        run: &[(usize, RawDocumentBuf)],
    ) -> Result<Option<WriteOutcome>, StoreError> {
        for _ in 0..CONFLICT_ATTEMPTS {
            session
                .start_transaction()
                .read_concern(ReadConcern::snapshot())
                .write_concern(self.write_concern.clone())
                .await?;
            let result = match self.replace_in(session, kind, records, run).await {
                Ok(outcome) => self.commit(session).await.map(|()| outcome),
                Err(e) => {
                    // The server ends a failed transaction itself; an abort
                    // that fails too says nothing more.
                    let _ = session.abort_transaction().await;
                    Err(e)
                }
            };
            match result {
                Ok(outcome) => return Ok(Some(outcome)),
                Err(Abandoned::Conflict) => continue,
                Err(Abandoned::Refused) => return Ok(None),
                Err(Abandoned::Outage(e)) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Read the run's stored versions, then replace what it wins, in the
    /// transaction open on `session`.
    async fn replace_in(
        &self,
        session: &mut ClientSession,
        kind: RecordKind,
        records: &[Record],
        run: &[(usize, RawDocumentBuf)],
    ) -> Result<WriteOutcome, Abandoned> {
        let collection = self.db.collection::<RawDocumentBuf>(kind.collection());
        let keys: Vec<Bson> = run.iter().map(|(i, _)| key_id(&records[*i])).collect();
        let span = KeySpan::of(&keys).filter(|_| self.seen.reads_range(kind));
        // The keys' range first (see `KeySpan`); all the keys by `$in` when
        // the range holds too many other documents to be read whole.
        let mut stored = match &span {
            Some(span) => self.read_stored(session, kind, span.filter(), Some(span.limit)).await?,
            None => Vec::new(),
        };
        let whole_range = span.as_ref().is_some_and(|span| stored.len() < span.limit);
        if span.is_some() && !whole_range {
            self.seen.scattered(kind);
        }
        if !whole_range {
            stored.clear();
            for some in keys.chunks(IN_CHUNK) {
                stored.extend(
                    self.read_stored(session, kind, doc! {"_id": {"$in": some}}, None)
                        .await?,
                );
            }
        }
        let in_range = stored.len();
        let stored: HashMap<&str, &RawDocumentBuf> = stored
            .iter()
            .filter_map(|document| Some((document.get_str("_id").ok()?, document)))
            .collect();
        let mut outcome = WriteOutcome::default();
        let (mut replaced, mut documents) = (Vec::new(), Vec::with_capacity(run.len()));
        for ((i, built), key) in run.iter().zip(&keys) {
            let record = &records[*i];
            // A copy: a conflict runs the transaction again with the same documents.
            let mut document = built.clone();
            match key.as_str().and_then(|key| stored.get(key)) {
                None => outcome.inserted += 1,
                Some(old) if !replaces(record.version(), stored_version(old)) => {
                    outcome.stale += 1;
                    outcome.stale_records.push(*i);
                    continue;
                }
                Some(old) => {
                    carry_over(old, &mut document);
                    replaced.push(key.clone());
                    outcome.updated += 1;
                }
            }
            documents.push(document);
        }
        if !replaced.is_empty() {
            let expected = replaced.len() as u64;
            // Every document the range holds is replaced: delete the range,
            // as the snapshot saw it (a key another writer adds to it after
            // the snapshot is not seen, one it changes is a write conflict).
            // Else by key, in chunks as they were read.
            let which: Vec<Document> = match &span {
                Some(span) if whole_range && in_range == replaced.len() => vec![span.filter()],
                _ => replaced
                    .chunks(IN_CHUNK)
                    .map(|some| doc! {"_id": {"$in": some}})
                    .collect(),
            };
            let mut deleted = 0;
            for filter in which {
                deleted += collection
                    .delete_many(filter)
                    .session(&mut *session)
                    .await
                    .map_err(abandoned)?
                    .deleted_count;
            }
            if deleted != expected {
                // The snapshot said they were there: a server that does not
                // isolate as MongoDB documents. Let the guarded path decide.
                return Err(Abandoned::Refused);
            }
        }
        if !documents.is_empty() {
            collection
                .insert_many(documents)
                .session(&mut *session)
                .await
                .map_err(abandoned)?;
        }
        Ok(outcome)
    }

    /// The stored documents matching `filter` (at most `limit`), without
    /// the fields the import owns but the version, read in the transaction.
    async fn read_stored(
        &self,
        session: &mut ClientSession,
        kind: RecordKind,
        filter: Document,
        limit: Option<usize>,
    ) -> Result<Vec<RawDocumentBuf>, Abandoned> {
        let not_owned: Document = owned_fields(kind)
            .filter(|field| *field != VERSION_FIELD)
            .map(|field| (field.to_string(), Bson::Int32(0)))
            .collect();
        let collection = self.db.collection::<RawDocumentBuf>(kind.collection());
        let mut find = collection.find(filter).projection(not_owned);
        if let Some(limit) = limit {
            // One round trip: the whole answer in the first batch.
            find = find.limit(limit as i64).batch_size(limit as u32 + 1);
        }
        find.session(&mut *session)
            .await
            .map_err(abandoned)?
            .stream(&mut *session)
            .try_collect()
            .await
            .map_err(abandoned)
    }

    /// Commit, sending the commit again while its outcome is unknown.
    async fn commit(&self, session: &mut ClientSession) -> Result<(), Abandoned> {
        let mut attempt = 1;
        loop {
            match session.commit_transaction().await {
                Ok(()) => return Ok(()),
                Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) && attempt < COMMIT_ATTEMPTS => {
                    attempt += 1;
                }
                Err(e) => return Err(abandoned(e)),
            }
        }
    }
}

/// The range of `_id`s from a run's lowest key to its highest, the cheap
/// way to read its stored versions: an export comes in key order, so a
/// batch's keys are most of what its range holds, and on the server we
/// measure on a range costs a fraction of a `$in` of the same keys, to
/// read and to delete. The range is read up to [`RANGE_SLACK`] times the
/// run's size; a range holding more (keys scattered over the collection,
/// as rentals keyed by product come in customer order) is read by `$in`
/// instead, and so are the collection's next batches (see [`KeysSeen`]).
struct KeySpan {
    low: Bson,
    high: Bson,
    /// At most this many documents are read from the range.
    limit: usize,
}

/// How many documents per key of a run its range may hold and still be
/// read whole: room for the partitions of a few writers per collection
/// (each writer's keys interleave with the others').
const RANGE_SLACK: usize = 4;

impl KeySpan {
    /// The span of `keys` (strings, as every `_id` the import writes);
    /// `None` for an empty run.
    fn of(keys: &[Bson]) -> Option<KeySpan> {
        let texts = || keys.iter().filter_map(Bson::as_str);
        let (low, high) = (texts().min()?, texts().max()?);
        Some(KeySpan {
            low: Bson::String(low.to_string()),
            high: Bson::String(high.to_string()),
            limit: RANGE_SLACK * keys.len(),
        })
    }

    fn filter(&self) -> Document {
        doc! {"_id": {"$gte": &self.low, "$lte": &self.high}}
    }
}

/// Keys per `$in` when a run's stored versions are read by key: the
/// server we measure on takes longer per key the longer the `$in`, so
/// several short ones cost it less than one long one (a real `mongod`
/// costs a round trip per read more). The re-import's figures are
/// findings.md's (`hpn-bench reimport`).
pub(super) const IN_CHUNK: usize = 250;

/// Which way a failed transaction goes (see [`Abandoned`]).
fn abandoned(error: MongoError) -> Abandoned {
    if error.contains_label(TRANSIENT_TRANSACTION_ERROR) && !is_outage(&error) {
        Abandoned::Conflict
    } else if is_transient(&error) {
        Abandoned::Outage(error.into())
    } else {
        Abandoned::Refused
    }
}

/// An error that says the server is away or not the primary, rather than
/// that this transaction met another (a write conflict is transient too).
fn is_outage(error: &MongoError) -> bool {
    use mongodb::error::ErrorKind;
    match error.kind.as_ref() {
        ErrorKind::Command(c) => c.code != 112 && is_transient(error), // 112: WriteConflict
        ErrorKind::Write(_) | ErrorKind::InsertMany(_) | ErrorKind::BulkWrite(_) => false,
        _ => is_transient(error),
    }
}

/// The version a stored document holds (`None`: written without one).
pub(super) fn stored_version(document: &RawDocumentBuf) -> Option<i64> {
    match document.get(VERSION_FIELD).ok().flatten()? {
        RawBsonRef::Int64(v) => Some(v),
        RawBsonRef::Int32(v) => Some(v.into()),
        _ => None,
    }
}

/// Copy onto `document` the fields of `old` the import does not own
/// (`old` was read without them, so all but its `_id` and version).
fn carry_over(old: &RawDocumentBuf, document: &mut RawDocumentBuf) {
    for (name, value) in old.iter().flatten() {
        if name != "_id" && name != VERSION_FIELD {
            document.append_ref(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_follows_the_last_batch() {
        let seen = KeysSeen::default();
        assert_eq!(seen.mostly_stored(RecordKind::Customer), None, "nothing seen yet");
        seen.met(RecordKind::Customer, 1_500, 2_000);
        assert_eq!(seen.mostly_stored(RecordKind::Customer), Some(true));
        assert_eq!(seen.mostly_stored(RecordKind::Product), None, "each collection its own");
        seen.met(RecordKind::Customer, 0, 0);
        assert_eq!(
            seen.mostly_stored(RecordKind::Customer),
            Some(true),
            "an empty batch says nothing"
        );
        seen.met(RecordKind::Customer, 999, 2_000);
        assert_eq!(seen.mostly_stored(RecordKind::Customer), Some(false));
    }

    #[test]
    fn after_a_scattered_range_the_collection_reads_by_key_for_a_while() {
        let seen = KeysSeen::default();
        assert!(seen.reads_range(RecordKind::Rental) && seen.reads_range(RecordKind::Rental));
        seen.scattered(RecordKind::Rental);
        for _ in 0..SKIP_RANGES_AFTER_SCATTERED {
            assert!(!seen.reads_range(RecordKind::Rental));
        }
        assert!(seen.reads_range(RecordKind::Customer), "each collection its own");
        assert!(seen.reads_range(RecordKind::Rental), "then a range is tried again");
    }

    #[test]
    fn a_span_runs_from_the_lowest_key_to_the_highest() {
        let keys: Vec<Bson> = ["C5", "C10", "C7"].map(Bson::from).into();
        let span = KeySpan::of(&keys).unwrap();
        // Byte order, as MongoDB compares strings: "C10" < "C5" < "C7".
        assert_eq!(span.filter(), doc! {"_id": {"$gte": "C10", "$lte": "C7"}});
        assert_eq!(span.limit, RANGE_SLACK * 3);
        assert!(KeySpan::of(&[]).is_none());
    }

    #[test]
    fn fields_not_owned_are_carried_over_and_the_version_is_read() {
        let mut old = RawDocumentBuf::new();
        old.append("_id", "P1");
        old.append(VERSION_FIELD, 5_i64);
        old.append("rented_to", mongodb::bson::RawArrayBuf::from_iter(["C1"]));
        assert_eq!(stored_version(&old), Some(5));
        let mut new = RawDocumentBuf::new();
        new.append("_id", "P1");
        new.append(VERSION_FIELD, 6_i64);
        carry_over(&old, &mut new);
        let new = Document::try_from(new).unwrap();
        assert_eq!(new, doc! {"_id": "P1", "_v": 6_i64, "rented_to": ["C1"]});
        assert_eq!(stored_version(&RawDocumentBuf::new()), None);
    }
}
