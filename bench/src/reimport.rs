//! The daily re-import, measured: what HP Norton runs most is the next full
//! export over a filled store, not a first load into an empty one.
//!
//! Each run loads one database four times in a row, each load timed:
//! 1. **first load**: the export into an empty store;
//! 2. **unchanged replay**: the same messages again, with the same versions
//!    (an upstream system sending again, a redelivery): every record stale;
//! 3. **daily delta**: the full export again with one row in ten changed
//!    (our producer stamps every row anew, so every record is newer);
//! 4. **changed export**: every customer and product row changed.
//!
//! The baseline, in the same run, is the **careful upsert loader**: what
//! `mongoimport --mode upsert` does (`ReplaceOne` upserts by `_id`, ordered,
//! batches of 1,000, one task per file, no queue, no versions). Ours is
//! the pipeline end to end: `hpn-producer publish`, then `hpn-importer run
//! --mode parallel`. For the replay the producer cannot send the same
//! versions again, so the first load's messages are captured by a queue
//! bound beside ours and published again from it, timed in the replay's
//! publish, as an upstream system would send them.

use crate::layout::{self, Layout};
use crate::measure::{self, Bench, Profile};
use crate::results::RunTimes;
pub use crate::results::{
    ReimportLayout, ReimportResults, ReimportScenario, CAREFUL_UPSERT, CHANGED, DELTA, FIRST_LOAD, OURS, REPLAY,
};
use anyhow::{bail, Context, Result};
use futures::StreamExt;
use hpn_common::csv_source::CsvSource;
use hpn_common::{broker, ConnectionSettings, RecordKind};
use hpn_importer::document::fields_raw;
use hpn_importer::{ImportStats, Store};
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use mongodb::bson::{doc, Document};

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Records per file of the re-import (HP Norton's daily export is the size
/// that matters: the bar is at 300,000).
pub const REIMPORT_SIZE: usize = 300_000;

const MODES: [&str; 2] = [CAREFUL_UPSERT, OURS];
const SCENARIOS: [&str; 4] = [FIRST_LOAD, REPLAY, DELTA, CHANGED];

/// Seed of the changed export: other names, addresses and quantities for
/// the same keys (a key is its row's number).
const CHANGED_SEED: u64 = hpn_producer::generate::DEFAULT_SEED + 1;

/// Rows per `update` command of the careful upsert loader (mongoimport's batch).
const UPSERT_BATCH: usize = 1000;

/// The four exports (customers, products, rentals each), in load order.
pub(crate) struct Exports {
    pub first: Vec<PathBuf>,
    pub delta: Vec<PathBuf>,
    pub changed: Vec<PathBuf>,
}

pub(crate) fn exports(data: &Path, size: usize) -> Result<Exports> {
    let generate = |name: &str, seed| -> Result<Vec<PathBuf>> {
        let generated = hpn_producer::generate::generate(&data.join(format!("{size}-{name}")), size, seed)?;
        Ok(generated.paths().iter().map(|p| p.to_path_buf()).collect())
    };
    let first = generate("first", hpn_producer::generate::DEFAULT_SEED)?;
    let other = generate("changed", CHANGED_SEED)?;
    // Rentals have no field but their key: a re-export is the same pairs.
    let changed = vec![other[0].clone(), other[1].clone(), first[2].clone()];
    let dir = data.join(format!("{size}-delta"));
    std::fs::create_dir_all(&dir)?;
    let mut delta = Vec::new();
    for (old, new) in first[..2].iter().zip(&other[..2]) {
        let out = dir.join(old.file_name().context("a file name")?);
        every_tenth_from(old, new, &out)?;
        delta.push(out);
    }
    delta.push(first[2].clone());
    Ok(Exports { first, delta, changed })
}

/// `out`: `old` with every tenth data row taken from `new` (same header,
/// same keys row for row).
fn every_tenth_from(old: &Path, new: &Path, out: &Path) -> Result<()> {
    let mut writer = std::io::BufWriter::new(std::fs::File::create(out)?);
    let old = BufReader::new(std::fs::File::open(old)?).lines();
    let new = BufReader::new(std::fs::File::open(new)?).lines();
    for (i, (a, b)) in old.zip(new).enumerate() {
        let line = if i > 0 && i % 10 == 0 { b? } else { a? };
        writeln!(writer, "{line}")?;
    }
    writer.flush()?;
    Ok(())
}

/// Measure every scenario with both modes, `repeats` times in alternating
/// order, in the shared layout and with the database on its own core.
pub async fn measure(bench: &mut Bench, data: &Path, size: usize, repeats: usize) -> Result<ReimportResults> {
    let exports = exports(data, size)?;
    let started = crate::provenance::now_rfc3339();
    let mut layouts = Vec::new();
    for layout in [Layout::Shared, Layout::DatabaseOwnCore] {
        let held = layout::hold(layout)?;
        crate::say(format!("re-import, {}: {}", layout.as_str(), held.pinning.how));
        // runs[mode][scenario]
        let mut runs: Vec<Vec<Vec<measure::Run>>> =
            MODES.iter().map(|_| SCENARIOS.map(|_| Vec::new()).into()).collect();
        for repeat in 0..repeats {
            for i in measure::rotated(MODES.len(), repeat) {
                crate::say(format!(
                    "re-import, {}, {size} per file, run {}/{repeats}: {}",
                    layout.as_str(),
                    repeat + 1,
                    MODES[i]
                ));
                let timed = bench_sequence(bench, MODES[i], &exports).await?;
                for (scenario, run) in timed.into_iter().enumerate() {
                    runs[i][scenario].push(run);
                }
            }
        }
        held.pinning.still_holds()?;
        let records = 3 * size as u64;
        layouts.push(ReimportLayout {
            layout: layout.as_str().to_string(),
            scenarios: SCENARIOS
                .iter()
                .enumerate()
                .map(|(s, scenario)| ReimportScenario {
                    scenario: scenario.to_string(),
                    modes: MODES
                        .iter()
                        .enumerate()
                        .map(|(m, mode)| measure::summarise(mode, records, &runs[m][s]))
                        .collect(),
                })
                .collect(),
        });
    }
    Ok(ReimportResults {
        started,
        commit: crate::provenance::commit(),
        records_per_file: size,
        repeats,
        layouts,
    })
}

/// One mode's four loads on one fresh database, each timed.
async fn bench_sequence(bench: &mut Bench, mode: &str, exports: &Exports) -> Result<Vec<measure::Run>> {
    let settings = bench.fresh();
    let result = async {
        let mut runs = Vec::new();
        if mode == CAREFUL_UPSERT {
            for files in [&exports.first, &exports.first, &exports.delta, &exports.changed] {
                runs.push(careful_upsert(&settings, files).await?);
            }
        } else {
            measure::declare_queues(&settings).await?;
            let capture = Capture::bind(&settings).await?;
            let first = bench.publish_and_import(&settings, &exports.first).await?;
            let loaded = first.collections.iter().map(|c| c.processed).sum();
            runs.push(first);
            capture.unbind().await?;
            runs.push(replay(bench, &settings, &capture, loaded).await?);
            capture.delete().await?;
            runs.push(bench.publish_and_import(&settings, &exports.delta).await?);
            runs.push(bench.publish_and_import(&settings, &exports.changed).await?);
        }
        anyhow::Ok(runs)
    }
    .await;
    bench.cleanup(&settings).await?;
    result
}

/// The replay: the captured first load published again into our queues
/// (timed as the publish), then imported: the `sent` records of the first
/// load again.
async fn replay(bench: &Bench, settings: &ConnectionSettings, capture: &Capture, sent: u64) -> Result<measure::Run> {
    let started = Instant::now();
    capture.republish(settings).await?;
    let publish_seconds = started.elapsed().as_secs_f64();
    let (report, importer_rss) = bench.import(settings, "parallel", Profile::default()).await?;
    if report.processed() != sent {
        bail!(
            "replay: sent {sent} records but the import processed {}",
            report.processed()
        );
    }
    Ok(measure::Run {
        times: RunTimes::in_turn(Some(publish_seconds), report.total.as_secs_f64()),
        collections: report.collections,
        producer_rss: None,
        importer_rss,
        producer_stages: Vec::new(),
        importer_stages: Vec::new(),
        cpu: Vec::new(),
    })
}

/// A classic queue per kind bound beside ours on the exchange, holding a
/// copy of every message the first load publishes.
struct Capture {
    connection: lapin::Connection,
    channel: lapin::Channel,
    exchange: String,
    queues: Vec<(RecordKind, String)>,
}

impl Capture {
    async fn bind(settings: &ConnectionSettings) -> Result<Capture> {
        let connection = broker::connect(&settings.amqp_url, "hpn-bench (re-import capture)").await?;
        let channel = connection.create_channel().await?;
        let topology = settings.topology();
        let exchange = topology.exchange();
        let mut queues = Vec::new();
        for kind in RecordKind::ALL {
            let name = format!("{}.capture", topology.queue(kind));
            channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            channel
                .queue_bind(
                    name.as_str().into(),
                    exchange.as_str().into(),
                    kind.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            queues.push((kind, name));
        }
        Ok(Capture {
            connection,
            channel,
            exchange,
            queues,
        })
    }

    async fn unbind(&self) -> Result<()> {
        for (kind, name) in &self.queues {
            self.channel
                .queue_unbind(
                    name.as_str().into(),
                    self.exchange.as_str().into(),
                    kind.as_str().into(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Move every captured message into our queue of its kind, with its
    /// headers (its versions) as captured.
    async fn republish(&self, settings: &ConnectionSettings) -> Result<()> {
        let topology = settings.topology();
        let mut publisher = hpn_common::publisher::ConfirmedPublisher::open(&self.connection, 64).await?;
        for (kind, name) in &self.queues {
            let declared = self
                .channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let messages = declared.message_count();
            let channel = self.connection.create_channel().await?;
            channel.basic_qos(256, BasicQosOptions::default()).await?;
            let mut consumer = channel
                .basic_consume(
                    name.as_str().into(),
                    "hpn-bench-replay".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let target = topology.queue(*kind);
            for _ in 0..messages {
                let delivery = consumer.next().await.context("the capture queue ended early")??;
                publisher
                    .publish("", &target, &delivery.data, delivery.properties.clone())
                    .await?;
            }
            let _ = channel.close(200, "done".into()).await;
        }
        publisher.close().await?;
        Ok(())
    }

    async fn delete(self) -> Result<()> {
        for (_, name) in &self.queues {
            self.channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.connection.close(200, "done".into()).await;
        Ok(())
    }
}

/// The careful upsert loader (see [`CAREFUL_UPSERT`]) on `files`, timed.
async fn careful_upsert(settings: &ConnectionSettings, files: &[PathBuf]) -> Result<measure::Run> {
    let store = Store::connect_to(settings).await?;
    let started = Instant::now();
    let tasks = files.iter().map(|file| {
        let store = store.clone();
        let file = file.clone();
        tokio::spawn(async move {
            let source = CsvSource::open(&file)?;
            let kind = source.kind();
            let count_before = store.count(kind).await?;
            let started = Instant::now();
            let mut stats = ImportStats {
                collection: kind.collection().to_string(),
                processed: 0,
                count_before,
                count_after: 0,
                elapsed: std::time::Duration::ZERO,
                inserted: 0,
                updated: 0,
                deleted: 0,
                stale: 0,
                rejected: 0,
                messages_left: Some(0),
            };
            let mut batch = Vec::with_capacity(UPSERT_BATCH);
            let mut rows = source.into_iter();
            loop {
                let row = rows.next();
                match &row {
                    Some(Ok(row)) => {
                        let record = &row.record;
                        let replacement = Document::try_from(fields_raw(record))?;
                        batch.push(
                            doc! {"q": {"_id": hpn_importer::document::key_id(record)}, "u": replacement, "upsert": true},
                        );
                    }
                    Some(Err(_)) => stats.rejected += 1,
                    None => {}
                }
                if batch.len() == UPSERT_BATCH || (row.is_none() && !batch.is_empty()) {
                    let statements = std::mem::take(&mut batch);
                    let sent = statements.len() as u64;
                    let reply = store
                        .database()
                        .run_command(doc! {"update": kind.collection(), "updates": statements, "ordered": true})
                        .await?;
                    let upserted = reply.get_array("upserted").map_or(0, |u| u.len() as u64);
                    if reply.get_array("writeErrors").is_ok_and(|e| !e.is_empty()) {
                        bail!("the careful upsert loader's batch was refused: {reply}");
                    }
                    stats.inserted += upserted;
                    stats.updated += sent - upserted;
                }
                if row.is_none() {
                    break;
                }
            }
            stats.processed = stats.inserted + stats.updated + stats.rejected;
            stats.count_after = store.count(kind).await?;
            stats.elapsed = started.elapsed();
            anyhow::Ok(stats)
        })
    });
    let mut collections = Vec::new();
    for done in futures::future::join_all(tasks).await {
        collections.push(done.context("a careful upsert loader task")??);
    }
    let seconds = started.elapsed().as_secs_f64();
    store.shutdown().await;
    Ok(measure::Run {
        times: RunTimes::in_turn(None, seconds),
        collections,
        producer_rss: None,
        importer_rss: None,
        producer_stages: Vec::new(),
        importer_stages: Vec::new(),
        cpu: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delta_takes_every_tenth_row_from_the_changed_export() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new, out) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
        let lines = |tag: &str| (0..=25).map(|i| format!("{tag}{i}\n")).collect::<String>();
        std::fs::write(&old, lines("a")).unwrap();
        std::fs::write(&new, lines("b")).unwrap();
        every_tenth_from(&old, &new, &out).unwrap();
        let got: Vec<String> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(got.len(), 26);
        assert_eq!(
            (got[0].as_str(), got[9].as_str(), got[10].as_str(), got[20].as_str()),
            ("a0", "a9", "b10", "b20")
        );
        assert_eq!(got.iter().filter(|l| l.starts_with('b')).count(), 2);
    }
}
