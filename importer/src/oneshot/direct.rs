//! The importer's write path fed straight from CSV files, with no broker.
//!
//! Not how HP Norton runs the importer: this exists so the benchmark can
//! show what the queue itself costs. The records go through the same
//! validation, key routing, batching writers and keyed writes as a queued
//! import; only the producer, RabbitMQ and the consumers are left out.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::observe::counters::Counters;
use crate::oneshot::run::Mode;
use crate::report::{ImportReport, ImportStats};
use crate::route::ack::Ticket;
use crate::route::partition::WorkItem;
use crate::sink::write::{self, WriterSetup};
use crate::store::Store;
use hpn_common::csv_source::CsvSource;
use hpn_common::retry::RetryPolicy;
use lapin::BasicProperties;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Import `files` (one per kind) straight into the store: one after the
/// other with one writer (linear), or all at once with `writers` writers
/// each (parallel).
pub async fn import_files(config: &Config, files: &[PathBuf], mode: Mode) -> Result<ImportReport> {
    let store = Store::connect_to(&config.connection).await?;
    store.check_shape().await?;
    let started = Instant::now();
    let mut collections = match mode {
        Mode::Linear => {
            let mut stats = Vec::new();
            for file in files {
                stats.push(import_file(&store, config, file, 1).await?);
            }
            stats
        }
        Mode::Parallel => {
            let writers = config.tuning.writers.max(1);
            futures::future::try_join_all(files.iter().map(|f| import_file(&store, config, f, writers))).await?
        }
    };
    collections.sort_by_key(|s| {
        hpn_common::RecordKind::ALL
            .iter()
            .position(|k| k.collection() == s.collection)
    });
    store.shutdown().await;
    Ok(ImportReport {
        mode: format!("direct {}", mode.as_str()),
        collections,
        total: started.elapsed(),
        peak_rss_bytes: None,
        stages: Vec::new(),
    })
}

async fn import_file(store: &Store, config: &Config, file: &Path, writers: usize) -> Result<ImportStats> {
    let source = CsvSource::open(file)?;
    let kind = source.kind();
    let count_before = store.count_within(kind, config.tuning.store_patience()).await?;
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let mut tasks = JoinSet::new();
    let setup = WriterSetup {
        store,
        config,
        dead_letters: None,
        retry: RetryPolicy::one_shot(config.tuning.store_patience()),
        health: None,
    };
    let (router, partition) = write::writers(kind, writers, &counters, setup);
    for writer in partition {
        tasks.spawn(writer.run());
    }
    let rejected = counters.clone();
    let reader = tokio::task::spawn_blocking(move || {
        // Nobody acknowledges anything here: completions go nowhere.
        let (done, _) = mpsc::unbounded_channel();
        for row in source {
            match row {
                Ok(row) => {
                    let ticket = Ticket::new(row.line, 1, done.clone(), BasicProperties::default());
                    if router
                        .blocking_send(WorkItem {
                            record: row.record,
                            ticket,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
                Err(rejection) => {
                    tracing::warn!("{rejection}");
                    rejected.add_rejected(1);
                }
            }
        }
    });
    reader.await.map_err(|e| Error::Task(e.to_string()))?;
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| Error::Task(e.to_string()))??;
    }
    let elapsed = started.elapsed();
    let count_after = store.count_within(kind, config.tuning.store_patience()).await?;
    // No queue: nothing can be left in one.
    Ok(counters.stats(kind, count_before, count_after, elapsed, Some(0)))
}
