//! One-shot import runs: drain the queues into MongoDB and report.
//!
//! - **linear**: one queue at a time (customers, products, rentals), one
//!   consumer and one writer: the old loaders' order, through the queue.
//! - **parallel**: all three queues at once, `consumers` per queue and
//!   `writers` per collection, records routed to writers by key. Fewer
//!   when the queue is small: one consumer when a single one can hold the
//!   whole backlog in hand (no more messages than its prefetch), and one
//!   writer per batch of the backlog (see `route::partition`). More of
//!   either would only split the work into smaller pieces and send the
//!   server more concurrent writes than it has cores: at 1,000 records per
//!   file that made parallel slower than linear.
//!
//! Each collection's figures are taken around its own import: the count
//! before, the time from its first consumer starting to its last writer
//! finishing, then what the broker says is left in its queue once its
//! consumers have stopped (see `source::drain`: a run that cannot say its
//! queues are empty is not done, and says so) and the count after. A
//! linear run asks the last two for its three queues together, once the
//! last queue is drained.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::observe::counters::Counters;
use crate::observe::progress::{Line, Progress};
use crate::report::{ImportReport, ImportStats};
use crate::route::dead_letter::DeadLetters;
use crate::sink::write::{self, WriterSetup};
use crate::source::consume::{ConsumerTask, StopWhen};
use crate::source::drain::left_in_queue;
use crate::store::Store;
use crate::supervise;
use hpn_common::retry::RetryPolicy;
use hpn_common::{broker, RecordKind, Topology};
use lapin::Connection;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

/// How an import run spreads its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Linear,
    Parallel,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Linear => "linear",
            Mode::Parallel => "parallel",
        }
    }
}

/// The linear entry point of the brief: customers, then products, then rentals.
pub async fn run_linear(config: &Config) -> Result<Vec<ImportStats>> {
    Ok(import(config, Mode::Linear).await?.collections)
}

/// The parallel entry point of the brief: all collections at once.
pub async fn run_parallel(config: &Config) -> Result<Vec<ImportStats>> {
    Ok(import(config, Mode::Parallel).await?.collections)
}

/// The connections a run shares between its tasks.
pub(crate) struct Services {
    pub store: Store,
    pub connection: Connection,
    pub topology: Topology,
    pub dead_letters: DeadLetters,
}

impl Services {
    pub(crate) async fn connect(config: &Config, name: &str) -> Result<Services> {
        config.check().map_err(Error::Settings)?;
        let settings = &config.connection;
        let store = Store::connect(&settings.mongodb_uri, &settings.database).await?;
        store.check_shape().await?;
        let connection = broker::connect(&settings.amqp_url, name).await?;
        let topology = settings.topology();
        topology.declare(&connection).await?;
        let dead_letters = DeadLetters::open(&connection, topology.clone()).await?;
        Ok(Services {
            store,
            connection,
            topology,
            dead_letters,
        })
    }
}

/// Drain the queues in `mode` and report per collection (customers first).
pub async fn import(config: &Config, mode: Mode) -> Result<ImportReport> {
    import_with_progress(config, mode, &Progress::hidden()).await
}

/// [`import`], drawing a live line per collection on `progress`.
pub async fn import_with_progress(config: &Config, mode: Mode, progress: &Progress) -> Result<ImportReport> {
    let services = Services::connect(config, &format!("hpn-importer ({})", mode.as_str())).await?;
    let started = Instant::now();
    let result = match mode {
        Mode::Linear => {
            // One queue at a time; what each queue has left is asked once
            // the last one is drained, for all three at once (see
            // [`Consumed::finish`]).
            let mut consumed = Vec::new();
            for kind in RecordKind::ALL {
                match consume_collection(&services, config, kind, 1, 1, progress).await {
                    Ok(queue) => consumed.push(queue),
                    Err(e) => {
                        // The queues drained before stay unreported: the run failed.
                        for queue in consumed {
                            queue.line.finish(None);
                        }
                        return close_with(services, Err(e)).await;
                    }
                }
            }
            futures::future::try_join_all(consumed.into_iter().map(|queue| queue.finish(&services, config))).await
        }
        Mode::Parallel => {
            let (consumers, writers) = (config.tuning.consumers.max(1), config.tuning.writers.max(1));
            let services = &services;
            let import = |kind| async move {
                consume_collection(services, config, kind, consumers, writers, progress)
                    .await?
                    .finish(services, config)
                    .await
            };
            if config.rentals_take_stock {
                // Rentals take stock from products, so products must be in
                // first: customers and products together, then rentals.
                match futures::future::try_join(import(RecordKind::Customer), import(RecordKind::Product)).await {
                    Ok((customers, products)) => import(RecordKind::Rental)
                        .await
                        .map(|rentals| vec![customers, products, rentals]),
                    Err(e) => Err(e),
                }
            } else {
                futures::future::try_join_all(RecordKind::ALL.map(import)).await
            }
        }
    };
    let report = result.map(|collections| ImportReport {
        mode: mode.as_str().to_string(),
        collections,
        total: started.elapsed(),
        peak_rss_bytes: None,
        stages: Vec::new(),
    });
    close_with(services, report).await
}

async fn close_with<T>(services: Services, result: Result<T>) -> Result<T> {
    // Closing the connection returns anything unacknowledged to its queue.
    let _ = services.connection.close(200, "done".into()).await;
    services.store.shutdown().await;
    result
}

/// A collection whose queue is drained and whose consumers and writers
/// have stopped: what is left in its queue and its count after are still
/// to be asked.
struct Consumed {
    kind: RecordKind,
    queue: String,
    counters: Arc<Counters>,
    count_before: u64,
    elapsed: std::time::Duration,
    line: Line,
}

impl Consumed {
    /// Ask what is left in the queue and count the collection, then report.
    ///
    /// The question takes [`SETTLE`](crate::source::drain::SETTLE) at the
    /// least (a closed channel's messages go back to their queue
    /// asynchronously), so a linear run asks for its three queues together
    /// once the last is drained rather than one after another between
    /// them: at 10,000 records per file that was 0.5 s of a 1.4 s run. A
    /// queue's answer then comes a little later than its own drain, which
    /// changes nothing it means: the run's consumers of it have stopped,
    /// and what the broker holds then is what the run leaves.
    async fn finish(self, services: &Services, config: &Config) -> Result<ImportStats> {
        let stats = async {
            let left = left_in_queue(
                &services.connection,
                &self.queue,
                services.topology.queue_type(),
                config.tuning.drain_patience(),
            )
            .await?;
            let count_after = services
                .store
                .count_within(self.kind, config.tuning.store_patience())
                .await?;
            Ok(self
                .counters
                .stats(self.kind, self.count_before, count_after, self.elapsed, left))
        }
        .await;
        self.line.finish(stats.as_ref().ok());
        stats
    }
}

/// Consume one collection's queue until it is drained.
async fn consume_collection(
    services: &Services,
    config: &Config,
    kind: RecordKind,
    consumers: usize,
    writers: usize,
    progress: &Progress,
) -> Result<Consumed> {
    let tuning = &config.tuning;
    let count_before = services
        .store
        .count_within(kind, config.tuning.store_patience())
        .await?;
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let line = progress
        .track(
            kind,
            counters.clone(),
            &services.connection,
            services.topology.queue(kind),
        )
        .await;
    let (mut writer_tasks, mut consumer_tasks) = (JoinSet::new(), JoinSet::new());
    let setup = WriterSetup {
        store: &services.store,
        config,
        dead_letters: Some(&services.dead_letters),
        retry: RetryPolicy::one_shot(config.tuning.store_patience()),
        health: None,
    };
    let (router, partition) = write::writers(kind, writers, &counters, setup);
    for writer in partition {
        writer_tasks.spawn(writer.run());
    }
    let first = services.connection.create_channel().await?;
    let queue = services.topology.queue(kind);
    let backlog = backlog(&first, &queue).await?;
    // The consumers ask whether the queue is drained here, not on the
    // channels their acknowledgements go out on.
    let checker = services.connection.create_channel().await?;
    let consumers = match backlog {
        Some(messages) if messages <= u32::from(tuning.prefetch) => 1,
        _ => consumers,
    };
    for i in 0..consumers {
        let channel = match i {
            0 => first.clone(),
            _ => services.connection.create_channel().await?,
        };
        let mut consumer = ConsumerTask::new(
            kind,
            channel,
            services.topology.clone(),
            router.clone(),
            services.dead_letters.clone(),
            counters.clone(),
            tuning,
            StopWhen::Drained {
                idle: tuning.idle(),
                patience: tuning.drain_patience(),
                checker: checker.clone(),
            },
        );
        consumer.backlog = backlog;
        consumer_tasks.spawn(consumer.run());
    }
    // The writers stop once every consumer (holding a router) has finished.
    drop(router);
    let outcome = supervise::finish(&mut consumer_tasks, &mut writer_tasks).await;
    consumer_tasks.abort_all();
    writer_tasks.abort_all();
    let _ = checker.close(200, "done".into()).await;
    if let Err(e) = outcome {
        line.finish(None);
        return Err(e);
    }
    Ok(Consumed {
        kind,
        queue,
        counters,
        count_before,
        elapsed: started.elapsed(),
        line,
    })
}

/// The messages in `queue` as the run begins; `None` when the broker's
/// answer may be its stand-in for "no answer" (see
/// `hpn_common::topology::QueueCounts::maybe_unknown`): then the run sizes
/// nothing down.
async fn backlog(channel: &lapin::Channel, queue: &str) -> Result<Option<u32>> {
    Ok(hpn_common::topology::queue_counts(channel, queue).await?.known_ready())
}
