//! Looking after a store and its queues: `migrate` a store of the old
//! shape, `compact` old tombstones, `reset` the collections and queues;
//! each also as the command, saying what it did (`…_and_say`).

use super::query::migrated_table;
use crate::store::{Migrated, Store};
use crate::Result;
use hpn_common::{broker, ConnectionSettings, RecordKind, StoreSettings, Topology};
use std::time::Duration;

/// Rewrite every collection of the old shape (see `store::migrate`), then
/// check the store has the new shape throughout.
pub async fn migrate(settings: &StoreSettings) -> Result<Vec<Migrated>> {
    let store = Store::connect_to(settings).await?;
    let mut done = Vec::new();
    for kind in RecordKind::ALL {
        done.push(store.migrate(kind).await?);
    }
    store.check_shape().await?;
    store.shutdown().await;
    Ok(done)
}

/// Remove the tombstones of `kinds` older than `older_than`: how many, per collection.
pub async fn compact(
    settings: &StoreSettings,
    kinds: &[RecordKind],
    older_than: Duration,
) -> Result<Vec<(RecordKind, u64)>> {
    let store = Store::connect_to(settings).await?;
    let mut removed = Vec::new();
    for &kind in kinds {
        removed.push((kind, store.compact(kind, older_than).await?));
    }
    store.shutdown().await;
    Ok(removed)
}

/// Drop the collections, delete the queues with what they hold and declare
/// them anew: how many messages were deleted, and the topology declared.
pub async fn reset(settings: &ConnectionSettings) -> Result<(u32, Topology)> {
    let store = Store::connect_to(settings).await?;
    store.drop_collections().await?;
    store.shutdown().await;
    let connection = broker::connect(&settings.amqp_url, "hpn-importer (reset)").await?;
    let topology = settings.topology();
    let deleted = topology.delete(&connection.create_channel().await?).await?;
    topology.declare(&connection).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok((deleted, topology))
}

/// `hpn-importer migrate`: [`migrate`], then what was rewritten, as a table or JSON.
pub async fn migrate_and_say(settings: &StoreSettings, json: bool) -> anyhow::Result<()> {
    let done = migrate(settings).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        println!("{}", migrated_table(&done));
    }
    Ok(())
}

/// `hpn-importer compact`: [`compact`], then how many tombstones each
/// collection lost, as lines or JSON.
pub async fn compact_and_say(
    settings: &StoreSettings,
    kinds: &[RecordKind],
    older_than: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let removed = compact(settings, kinds, older_than).await?;
    if json {
        let by_collection: serde_json::Map<String, serde_json::Value> = removed
            .iter()
            .map(|(kind, n)| (kind.collection().to_string(), (*n).into()))
            .collect();
        println!("{}", serde_json::Value::Object(by_collection));
    } else {
        for (kind, n) in removed {
            println!(
                "{}: removed {n} tombstones older than {}",
                kind.collection(),
                humantime::format_duration(older_than)
            );
        }
    }
    Ok(())
}

/// `hpn-importer reset`: refused without `yes`; else [`reset`], then what it did.
pub async fn reset_and_say(settings: &ConnectionSettings, yes: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        yes,
        "reset drops the {} collections and empties the {} queues: add --yes",
        settings.database,
        settings.queue_prefix
    );
    let (deleted, topology) = reset(settings).await?;
    println!(
        "dropped the collections of {}; deleted {deleted} queued messages and declared the {} queues anew ({})",
        settings.database,
        settings.queue_prefix,
        topology.queue_type()
    );
    Ok(())
}
