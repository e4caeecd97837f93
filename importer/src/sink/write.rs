//! Writers: each owns one partition of one collection's keys, gathers the
//! records routed to it into batches and writes each batch in one round
//! trip.
//!
//! A batch is written when it is full (`batch_size`) or when its oldest
//! record has waited `flush_ms`, whichever comes first: full batches under
//! load for throughput, a short wait under light load for latency. Only
//! after the batch is written are its records' tickets completed, which is
//! what lets the consumer acknowledge the messages: nothing is acknowledged
//! before it is in MongoDB.

use crate::config::Config;
use crate::error::Result;
use crate::observe::counters::Counters;
use crate::observe::health::Health;
use crate::route::ack::Ticket;
use crate::route::dead_letter::DeadLetters;
use crate::route::partition::{Router, WorkItem};
use crate::store::Store;
use crate::store::{StockOutcome, StoreError};
use hpn_common::retry::RetryPolicy;
use hpn_common::{Record, RecordKind};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, warn, Instrument};

/// One partition's writer.
pub struct Writer {
    pub kind: RecordKind,
    /// `customers#0` and so on, for logs and health.
    pub name: String,
    pub store: Store,
    pub rx: mpsc::Receiver<WorkItem>,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub counters: Arc<Counters>,
    /// Where refused records go; without one (the direct path, which has no
    /// broker) they are logged and counted as rejected.
    pub dead_letters: Option<DeadLetters>,
    pub retry: RetryPolicy,
    /// Where a refused batch is reported while the writer holds it (serve).
    pub health: Option<Arc<Health>>,
    /// Rentals take stock from their product before they are stored.
    pub rentals_take_stock: bool,
}

/// What every writer of a run shares.
#[derive(Clone, Copy)]
pub struct WriterSetup<'a> {
    pub store: &'a Store,
    pub config: &'a Config,
    /// Where refused records go (none on the direct path, which has no broker).
    pub dead_letters: Option<&'a DeadLetters>,
    pub retry: RetryPolicy,
    pub health: Option<&'a Arc<Health>>,
}

/// The `writers` writers of one collection (at least one), not yet
/// running, and the router that sends each record to the one owning its key.
/// The writers stop once every clone of the router is dropped.
pub fn writers(
    kind: RecordKind,
    writers: usize,
    counters: &Arc<Counters>,
    setup: WriterSetup<'_>,
) -> (Router, Vec<Writer>) {
    let config = setup.config;
    let batch_size = config.tuning.batch_size.max(1);
    let (inboxes, writers) = (0..writers.max(1))
        .map(|i| {
            let (tx, rx) = mpsc::channel(batch_size * 2);
            let writer = Writer {
                kind,
                name: format!("{}#{i}", kind.collection()),
                store: setup.store.clone(),
                rx,
                batch_size,
                flush_interval: config.tuning.flush_interval(),
                counters: counters.clone(),
                dead_letters: setup.dead_letters.cloned(),
                retry: setup.retry,
                health: setup.health.cloned(),
                rentals_take_stock: config.rentals_take_stock,
            };
            (tx, writer)
        })
        .unzip();
    (Router::new(inboxes), writers)
}

impl Writer {
    /// Write until every sender is gone and the last batch is in.
    ///
    /// A batch's window (`flush_interval`) runs from when its oldest record
    /// could first have been taken: when the writer waited for it, from its
    /// arrival; when it was already waiting after a write, from the start of
    /// that write. So a record that arrives during a write waits for that
    /// write and what is left of the window, not a whole window more. Once
    /// the window has passed, the writer still takes every record already
    /// waiting (the timeout polls the inbox first), so a busy writer keeps
    /// writing full batches.
    pub async fn run(mut self) -> Result<()> {
        let mut records = Vec::with_capacity(self.batch_size);
        let mut tickets = Vec::with_capacity(self.batch_size);
        let mut deadline = Instant::now();
        let mut last_write = Instant::now();
        loop {
            let next = if records.is_empty() {
                match self.rx.try_recv() {
                    Ok(item) => {
                        deadline = last_write + self.flush_interval;
                        Some(item)
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        let next = self.rx.recv().await;
                        deadline = Instant::now() + self.flush_interval;
                        next
                    }
                }
            } else {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        last_write = Instant::now();
                        self.flush(&mut records, &mut tickets).await?;
                        continue;
                    }
                }
            };
            let Some(item) = next else {
                self.flush(&mut records, &mut tickets).await?;
                return Ok(());
            };
            records.push(item.record);
            tickets.push(item.ticket);
            if records.len() >= self.batch_size {
                last_write = Instant::now();
                self.flush(&mut records, &mut tickets).await?;
            }
        }
    }

    async fn flush(&self, records: &mut Vec<Record>, tickets: &mut Vec<Arc<Ticket>>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.kind == RecordKind::Rental && self.rentals_take_stock {
            self.take_stock(records, tickets).await?;
        }
        let started = std::time::Instant::now();
        let outcome = self
            .retrying(|| self.store.write(self.kind, records))
            .instrument(tracing::debug_span!(target: "stage", "write"))
            .await?;
        self.counters.batch_written(started.elapsed().as_secs_f64());
        if self.counters.has_metrics() {
            for ticket in tickets.iter() {
                if let Some(published) =
                    hpn_common::message::header_i64(ticket.properties(), hpn_common::message::header::PUBLISHED_MS)
                {
                    self.counters.end_to_end(published);
                }
            }
        }
        for failed in &outcome.failed {
            let reason = format!("MongoDB refused the record (code {}): {}", failed.code, failed.message);
            self.dead_letter(&records[failed.index], &tickets[failed.index], &reason)
                .await?;
        }
        self.counters.add_written(&outcome);
        self.counters.add_rejected(outcome.failed.len() as u64);
        for ticket in tickets.drain(..) {
            ticket.complete_one();
        }
        records.clear();
        Ok(())
    }

    /// Take stock for each rental, in order, and set aside (dead-letter) the
    /// rentals that cannot have any. Stock is taken before the rental is
    /// stored: after a crash in between, the redelivered rental finds its
    /// unit already taken (`AlreadyTaken`) and is only stored, so stock is
    /// never taken twice and never left untaken for a stored rental.
    async fn take_stock(&self, records: &mut Vec<Record>, tickets: &mut Vec<Arc<Ticket>>) -> Result<()> {
        let mut kept_records = Vec::with_capacity(records.len());
        let mut kept_tickets = Vec::with_capacity(tickets.len());
        for (record, ticket) in records.drain(..).zip(tickets.drain(..)) {
            // A delete takes no stock and gives none back (docs/message-format.md).
            let Record::Rental(rental) = &record else {
                kept_records.push(record);
                kept_tickets.push(ticket);
                continue;
            };
            let outcome = self
                .retrying(|| self.store.take_stock(&rental.product_id, &rental.user_id))
                .await?;
            let refusal = match outcome {
                StockOutcome::Taken | StockOutcome::AlreadyTaken => None,
                StockOutcome::OutOfStock => Some(format!("product {} is out of stock", rental.product_id)),
                StockOutcome::UnknownProduct => Some(format!("product {} does not exist", rental.product_id)),
            };
            match refusal {
                None => {
                    kept_records.push(record);
                    kept_tickets.push(ticket);
                }
                Some(reason) => {
                    self.dead_letter(&record, &ticket, &reason).await?;
                    self.counters.add_rejected(1);
                    ticket.complete_one();
                }
            }
        }
        *records = kept_records;
        *tickets = kept_tickets;
        Ok(())
    }

    async fn dead_letter(&self, record: &Record, ticket: &Ticket, reason: &str) -> Result<()> {
        match &self.dead_letters {
            Some(dead_letters) => {
                let body = hpn_common::message::encode(std::slice::from_ref(record));
                dead_letters
                    .send(self.kind, ticket.properties(), &body, reason, None)
                    .await
            }
            None => {
                warn!(kind = %self.kind, key = %record.key(), "record refused: {reason}");
                Ok(())
            }
        }
    }

    /// Run a store operation, retrying by the policy: outages always (the
    /// server is away or too busy), refusals only when the policy holds
    /// them (the server answered no: permissions, a full disk, a collection
    /// that cannot be written). A refusal is logged once with the server's
    /// words and shown in `/healthz` while it lasts; it is never reported
    /// as a broker problem, and the batch is never dead-lettered for it.
    /// (A collection dropped under the importer needs nothing from it: the
    /// one MongoDB creates again on the next insert has the `_id` index, the
    /// only one the writes rely on.)
    async fn retrying<T, F, Fut>(&self, operation: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, StoreError>>,
    {
        let mut attempt = 0;
        let mut first_failure = None;
        // Set while the store refuses this batch (the refusal is logged once).
        let mut refused = false;
        loop {
            let e = match operation().await {
                Ok(value) => {
                    if attempt > 0 {
                        tracing::info!(writer = %self.name, attempts = attempt + 1, "MongoDB takes writes again");
                    }
                    if let Some(health) = &self.health {
                        health.store_writes(&self.name);
                    }
                    return Ok(value);
                }
                Err(e) => e,
            };
            let transient = e.is_transient();
            let failing_for = first_failure.get_or_insert_with(Instant::now).elapsed();
            if !(transient || self.retry.hold_refused) {
                return Err(e.into());
            }
            if !self.retry.may_retry(attempt, failing_for) {
                return Err(StoreError::GaveUp {
                    after: failing_for,
                    last: Box::new(e),
                }
                .into());
            }
            let wait = self.retry.backoff(attempt);
            self.counters.mongodb_retried();
            if transient {
                // Said once per outage, not once per attempt.
                if attempt == 0 {
                    warn!(writer = %self.name, "MongoDB failed, retrying with backoff until it answers: {e}");
                } else {
                    tracing::debug!(writer = %self.name, attempt = attempt + 1, "retrying in {wait:?}: {e}");
                }
            } else {
                if !refused {
                    error!(
                        writer = %self.name,
                        "MongoDB refuses this batch: {e}; holding it (nothing is acknowledged) \
                         and trying again with backoff until the cause is fixed"
                    );
                    refused = true;
                } else {
                    tracing::debug!(writer = %self.name, attempt = attempt + 1, "still refused: {e}");
                }
                if let Some(health) = &self.health {
                    health.store_refuses(&self.name, e.to_string());
                }
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}
