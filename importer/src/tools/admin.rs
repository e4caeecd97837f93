//! Looking after a store and its queues: `migrate` a store of the old
//! shape, `compact` old tombstones, `reset` the collections and queues. The
//! command line prints what these return.

use crate::store::{Migrated, Store};
use crate::Result;
use hpn_common::{broker, ConnectionSettings, RecordKind, StoreSettings, Topology};
use std::time::Duration;

/// Rewrite every collection of the old shape (see `store::migrate`), then
/// check the store has the new shape throughout.
pub async fn migrate(settings: &StoreSettings) -> Result<Vec<Migrated>> {
    let store = Store::connect(&settings.mongodb_uri, &settings.database).await?;
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
    let store = Store::connect(&settings.mongodb_uri, &settings.database).await?;
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
    let store = Store::connect(&settings.mongodb_uri, &settings.database).await?;
    store.drop_collections().await?;
    store.shutdown().await;
    let connection = broker::connect(&settings.amqp_url, "hpn-importer (reset)").await?;
    let topology = settings.topology();
    let deleted = topology.delete(&connection.create_channel().await?).await?;
    topology.declare(&connection).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok((deleted, topology))
}
