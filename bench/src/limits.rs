//! The servers' raw limits, measured in the same run with the same client
//! libraries: what MongoDB takes through `insert_many`, and what RabbitMQ
//! takes as confirmed persistent publishes and as consumed messages. The
//! product's figures are judged against these, so a slow machine lowers the
//! bar and a fast one raises it.

use crate::cpu;
use crate::results::{self, Limits};
use crate::{measure, say};
use anyhow::Result;
use futures::StreamExt;
use hpn_common::message;
use hpn_common::publisher::ConfirmedPublisher;
use hpn_common::ConnectionSettings;
use hpn_common::{broker, QueueType, Record, RecordKind};
use hpn_importer::Store;
use lapin::options::{BasicAckOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions};
use mongodb::bson::Document;
use std::path::Path;
use std::time::{Duration, Instant};

/// A raw rate, and what it cost the whole machine: CPU seconds (of one
/// core) per item, every process counted (the server, this client, and
/// whatever else ran meanwhile), so that rates which share the cores can be
/// added up into a ceiling (see `hpn-bench`'s queue comparison).
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub per_s: f64,
    pub cpu_s_per_item: f64,
}

/// Whole-machine CPU seconds per item of `items` over the interval since `before`.
fn machine_cpu_per_item(before: &cpu::Sample, items: usize) -> f64 {
    let spent = cpu::time_between(before, &cpu::sample(&Vec::new()))
        .into_iter()
        .find(|t| t.process == cpu::WHOLE_MACHINE)
        .map_or(f64::NAN, |t| t.seconds);
    spent / items.max(1) as f64
}

/// `insert_many` of `docs` (keyed as the store keys them, see
/// `hpn_importer::document::stored_document`) in batches of `batch`,
/// `concurrency` batches at a time, into a fresh collection.
pub async fn insert_many(
    store: &Store,
    kind: RecordKind,
    docs: &[Document],
    batch: usize,
    concurrency: usize,
) -> anyhow::Result<Rate> {
    let collection = store
        .database()
        .collection::<Document>(&format!("raw_{}", kind.collection()));
    collection.drop().await?;
    let before = cpu::sample(&Vec::new());
    let per_s = per_second(docs, batch, concurrency, |chunk| {
        let collection = collection.clone();
        async move { collection.insert_many(chunk.to_vec()).ordered(false).await.map(|_| ()) }
    })
    .await?;
    let cpu_s_per_item = machine_cpu_per_item(&before, docs.len());
    collection.drop().await?;
    Ok(Rate { per_s, cpu_s_per_item })
}

/// The importer's keyed upsert (`Store::upsert`) in batches, for comparison
/// with `insert_many` on the same documents. Records/s.
pub async fn upsert(
    store: &Store,
    kind: RecordKind,
    records: &[Record],
    batch: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    store.collection(kind).drop().await?;
    let per_s = per_second(records, batch, concurrency, |chunk| async move {
        store.upsert(kind, chunk).await.map(|_| ())
    })
    .await?;
    store.collection(kind).drop().await?;
    Ok(per_s)
}

/// Items/s for writing `items` in batches of `batch`, `concurrency`
/// batches at a time, with `write`; fails on the first failed batch.
async fn per_second<'a, T, E, F, Fut>(items: &'a [T], batch: usize, concurrency: usize, write: F) -> anyhow::Result<f64>
where
    F: FnMut(&'a [T]) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    futures::stream::iter(items.chunks(batch.max(1)))
        .map(write)
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(items.len() as f64 / started.elapsed().as_secs_f64())
}

/// Broker limits for one payload shape.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct BrokerLimits {
    /// Confirmed persistent publishes per second.
    pub publish_per_s: f64,
    /// Messages consumed (and acknowledged) per second.
    pub consume_per_s: f64,
    /// Whole-machine CPU seconds per message consumed (broker and consumer).
    pub consume_cpu_s_per_message: f64,
}

/// Publish `count` copies of `body` to a scratch durable queue with confirms
/// (`window` in flight, on `channels` channels), then consume them all.
/// The best publish and consume rates over the publisher settings worth
/// trying: (confirm window, channels).
pub async fn broker_best(
    raw: &RawQueue<'_>,
    body: &[u8],
    kind: RecordKind,
    count: usize,
) -> anyhow::Result<BrokerLimits> {
    let mut best = BrokerLimits {
        publish_per_s: 0.0,
        consume_per_s: 0.0,
        consume_cpu_s_per_message: f64::NAN,
    };
    for (window, channels) in [(1024, 1), (4096, 1), (1024, 3)] {
        let l = broker(raw, body, kind, count, window, channels).await?;
        best.publish_per_s = best.publish_per_s.max(l.publish_per_s);
        // The consumer is the same each time: the fastest consume's cost.
        if l.consume_per_s > best.consume_per_s {
            best.consume_per_s = l.consume_per_s;
            best.consume_cpu_s_per_message = l.consume_cpu_s_per_message;
        }
    }
    Ok(best)
}

/// Where the raw broker limits are measured: a scratch queue of a type.
pub struct RawQueue<'a> {
    pub amqp_url: &'a str,
    pub name: &'a str,
    pub queue_type: QueueType,
}

pub async fn broker(
    raw: &RawQueue<'_>,
    body: &[u8],
    kind: RecordKind,
    count: usize,
    window: usize,
    channels: usize,
) -> anyhow::Result<BrokerLimits> {
    let (queue, queue_type) = (raw.name, raw.queue_type);
    let connection = broker::connect(raw.amqp_url, "hpn-bench (raw limits)").await?;
    let setup = connection.create_channel().await?;
    setup.queue_delete(queue.into(), QueueDeleteOptions::default()).await?;
    setup
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), queue_type.arguments())
        .await?;

    let started = Instant::now();
    let per_channel = count.div_ceil(channels.max(1));
    let mut publishers = Vec::new();
    for c in 0..channels.max(1) {
        let mut publisher = ConfirmedPublisher::open(&connection, window).await?;
        let n = per_channel.min(count.saturating_sub(c * per_channel));
        let (body, queue) = (body.to_vec(), queue.to_string());
        publishers.push(tokio::spawn(async move {
            for _ in 0..n {
                publisher
                    .publish("", &queue, &body, message::properties(kind, None))
                    .await?;
            }
            publisher.close().await?;
            Ok::<_, anyhow::Error>(())
        }));
    }
    for p in publishers {
        p.await??;
    }
    let publish_per_s = count as f64 / started.elapsed().as_secs_f64();

    let channel = connection.create_channel().await?;
    channel.basic_qos(2000, BasicQosOptions::default()).await?;
    let mut consumer = hpn_common::broker::subscribe(&channel, queue).await?;
    let started = Instant::now();
    let before = cpu::sample(&Vec::new());
    let mut received = 0;
    while received < count {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("consumer ended"))??;
        received += 1;
        if received % 500 == 0 || received == count {
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                .await?;
        }
    }
    let consume_per_s = count as f64 / started.elapsed().as_secs_f64();
    let consume_cpu_s_per_message = machine_cpu_per_item(&before, count);
    setup.queue_delete(queue.into(), QueueDeleteOptions::default()).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(BrokerLimits {
        publish_per_s,
        consume_per_s,
        consume_cpu_s_per_message,
    })
}

/// Rounds of raw `insert_many` at its best concurrency (the median is the limit).
const INSERT_MANY_ROUNDS: usize = 5;

/// The raw limits of this run: `insert_many` at its best concurrency, a
/// guarded upsert, and RabbitMQ's confirmed publishes and consumes of
/// messages of 1 and 100 records, from `customers` (up to 100,000 of them).
pub async fn measure_limits(connection: &ConnectionSettings, customers: &Path) -> Result<Limits> {
    let records = measure::customer_records(customers, 100_000)?;
    let documents: Vec<_> = records.iter().map(hpn_importer::document::stored_document).collect();
    let store = Store::connect(
        &connection.mongodb_uri,
        &format!("hpn_bench_limits_{}", std::process::id()),
    )
    .await?;
    let mut insert_many = Vec::new();
    for concurrency in [1, 2, 4] {
        insert_many.push((
            concurrency,
            self::insert_many(&store, RecordKind::Customer, &documents, 1000, concurrency)
                .await?
                .per_s,
        ));
    }
    // One round per concurrency picks the best; the figure the targets
    // divide by is the median of more rounds at it (one round swung by
    // ±30 % between runs).
    let concurrency = insert_many
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| *c)
        .unwrap_or(1);
    let mut insert_many_rounds = Vec::new();
    let mut insert_many_cpu = Vec::new();
    for _ in 0..INSERT_MANY_ROUNDS {
        let round = self::insert_many(&store, RecordKind::Customer, &documents, 1000, concurrency).await?;
        insert_many_rounds.push(round.per_s);
        insert_many_cpu.push(round.cpu_s_per_item);
    }
    let upsert_per_s = upsert(&store, RecordKind::Customer, &records, 1000, 2).await?;
    store.database().drop().await?;
    let insert_many_per_s = results::median(&insert_many_rounds);
    say(format!(
        "raw insert_many, {concurrency} batches at a time: median {insert_many_per_s:.0} docs/s of {INSERT_MANY_ROUNDS} rounds ({:.0}..{:.0})",
        insert_many_rounds.iter().copied().fold(f64::INFINITY, f64::min),
        insert_many_rounds.iter().copied().fold(0.0, f64::max),
    ));

    let queue = format!("hpn_bench_limits_{}", std::process::id());
    let raw_queue = RawQueue {
        amqp_url: &connection.amqp_url,
        name: &queue,
        queue_type: connection.queue_type,
    };
    let one = hpn_common::message::encode(&records[..1]);
    let count = records.len().min(50_000);
    let one_row = broker_best(&raw_queue, &one, RecordKind::Customer, count).await?;
    let hundred = hpn_common::message::encode(&records[..100.min(records.len())]);
    let batched = broker(&raw_queue, &hundred, RecordKind::Customer, count / 100, 256, 1).await?;
    Ok(Limits {
        documents: documents.len(),
        insert_many,
        insert_many_per_s,
        insert_many_rounds,
        insert_many_concurrency: concurrency,
        insert_many_cpu_s_per_doc: Some(results::median(&insert_many_cpu)),
        upsert_per_s,
        publish_one_row_per_s: one_row.publish_per_s,
        consume_one_row_per_s: one_row.consume_per_s,
        publish_hundred_rows_records_per_s: batched.publish_per_s * 100.0,
        consume_hundred_rows_records_per_s: batched.consume_per_s * 100.0,
    })
}
