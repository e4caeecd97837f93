//! The long-running importer, `hpn-importer serve`: consumes every queue
//! continuously and keeps going through broker restarts, database outages
//! and poison messages, until SIGINT or SIGTERM.
//!
//! How it keeps going, and why nothing is lost or doubled:
//! - **The database goes away, or refuses writes.** Writers hold their batch
//!   and retry with capped exponential backoff and jitter for as long as it
//!   takes ([`RetryPolicy::FOREVER`]). Meanwhile nothing is acknowledged; the
//!   writers' inboxes fill, the consumers stop taking deliveries, and each
//!   consumer's prefetch caps what the broker sends: consuming pauses instead
//!   of churning redeliveries. A refusal (the server answers, but says no:
//!   permissions, a full disk) is logged once with the server's words and
//!   shown in `/healthz` until a batch goes in again. Neither touches the
//!   broker connection: a store problem is never handled as a broker one.
//! - **The broker goes away.** Only an error that comes from RabbitMQ (see
//!   `hpn_common::Origin`) ends a session this way. The session ends with the connection; its
//!   consumers and writers are dropped. Everything they held was
//!   unacknowledged, so the broker requeues it. A new session reconnects
//!   (capped backoff with jitter), declares the topology again and carries on.
//!   A record that was written but not yet acknowledged when the connection
//!   dropped is delivered again and written again: harmless, as every write
//!   is keyed and guarded by version.
//! - **A bug** (a task that panicked) ends the process with the error, for
//!   the supervisor to restart it; retrying it in a loop would hide it.
//! - **A poison message** goes to its dead-letter queue with the reason and
//!   is acknowledged; it never blocks the queue.
//! - **Shutdown.** Consumers cancel their subscriptions, finish what they
//!   hold (written, then acknowledged), and the writers flush and stop. If
//!   that cannot finish in time (the database is down), the process leaves
//!   anyway: what it held is unacknowledged and returns to the queues.
//!
//! Every reconnect and every outage is logged once with its cause.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::observe::counters::Counters;
use crate::observe::health::Health;
use crate::observe::metrics::{Metrics, QueueLabels};
use crate::route::dead_letter::DeadLetters;
use crate::sink::write::WriterSetup;
use crate::source::consume::StopWhen;
use crate::store::Store;
use crate::supervise::{Source, Tasks};
use hpn_common::retry::RetryPolicy;
use hpn_common::{broker, Origin, RecordKind};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the health of both servers and the queue depths are checked.
const MONITOR_EVERY: Duration = Duration::from_secs(2);

/// Run until `shutdown` is cancelled. Health and metrics are updated in
/// `health` and `metrics` for the HTTP listener.
pub async fn serve(
    config: &Config,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<()> {
    config.check().map_err(Error::Settings)?;
    let Some(store) = connect_store(config, &health, &shutdown).await? else {
        return Ok(());
    };
    let monitor = tokio::spawn(monitor_store(store.clone(), health.clone(), shutdown.clone()));
    let counters: Vec<Arc<Counters>> = RecordKind::ALL
        .iter()
        .map(|&k| Arc::new(Counters::with_metrics(k, metrics.clone())))
        .collect();
    let (mut attempt, mut reconnecting) = (0, false);
    while !shutdown.is_cancelled() {
        match session(config, &store, &counters, &health, &metrics, &shutdown, reconnecting).await {
            Ok(()) => break,
            Err(e) if e.origin() != Origin::Broker => {
                tracing::error!(origin = ?e.origin(), "stopping: {e}");
                monitor.abort();
                store.shutdown().await;
                return Err(e);
            }
            // Refused for good: a certificate not trusted, a login or a
            // permission refused. Said once, and the service stops:
            // retrying would only repeat it, silently, for ever.
            Err(e) if e.broker_refused_for_good() => {
                tracing::error!(origin = ?e.origin(), "stopping: {e} (retrying cannot mend this: fix the settings)");
                monitor.abort();
                store.shutdown().await;
                return Err(e);
            }
            Err(e) => {
                // A session that had connected ends here: a new outage, so
                // the backoff starts afresh and the cause is logged once;
                // the attempts that follow are debug.
                if health.broker.swap(false, Ordering::Relaxed) {
                    (attempt, reconnecting) = (0, true);
                }
                let wait = RetryPolicy::RECONNECT.backoff(attempt);
                if attempt == 0 {
                    warn!("{e}; reconnecting with backoff until it answers");
                } else {
                    tracing::debug!(attempt, "still unreachable ({e}); next try in {wait:?}");
                }
                attempt += 1;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }
    monitor.abort();
    store.shutdown().await;
    info!("importer stopped");
    Ok(())
}

/// Connect to MongoDB, retrying until it answers or shutdown is asked for;
/// a refusal no retry mends (a certificate, a login) is returned at once.
async fn connect_store(config: &Config, health: &Health, shutdown: &CancellationToken) -> Result<Option<Store>> {
    let settings = &config.connection;
    let mut attempt = 0;
    loop {
        let connected = async {
            let store = Store::connect_to(settings).await?;
            store.check_shape().await?;
            Ok::<_, crate::store::StoreError>(store)
        };
        match connected.await {
            Ok(store) => {
                health.store.store(true, Ordering::Relaxed);
                return Ok(Some(store));
            }
            Err(e) if e.refused_for_good() => {
                tracing::error!(origin = ?Origin::Store, "stopping: {e} (retrying cannot mend this: fix the settings)");
                return Err(e.into());
            }
            Err(e) => {
                let wait = RetryPolicy::RECONNECT.backoff(attempt);
                if attempt == 0 && e.is_transient() {
                    warn!("MongoDB does not answer ({e}); retrying until it does");
                } else if attempt == 0 {
                    tracing::error!("MongoDB cannot be written yet: {e}; trying again until the cause is fixed");
                }
                attempt += 1;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return Ok(None),
                }
            }
        }
    }
}

/// Keep `health.store` current.
async fn monitor_store(store: Store, health: Arc<Health>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let up = tokio::time::timeout(MONITOR_EVERY, store.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        if health.store.swap(up, Ordering::Relaxed) != up {
            if up {
                info!("MongoDB answers again");
            } else {
                warn!("MongoDB does not answer");
            }
        }
        tokio::time::sleep(MONITOR_EVERY).await;
    }
}

/// One broker connection's worth of consumers and writers. Returns `Ok`
/// after a clean shutdown and `Err` when the connection is lost (or could
/// not be made). `reconnecting`: an earlier session had connected.
async fn session(
    config: &Config,
    store: &Store,
    counters: &[Arc<Counters>],
    health: &Arc<Health>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
    reconnecting: bool,
) -> Result<()> {
    let settings = &config.connection;
    let tuning = &config.tuning;
    let connection = broker::connect(&settings.amqp_url, "hpn-importer (serve)").await?;
    let topology = settings.topology();
    topology.declare(&connection).await?;
    let dead_letters = DeadLetters::open(&connection, topology.clone()).await?;
    health.broker.store(true, Ordering::Relaxed);
    if reconnecting {
        metrics.reconnects.get_or_create(&Metrics::server("rabbitmq")).inc();
    }
    info!("consuming");

    let mut tasks = Tasks::default();
    for (kind, counters) in RecordKind::ALL.into_iter().zip(counters) {
        let setup = WriterSetup {
            store,
            config,
            dead_letters: Some(&dead_letters),
            retry: RetryPolicy::FOREVER,
            health: Some(health),
        };
        let mut channels = Vec::new();
        for _ in 0..tuning.consumers.max(1) {
            channels.push(connection.create_channel().await?);
        }
        let source = Source {
            kind,
            topology: &topology,
            dead_letters: &dead_letters,
            counters,
            stop: StopWhen::Shutdown(shutdown.clone()),
        };
        tasks.start(source, channels, tuning.writers, setup, |_| {});
    }
    let depth_channel = connection.create_channel().await?;
    let depth = tokio::spawn(watch_depth(depth_channel.clone(), topology.clone(), metrics.clone()));

    // Consumers end only on shutdown (then the writers flush what they hold
    // and stop) or on a failure, whose cause `finish` names.
    let outcome = tasks.finish().await;
    depth.abort();
    // After a failure, whatever the tasks hold is unacknowledged: the broker
    // requeues it when the connection closes.
    tasks.abort_all();
    // Every channel closed before the connection: lapin logs a channel
    // still open then as an ERROR, on every clean SIGTERM.
    let _ = depth_channel.close(200, "done".into()).await;
    dead_letters.close().await;
    let _ = connection.close(200, "done".into()).await;
    outcome
}

/// Keep the queue-depth gauges current.
async fn watch_depth(channel: lapin::Channel, topology: hpn_common::Topology, metrics: Arc<Metrics>) {
    loop {
        for kind in RecordKind::ALL {
            for queue in [topology.queue(kind), topology.dead_letter_queue(kind)] {
                if let Ok(ready) = topology.ready_count(&channel, &queue).await {
                    metrics
                        .queue_depth
                        .get_or_create(&QueueLabels { queue })
                        .set(i64::from(ready));
                }
            }
        }
        tokio::time::sleep(MONITOR_EVERY).await;
    }
}
