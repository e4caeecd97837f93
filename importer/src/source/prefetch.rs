//! The consumer's prefetch: RabbitMQ limits a consumer in messages, but
//! memory and the writers' appetite are in records, and a message may hold
//! one record or a hundred. [`Prefetch`] turns a target in records into a
//! message limit as it learns what the messages hold.

/// The consumer's prefetch, in messages, set from a target in records.
///
/// RabbitMQ limits a consumer by messages, not records or bytes, and a
/// message may hold one record or a hundred. A fixed message prefetch is
/// either too small for one-record messages (writers starve) or far too
/// large for batched ones (hundreds of thousands of records buffered). So
/// the consumer starts small and, as it learns how many records a message
/// holds, sets `basic.qos` to hold about `records` records in hand.
#[derive(Debug)]
pub struct Prefetch {
    pub current: u16,
    max: u16,
    records: usize,
    messages_seen: u64,
    records_seen: u64,
}

impl Prefetch {
    /// Messages in hand before anything is known about their size.
    const START: u16 = 16;

    pub fn new(max: u16, records: usize) -> Prefetch {
        Prefetch {
            current: Self::START.min(max.max(1)),
            max: max.max(1),
            records: records.max(1),
            messages_seen: 0,
            records_seen: 0,
        }
    }

    /// A message of `records` records arrived; returns a new prefetch when
    /// the right one has moved by at least half from the current one.
    pub fn observe(&mut self, records: usize) -> Option<u16> {
        self.messages_seen += 1;
        self.records_seen += records.max(1) as u64;
        let per_message = self.records_seen as f64 / self.messages_seen as f64;
        let want = ((self.records as f64 / per_message) as u64).clamp(1, u64::from(self.max)) as u16;
        let (low, high) = (self.current / 2, self.current.saturating_add(self.current / 2));
        if want < low || want > high {
            self.current = want;
            Some(want)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_holds_about_the_target_in_records() {
        let mut p = Prefetch::new(2000, 4000);
        assert_eq!(p.current, 16);
        assert_eq!(p.observe(1), Some(2000), "one-record messages: as many as allowed");
        let mut p = Prefetch::new(2000, 4000);
        assert_eq!(p.observe(100), Some(40), "hundred-record messages: forty");
        assert_eq!(p.observe(100), None, "no change, no frame");
        let mut p = Prefetch::new(50, 4000);
        assert_eq!(p.observe(1), Some(50), "never above the configured maximum");
        let p = Prefetch::new(8, 4000);
        assert_eq!(p.current, 8, "never starts above the maximum either");
    }
}
