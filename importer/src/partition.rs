//! Routing records to writers by business key.
//!
//! Every record with the same key goes to the same writer, whichever
//! consumer took it off the queue. A writer applies its records in the order
//! it receives them, one batch at a time, so two writes of one key never run
//! at once inside this process and the later record wins, as it would in a
//! linear run; records with different keys still go to different writers
//! and run in parallel.
//!
//! What this guarantees, and what it does not:
//! - within one importer process, no two concurrent writes touch the same
//!   document, so there is no lost update and no duplicate-key race between
//!   our own writers;
//! - order per key is the order the records reached the router. Two
//!   consumers on one queue can take two messages for one key and route them
//!   in either order, so when an upstream system needs "last published wins"
//!   across messages it must publish updates of one key in one message, or
//!   we run one consumer per queue;
//! - several importer processes on the same queue each route only what they
//!   receive: two processes can still race on one key. The store's unique
//!   indexes and idempotent upserts keep that race harmless (one document
//!   per key, no error reaches anyone; see `contention`). To extend the
//!   per-key ordering across processes, RabbitMQ's consistent-hash exchange
//!   can split each kind over several queues by a key header, one importer
//!   per queue, or single-active-consumer queues can make a standby process
//!   take over a queue only when the active one goes away.

use crate::write::WorkItem;
use hpn_common::Record;
use std::hash::{DefaultHasher, Hasher};
use tokio::sync::mpsc;

/// The sending side of one collection's writers.
#[derive(Clone, Debug)]
pub struct Router {
    writers: Vec<mpsc::Sender<WorkItem>>,
}

impl Router {
    pub fn new(writers: Vec<mpsc::Sender<WorkItem>>) -> Router {
        assert!(!writers.is_empty(), "a router needs at least one writer");
        Router { writers }
    }

    /// Which writer a record's key belongs to (stable for the life of the process).
    pub fn partition(&self, record: &Record) -> usize {
        partition(record, self.writers.len())
    }

    /// Hand a record to its writer, waiting while that writer is full.
    /// Fails only if the writer has stopped.
    pub async fn send(&self, item: WorkItem) -> Result<(), WriterStopped> {
        let writer = &self.writers[self.partition(&item.record)];
        writer.send(item).await.map_err(|_| WriterStopped)
    }

    /// [`Router::send`] from a blocking thread (the direct path's CSV reader).
    pub fn blocking_send(&self, item: WorkItem) -> Result<(), WriterStopped> {
        let writer = &self.writers[self.partition(&item.record)];
        writer.blocking_send(item).map_err(|_| WriterStopped)
    }
}

/// The writer a record belongs to has stopped (the run is failing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStopped;

/// The partition of a record's key among `partitions`.
pub fn partition(record: &Record, partitions: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    record.hash_key(&mut hasher);
    (hasher.finish() % partitions as u64) as usize
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
            zip_code: String::new(),
            phone_number: String::new(),
            email: "a@b.c".into(),
        })
    }

    #[test]
    fn same_key_same_partition_whatever_else_differs() {
        for n in 1..8 {
            assert_eq!(partition(&customer("C1", "a"), n), partition(&customer("C1", "b"), n));
        }
    }

    #[test]
    fn keys_spread_over_all_partitions() {
        let mut seen = [0usize; 4];
        for i in 0..1000 {
            seen[partition(&customer(&format!("C{i}"), "x"), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
        let rental = |p: &str, u: &str| {
            Record::Rental(Rental {
                product_id: p.into(),
                user_id: u.into(),
            })
        };
        let differ =
            (0..50).any(|i| partition(&rental("P1", &format!("C{i}")), 4) != partition(&rental("P1", "C0"), 4));
        assert!(differ, "rentals of one product spread by customer too");
    }
}
