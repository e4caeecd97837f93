//! Live per-collection counts, shared by the consumers (which reject
//! poison) and the writers (which insert and update), turned into the
//! report's [`ImportStats`] at the end of a run.

use hpn_common::{ImportStats, RecordKind};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Counters {
    pub inserted: AtomicU64,
    pub updated: AtomicU64,
    pub rejected: AtomicU64,
}

impl Counters {
    pub fn add_written(&self, inserted: u64, updated: u64) {
        self.inserted.fetch_add(inserted, Relaxed);
        self.updated.fetch_add(updated, Relaxed);
    }

    pub fn add_rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Relaxed);
    }

    pub fn stats(&self, kind: RecordKind, count_before: u64, count_after: u64, elapsed: Duration) -> ImportStats {
        let (inserted, updated, rejected) = (
            self.inserted.load(Relaxed),
            self.updated.load(Relaxed),
            self.rejected.load(Relaxed),
        );
        ImportStats {
            collection: kind.collection().to_string(),
            processed: inserted + updated + rejected,
            count_before,
            count_after,
            elapsed,
            inserted,
            updated,
            rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_is_the_sum_of_outcomes() {
        let c = Counters::default();
        c.add_written(5, 2);
        c.add_rejected(1);
        let s = c.stats(RecordKind::Product, 10, 15, Duration::from_secs(1));
        assert_eq!((s.processed, s.inserted, s.updated, s.rejected), (8, 5, 2, 1));
        assert_eq!(s.collection, "products");
        assert_eq!(s.tuple(), (8, 10, 15, 1.0));
    }
}
