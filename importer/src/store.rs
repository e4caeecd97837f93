//! The MongoDB store: database `hp_norton` (configurable), collections
//! `customers`, `products` and `rentals`, and the two read queries the
//! business relies on.
//!
//! Every document's `_id` is its record's business key (see [`document`]),
//! so the store holds at most one document per key whatever arrives twice:
//! a redelivered message, a file published again, two consumers racing; and
//! each collection has one unique index, the `_id`'s. A rental is identified
//! by its `(product_id, user_id)` pair: the brief's rentals file has no
//! other column, so a customer renting the same product twice is one rental.
//! A store of the old shape (an `ObjectId` as `_id` and a second unique
//! index on the key) is refused until `hpn-importer migrate` has rewritten
//! it (see [`migrate`]).
//!
//! Writes are guarded by version (see [`hpn_common::record::replaces`]): each
//! document keeps the version of the record it holds in `_v`, and a
//! record whose version is not higher changes nothing and is counted as
//! stale. So the store ends with the newest version of every key whatever
//! order records arrive in: racing consumers, several importer processes,
//! redeliveries after a crash. The guard is part of each statement's filter,
//! checked and applied by the server in one atomic step per document; no
//! read ever precedes a write.
//!
//! A delete (see [`document`]) is written by the same guarded statement as
//! any record, and leaves a tombstone at its version: invisible to the
//! queries and counts here (their filter is [`live`]), in the way of any
//! older record of its key, and replaced by a newer one. [`Store::compact`]
//! removes old tombstones.
//!
//! Batches go to the server as one `update` command holding one upsert
//! statement per record, unordered: one round trip per batch instead of one
//! per row, and a bad record cannot stop the rest of its batch. The `update`
//! command (rather than the driver's newer `bulkWrite`, which needs 8.0) works
//! on every MongoDB from 3.6 to 8, so the same code runs against the
//! docker-compose stack and the local test server.

mod document;
mod durability;
mod migrate;

pub use document::{
    fields_raw, key_filter, key_id, key_of, live, stored_document, stored_raw, to_document, DELETED_AT_FIELD,
    DELETED_FIELD, EXTRA_FIELD, KEY_INDEX, VERSION_FIELD,
};
pub use migrate::{Migrated, OLD_KEY_INDEXES};

use document::{absent_fields, guard_version, on_key_index, rentals_of_product, versioned_fields};
use futures::TryStreamExt;
use hpn_common::record::{replaces, Customer, Product, Record, RecordKind};
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf};
use mongodb::error::{Error as MongoError, ErrorKind};
use mongodb::options::{ClientOptions, DatabaseOptions, WriteConcern};
use mongodb::{Client, Collection, Database};
use std::collections::HashMap;
use std::time::Duration;

/// MongoDB's duplicate-key error code (the "E11000" in its messages).
pub const DUPLICATE_KEY: i32 = 11000;

/// Server error codes that mean "try again": the operation did not fail on
/// its merits (the same list the driver retries reads on, plus time-outs
/// and write conflicts).
const TRANSIENT_CODES: [i32; 16] = [
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50, 134, 64, 112,
];

/// Per-record write error codes that mean "this record is unfit": it is
/// refused on its merits and goes to the dead-letter queue. A per-record
/// error with another code may be the record's (a geo index that cannot
/// read its field, say) or the store's (a view, no permission, a full disk):
/// [`Store::whose_refusal`] finds out, so that one odd record can never hold
/// a collection, and a store that refuses writes never loses records to the
/// dead-letter queue.
const RECORD_REFUSALS: [i32; 9] = [
    DUPLICATE_KEY, // on a unique index other than the `_id` (the business key)
    121,           // DocumentValidationFailure
    10334,         // BSONObjectTooLarge
    17419,         // document too large after the update
    2,             // BadValue
    52,            // DollarPrefixedFieldName
    55,            // InvalidDBRef
    57,            // DottedFieldName
    66,            // ImmutableField
];

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The driver's error, in [`describe`]'s words (not also as the
    /// error's source: its own text repeats what they say, at length).
    #[error("MongoDB: {}", describe(.0))]
    Mongo(MongoError),
    #[error("MongoDB replied to {command} without {field}: {reply}")]
    Reply {
        command: &'static str,
        field: &'static str,
        reply: String,
    },
    #[error("MongoDB write concern not satisfied: {0}")]
    WriteConcern(String),
    /// The store refused a write as such, not the record in it.
    #[error("MongoDB refused the write (code {code}): {message}")]
    Refused { code: i32, message: String },
    /// The connection string asks for something the importer cannot work with.
    #[error("MongoDB settings: {0}")]
    Settings(String),
    /// The store holds a collection of the shape before the business key
    /// became the `_id`; nothing is written to it until it is migrated.
    #[error(
        "MongoDB: the {collection} collection is of the old shape ({why}); \
         stop every importer and run `hpn-importer migrate` (docs/migration.md)"
    )]
    OldShape { collection: &'static str, why: String },
}

impl From<MongoError> for StoreError {
    fn from(error: MongoError) -> Self {
        StoreError::Mongo(error)
    }
}

impl StoreError {
    /// Whether the server refused us in a way no retry mends: its
    /// certificate not trusted or not for this host, ours refused, the
    /// login or the user's rights refused. (`is_transient` may still say
    /// yes to these: the driver reports a failed handshake as a server it
    /// could not select.)
    pub fn refused_for_good(&self) -> bool {
        match self {
            StoreError::Mongo(e) => {
                matches!(e.kind.as_ref(), ErrorKind::Authentication { .. })
                    || matches!(e.kind.as_ref(), ErrorKind::Command(c) if [13, 18].contains(&c.code))
                    || [
                        "certificate",
                        "CertificateRequired",
                        "HandshakeFailure",
                        "tls handshake",
                    ]
                    .iter()
                    .any(|needle| e.to_string().contains(needle))
            }
            StoreError::Refused { code, .. } => [13, 18].contains(code),
            _ => false,
        }
    }

    /// Whether trying again later may succeed: the server was unreachable,
    /// stepping down or too busy, not that the request was wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Mongo(e) => is_transient(e),
            StoreError::WriteConcern(_) => true,
            StoreError::Refused { code, .. } => TRANSIENT_CODES.contains(code),
            StoreError::Reply { .. } | StoreError::OldShape { .. } | StoreError::Settings(_) => false,
        }
    }
}

/// A driver error in a person's words: the server's code, its name and its
/// message, without the raw reply the driver's own text carries.
fn describe(error: &MongoError) -> String {
    match error.kind.as_ref() {
        ErrorKind::Command(c) => format!("code {} ({}): {}", c.code, c.code_name, c.message),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => {
            format!("code {}: {}", w.code, w.message)
        }
        ErrorKind::ServerSelection { message, .. } => match server_errors(message) {
            Some(servers) => format!("no server could be used ({servers})"),
            None => message.clone(),
        },
        other => other.to_string(),
    }
}

/// Each server's own error out of the driver's server-selection text
/// (`… Servers: [ { Address: h:p, Type: Unknown, Error: Kind: <why>, labels: … } ] }`):
/// what the operator needs, without the topology dump around it.
fn server_errors(message: &str) -> Option<String> {
    let servers: Vec<String> = message
        .split("{ Address: ")
        .skip(1)
        .filter_map(|server| {
            let address = server.split(',').next()?;
            let why = server.split_once("Error: Kind: ")?.1;
            let why = why.split(", labels:").next()?;
            Some(format!("{address}: {why}"))
        })
        .collect();
    (!servers.is_empty()).then(|| servers.join("; "))
}

#[cfg(test)]
#[test]
fn a_server_selection_failure_says_each_servers_own_error() {
    let driver = "Server selection timeout: No available servers. Topology: { Type: Single, Servers: [ { Address: \
                  localhost:27018, Type: Unknown, Error: Kind: I/O error: invalid peer certificate: UnknownIssuer, \
                  labels: {\"RetryableError\"}, source: None, server response: None } ] }";
    assert_eq!(
        server_errors(driver).as_deref(),
        Some("localhost:27018: I/O error: invalid peer certificate: UnknownIssuer")
    );
    assert_eq!(server_errors("Server selection timeout: No available servers."), None);
}

/// Whether a driver error is worth retrying.
pub fn is_transient(error: &MongoError) -> bool {
    if error.contains_label("RetryableWriteError") || error.contains_label("RetryableError") {
        return true;
    }
    match error.kind.as_ref() {
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } | ErrorKind::ServerSelection { .. } => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        _ => false,
    }
}

/// One record of a batch the server refused on its merits.
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
}

/// What taking stock for a rental did (see [`Store::take_stock`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockOutcome {
    /// One unit was taken for this rental.
    Taken,
    /// This rental had already taken its unit (a redelivery): nothing changed.
    AlreadyTaken,
    /// The product has no stock left: nothing changed.
    OutOfStock,
    /// There is no such product: nothing changed.
    UnknownProduct,
}

/// A rental whose customer or product is not in the store (yet: a queue
/// may deliver a rental before its customer; or at all: the file named a
/// customer no file has).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Orphan {
    pub product_id: String,
    pub user_id: String,
    pub missing_customer: bool,
    pub missing_product: bool,
}

/// What [`Store::orphan_rentals`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Orphans {
    /// Rentals looked at: all of them.
    pub rentals: u64,
    /// Those whose customer or product is missing, by product then customer.
    pub orphans: Vec<Orphan>,
}

/// Rentals looked up per round trip by [`Store::orphan_rentals`].
const ORPHAN_BATCH: usize = 1000;

/// How long an operation waits for a reachable server before failing, unless
/// the URI says otherwise (`serverSelectionTimeoutMS`).
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the store.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    db: Database,
    /// Sent with every write (see [`durability`]).
    write_concern: WriteConcern,
}

/// How many times a statement is sent again after a duplicate-key error
/// from racing upserts (see [`Store::upsert`]).
const DUPLICATE_KEY_RETRIES: usize = 3;

/// Whether the keys of a guarded write are known to have documents already
/// (an insert of them just failed with E11000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeysExist {
    Yes,
    Unknown,
}

impl WriteOutcome {
    /// Add what another write of the same batch did (its indexes are already
    /// the batch's).
    fn add(&mut self, other: WriteOutcome) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.stale += other.stale;
        self.retried += other.retried;
        self.failed.extend(other.failed);
    }
}

impl Store {
    /// Connect and check that the server answers.
    pub async fn connect(uri: &str, database: &str) -> Result<Store, StoreError> {
        Store::connect_with(ClientOptions::parse(uri).await?, database).await
    }

    /// [`Store::connect`] with options already parsed (tests add command
    /// monitoring this way). Every write of the store carries a durable
    /// write concern: the one `options` set, or journaled, and majority
    /// where the server is a replica set (see [`durability`]).
    pub async fn connect_with(mut options: ClientOptions, database: &str) -> Result<Store, StoreError> {
        if options.app_name.is_none() {
            options.app_name = Some("hpn".into());
        }
        // The driver's default (30 s) would hide a database outage inside
        // each call; a short one hands it to our callers, who log it once,
        // count it and back off (see `hpn_common::retry::RetryPolicy`).
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        }
        let from_uri = options.write_concern.take();
        let client = Client::with_options(options)?;
        let hello = client.database("admin").run_command(doc! {"hello": 1}).await?;
        let write_concern = durability::write_concern(from_uri, &hello)?;
        let db = client.database_with_options(
            database,
            DatabaseOptions::builder().write_concern(write_concern.clone()).build(),
        );
        Ok(Store {
            db,
            client,
            write_concern,
        })
    }

    /// Send an `update` command of `statements` on `collection` with the
    /// store's write concern (which `run_command` would not add), unordered;
    /// a write concern the server could not satisfy is an error.
    async fn run_update(&self, collection: &str, statements: Vec<Document>) -> Result<Document, StoreError> {
        let reply = self
            .db
            .run_command(doc! {
                "update": collection,
                "updates": statements,
                "ordered": false,
                "writeConcern": durability::as_field(&self.write_concern),
            })
            .await?;
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(StoreError::WriteConcern(wce.to_string()));
        }
        Ok(reply)
    }

    /// Close the connections cleanly. Without this, the driver's background
    /// tasks can outlive the runtime at process exit and panic there.
    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn collection(&self, kind: RecordKind) -> Collection<Document> {
        self.db.collection(kind.collection())
    }

    /// Exact number of live documents (tombstones not counted) in a kind's
    /// collection: what the reports' counts before and after say.
    pub async fn count(&self, kind: RecordKind) -> Result<u64, StoreError> {
        Ok(self.collection(kind).count_documents(live()).await?)
    }

    /// Remove the tombstones of `kind` written more than `older_than` ago
    /// (by the importer's clock); returns how many. Once a key's tombstone
    /// is gone, a record of the key older than the delete that arrives
    /// after this brings the key back: the horizon must be longer than any
    /// message may wait (docs/message-format.md, *Deletes*).
    pub async fn compact(&self, kind: RecordKind, older_than: Duration) -> Result<u64, StoreError> {
        let before = mongodb::bson::DateTime::from_millis(
            hpn_common::message::now_ms().saturating_sub(older_than.as_millis().min(i64::MAX as u128) as i64),
        );
        let filter = doc! {DELETED_FIELD: true, DELETED_AT_FIELD: {"$lt": before}};
        Ok(self.collection(kind).delete_many(filter).await?.deleted_count)
    }

    /// Drop the three collections (tests, demonstrations and `reset`).
    pub async fn drop_collections(&self) -> Result<(), StoreError> {
        for kind in RecordKind::ALL {
            self.collection(kind).drop().await?;
        }
        Ok(())
    }

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
    /// [`latest_per_key`]), so the result does not depend on the order the
    /// server applies an unordered batch in.
    ///
    /// Deletes skip the insert: each is one guarded statement (see
    /// [`Store::upsert`]), which leaves a tombstone where the key had no
    /// document or an older one.
    pub async fn write(&self, kind: RecordKind, records: &[Record]) -> Result<WriteOutcome, StoreError> {
        let batch = latest_per_key(records);
        let mut outcome = batch.folded();
        let (deletes, latest) = split_deletes(batch.latest, records);
        if !deletes.is_empty() {
            outcome.add(self.delete(kind, records, deletes).await?);
        }
        if latest.is_empty() {
            return Ok(outcome);
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
        if !conflicts.is_empty() {
            conflicts.sort_unstable();
            // The insert said these keys exist, so a versioned statement that
            // hits the key index again found a version at least its own.
            // (Only a document removed in between, which nothing but `reset`
            // and `compact` do, would make that wrong: the record would
            // count as stale.)
            let guarded = self.apply(kind, records, conflicts, KeysExist::Yes).await?;
            outcome.add(guarded);
        }
        Ok(outcome)
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
    /// Two upserts of the same new key racing on different connections can
    /// both miss the document and both try to insert; the `_id` index lets
    /// one win and gives the other E11000 too. So a statement's first E11000
    /// is sent again: the document now exists, and the retry either updates
    /// it (the record was newer) or gets E11000 again (stale).
    ///
    /// A delete is the same statement with the tombstone's fields (see
    /// [`document`]): applied only over an older version, it unsets the
    /// record's other fields; a newer record's statement unsets the
    /// tombstone's marks.
    pub async fn upsert(&self, kind: RecordKind, records: &[Record]) -> Result<WriteOutcome, StoreError> {
        let batch = latest_per_key(records);
        let mut outcome = batch.folded();
        let (deletes, latest) = split_deletes(batch.latest, records);
        if !deletes.is_empty() {
            outcome.add(self.delete(kind, records, deletes).await?);
        }
        outcome.add(self.apply(kind, records, latest, KeysExist::Unknown).await?);
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
        let applied = self.apply(kind, records, pending, KeysExist::Unknown).await?;
        Ok(WriteOutcome {
            inserted: 0,
            updated: 0,
            deleted: applied.inserted + applied.updated,
            ..applied
        })
    }

    /// Send guarded upserts for `records[i]`, `i` in `pending` (one per key).
    async fn apply(
        &self,
        kind: RecordKind,
        records: &[Record],
        mut pending: Vec<usize>,
        keys: KeysExist,
    ) -> Result<WriteOutcome, StoreError> {
        let mut outcome = WriteOutcome::default();
        for attempt in 0..=DUPLICATE_KEY_RETRIES {
            if pending.is_empty() {
                break;
            }
            let statements: Vec<Document> = pending
                .iter()
                .map(|&i| {
                    debug_assert_eq!(records[i].kind(), kind);
                    guarded_upsert(&records[i])
                })
                .collect();
            let reply = self.run_update(kind.collection(), statements).await?;
            let matched = number(&reply, "n")?;
            let upserted = match reply.get_array("upserted") {
                Ok(list) => list.len() as u64,
                Err(_) => 0,
            };
            outcome.inserted += upserted;
            outcome.updated += matched.saturating_sub(upserted);
            let mut retry = Vec::new();
            let mut unknown = Vec::new();
            if let Ok(errors) = reply.get_array("writeErrors") {
                for error in errors {
                    let Bson::Document(error) = error else { continue };
                    let index = number(error, "index")? as usize;
                    let code = number(error, "code")? as i32;
                    let record_index = pending[index];
                    let versioned = records[record_index].version().is_some();
                    let message = error.get_str("errmsg").unwrap_or("");
                    let key_conflict =
                        code == DUPLICATE_KEY && on_key_index(message, error.get_document("keyPattern").ok());
                    if key_conflict && versioned && (keys == KeysExist::Yes || attempt > 0) {
                        outcome.stale += 1;
                    } else if key_conflict && attempt < DUPLICATE_KEY_RETRIES {
                        retry.push(record_index);
                    } else {
                        let failed = FailedWrite {
                            index: record_index,
                            code,
                            message: message.to_string(),
                        };
                        if RECORD_REFUSALS.contains(&code) {
                            outcome.failed.push(failed);
                        } else {
                            unknown.push(failed);
                        }
                    }
                }
            }
            let all_refused = unknown.len() == pending.len();
            outcome
                .failed
                .extend(self.whose_refusal(kind, unknown, all_refused).await?);
            retry.sort_unstable();
            outcome.retried += retry.len() as u64;
            pending = retry;
        }
        Ok(outcome)
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
            Ok(reply) => Ok(reply.get_array("writeErrors").is_err()),
            // A refusal of the write as such; a time-out or an election is
            // an outage, retried as one, never taken for a refusal.
            Err(StoreError::Mongo(e)) if matches!(e.kind.as_ref(), ErrorKind::Command(_)) && !is_transient(&e) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Take one unit of stock for a rental, exactly once per rental, never
    /// below zero.
    ///
    /// The whole decision is one atomic update of the product document:
    /// "if it has stock and this customer's rental is not yet recorded on it,
    /// take one unit and record the rental". MongoDB applies an update to a
    /// single document atomically, so two consumers racing on one product
    /// cannot both read the same quantity and write back the same result
    /// (the lost update of the naive read-modify-write): each `$inc` applies
    /// to whatever the quantity is at that moment, and the `$gt: 0` guard
    /// is checked in the same step, so the quantity never goes below zero.
    /// Recording the rental (`rented_to`, the renting `user_id`s) in the same
    /// update makes it idempotent: a redelivered rental finds itself recorded
    /// and changes nothing. The list is bounded by the stock the product ever
    /// had, since each entry took one unit.
    ///
    /// The reads after a refused update only explain the refusal for the
    /// report; they decide nothing.
    ///
    /// A deleted product (a tombstone) has no stock and counts as unknown.
    pub async fn take_stock(&self, product_id: &str, user_id: &str) -> Result<StockOutcome, StoreError> {
        let products = self.collection(RecordKind::Product);
        let result = products
            .update_one(
                doc! {"_id": product_id, "quantity_available": {"$gt": 0}, "rented_to": {"$ne": user_id}},
                doc! {"$inc": {"quantity_available": -1}, "$push": {"rented_to": user_id}},
            )
            .await?;
        if result.modified_count == 1 {
            return Ok(StockOutcome::Taken);
        }
        if products
            .find_one(doc! {"_id": product_id, "rented_to": user_id})
            .await?
            .is_some()
        {
            return Ok(StockOutcome::AlreadyTaken);
        }
        let mut exists = live();
        exists.insert("_id", product_id);
        if products.find_one(exists).await?.is_some() {
            Ok(StockOutcome::OutOfStock)
        } else {
            Ok(StockOutcome::UnknownProduct)
        }
    }

    /// The brief's first query: every product with stock, keyed by `product_id`.
    pub async fn available_products(&self) -> Result<Vec<Product>, StoreError> {
        let projection = doc! {"_id": 0, "product_id": 1, "description": 1, "product_type": 1, "quantity_available": 1};
        let cursor = self
            .db
            .collection::<Product>(RecordKind::Product.collection())
            .find(doc! {"quantity_available": {"$gt": 0}, DELETED_FIELD: {"$ne": true}})
            .projection(projection)
            .sort(doc! {"_id": 1})
            .await?;
        Ok(cursor.try_collect().await?)
    }

    /// The brief's second query: every customer who rented `product_id`.
    /// Both lookups ride the `_id` index: the product's rentals are one
    /// range of it, their customers one `$in`.
    ///
    /// Deleted rentals and deleted customers are left out, and a deleted
    /// product has no renters: its rentals stay in the store as history
    /// (the orphans query lists them), and come back with the product.
    pub async fn customers_renting(&self, product_id: &str) -> Result<Vec<Customer>, StoreError> {
        let tombstone = doc! {"_id": product_id, DELETED_FIELD: true};
        if self
            .collection(RecordKind::Product)
            .find_one(tombstone)
            .await?
            .is_some()
        {
            return Ok(Vec::new());
        }
        let mut of_product = rentals_of_product(product_id);
        of_product.insert(DELETED_FIELD, doc! {"$ne": true});
        let rentals = self
            .collection(RecordKind::Rental)
            .find(of_product)
            .projection(doc! {"_id": 0, "user_id": 1})
            .await?;
        let user_ids: Vec<String> = rentals
            .try_collect::<Vec<Document>>()
            .await?
            .into_iter()
            .filter_map(|d| d.get_str("user_id").ok().map(str::to_string))
            .collect();
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let projection =
            doc! {"_id": 0, "user_id": 1, "name": 1, "address": 1, "zip_code": 1, "phone_number": 1, "email": 1};
        let cursor = self
            .db
            .collection::<Customer>(RecordKind::Customer.collection())
            .find(doc! {"_id": {"$in": user_ids}, DELETED_FIELD: {"$ne": true}})
            .projection(projection)
            .sort(doc! {"_id": 1})
            .await?;
        Ok(cursor.try_collect().await?)
    }
}

impl Store {
    /// Every rental whose customer or product is not in the store, or
    /// only as a tombstone: a deleted customer's live rentals are listed
    /// here, for someone to end them (deleted rentals are not).
    ///
    /// Rentals are read in key order, a thousand at a time, and each batch's
    /// customers and products are looked up with one `$in` query each: the
    /// memory held is one batch whatever the collections' sizes, and it runs
    /// the same on any MongoDB (no `$lookup`, which would scan a collection
    /// per rental without an index on the foreign side).
    pub async fn orphan_rentals(&self) -> Result<Orphans, StoreError> {
        let mut cursor = self
            .collection(RecordKind::Rental)
            .find(live())
            .projection(doc! {"_id": 0, "product_id": 1, "user_id": 1})
            .sort(doc! {"_id": 1})
            .batch_size(ORPHAN_BATCH as u32)
            .await?;
        let mut found = Orphans::default();
        let mut batch = Vec::with_capacity(ORPHAN_BATCH);
        loop {
            let next = cursor.try_next().await?;
            if let Some(rental) = &next {
                let field = |name| rental.get_str(name).unwrap_or_default().to_string();
                batch.push((field("product_id"), field("user_id")));
            }
            if batch.len() == ORPHAN_BATCH || (next.is_none() && !batch.is_empty()) {
                found.rentals += batch.len() as u64;
                self.find_orphans(&batch, &mut found.orphans).await?;
                batch.clear();
            }
            if next.is_none() {
                return Ok(found);
            }
        }
    }

    async fn find_orphans(&self, rentals: &[(String, String)], orphans: &mut Vec<Orphan>) -> Result<(), StoreError> {
        let user_ids: Vec<&str> = rentals.iter().map(|(_, u)| u.as_str()).collect();
        let product_ids: Vec<&str> = rentals.iter().map(|(p, _)| p.as_str()).collect();
        let customers = self.existing(RecordKind::Customer, &user_ids).await?;
        let products = self.existing(RecordKind::Product, &product_ids).await?;
        for (product_id, user_id) in rentals {
            let missing_customer = !customers.contains(user_id);
            let missing_product = !products.contains(product_id);
            if missing_customer || missing_product {
                orphans.push(Orphan {
                    product_id: product_id.clone(),
                    user_id: user_id.clone(),
                    missing_customer,
                    missing_product,
                });
            }
        }
        Ok(())
    }

    /// Which of the keys `ids` have a live document in `kind`'s collection
    /// (a customer's or a product's: their `_id` is a string).
    async fn existing(&self, kind: RecordKind, ids: &[&str]) -> Result<std::collections::HashSet<String>, StoreError> {
        let documents: Vec<Document> = self
            .collection(kind)
            .find(doc! {"_id": {"$in": ids}, DELETED_FIELD: {"$ne": true}})
            .projection(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(documents
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_string))
            .collect())
    }
}

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
}

/// A batch's winners (indexes into `records`) split into deletes and the
/// rest. Deletes are rare: a batch without one keeps its list as it is (a
/// partition grew two vectors per batch, 2 % of the importer's CPU at one
/// record per message).
fn split_deletes(latest: Vec<usize>, records: &[Record]) -> (Vec<usize>, Vec<usize>) {
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
    for (i, record) in records.iter().enumerate() {
        match winner.entry(record.key_parts()) {
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
            Entry::Occupied(mut slot) => {
                if replaces(record.version(), records[*slot.get()].version()) {
                    match records[slot.insert(i)].is_deletion() {
                        true => superseded_deletes += 1,
                        false => superseded += 1,
                    }
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
    }
}

impl BatchWinners {
    /// What the records folded away count as.
    fn folded(&self) -> WriteOutcome {
        WriteOutcome {
            updated: self.superseded,
            deleted: self.superseded_deletes,
            stale: self.stale,
            ..WriteOutcome::default()
        }
    }
}

/// Read an integer reply field, whatever width the server chose.
fn number(reply: &Document, field: &'static str) -> Result<u64, StoreError> {
    match reply.get(field) {
        Some(Bson::Int32(n)) => Ok(*n as u64),
        Some(Bson::Int64(n)) => Ok(*n as u64),
        Some(Bson::Double(n)) => Ok(*n as u64),
        _ => Err(StoreError::Reply {
            command: "update",
            field,
            reply: reply.to_string(),
        }),
    }
}

/// One statement of a guarded `update` command (see [`Store::upsert`]).
///
/// The fields a record may lack (an absent zip code, no extras) are unset,
/// so an update replaces the record's fields wholesale, as an insert would:
/// the end state never depends on which version was written first.
/// Fields the import does not own (`rented_to`, from taking stock) are
/// left as they are.
fn guarded_upsert(record: &Record) -> Document {
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

#[cfg(test)]
mod tests {
    use super::*;
    use hpn_common::record::Rental;

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
    fn reply_numbers_of_any_width_are_read() {
        let reply = doc! {"a": 1_i32, "b": 2_i64, "c": 3.0_f64, "d": "x"};
        assert_eq!(number(&reply, "a").unwrap(), 1);
        assert_eq!(number(&reply, "b").unwrap(), 2);
        assert_eq!(number(&reply, "c").unwrap(), 3);
        assert!(number(&reply, "d").is_err());
        assert!(number(&reply, "missing").is_err());
    }
}
