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
//!
//! A lost broker connection does not end a run (see `session`): the
//! collection's consumers stop after the message each is on, its writers
//! write what they were given, and the run connects again and goes on
//! draining. The figures carry on across connections, each message counted
//! once (see `route::handled`).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::observe::counters::Counters;
use crate::observe::progress::{Line, Progress};
use crate::oneshot::session::{Broker, Session};
use crate::report::{ImportReport, ImportStats};
use crate::route::handled::Handled;
use crate::sink::write::WriterSetup;
use crate::source::consume::StopWhen;
use crate::source::drain::{given_back_after_loss, left_in_queue};
use crate::store::Store;
use crate::supervise::{Source, Tasks};
use hpn_common::retry::RetryPolicy;
use hpn_common::{Origin, QueueType, RecordKind};
use std::sync::Arc;
use std::time::Instant;

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
    pub broker: Broker,
}

impl Services {
    pub(crate) async fn connect(config: &Config, name: &str) -> Result<Services> {
        config.check().map_err(Error::Settings)?;
        let settings = &config.connection;
        let store = Store::connect_to(settings).await?;
        store.check_shape().await?;
        let broker = Broker::connect(config, name).await?;
        Ok(Services { store, broker })
    }
}

/// A failure the run rides out by connecting again: the broker's, unless
/// no retry mends it (a login, a certificate, a permission).
fn lost_connection(error: &Error) -> bool {
    error.origin() == Origin::Broker && !error.broker_refused_for_good()
}

/// Drain the queues in `mode` and report per collection (customers first).
pub async fn import(config: &Config, mode: Mode) -> Result<ImportReport> {
    import_with_progress(config, mode, &Progress::hidden()).await
}

/// [`import`], drawing a live line per collection on `progress`.
///
/// A run that stops part-way (no broker address answered within its
/// patience, the store gave up) returns [`Error::Unfinished`] with what it
/// did, when the store still answers for the counts after.
pub async fn import_with_progress(config: &Config, mode: Mode, progress: &Progress) -> Result<ImportReport> {
    let services = Services::connect(config, &format!("hpn-importer ({})", mode.as_str())).await?;
    let started = Instant::now();
    let tallies = RecordKind::ALL.map(|kind| (kind, Tally::default()));
    let tally = |kind: RecordKind| &tallies.iter().find(|(k, _)| *k == kind).expect("every kind").1;
    let result = match mode {
        Mode::Linear => {
            // One queue at a time; what each queue has left is asked once
            // the last one is drained, for all three at once (see
            // [`Consumed::finish`]).
            let mut consumed = Vec::new();
            for kind in RecordKind::ALL {
                match consume_collection(&services, config, kind, tally(kind), (1, 1), progress).await {
                    Ok(queue) => consumed.push(queue),
                    Err(e) => {
                        // The run failed: its report, if any, comes with the error.
                        for queue in consumed {
                            queue.line.finish(None);
                        }
                        let e = unfinished(&services, &tallies, started, mode, e).await;
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
                consume_collection(services, config, kind, tally(kind), (consumers, writers), progress)
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
    let report = match result {
        Ok(collections) => Ok(ImportReport {
            mode: mode.as_str().to_string(),
            collections,
            total: started.elapsed(),
            peak_rss_bytes: None,
            stages: Vec::new(),
        }),
        Err(e) => Err(unfinished(&services, &tallies, started, mode, e).await),
    };
    close_with(services, report).await
}

/// One collection's figures so far, kept outside its import so that a run
/// that stops part-way can still say what it did.
#[derive(Default)]
struct Tally {
    counters: Arc<Counters>,
    /// The count before and when the import began, once it has.
    begun: std::sync::OnceLock<(u64, Instant)>,
}

/// How long a failed run waits for each count after, for its report.
const COUNT_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(5);

/// `cause`, with the report of what the run did: every collection that
/// began, its count after asked now, nothing known of what is left. Only
/// `cause` when the store failed or does not answer for a count: a report
/// must not guess.
async fn unfinished(
    services: &Services,
    tallies: &[(RecordKind, Tally)],
    started: Instant,
    mode: Mode,
    cause: Error,
) -> Error {
    if cause.origin() == Origin::Store {
        return cause;
    }
    let mut collections = Vec::new();
    for (kind, tally) in tallies {
        let Some((before, began)) = tally.begun.get() else {
            continue;
        };
        let Ok(Ok(after)) = tokio::time::timeout(COUNT_AFTER_FAILURE, services.store.count(*kind)).await else {
            return cause;
        };
        collections.push(tally.counters.stats(*kind, *before, after, began.elapsed(), None));
    }
    Error::Unfinished {
        cause: Box::new(cause),
        report: Box::new(ImportReport {
            mode: mode.as_str().to_string(),
            collections,
            total: started.elapsed(),
            peak_rss_bytes: None,
            stages: Vec::new(),
        }),
    }
}

async fn close_with<T>(services: Services, result: Result<T>) -> Result<T> {
    // Closing the connection returns anything unacknowledged to its queue.
    services.broker.close().await;
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
    /// False when what the queue has left cannot be known: after a lost
    /// connection, what it held did not come back within the patience.
    sure: bool,
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
            let mut session = services.broker.session().await;
            let left = loop {
                let asked = left_in_queue(
                    &session.connection,
                    &self.queue,
                    services.broker.topology.queue_type(),
                    config.tuning.drain_patience(),
                )
                .await
                .map_err(Error::from);
                match asked {
                    Err(e) if lost_connection(&e) => session = services.broker.reconnect(&session, &e).await?,
                    asked => break asked?,
                }
            };
            let count_after = services
                .store
                .count_within(self.kind, config.tuning.store_patience())
                .await?;
            let left = left.filter(|_| self.sure);
            Ok(self
                .counters
                .stats(self.kind, self.count_before, count_after, self.elapsed, left))
        }
        .await;
        self.line.finish(stats.as_ref().ok());
        stats
    }
}

/// Consume one collection's queue until it is drained, on as many
/// connections as that takes.
async fn consume_collection(
    services: &Services,
    config: &Config,
    kind: RecordKind,
    tally: &Tally,
    (consumers, writers): (usize, usize),
    progress: &Progress,
) -> Result<Consumed> {
    let count_before = services
        .store
        .count_within(kind, config.tuning.store_patience())
        .await?;
    let started = Instant::now();
    let _ = tally.begun.set((count_before, started));
    let counters = tally.counters.clone();
    let handled = Arc::new(Handled::default());
    let queue = services.broker.topology.queue(kind);
    let mut session = services.broker.session().await;
    let line = progress
        .track(kind, counters.clone(), &session.connection, queue.clone())
        .await;
    let pipeline = Pipeline {
        services,
        config,
        kind,
        consumers,
        writers,
        counters: &counters,
        handled: &handled,
    };
    // When this collection's connection was last lost, if it was.
    let mut lost_at = None;
    // Records handled so far, and when that last grew.
    let mut progress = (counters.processed(), Instant::now());
    // Whether what is left can be known (see `given_back`).
    let mut sure = true;
    loop {
        let drained = match (pipeline.drain_on(&session).await, lost_at) {
            (Ok(()), Some(lost_at)) => given_back(services, config, &session, &queue, lost_at).await,
            (drained, _) => drained.map(|()| Some(0)),
        };
        if matches!(&drained, Err(e) if lost_connection(e)) {
            lost_at = Some(tokio::time::Instant::now());
        }
        let next = match drained {
            Ok(Some(0)) => break,
            // Messages the lost connection held came back: drain again.
            Ok(Some(_)) => Ok(session.clone()),
            Ok(None) => {
                sure = false;
                break;
            }
            Err(e) if lost_connection(&e) => {
                if counters.processed() != progress.0 {
                    progress = (counters.processed(), Instant::now());
                }
                if progress.1.elapsed() >= config.tuning.broker_patience() {
                    // Connections that are made but lost again and again
                    // (a broken node's channels: tests/tests/partition.rs)
                    // with nothing imported for the patience: stop, as when
                    // no address answers.
                    Err(e)
                } else {
                    services.broker.reconnect(&session, &e).await
                }
            }
            Err(e) => Err(e),
        };
        match next {
            Ok(next) => session = next,
            Err(e) => {
                line.finish(None);
                return Err(e);
            }
        }
    }
    Ok(Consumed {
        kind,
        queue,
        counters,
        count_before,
        elapsed: started.elapsed(),
        line,
        sure,
    })
}

/// On a quorum queue, after this collection's connection was lost at
/// `lost_at`: what the lost connection's consumers held, back in the queue
/// once the cluster has had `--loss-settle-ms` to see their node gone (see
/// [`given_back_after_loss`]). `Some(0)`: nothing; `None`: cannot tell.
async fn given_back(
    services: &Services,
    config: &Config,
    session: &Session,
    queue: &str,
    lost_at: tokio::time::Instant,
) -> Result<Option<u64>> {
    if services.broker.topology.queue_type() != QueueType::Quorum {
        return Ok(Some(0));
    }
    let settled = lost_at + config.tuning.loss_settle();
    Ok(given_back_after_loss(&session.connection, queue, settled).await?)
}

/// What one collection's consumers and writers are made of, on whichever
/// connection the run has.
struct Pipeline<'a> {
    services: &'a Services,
    config: &'a Config,
    kind: RecordKind,
    consumers: usize,
    writers: usize,
    counters: &'a Arc<Counters>,
    handled: &'a Arc<Handled>,
}

impl Pipeline<'_> {
    /// Drain the queue on `session`'s connection. When that is lost, the
    /// consumers stop after the message each is on and the writers write
    /// everything they were given before the error is returned, so that
    /// every message handled is noted (see `route::handled`).
    async fn drain_on(&self, session: &Session) -> Result<()> {
        let (config, kind, tuning) = (self.config, self.kind, &self.config.tuning);
        let setup = WriterSetup {
            store: &self.services.store,
            config,
            dead_letters: Some(&session.dead_letters),
            retry: RetryPolicy::one_shot(tuning.store_patience()),
            health: None,
        };
        let topology = &self.services.broker.topology;
        let queue = topology.queue(kind);
        let channels = async {
            let first = session.connection.create_channel().await?;
            let backlog = backlog(&first, &queue).await?;
            // The consumers ask whether the queue is drained here, not on
            // the channels their acknowledgements go out on.
            let checker = session.connection.create_channel().await?;
            let consumers = match backlog {
                Some(messages) if messages <= u32::from(tuning.prefetch) => 1,
                _ => self.consumers,
            };
            let mut channels = vec![first];
            for _ in 1..consumers {
                channels.push(session.connection.create_channel().await?);
            }
            Ok::<_, Error>((channels, checker, backlog))
        };
        let (channels, checker, backlog) = channels.await?;
        let source = Source {
            kind,
            topology,
            dead_letters: &session.dead_letters,
            counters: self.counters,
            stop: StopWhen::Drained {
                idle: tuning.idle(),
                patience: tuning.drain_patience(),
                checker: checker.clone(),
            },
        };
        let mut tasks = Tasks::default();
        tasks.start(source, channels, self.writers, setup, |consumer| {
            consumer.backlog = backlog;
            // Twice the prefetch: a re-subscription's deliveries may overlap the old one's.
            consumer.handled = Some((
                self.handled.clone(),
                self.handled.ring(2 * usize::from(tuning.prefetch)),
            ));
        });
        let mut outcome = tasks.finish().await;
        if matches!(&outcome, Err(e) if lost_connection(e)) {
            // Every consumer ends after the message it is on once the
            // connection is closed; then the writers write what they hold.
            hpn_common::broker::close(&session.connection, "lost").await;
            outcome = tasks.wind_down(outcome, lost_connection).await;
        }
        tasks.abort_all();
        let _ = checker.close(200, "done".into()).await;
        outcome
    }
}

/// The messages in `queue` as the run begins; `None` when the broker's
/// answer may be its stand-in for "no answer" (see
/// `hpn_common::topology::QueueCounts::maybe_unknown`): then the run sizes
/// nothing down.
async fn backlog(channel: &lapin::Channel, queue: &str) -> Result<Option<u32>> {
    Ok(hpn_common::topology::queue_counts(channel, queue).await?.known_ready())
}
