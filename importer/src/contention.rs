//! Contention, on purpose: racing consumers breaking a naive importer, and
//! the strategies the real importer uses instead.
//!
//! `hpn-importer contention` runs three scenarios on a scratch database
//! (`<database>_contention`) and scratch queues (`<prefix>_contention.*`),
//! never the real ones, each first with a naive strategy and then with the
//! safe one, and reports what MongoDB said and what the data ended as.
//!
//! Races in real life depend on timing, so a demonstration that relied on
//! luck would pass or fail at random. Here the consumers are lined up with a
//! barrier at exactly the point where the naive code is exposed: every
//! consumer has done its read before any does its write. That is one of the
//! interleavings the scheduler may produce in production (two deliveries of
//! one record on two channels, two rentals of one product in two batches);
//! the barrier makes it the one that happens, every time.
//!
//! **Duplicate keys.** At-least-once delivery means the same customer can
//! arrive on several consumers at once (a redelivery after a lost ack, a
//! file published twice). Every consumer gets every record here: the
//! scratch exchange fans each message out to one queue per consumer.
//!
//! **Lost updates.** Every rental takes one unit of its product's stock.
//! Each consumer gets its own rentals of the same products, in the same
//! order, so they all work on one product at the same moment.
//!
//! **Stale overwrite by reordering.** Every customer is updated several
//! times (versions 1, 2, …); each consumer holds one version of every
//! customer, and the one holding the oldest writes last. Whoever writes last
//! wins a plain keyed upsert, so the store ends with old data and nobody is
//! told.
//!
//! The real importer avoids all three by its writes alone, whatever the
//! number of consumers and importer processes: keyed upserts behind unique
//! indexes; atomic, idempotent stock updates; and a version guard that lets
//! a record replace only an older version of its key.

use crate::ack::AckTracker;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use futures::StreamExt;
use hpn_common::message::{self, DEFAULT_MAX_MESSAGE_BYTES};
use hpn_common::store::{StockOutcome, DUPLICATE_KEY};
use hpn_common::{broker, ConnectionSettings, Customer, Error, Record, RecordKind, Result, Store};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};
use mongodb::bson::{doc, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Barrier;

/// The size of the demonstration.
#[derive(Clone, Debug, clap::Args)]
pub struct ContentionOptions {
    /// Consumers racing each other.
    #[arg(long, default_value_t = 4)]
    pub consumers: usize,
    /// Customers every consumer receives (duplicate-key scenario).
    #[arg(long, default_value_t = 50)]
    pub keys: usize,
    /// Products rented (lost-update scenario).
    #[arg(long, default_value_t = 5)]
    pub products: usize,
    /// Units in stock per product at the start.
    #[arg(long, default_value_t = 20)]
    pub stock: u32,
    /// Rentals of each product per consumer.
    #[arg(long, default_value_t = 6)]
    pub rentals: u32,
}

impl Default for ContentionOptions {
    fn default() -> Self {
        ContentionOptions {
            consumers: 4,
            keys: 50,
            products: 5,
            stock: 20,
            rentals: 6,
        }
    }
}

/// One line of the report: one strategy in one scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioRow {
    pub scenario: String,
    pub strategy: String,
    pub consumers: usize,
    /// Messages handled, over all consumers.
    pub operations: u64,
    /// Errors that reached the consumers, by MongoDB error code.
    pub errors: BTreeMap<String, u64>,
    /// What the data should end as, and what it ended as (see `measure`).
    pub expected: u64,
    pub found: u64,
    pub measure: String,
    /// What else happened, in words.
    pub notes: String,
}

impl ScenarioRow {
    /// Clean: no error surfaced and the data is what it should be.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.expected == self.found
    }
}

/// Run every scenario, naive then safe, on scratch names derived from `settings`.
pub async fn run(settings: &ConnectionSettings, options: &ContentionOptions) -> Result<Vec<ScenarioRow>> {
    let consumers = options.consumers.max(2);
    let scratch = Scratch::open(settings, consumers).await?;
    let mut rows = Vec::new();
    for strategy in [
        DuplicateStrategy::NaiveNoIndex,
        DuplicateStrategy::NaiveUniqueIndex,
        DuplicateStrategy::Upsert,
    ] {
        rows.push(duplicate_keys(&scratch, options, strategy).await?);
    }
    for strategy in [StockStrategy::ReadModifyWrite, StockStrategy::AtomicConditional] {
        rows.push(lost_updates(&scratch, options, strategy).await?);
    }
    for strategy in [ReorderStrategy::LastArrivalWins, ReorderStrategy::VersionGuard] {
        rows.push(stale_overwrites(&scratch, options, strategy).await?);
    }
    scratch.close().await;
    Ok(rows)
}

/// The report as a table for people.
pub fn table(rows: &[ScenarioRow]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "scenario",
        "strategy",
        "consumers",
        "operations",
        "errors (code: count)",
        "expected",
        "found",
        "result",
        "notes",
    ]);
    for r in rows {
        let errors = if r.errors.is_empty() {
            "none".to_string()
        } else {
            r.errors
                .iter()
                .map(|(code, n)| format!("{code}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        table.add_row(vec![
            r.scenario.clone(),
            r.strategy.clone(),
            r.consumers.to_string(),
            r.operations.to_string(),
            errors,
            format!("{} {}", r.expected, r.measure),
            format!("{} {}", r.found, r.measure),
            if r.is_clean() { "ok" } else { "BROKEN" }.to_string(),
            r.notes.clone(),
        ]);
    }
    table
}

// ---------------------------------------------------------------------------
// Scratch space: a database and one queue per consumer, never the real ones.

struct Scratch {
    store: Store,
    connection: Connection,
    channel: Channel,
    prefix: String,
    consumers: usize,
}

impl Scratch {
    async fn open(settings: &ConnectionSettings, consumers: usize) -> Result<Scratch> {
        let store = Store::connect(&settings.mongodb_uri, &format!("{}_contention", settings.database)).await?;
        store
            .database()
            .drop()
            .await
            .map_err(hpn_common::store::StoreError::from)?;
        let connection = broker::connect(&settings.amqp_url, "hpn-importer (contention)").await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let scratch = Scratch {
            store,
            connection,
            channel,
            prefix: format!("{}_contention", settings.queue_prefix),
            consumers,
        };
        scratch.declare().await?;
        Ok(scratch)
    }

    fn fanout(&self) -> String {
        format!("{}.fanout", self.prefix)
    }

    fn direct(&self) -> String {
        format!("{}.direct", self.prefix)
    }

    fn queue(&self, consumer: usize) -> String {
        format!("{}.consumer-{consumer}", self.prefix)
    }

    async fn declare(&self) -> Result<()> {
        for (exchange, kind) in [
            (self.fanout(), ExchangeKind::Fanout),
            (self.direct(), ExchangeKind::Direct),
        ] {
            self.channel
                .exchange_declare(
                    exchange.into(),
                    kind,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        for i in 0..self.consumers {
            let queue = self.queue(i);
            self.channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            self.channel
                .queue_purge(queue.as_str().into(), Default::default())
                .await?;
            for exchange in [self.fanout(), self.direct()] {
                self.channel
                    .queue_bind(
                        queue.as_str().into(),
                        exchange.into(),
                        queue.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn publish(&self, exchange: &str, routing_key: &str, record: &Record) -> Result<()> {
        let body = message::encode(std::slice::from_ref(record));
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                &body,
                message::properties(record.kind(), None),
            )
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(Error::NotConfirmed("refused a scratch message".into()));
        }
        Ok(())
    }

    /// Run `step` on every consumer for every message in its queue, the
    /// consumers in lockstep (each step gets the shared barrier).
    async fn race<F, Fut>(&self, kind: RecordKind, step: F) -> Result<(u64, BTreeMap<String, u64>)>
    where
        F: Fn(Record, Arc<Barrier>) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<(), MongoError>> + Send,
    {
        let barrier = Arc::new(Barrier::new(self.consumers));
        let errors = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = Vec::new();
        for i in 0..self.consumers {
            let channel = self.connection.create_channel().await?;
            let queue = self.queue(i);
            let (barrier, errors, step) = (barrier.clone(), errors.clone(), step.clone());
            let messages = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?
                .message_count();
            tasks.push(tokio::spawn(async move {
                let mut consumer = channel
                    .basic_consume(
                        queue.into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                let mut tracker = AckTracker::new();
                for _ in 0..messages {
                    let delivery = consumer
                        .next()
                        .await
                        .ok_or_else(|| Error::Task("consumer ended".into()))??;
                    let decoded =
                        message::decode(kind, &delivery.properties, &delivery.data, DEFAULT_MAX_MESSAGE_BYTES)
                            .map_err(|p| Error::Task(p.to_string()))?;
                    for record in decoded.records {
                        if let Err(e) = step(record, barrier.clone()).await {
                            *errors.lock().expect("not poisoned").entry(error_code(&e)).or_insert(0) += 1;
                        }
                    }
                    tracker.delivered(delivery.delivery_tag);
                    if let Some(tag) = tracker.completed(delivery.delivery_tag) {
                        channel.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
                    }
                }
                let _ = channel.close(200, "done".into()).await;
                Ok::<u64, Error>(u64::from(messages))
            }));
        }
        let mut operations = 0;
        for task in tasks {
            operations += task.await.map_err(|e| Error::Task(e.to_string()))??;
        }
        let errors = std::mem::take(&mut *errors.lock().expect("not poisoned"));
        Ok((operations, errors))
    }

    async fn close(self) {
        for i in 0..self.consumers {
            let _ = self
                .channel
                .queue_delete(self.queue(i).into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [self.fanout(), self.direct()] {
            let _ = self.channel.exchange_delete(exchange.into(), Default::default()).await;
        }
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// The MongoDB error code of a failed operation, as the report shows it.
pub fn error_code(error: &MongoError) -> String {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code.to_string(),
        ErrorKind::Write(WriteFailure::WriteConcernError(e)) => e.code.to_string(),
        ErrorKind::Command(e) => e.code.to_string(),
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .and_then(|w| w.first())
            .map(|w| w.code.to_string())
            .unwrap_or_else(|| "insert_many".into()),
        _ => "client".into(),
    }
}

fn customer(i: usize) -> Record {
    Record::Customer(Customer {
        user_id: format!("C{i:05}"),
        name: format!("Customer {i}"),
        address: format!("{i} Contention Way"),
        zip_code: "98101".into(),
        phone_number: "206-555-0100".into(),
        email: format!("c{i}@example.com"),
        version: None,
    })
}

// ---------------------------------------------------------------------------
// Scenario 1: duplicate keys.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DuplicateStrategy {
    /// Check, then insert; no unique index.
    NaiveNoIndex,
    /// Check, then insert; with the unique index.
    NaiveUniqueIndex,
    /// The importer's write: unique index plus one keyed upsert per record.
    Upsert,
}

async fn duplicate_keys(
    scratch: &Scratch,
    options: &ContentionOptions,
    strategy: DuplicateStrategy,
) -> Result<ScenarioRow> {
    let store = scratch.store.clone();
    let customers = store.collection(RecordKind::Customer);
    customers.drop().await.map_err(hpn_common::store::StoreError::from)?;
    if strategy != DuplicateStrategy::NaiveNoIndex {
        store.ensure_indexes().await?;
    }
    // Every consumer's queue gets every customer: the same records on all
    // consumers at once, as redeliveries and duplicate publishes make them.
    for i in 0..options.keys {
        scratch.publish(&scratch.fanout(), "", &customer(i)).await?;
    }
    let retried = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (operations, errors) = match strategy {
        DuplicateStrategy::NaiveNoIndex | DuplicateStrategy::NaiveUniqueIndex => {
            let customers = customers.clone();
            scratch
                .race(RecordKind::Customer, move |record, barrier| {
                    let customers = customers.clone();
                    async move {
                        // ---- NAIVE, kept for the demonstration: check, then insert. ----
                        // Step 1: ask whether the customer exists. Every consumer
                        // holding this record asks now, and every one hears "no":
                        // none has inserted yet. Nothing orders one consumer's
                        // read after another's write; the barrier only makes the
                        // unlucky interleaving the one that always happens.
                        let filter = hpn_common::store::key_filter(&record);
                        let exists = customers.find_one(filter).await?.is_some();
                        barrier.wait().await;
                        // Step 2: each consumer acts on an answer that is already
                        // out of date. They all insert. With a unique index the
                        // first insert wins and every other one fails with E11000
                        // (duplicate key): errors an operator sees, and deliveries
                        // that would be retried or dead-lettered for nothing.
                        // Without the index every insert succeeds and the customer
                        // now has one document per consumer.
                        let result = if exists {
                            Ok(())
                        } else {
                            customers
                                .insert_one(hpn_common::store::to_document(&record))
                                .await
                                .map(|_| ())
                        };
                        barrier.wait().await;
                        result
                    }
                })
                .await?
        }
        DuplicateStrategy::Upsert => {
            let retried = retried.clone();
            scratch
                .race(RecordKind::Customer, move |record, barrier| {
                    let (store, retried) = (store.clone(), retried.clone());
                    async move {
                        // ---- SAFE: the importer's own write path. ----
                        // One upsert keyed on user_id is a single operation on the
                        // server: "update the document with this key, or insert it
                        // if there is none". There is no gap between a read and a
                        // write for another consumer to slip into. When upserts of
                        // a new key race, the unique index lets exactly one insert
                        // and the server (or `Store::upsert`, which sends the loser
                        // again) turns the others into updates of that document.
                        barrier.wait().await;
                        let outcome = store.upsert(RecordKind::Customer, std::slice::from_ref(&record)).await;
                        barrier.wait().await;
                        let outcome = outcome.map_err(|e| match e {
                            hpn_common::store::StoreError::Mongo(m) => m,
                            other => MongoError::custom(other.to_string()),
                        })?;
                        retried.fetch_add(outcome.retried, std::sync::atomic::Ordering::Relaxed);
                        match outcome.failed.first() {
                            Some(f) => Err(MongoError::custom(format!("code {}", f.code))),
                            None => Ok(()),
                        }
                    }
                })
                .await?
        }
    };
    let documents = customers
        .count_documents(doc! {})
        .await
        .map_err(hpn_common::store::StoreError::from)?;
    let (strategy_name, notes) = match strategy {
        DuplicateStrategy::NaiveNoIndex => (
            "naive: check then insert, no unique index",
            duplicate_note(&errors, documents, options),
        ),
        DuplicateStrategy::NaiveUniqueIndex => (
            "naive: check then insert, unique index",
            duplicate_note(&errors, documents, options),
        ),
        DuplicateStrategy::Upsert => (
            "safe: unique index + keyed upsert",
            format!(
                "{} racing upserts hit E11000 inside the server and were sent again",
                retried.load(std::sync::atomic::Ordering::Relaxed)
            ),
        ),
    };
    Ok(ScenarioRow {
        scenario: "duplicate keys".into(),
        strategy: strategy_name.into(),
        consumers: scratch.consumers,
        operations,
        errors,
        expected: options.keys as u64,
        found: documents,
        measure: "documents".into(),
        notes,
    })
}

fn duplicate_note(errors: &BTreeMap<String, u64>, documents: u64, options: &ContentionOptions) -> String {
    let duplicates = errors.get(&DUPLICATE_KEY.to_string()).copied().unwrap_or(0);
    if duplicates > 0 {
        format!("{duplicates} inserts failed with E11000 duplicate key")
    } else {
        format!(
            "{} extra documents for {} customers",
            documents.saturating_sub(options.keys as u64),
            options.keys
        )
    }
}

// ---------------------------------------------------------------------------
// Scenario 2: lost updates.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StockStrategy {
    /// Read the quantity, compute, write it back.
    ReadModifyWrite,
    /// The importer's write: one atomic, guarded, idempotent update.
    AtomicConditional,
}

async fn lost_updates(scratch: &Scratch, options: &ContentionOptions, strategy: StockStrategy) -> Result<ScenarioRow> {
    let store = scratch.store.clone();
    let products = store.collection(RecordKind::Product);
    products.drop().await.map_err(hpn_common::store::StoreError::from)?;
    store.ensure_indexes().await?;
    let seeded: Vec<Document> = (0..options.products)
        .map(|p| doc! {"product_id": format!("P{p:03}"), "description": "Contended sofa", "product_type": "livingroom", "quantity_available": i64::from(options.stock)})
        .collect();
    products
        .insert_many(seeded)
        .await
        .map_err(hpn_common::store::StoreError::from)?;
    // Consumer i gets rentals of every product, in the same order as every
    // other consumer, by different customers.
    for round in 0..options.rentals {
        for p in 0..options.products {
            for i in 0..scratch.consumers {
                let rental = Record::Rental(hpn_common::Rental {
                    product_id: format!("P{p:03}"),
                    user_id: format!("R{round}-{i}"),
                    version: None,
                });
                scratch.publish(&scratch.direct(), &scratch.queue(i), &rental).await?;
            }
        }
    }
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (operations, errors) = match strategy {
        StockStrategy::ReadModifyWrite => {
            let products = products.clone();
            scratch
                .race(RecordKind::Rental, move |record, barrier| {
                    let products = products.clone();
                    async move {
                        let Record::Rental(rental) = record else { return Ok(()) };
                        // ---- NAIVE, kept for the demonstration: read, modify, write. ----
                        // Step 1: read the quantity. Every consumer renting this
                        // product reads now, and all read the same number, say 20.
                        let product = products.find_one(doc! {"product_id": &rental.product_id}).await?;
                        let quantity = product.and_then(|p| p.get_i64("quantity_available").ok()).unwrap_or(0);
                        barrier.wait().await;
                        // Step 2: each computes 20 - 1 = 19 and writes it back.
                        // Four rentals happened; the stock went down by one. Each
                        // write silently overwrote the others: a lost update, and
                        // no error anywhere to tell anyone.
                        let result = if quantity > 0 {
                            products
                                .update_one(
                                    doc! {"product_id": &rental.product_id},
                                    doc! {"$set": {"quantity_available": quantity - 1}},
                                )
                                .await
                                .map(|_| ())
                        } else {
                            Ok(())
                        };
                        barrier.wait().await;
                        result
                    }
                })
                .await?
        }
        StockStrategy::AtomicConditional => {
            let (store, refused) = (store.clone(), refused.clone());
            scratch
                .race(RecordKind::Rental, move |record, barrier| {
                    let (store, refused) = (store.clone(), refused.clone());
                    async move {
                        let Record::Rental(rental) = record else { return Ok(()) };
                        // ---- SAFE: the importer's own stock update. ----
                        // `take_stock` is one atomic update of the product:
                        // `$inc: -1` only where `quantity_available > 0` and this
                        // rental is not yet recorded. The server applies it to
                        // whatever the quantity is at that instant, so concurrent
                        // rentals each take their own unit; the guard is checked
                        // in the same step, so stock never goes below zero; and
                        // a rental that finds no stock is reported, not applied.
                        barrier.wait().await;
                        let outcome = store.take_stock(&rental.product_id, &rental.user_id).await;
                        barrier.wait().await;
                        match outcome {
                            Ok(StockOutcome::OutOfStock) => {
                                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                Ok(())
                            }
                            Ok(_) => Ok(()),
                            Err(hpn_common::store::StoreError::Mongo(e)) => Err(e),
                            Err(other) => Err(MongoError::custom(other.to_string())),
                        }
                    }
                })
                .await?
        }
    };
    let remaining = total_stock(&store).await?;
    let rentals_per_product = options.rentals as u64 * scratch.consumers as u64;
    let expected = options.products as u64 * u64::from(options.stock).saturating_sub(rentals_per_product);
    let (name, notes) = match strategy {
        StockStrategy::ReadModifyWrite => (
            "naive: read, modify, write",
            format!(
                "{} rentals took {} units",
                options.products as u64 * rentals_per_product,
                options.products as u64 * u64::from(options.stock) - remaining
            ),
        ),
        StockStrategy::AtomicConditional => (
            "safe: atomic conditional $inc",
            format!(
                "{} rentals refused as out of stock, none below zero",
                refused.load(std::sync::atomic::Ordering::Relaxed)
            ),
        ),
    };
    Ok(ScenarioRow {
        scenario: "lost updates".into(),
        strategy: name.into(),
        consumers: scratch.consumers,
        operations,
        errors,
        expected,
        found: remaining,
        measure: "units in stock".into(),
        notes,
    })
}

async fn total_stock(store: &Store) -> Result<u64> {
    use futures::TryStreamExt;
    let docs: Vec<Document> = store
        .collection(RecordKind::Product)
        .find(doc! {})
        .await
        .map_err(hpn_common::store::StoreError::from)?
        .try_collect()
        .await
        .map_err(hpn_common::store::StoreError::from)?;
    let mut total = 0i64;
    for d in docs {
        let quantity = d.get_i64("quantity_available").unwrap_or(0);
        if quantity < 0 {
            return Err(Error::Task(format!("stock below zero: {d}")));
        }
        total += quantity;
    }
    Ok(total as u64)
}

// ---------------------------------------------------------------------------
// Scenario 3: stale overwrite by reordering.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReorderStrategy {
    /// Keyed upsert without versions: the last write to arrive wins.
    LastArrivalWins,
    /// The importer's write: keyed, and guarded by version.
    VersionGuard,
}

/// The name a customer has at `version`, so the data shows which won.
fn customer_at(i: usize, version: usize) -> Record {
    let mut record = customer(i).with_version(version as i64);
    if let Record::Customer(c) = &mut record {
        c.name = format!("Customer {i}, version {version}");
    }
    record
}

async fn stale_overwrites(
    scratch: &Scratch,
    options: &ContentionOptions,
    strategy: ReorderStrategy,
) -> Result<ScenarioRow> {
    let store = scratch.store.clone();
    let customers = store.collection(RecordKind::Customer);
    customers.drop().await.map_err(hpn_common::store::StoreError::from)?;
    store.ensure_indexes().await?;
    // One version of every customer per consumer: consumer 0 holds the
    // newest (version `consumers`), the last consumer the oldest (version 1).
    let newest = scratch.consumers;
    for i in 0..options.keys {
        for consumer in 0..scratch.consumers {
            let record = customer_at(i, newest - consumer);
            scratch
                .publish(&scratch.direct(), &scratch.queue(consumer), &record)
                .await?;
        }
    }
    let stale = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let consumers = scratch.consumers;
    let (operations, errors) = {
        let (store, stale) = (store.clone(), stale.clone());
        scratch
            .race(RecordKind::Customer, move |record, barrier| {
                let (store, stale) = (store.clone(), stale.clone());
                async move {
                    // Why the order of writes is not the order of versions:
                    // the broker delivers one queue in order, but a message is
                    // written when its consumer gets to it, not when it was
                    // delivered. The consumer holding the older version may be
                    // slower: its batch waits out its flush window, its channel
                    // died and the message came back redelivered, the
                    // `x-hpn-attempts` republish put it behind newer messages,
                    // or it belongs to another importer process. The phases
                    // below make the worst order the one that happens: the
                    // newest version is written first, the oldest last.
                    let version = record.version().unwrap_or(0) as usize;
                    let my_phase = newest - version;
                    let mut result = Ok(());
                    for phase in 0..consumers {
                        barrier.wait().await;
                        if phase != my_phase {
                            continue;
                        }
                        result = match strategy {
                            // ---- NAIVE: the last write to arrive wins. ----
                            // A keyed upsert without versions makes the latest
                            // *arrival* the truth. The oldest version arrives
                            // last and silently replaces the newest: a lost
                            // update that no error reports.
                            ReorderStrategy::LastArrivalWins => {
                                let mut unversioned = record.clone();
                                unversioned.set_version(None);
                                store.upsert(RecordKind::Customer, &[unversioned]).await.map(|_| ())
                            }
                            // ---- SAFE: the importer's own write, guarded by version. ----
                            // The stored document keeps its version, and the
                            // write's filter says "only where the stored version
                            // is lower". The server checks and writes in one
                            // atomic step, so an older record that arrives last
                            // changes nothing (it is counted as stale) and the
                            // newest stays, whatever the order of arrival.
                            ReorderStrategy::VersionGuard => store
                                .write(RecordKind::Customer, std::slice::from_ref(&record))
                                .await
                                .map(|outcome| {
                                    stale.fetch_add(outcome.stale, std::sync::atomic::Ordering::Relaxed);
                                }),
                        }
                        .map_err(|e| match e {
                            hpn_common::store::StoreError::Mongo(m) => m,
                            other => MongoError::custom(other.to_string()),
                        });
                    }
                    result
                }
            })
            .await?
    };
    let at_newest = customers_at_version(&store, newest).await?;
    let (name, notes) = match strategy {
        ReorderStrategy::LastArrivalWins => (
            "naive: keyed upsert, last arrival wins",
            format!(
                "{} of {} customers ended at an older version",
                (options.keys as u64).saturating_sub(at_newest),
                options.keys
            ),
        ),
        ReorderStrategy::VersionGuard => (
            "safe: keyed upsert guarded by version",
            format!(
                "{} older versions arrived last and changed nothing (stale)",
                stale.load(std::sync::atomic::Ordering::Relaxed)
            ),
        ),
    };
    Ok(ScenarioRow {
        scenario: "stale overwrite by reordering".into(),
        strategy: name.into(),
        consumers: scratch.consumers,
        operations,
        errors,
        expected: options.keys as u64,
        found: at_newest,
        measure: "customers at their newest version".into(),
        notes,
    })
}

/// Customers whose stored name is the one of `version`.
async fn customers_at_version(store: &Store, version: usize) -> Result<u64> {
    use futures::TryStreamExt;
    let docs: Vec<Document> = store
        .collection(RecordKind::Customer)
        .find(doc! {})
        .await
        .map_err(hpn_common::store::StoreError::from)?
        .try_collect()
        .await
        .map_err(hpn_common::store::StoreError::from)?;
    let suffix = format!(", version {version}");
    Ok(docs
        .iter()
        .filter(|d| d.get_str("name").is_ok_and(|n| n.ends_with(&suffix)))
        .count() as u64)
}
