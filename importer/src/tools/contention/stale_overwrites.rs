//! Scenario 3, stale overwrite by reordering: versions of one customer
//! written out of order; the last arrival wins unless writes are guarded by
//! version.

use super::scratch::Scratch;
use super::{as_mongo, customer_at, in_round, ContentionOptions, ScenarioRow};
use crate::error::Result;
use hpn_common::RecordKind;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReorderStrategy {
    /// Keyed upsert without versions: the last write to arrive wins.
    LastArrivalWins,
    /// The importer's write: keyed, and guarded by version.
    VersionGuard,
}

pub async fn stale_overwrites(
    scratch: &Scratch,
    options: &ContentionOptions,
    strategy: ReorderStrategy,
) -> Result<ScenarioRow> {
    let store = scratch.store.clone();
    scratch.empty(RecordKind::Customer).await?;
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
                    // or it belongs to another importer process. The rounds
                    // below make the worst order the one that happens: the
                    // newest version is written first, the oldest last.
                    let version = record.version().unwrap_or(0) as usize;
                    in_round(&barrier, consumers, newest - version, || async {
                        match strategy {
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
                        .map_err(as_mongo)
                    })
                    .await
                }
            })
            .await?
    };
    let at_newest = customers_at_version(scratch, newest).await?;
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
async fn customers_at_version(scratch: &Scratch, version: usize) -> Result<u64> {
    let docs = scratch.documents(RecordKind::Customer).await?;
    let suffix = format!(", version {version}");
    Ok(docs
        .iter()
        .filter(|d| d.get_str("name").is_ok_and(|n| n.ends_with(&suffix)))
        .count() as u64)
}
