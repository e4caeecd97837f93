//! Messages a one-shot run has handled, so that one the broker delivers
//! again after a lost connection is not counted twice.
//!
//! A message is acknowledged once its records are written (or it is
//! dead-lettered). When the connection goes between the two, or the
//! acknowledgement is still on its way, the broker delivers the message
//! again, flagged `redelivered`, on the run's next connection. Writing it
//! again is harmless (every write is keyed and guarded by version), but the
//! report would count its records twice: once as written, once as stale.
//! So each consumer notes the digest of every message it has handled in
//! full, and a redelivered message whose digest is noted is acknowledged
//! at once and counted nothing: its records are in the store already.
//!
//! Only the last deliveries of a consumer can come again: the broker holds
//! at most its prefetch of them unacknowledged (`basic.qos`), and those are
//! the latest it sent. So each consumer keeps the digests of its last
//! `capacity` handled messages (twice its largest prefetch: a re-subscription
//! may overlap the old one), 8 bytes each, and a
//! run keeps the consumers of its last few connections: memory stays
//! bounded whatever the run's size. A message is noted when it is handled
//! in full: when its ticket completes (every record written or
//! dead-lettered, see `route::ack::Ticket`), or once it is dead-lettered or
//! put back whole. The note is the ticket's, not the consumer's, because the
//! consumers of a lost connection are gone when their writers finish; the
//! run lets those writers finish before it connects again (see
//! `oneshot::run`).
//!
//! The digest covers the body and the publisher's own properties (its
//! timestamp, message id, app id and `x-hpn-published-ms`), not the headers
//! the broker adds on redelivery (`x-delivery-count`). Two messages with
//! equal digests carry the same records, so one of them may stand for the
//! other: writing the second would change nothing that the first did not.

use hpn_common::message::{self, header};
use lapin::BasicProperties;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// Consumers' rings kept: those of the current connection and the ones
/// before, whose messages may still come again.
const RINGS_KEPT: usize = 64;

/// The digests of the messages a run's consumers of one queue handled last.
#[derive(Debug, Default)]
pub struct Handled {
    inner: Mutex<Rings>,
}

#[derive(Debug, Default)]
struct Rings {
    /// Per consumer, oldest first: its last handled messages.
    rings: VecDeque<(usize, VecDeque<u64>)>,
    /// How many rings hold each digest.
    held: HashMap<u64, u32>,
    next_ring: usize,
}

/// One consumer's place in [`Handled`].
#[derive(Clone, Debug)]
pub struct Ring {
    id: usize,
    capacity: usize,
}

/// A message to note as handled once it is (see `route::ack::Ticket`).
#[derive(Debug)]
pub struct Noted {
    pub handled: Arc<Handled>,
    pub ring: Ring,
    pub digest: u64,
}

impl Noted {
    pub fn note(&self) {
        self.handled.note(&self.ring, self.digest);
    }
}

impl Handled {
    /// A ring for a new consumer that may have `capacity` messages
    /// unacknowledged at most. The oldest ring goes when there are too many.
    pub fn ring(&self, capacity: usize) -> Ring {
        let mut inner = self.inner.lock().expect("handled lock");
        let id = inner.next_ring;
        inner.next_ring += 1;
        inner.rings.push_back((id, VecDeque::new()));
        if inner.rings.len() > RINGS_KEPT {
            let (_, old) = inner.rings.pop_front().expect("more than kept");
            for digest in old {
                inner.forget(digest);
            }
        }
        Ring {
            id,
            capacity: capacity.max(1),
        }
    }

    /// `digest` was handled in full by `ring`'s consumer.
    pub fn note(&self, ring: &Ring, digest: u64) {
        let mut inner = self.inner.lock().expect("handled lock");
        let Some(at) = inner.rings.iter().position(|(id, _)| *id == ring.id) else {
            return;
        };
        let evicted = {
            let digests = &mut inner.rings[at].1;
            digests.push_back(digest);
            (digests.len() > ring.capacity).then(|| digests.pop_front()).flatten()
        };
        *inner.held.entry(digest).or_default() += 1;
        if let Some(old) = evicted {
            inner.forget(old);
        }
    }

    /// Whether a message of this digest was handled (and may be
    /// acknowledged without being handled again).
    pub fn contains(&self, digest: u64) -> bool {
        self.inner.lock().expect("handled lock").held.contains_key(&digest)
    }
}

impl Rings {
    fn forget(&mut self, digest: u64) {
        if let Some(count) = self.held.get_mut(&digest) {
            *count -= 1;
            if *count == 0 {
                self.held.remove(&digest);
            }
        }
    }
}

/// A delivery's digest: its body and the properties its publisher set.
pub fn digest(properties: &BasicProperties, body: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    properties.timestamp().hash(&mut hasher);
    properties.message_id().as_ref().map(|id| id.as_str()).hash(&mut hasher);
    properties.app_id().as_ref().map(|id| id.as_str()).hash(&mut hasher);
    message::header_i64(properties, header::PUBLISHED_MS).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpn_common::RecordKind;
    use lapin::types::{AMQPValue, FieldTable};

    #[test]
    fn a_message_is_known_again_by_its_body_and_publisher_not_by_the_brokers_count() {
        let properties = message::properties(RecordKind::Customer, None);
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(1));
        let redelivered = properties.clone().with_headers(headers);
        assert_eq!(digest(&properties, b"{}"), digest(&redelivered, b"{}"));
        assert_ne!(digest(&properties, b"{}"), digest(&properties, b"[]"));
        let other = properties.clone().with_headers(FieldTable::default());
        assert_ne!(digest(&properties, b"{}"), digest(&other, b"{}"), "another publish");
    }

    #[test]
    fn each_consumer_keeps_its_last_messages_only() {
        let handled = Handled::default();
        let (a, b) = (handled.ring(2), handled.ring(2));
        for digest in [1, 2, 3] {
            handled.note(&a, digest);
        }
        handled.note(&b, 1);
        assert!(!handled.contains(0));
        assert!(handled.contains(1), "still b's");
        assert!(handled.contains(2) && handled.contains(3));
        handled.note(&b, 4);
        handled.note(&b, 5);
        assert!(!handled.contains(1), "gone from both rings");
        // Rings of old connections go, oldest first.
        for _ in 0..RINGS_KEPT {
            handled.ring(2);
        }
        assert!(!handled.contains(2) && !handled.contains(5));
        let c = handled.ring(1);
        handled.note(&c, 9);
        assert!(handled.contains(9));
    }
}
