//! Scenario 4, resurrection by reordering: a customer is updated, then
//! deleted, and the update arrives after the delete. Removing the document
//! forgets that the key was ever deleted, so the late update brings the
//! customer back, even through a version guard; a versioned tombstone
//! remembers.

use super::scratch::Scratch;
use super::{as_mongo, customer, customer_at, customer_id, in_round, ContentionOptions, ScenarioRow};
use crate::error::Result;
use crate::store::live;
use hpn_common::{Deletion, Record, RecordKind};
use mongodb::bson::doc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteStrategy {
    /// A delete removes the document (what the comparable sinks do:
    /// mongoimport's `--mode delete`, the Kafka sink's delete on a
    /// tombstone); upserts are still guarded by version.
    RemoveDocument,
    /// The importer's write: the delete is a record, guarded by version like
    /// any other, and leaves a tombstone at its version.
    VersionedTombstone,
}

/// Customer `i` at `version`: an update whose name says its version, or,
/// at the newest version, the delete.
fn change_at(i: usize, version: usize, newest: usize) -> Record {
    if version < newest {
        return customer_at(i, version);
    }
    let delete = Deletion::of(RecordKind::Customer, &customer_id(i)).expect("a well-formed id");
    Record::Deleted(delete).with_version(version as i64)
}

pub async fn resurrections(
    scratch: &Scratch,
    options: &ContentionOptions,
    strategy: DeleteStrategy,
) -> Result<ScenarioRow> {
    let store = scratch.store.clone();
    let customers = scratch.empty(RecordKind::Customer).await?;
    // Every customer exists (version 0) before the race: a real account,
    // closed while an update of it was still on its way.
    let existing: Vec<Record> = (0..options.keys).map(|i| customer(i).with_version(0)).collect();
    store.write(RecordKind::Customer, &existing).await?;
    // Consumer 0 holds the delete (the newest version), the others an
    // update each, older the later the consumer.
    let newest = scratch.consumers;
    for i in 0..options.keys {
        for consumer in 0..scratch.consumers {
            let record = change_at(i, newest - consumer, newest);
            scratch
                .publish(&scratch.direct(), &scratch.queue(consumer), &record)
                .await?;
        }
    }
    let stale = Arc::new(AtomicU64::new(0));
    let consumers = scratch.consumers;
    let (operations, errors) = {
        let (store, stale, customers) = (store.clone(), stale.clone(), customers.clone());
        scratch
            .race(RecordKind::Customer, move |record, barrier| {
                let (store, stale, customers) = (store.clone(), stale.clone(), customers.clone());
                async move {
                    // The delete is written first and the updates after it,
                    // oldest last: the order a slow consumer, a redelivery or
                    // another importer process gives (see the stale-overwrite
                    // scenario), made certain by the rounds.
                    let version = record.version().unwrap_or(0) as usize;
                    in_round(&barrier, consumers, newest - version, || async {
                        match (strategy, &record) {
                            // ---- NAIVE: a delete removes the document. ----
                            // The key's version goes with it, so the guard of
                            // the late update ("only over an older version")
                            // finds no version at all, and the upsert inserts
                            // the customer again: a closed account is back,
                            // with data older than the delete, and nobody is
                            // told. Versioning the upserts alone cannot stop
                            // this; the store has to remember the delete.
                            (DeleteStrategy::RemoveDocument, Record::Deleted(_)) => customers
                                .delete_one(doc! {"_id": crate::store::key_id(&record)})
                                .await
                                .map(|_| ()),
                            (DeleteStrategy::RemoveDocument, _) => store
                                .write(RecordKind::Customer, std::slice::from_ref(&record))
                                .await
                                .map(|_| ())
                                .map_err(as_mongo),
                            // ---- SAFE: the delete is a versioned record. ----
                            // It is written by the same guarded statement as
                            // an update, and leaves a tombstone: the key, its
                            // version, no other field. An older update that
                            // arrives later finds a newer version and changes
                            // nothing (stale); queries and counts pass over
                            // the tombstone; only a newer update brings the
                            // customer back.
                            (DeleteStrategy::VersionedTombstone, _) => store
                                .write(RecordKind::Customer, std::slice::from_ref(&record))
                                .await
                                .map(|outcome| {
                                    stale.fetch_add(outcome.stale, Relaxed);
                                })
                                .map_err(as_mongo),
                        }
                    })
                    .await
                }
            })
            .await?
    };
    let present = customers
        .count_documents(live())
        .await
        .map_err(crate::store::StoreError::from)?;
    let deleted = (options.keys as u64).saturating_sub(present);
    let (name, notes) = match strategy {
        DeleteStrategy::RemoveDocument => (
            "naive: delete removes the document",
            format!(
                "{present} of {} deleted customers are back, at an older version",
                options.keys
            ),
        ),
        DeleteStrategy::VersionedTombstone => (
            "safe: versioned tombstone",
            format!(
                "{} older updates arrived after the delete and changed nothing (stale)",
                stale.load(Relaxed)
            ),
        ),
    };
    Ok(ScenarioRow {
        scenario: "resurrection by reordering".into(),
        strategy: name.into(),
        consumers: scratch.consumers,
        operations,
        errors,
        expected: options.keys as u64,
        found: deleted,
        measure: "customers deleted".into(),
        notes,
    })
}
