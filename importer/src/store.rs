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

mod batch;
mod command;
mod document;
mod durability;
mod error;
mod migrate;
mod query;
mod replace;
mod stock;
mod write;

pub use batch::{FailedWrite, WriteOutcome};
pub use document::{
    fields_raw, key_filter, key_id, key_of, live, stored_document, stored_raw, to_document, DELETED_AT_FIELD,
    DELETED_FIELD, KEY_INDEX, VERSION_FIELD,
};
pub use error::{StoreError, DUPLICATE_KEY};
pub use migrate::{Migrated, OLD_KEY_INDEXES};
pub use query::{Orphan, Orphans};
pub use stock::StockOutcome;

use command::CommandLimits;
use hpn_common::record::RecordKind;
use mongodb::bson::{doc, Document};
use mongodb::options::{ClientOptions, DatabaseOptions, WriteConcern};
use mongodb::{Client, Collection, Database};
use replace::KeysSeen;
use std::sync::Arc;
use std::time::Duration;

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
    /// What one write command may hold, as the server said (see [`command`]).
    limits: CommandLimits,
    /// Whether the server runs transactions (a replica set or `mongos`):
    /// the re-import's write needs them (see [`replace`]).
    transactions: bool,
    /// What each collection's last batch met, for every clone of this store.
    seen: Arc<KeysSeen>,
    /// Re-import transactions open at once, for every clone of this store
    /// (see [`replace::TRANSACTIONS_AT_ONCE`]).
    transaction_slots: Arc<tokio::sync::Semaphore>,
}

impl Store {
    /// Whether the driver reads `uri` as a MongoDB connection string (no
    /// DNS asked, no server): a settings check, said before anything
    /// connects, with the password hidden (see `hpn_common::address`).
    pub fn check_uri(uri: &str) -> Result<(), String> {
        use hpn_common::address::{hide_password, redacted};
        let Err(error) = mongodb::options::ConnectionString::parse(uri) else {
            return Ok(());
        };
        let why = match *error.kind {
            mongodb::error::ErrorKind::InvalidArgument { message, .. } => message,
            other => other.to_string(),
        };
        Err(format!(
            "MongoDB connection string {}: {} (the forms: mongodb://host:port,… or mongodb+srv://host, \
             docs/security.md)",
            redacted(uri),
            hide_password(&why, uri)
        ))
    }

    /// Connect to the store `at` says (the settings of a command, a test
    /// or the bench), and check that the server answers.
    pub async fn connect_to(at: &impl hpn_common::StoreAddress) -> Result<Store, StoreError> {
        Store::connect(at.mongodb_uri(), at.database()).await
    }

    /// Connect and check that the server answers.
    pub async fn connect(uri: &str, database: &str) -> Result<Store, StoreError> {
        Store::connect_with(ClientOptions::parse(uri).await?, database).await
    }

    /// [`Store::connect`] with options already parsed (tests add command
    /// monitoring this way). Every write of the store carries a durable
    /// write concern: the one `options` set, or journaled, and majority
    /// where the server is a replica set (see `durability`).
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
            limits: CommandLimits::from_hello(&hello),
            transactions: durability::replicated(&hello) && hello.contains_key("logicalSessionTimeoutMinutes"),
            seen: Arc::default(),
            transaction_slots: Arc::new(tokio::sync::Semaphore::new(replace::TRANSACTIONS_AT_ONCE)),
        })
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

    /// [`Store::count`], asked again through an outage (an election, a
    /// failover) for up to `patience` from the first failure: the counts a
    /// one-shot run reports.
    pub async fn count_within(&self, kind: RecordKind, patience: Duration) -> Result<u64, StoreError> {
        let policy = hpn_common::retry::RetryPolicy::one_shot(patience);
        let mut first_failure = None;
        let mut attempt = 0;
        loop {
            let e = match self.count(kind).await {
                Ok(count) => return Ok(count),
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => e,
            };
            let failing_for = first_failure.get_or_insert_with(std::time::Instant::now).elapsed();
            if !policy.may_retry(attempt, failing_for) {
                return Err(StoreError::GaveUp {
                    after: failing_for,
                    last: Box::new(e),
                });
            }
            tokio::time::sleep(policy.backoff(attempt)).await;
            attempt += 1;
        }
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
}
