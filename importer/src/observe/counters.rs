//! Live per-collection counts, shared by the consumers (which reject
//! poison) and the writers (which insert and update), turned into the
//! report's [`ImportStats`] at the end of a run; in `serve`, also fed to the
//! Prometheus metrics.

use crate::observe::metrics::Metrics;
use crate::report::ImportStats;
use crate::store::WriteOutcome;
use hpn_common::RecordKind;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
pub struct Counters {
    pub inserted: AtomicU64,
    pub updated: AtomicU64,
    pub deleted: AtomicU64,
    pub stale: AtomicU64,
    pub rejected: AtomicU64,
    metrics: Option<(RecordKind, Arc<Metrics>)>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("inserted", &self.inserted)
            .field("updated", &self.updated)
            .field("deleted", &self.deleted)
            .field("stale", &self.stale)
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

impl Counters {
    /// Counters that also feed `metrics` under `kind`'s collection.
    pub fn with_metrics(kind: RecordKind, metrics: Arc<Metrics>) -> Counters {
        Counters {
            metrics: Some((kind, metrics)),
            ..Counters::default()
        }
    }

    /// Records written: new documents, updated ones, deletes, and stale
    /// ones (an equal or newer version was stored; nothing changed). The
    /// records the store refused are counted by [`Counters::add_rejected`]
    /// once they are dead-lettered.
    pub fn add_written(&self, outcome: &WriteOutcome) {
        self.inserted.fetch_add(outcome.inserted, Relaxed);
        self.updated.fetch_add(outcome.updated, Relaxed);
        self.deleted.fetch_add(outcome.deleted, Relaxed);
        self.stale.fetch_add(outcome.stale, Relaxed);
        if let Some((kind, m)) = &self.metrics {
            m.record(*kind, "written", outcome.inserted);
            m.record(*kind, "updated", outcome.updated);
            m.record(*kind, "deleted", outcome.deleted);
            m.record(*kind, "stale", outcome.stale);
        }
    }

    /// `n` records of a message from `app_id` (its AMQP property) carried no
    /// version: they are applied in arrival order.
    pub fn add_unversioned(&self, n: u64, app_id: Option<&str>) {
        if n == 0 {
            return;
        }
        if let Some((kind, m)) = &self.metrics {
            m.unversioned(*kind, app_id, n);
        }
    }

    /// Records refused and sent to the dead-letter queue.
    pub fn add_rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Relaxed);
        if let Some((kind, m)) = &self.metrics {
            m.record(*kind, "dead_lettered", n);
        }
    }

    pub fn message_consumed(&self) {
        if let Some((kind, m)) = &self.metrics {
            m.messages_consumed.get_or_create(&Metrics::collection(*kind)).inc();
        }
    }

    pub fn handed_back(&self, messages: u64) {
        if let Some((kind, m)) = &self.metrics {
            m.messages_handed_back
                .get_or_create(&Metrics::collection(*kind))
                .inc_by(messages);
        }
    }

    pub fn mongodb_retried(&self) {
        if let Some((_, m)) = &self.metrics {
            m.retries.get_or_create(&Metrics::server("mongodb")).inc();
        }
    }

    pub fn batch_written(&self, seconds: f64) {
        if let Some((kind, m)) = &self.metrics {
            m.batch_write_seconds
                .get_or_create(&Metrics::collection(*kind))
                .observe(seconds);
        }
    }

    /// A record published at `published_ms` (epoch milliseconds) is written now.
    pub fn end_to_end(&self, published_ms: i64) {
        if let Some((kind, m)) = &self.metrics {
            let seconds = (hpn_common::message::now_ms() - published_ms).max(0) as f64 / 1000.0;
            m.end_to_end_seconds
                .get_or_create(&Metrics::collection(*kind))
                .observe(seconds);
        }
    }

    /// Whether anything reads the per-record figures (so the writer can skip them).
    pub fn has_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    /// Records handled so far: written (new, updated, deleted or stale) or
    /// rejected.
    pub fn processed(&self) -> u64 {
        self.inserted.load(Relaxed)
            + self.updated.load(Relaxed)
            + self.deleted.load(Relaxed)
            + self.stale.load(Relaxed)
            + self.rejected.load(Relaxed)
    }

    pub fn stats(
        &self,
        kind: RecordKind,
        count_before: u64,
        count_after: u64,
        elapsed: Duration,
        messages_left: Option<u64>,
    ) -> ImportStats {
        let (inserted, updated, deleted, stale, rejected) = (
            self.inserted.load(Relaxed),
            self.updated.load(Relaxed),
            self.deleted.load(Relaxed),
            self.stale.load(Relaxed),
            self.rejected.load(Relaxed),
        );
        ImportStats {
            collection: kind.collection().to_string(),
            processed: inserted + updated + deleted + stale + rejected,
            count_before,
            count_after,
            elapsed,
            inserted,
            updated,
            deleted,
            stale,
            rejected,
            messages_left,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_is_the_sum_of_outcomes() {
        let c = Counters::default();
        c.add_written(&WriteOutcome {
            inserted: 5,
            updated: 2,
            deleted: 4,
            stale: 3,
            ..WriteOutcome::default()
        });
        c.add_rejected(1);
        let s = c.stats(RecordKind::Product, 10, 11, Duration::from_secs(1), Some(0));
        assert_eq!(
            (s.processed, s.inserted, s.updated, s.deleted, s.stale, s.rejected),
            (15, 5, 2, 4, 3, 1)
        );
        assert_eq!(s.collection, "products");
        assert_eq!(s.tuple(), (15, 10, 11, 1.0));
        assert_eq!(c.processed(), 15);
    }
}
