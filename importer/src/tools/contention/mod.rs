//! Contention, on purpose: racing consumers breaking a naive importer, and
//! the strategies the real importer uses instead.
//!
//! `hpn-importer contention` runs four scenarios on a scratch database
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
//! **Resurrection by reordering.** Every customer is updated and then
//! deleted, and the update reaches the store after the delete. A delete that
//! removes the document takes the key's version with it, so the late update
//! inserts the customer again, version guard or not.
//!
//! The real importer avoids all four by its writes alone, whatever the
//! number of consumers and importer processes: keyed upserts behind unique
//! indexes; atomic, idempotent stock updates; a version guard that lets a
//! record replace only an older version of its key; and deletes that are
//! versioned records, leaving a tombstone at their version.

mod duplicate_keys;
mod lost_updates;
mod resurrections;
mod scratch;
mod stale_overwrites;

use crate::error::Result;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use duplicate_keys::{duplicate_keys, DuplicateStrategy};
use hpn_common::{ConnectionSettings, Customer, Record};
use lost_updates::{lost_updates, StockStrategy};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use resurrections::{resurrections, DeleteStrategy};
use scratch::Scratch;
use serde::{Deserialize, Serialize};
use stale_overwrites::{stale_overwrites, ReorderStrategy};
use std::collections::BTreeMap;

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
    for strategy in [DeleteStrategy::RemoveDocument, DeleteStrategy::VersionedTombstone] {
        rows.push(resurrections(&scratch, options, strategy).await?);
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

/// A store error as the driver error the race reports count by code.
pub(crate) fn as_mongo(error: crate::store::StoreError) -> MongoError {
    match error {
        crate::store::StoreError::Mongo(m) => m,
        other => MongoError::custom(other.to_string()),
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

/// The `user_id` of the demonstration's customer `i`.
pub(crate) fn customer_id(i: usize) -> String {
    format!("C{i:05}")
}

pub(crate) fn customer(i: usize) -> Record {
    Record::Customer(Customer {
        user_id: customer_id(i),
        name: format!("Customer {i}"),
        address: format!("{i} Contention Way"),
        zip_code: Some("98101".into()),
        phone_number: "206-555-0100".into(),
        email: format!("c{i}@example.com"),
        extra: Default::default(),
        version: None,
    })
}

/// Customer `i` at `version`, its name saying which version it is, so the
/// data shows which version won.
pub(crate) fn customer_at(i: usize, version: usize) -> Record {
    let mut record = customer(i).with_version(version as i64);
    if let Record::Customer(c) = &mut record {
        c.name = format!("Customer {i}, version {version}");
    }
    record
}

/// Wait out `rounds` rounds of the consumers' barrier, running `write` in
/// round `mine` only: how a scenario makes one order of writes (round 0
/// first) the one that happens, every time.
pub(crate) async fn in_round<F, Fut>(
    barrier: &tokio::sync::Barrier,
    rounds: usize,
    mine: usize,
    write: F,
) -> std::result::Result<(), MongoError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), MongoError>>,
{
    let mut write = Some(write);
    let mut result = Ok(());
    for round in 0..rounds {
        barrier.wait().await;
        if round == mine {
            if let Some(write) = write.take() {
                result = write().await;
            }
        }
    }
    result
}
