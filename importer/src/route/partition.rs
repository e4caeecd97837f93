//! Routing records to writers by business key.
//!
//! Correctness does not depend on this module. Every write is guarded by
//! version in the store (see `crate::store`), so any number of writers,
//! consumers and importer processes, in any order, end with the newest
//! version of every key; a record without a version is applied in arrival
//! order (see `docs/message-format.md`).
//!
//! What routing still buys is work not done: every record of one key in this
//! process goes to the same writer, so
//! - the versions of a key that arrive close together meet in one batch and
//!   are folded there (`crate::store::latest_per_key`): one statement
//!   reaches the server instead of several;
//! - two writers of this process never insert the same new key at once, so
//!   the insert-first fast path does not lose to a sibling and fall back to
//!   an update round trip.
//!
//! Records of different keys still spread over all writers and are written in
//! parallel. Routing costs one hash per record.
//!
//! **How many writers a one-shot run uses.** Splitting a small queue over
//! several writers only makes each batch smaller and sends the server more
//! concurrent writes than it has cores for: at 1,000 records per file,
//! three collections of two writers each made six concurrent writes of ~500
//! records (54 ms each, 0.32 s in all) where linear made three of 1,000
//! (37 ms each), and parallel lost to linear. So a one-shot consumer sizes
//! the router before it routes its first record ([`Router::size_for`]):
//! one writer per `batch_size` records the queue held when the run began
//! (messages ready then × records in the first message), at most all of
//! them. The size is decided once, before any record is routed, so a key
//! never moves from one writer to another. A long-running importer, whose
//! backlog is unknown, always uses them all.
//!
//! Against a build that dealt records to writers round-robin, a file with
//! five versions of every key on adjacent lines imported several times
//! faster with key routing at 100 records per message (round-robin sent
//! every version of a key to the server instead of one), and
//! somewhat faster at one record per message, where the broker sets the pace.

use crate::route::ack::Ticket;
use hpn_common::Record;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

/// One record on its way to a writer, with the ticket of its delivery.
#[derive(Debug)]
pub struct WorkItem {
    pub record: Record,
    pub ticket: Arc<Ticket>,
}

/// The sending side of one collection's writers.
#[derive(Clone, Debug)]
pub struct Router {
    writers: Vec<mpsc::Sender<WorkItem>>,
    /// How many of the writers get records: decided once, shared by every
    /// clone (all writers unless [`Router::size_for`] decided first).
    in_use: Arc<OnceLock<usize>>,
}

impl Router {
    pub fn new(writers: Vec<mpsc::Sender<WorkItem>>) -> Router {
        assert!(!writers.is_empty(), "a router needs at least one writer");
        Router {
            writers,
            in_use: Arc::new(OnceLock::new()),
        }
    }

    /// Use one writer per `batch_size` of the `records` expected, at least
    /// one and at most all, unless the number is decided already (by
    /// another consumer, or by a record routed before). Returns the number.
    pub fn size_for(&self, records: u64, batch_size: usize) -> usize {
        *self.in_use.get_or_init(|| {
            let wanted = records.div_ceil(batch_size.max(1) as u64).max(1);
            wanted.min(self.writers.len() as u64) as usize
        })
    }

    /// Which writer a record's key belongs to (stable for the life of the
    /// router: the first call fixes how many writers are in use).
    pub fn partition(&self, record: &Record) -> usize {
        partition(record, *self.in_use.get_or_init(|| self.writers.len()))
    }

    /// Room for `record` in the inbox of the writer owning its key, waiting
    /// while that inbox is full; fails only if the writer has stopped.
    /// Cancel-safe: a wait given up takes nothing (the consumer gives it up
    /// to hand back what it holds, see `source::hand_back`).
    pub async fn reserve(&self, record: &Record) -> Result<mpsc::Permit<'_, WorkItem>, WriterStopped> {
        let writer = &self.writers[self.partition(record)];
        writer.reserve().await.map_err(|_| WriterStopped)
    }

    /// Hand a record to its writer from a blocking thread (the direct path's
    /// CSV reader), waiting while that writer is full; fails only if it has stopped.
    pub fn blocking_send(&self, item: WorkItem) -> Result<(), WriterStopped> {
        let writer = &self.writers[self.partition(&item.record)];
        writer.blocking_send(item).map_err(|_| WriterStopped)
    }
}

/// The writer a record belongs to has stopped (the run is failing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStopped;

/// The partition of a record's key among `partitions`. A fixed seed, so a
/// key goes to the same writer for the life of the process; foldhash rather
/// than the standard SipHash because this runs once per record and needs
/// no protection from crafted keys (the worst a crafted key can do is load
/// one writer more than another).
pub fn partition(record: &Record, partitions: usize) -> usize {
    if partitions <= 1 {
        return 0;
    }
    let mut hasher = foldhash::fast::FixedState::with_seed(0).build_hasher();
    record.hash_key(&mut hasher);
    (std::hash::Hasher::finish(&hasher) % partitions as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpn_common::{Customer, Rental};

    fn customer(id: &str, name: &str) -> Record {
        Record::Customer(Customer {
            user_id: id.into(),
            name: name.into(),
            address: String::new(),
            zip_code: None,
            phone_number: String::new(),
            email: "a@b.c".into(),
            extra: Default::default(),
            version: None,
        })
    }

    #[test]
    fn same_key_same_partition_whatever_else_differs() {
        for n in 1..8 {
            assert_eq!(partition(&customer("C1", "a"), n), partition(&customer("C1", "b"), n));
        }
    }

    #[test]
    fn a_router_sized_for_a_small_backlog_uses_one_writer_and_never_resizes() {
        let senders = || (0..4).map(|_| mpsc::channel(1).0).collect::<Vec<_>>();
        let router = Router::new(senders());
        assert_eq!(router.clone().size_for(1_000, 1_000), 1, "one batch: one writer");
        assert_eq!(router.size_for(1_000_000, 1_000), 1, "decided once, for every clone");
        assert!((0..100).all(|i| router.partition(&customer(&format!("C{i}"), "x")) == 0));
        assert_eq!(Router::new(senders()).size_for(2_500, 1_000), 3);
        assert_eq!(Router::new(senders()).size_for(0, 1_000), 1);
        let unsized_router = Router::new(senders());
        let _ = unsized_router.partition(&customer("C1", "x"));
        assert_eq!(
            unsized_router.size_for(10, 1_000),
            4,
            "routing first means every writer"
        );
    }

    #[test]
    fn keys_spread_over_all_partitions() {
        let mut seen = [0usize; 4];
        for i in 0..1000 {
            seen[partition(&customer(&format!("C{i}"), "x"), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
        let rental = |p: &str, u: &str| Record::Rental(Rental::new(p, u));
        let differ =
            (0..50).any(|i| partition(&rental("P1", &format!("C{i}")), 4) != partition(&rental("P1", "C0"), 4));
        assert!(differ, "rentals of one product spread by customer too");
    }
}
