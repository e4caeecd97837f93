//! Scenario 1, duplicate keys: at-least-once delivery hands the same
//! customer to several consumers at once; check-then-insert lets each of
//! them insert.

use super::scratch::Scratch;
use super::{as_mongo, customer, ContentionOptions, ScenarioRow};
use crate::error::Result;
use crate::store::DUPLICATE_KEY;
use hpn_common::RecordKind;
use mongodb::bson::doc;
use mongodb::error::Error as MongoError;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DuplicateStrategy {
    /// Check, then insert; the key is an ordinary field and the `_id` a
    /// new `ObjectId` (the old loaders' documents): nothing is unique.
    NaiveNoIndex,
    /// Check, then insert; the key is the `_id`, so the `_id` index makes it
    /// unique (the importer's documents).
    NaiveUniqueIndex,
    /// The importer's write: the key as `_id` plus one keyed upsert per record.
    Upsert,
}

pub async fn duplicate_keys(
    scratch: &Scratch,
    options: &ContentionOptions,
    strategy: DuplicateStrategy,
) -> Result<ScenarioRow> {
    let store = scratch.store.clone();
    let customers = scratch.empty(RecordKind::Customer).await?;
    let keyed = strategy != DuplicateStrategy::NaiveNoIndex;
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
                        let filter = match keyed {
                            true => crate::store::key_filter(&record),
                            false => doc! {"user_id": record.key()},
                        };
                        let exists = customers.find_one(filter).await?.is_some();
                        barrier.wait().await;
                        // Step 2: each consumer acts on an answer that is already
                        // out of date. They all insert. With the key as `_id`
                        // the first insert wins and every other one fails with
                        // E11000 (duplicate key): errors an operator sees, and
                        // deliveries that would be retried or dead-lettered for
                        // nothing. With the key an ordinary field (the `_id` a
                        // fresh ObjectId, as the old loaders wrote) every insert
                        // succeeds and the customer now has one document per
                        // consumer.
                        let document = match keyed {
                            true => crate::store::stored_document(&record),
                            false => crate::store::to_document(&record),
                        };
                        let result = if exists {
                            Ok(())
                        } else {
                            customers.insert_one(document).await.map(|_| ())
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
                        // One upsert keyed on the _id (the user_id) is a single
                        // operation on the server: "update the document with this
                        // key, or insert it if there is none". There is no gap
                        // between a read and a write for another consumer to slip
                        // into. When upserts of a new key race, the _id index lets
                        // exactly one insert
                        // and the server (or `Store::upsert`, which sends the loser
                        // again) turns the others into updates of that document.
                        barrier.wait().await;
                        let outcome = store.upsert(RecordKind::Customer, std::slice::from_ref(&record)).await;
                        barrier.wait().await;
                        let outcome = outcome.map_err(as_mongo)?;
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
        .map_err(crate::store::StoreError::from)?;
    let (strategy_name, notes) = match strategy {
        DuplicateStrategy::NaiveNoIndex => (
            "naive: check then insert, key not unique",
            duplicate_note(&errors, documents, options),
        ),
        DuplicateStrategy::NaiveUniqueIndex => (
            "naive: check then insert, key as _id",
            duplicate_note(&errors, documents, options),
        ),
        DuplicateStrategy::Upsert => (
            "safe: key as _id + keyed upsert",
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
