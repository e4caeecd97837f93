//! Scratch space for the demonstration: a database and one queue per
//! consumer, never the real ones, and the lockstep in which the consumers
//! race.

use super::error_code;
use crate::error::{Error, Result};
use crate::route::ack::AckTracker;
use crate::store::Store;
use crate::store::StoreError;
use futures::StreamExt;
use hpn_common::message::{self, DEFAULT_MAX_MESSAGE_BYTES};
use hpn_common::publisher::publish_confirmed;
use hpn_common::{broker, ConnectionSettings, Record, RecordKind};
use lapin::options::{
    BasicAckOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};
use mongodb::bson::Document;
use mongodb::error::Error as MongoError;
use mongodb::Collection;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Barrier;

pub struct Scratch {
    pub store: Store,
    connection: Connection,
    channel: Channel,
    prefix: String,
    pub consumers: usize,
}

impl Scratch {
    pub async fn open(settings: &ConnectionSettings, consumers: usize) -> Result<Scratch> {
        let store = Store::connect(&settings.mongodb_uri, &format!("{}_contention", settings.database)).await?;
        store.database().drop().await.map_err(crate::store::StoreError::from)?;
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

    pub fn fanout(&self) -> String {
        format!("{}.fanout", self.prefix)
    }

    pub fn direct(&self) -> String {
        format!("{}.direct", self.prefix)
    }

    pub fn queue(&self, consumer: usize) -> String {
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

    /// `kind`'s scratch collection, emptied.
    pub async fn empty(&self, kind: RecordKind) -> Result<Collection<Document>> {
        let collection = self.store.collection(kind);
        collection.drop().await.map_err(StoreError::from)?;
        Ok(collection)
    }

    /// Every document of `kind`'s scratch collection, to see what a race left.
    pub async fn documents(&self, kind: RecordKind) -> Result<Vec<Document>> {
        use futures::TryStreamExt;
        let cursor = self
            .store
            .collection(kind)
            .find(mongodb::bson::doc! {})
            .await
            .map_err(StoreError::from)?;
        Ok(cursor.try_collect().await.map_err(StoreError::from)?)
    }

    pub async fn publish(&self, exchange: &str, routing_key: &str, record: &Record) -> Result<()> {
        let body = message::encode(std::slice::from_ref(record));
        let properties = message::properties(record.kind(), None);
        publish_confirmed(&self.channel, exchange, routing_key, &body, properties).await?;
        Ok(())
    }

    /// Run `step` on every consumer for every message in its queue, the
    /// consumers in lockstep (each step gets the shared barrier).
    pub async fn race<F, Fut>(&self, kind: RecordKind, step: F) -> Result<(u64, BTreeMap<String, u64>)>
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
                let mut consumer = hpn_common::broker::subscribe(&channel, &queue).await?;
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

    pub async fn close(self) {
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
