//! The consumer's prefetch: RabbitMQ limits a consumer in messages, but
//! memory is in bytes and the writers' appetite in records, and a message
//! may hold one record or ten thousand, in 100 bytes or 4 MiB. [`Prefetch`]
//! turns a target in records and a share of the memory budget in bytes
//! into a message limit as it learns what the messages hold.

/// Messages seen before the body size the limit assumes may fall to the
/// largest of them (it rises at once with any larger body); fewer while the
/// limit is small (see [`Prefetch::window`]).
const SIZE_WINDOW: u32 = 64;

/// The consumer's prefetch, in messages, from a target in records and a
/// share of the importer's memory in bytes.
///
/// A fixed message prefetch is either too small for one-record messages
/// (writers starve) or far too large for batched or big ones (hundreds of
/// thousands of records, or gigabytes of bodies, on their way). So the
/// limit is the smaller of two: about `records` records in hand at the
/// records per message seen so far; and no more bodies on their way or in
/// hand than `body_share` bytes, at the body size it assumes. That size
/// starts as the largest body allowed (nothing is known yet, so a flood of
/// maximum-size messages from the first delivery on stays within the
/// share), rises at once to any larger body seen, and falls to the largest
/// of the last window's messages after each window: [`SIZE_WINDOW`]
/// messages, or the current limit when that is fewer.
#[derive(Debug)]
pub struct Prefetch {
    pub current: u16,
    max: u16,
    records: usize,
    messages_seen: u64,
    records_seen: u64,
    body_share: usize,
    /// The body size the byte limit assumes.
    assumed_body: usize,
    window_largest: usize,
    window_seen: u32,
}

impl Prefetch {
    /// Messages in hand before anything is known about their records.
    const START: u16 = 16;

    /// At most `max` messages, aiming at `records` records and at most
    /// `body_share` bytes of bodies of up to `max_body` bytes each.
    pub fn new(max: u16, records: usize, body_share: usize, max_body: usize) -> Prefetch {
        let mut prefetch = Prefetch {
            current: 0,
            max: max.max(1),
            records: records.max(1),
            messages_seen: 0,
            records_seen: 0,
            body_share,
            assumed_body: max_body.max(1),
            window_largest: 0,
            window_seen: 0,
        };
        prefetch.current = Self::START.min(prefetch.by_bytes()).min(prefetch.max).max(1);
        prefetch
    }

    /// Messages the byte share allows at the assumed body size.
    fn by_bytes(&self) -> u16 {
        (self.body_share / self.assumed_body).clamp(1, usize::from(u16::MAX)) as u16
    }

    /// Messages a window of sizes takes: the current limit when that is
    /// fewer than [`SIZE_WINDOW`]. A consumer that starts at 5 messages
    /// (the largest body assumed) would otherwise take 64 deliveries, at 5
    /// in hand, each 5 waiting for their write and ack, before one-record
    /// messages of 200 bytes opened its limit: 0.77× the one-record import
    /// rate without a budget at 10,000 messages per queue, measured; 0.94×
    /// with a window of twice the limit. A shorter window bounds no less:
    /// what a window cannot bound is the same either way, the messages
    /// already sent under the old limit (see `docs/scaling.md`).
    fn window(&self) -> u32 {
        SIZE_WINDOW.min(u32::from(self.current)).max(1)
    }

    /// A message of `records` records in `body_bytes` bytes arrived; returns
    /// a new prefetch when it must fall (bodies larger than assumed) or the
    /// right one has moved by at least half from the current one.
    pub fn observe(&mut self, records: usize, body_bytes: usize) -> Option<u16> {
        self.messages_seen += 1;
        self.records_seen += records.max(1) as u64;
        self.window_largest = self.window_largest.max(body_bytes);
        self.window_seen += 1;
        let window_done = self.window_seen >= self.window();
        if body_bytes > self.assumed_body {
            self.assumed_body = body_bytes;
        } else if window_done {
            self.assumed_body = self.window_largest.max(1);
        }
        if window_done {
            (self.window_largest, self.window_seen) = (0, 0);
        }
        let per_message = self.records_seen as f64 / self.messages_seen as f64;
        let by_records = ((self.records as f64 / per_message) as u64).clamp(1, u64::from(self.max)) as u16;
        let want = by_records.min(self.by_bytes()).max(1);
        let (low, high) = (self.current / 2, self.current.saturating_add(self.current / 2));
        let bytes_bound = want == self.by_bytes() && want < self.current;
        if bytes_bound || want < low || want > high {
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

    const MIB: usize = 1 << 20;
    /// A share no one-record or batched message of these tests comes near.
    const PLENTY: usize = 64 * MIB;

    #[test]
    fn prefetch_holds_about_the_target_in_records() {
        let mut p = Prefetch::new(2000, 4000, PLENTY, 4096);
        assert_eq!(p.current, 16);
        assert_eq!(p.observe(1, 200), Some(2000), "one-record messages: as many as allowed");
        let mut p = Prefetch::new(2000, 4000, PLENTY, 4096);
        assert_eq!(p.observe(100, 20_000), Some(40), "hundred-record messages: forty");
        assert_eq!(p.observe(100, 20_000), None, "no change, no frame");
        let mut p = Prefetch::new(50, 4000, PLENTY, 4096);
        assert_eq!(p.observe(1, 200), Some(50), "never above the configured maximum");
        let p = Prefetch::new(8, 4000, PLENTY, 4096);
        assert_eq!(p.current, 8, "never starts above the maximum either");
    }

    #[test]
    fn bodies_in_flight_stay_within_the_share_from_the_first_message_on() {
        // 21 MiB for a consumer, 4 MiB bodies allowed: five at first.
        let share = 21 * MIB;
        let mut p = Prefetch::new(2000, 4000, share, 4 * MIB);
        assert_eq!(p.current, 5, "nothing seen yet: the largest body allowed is assumed");
        for _ in 0..200 {
            if let Some(limit) = p.observe(1, 4 * MIB) {
                assert!(usize::from(limit) * 4 * MIB <= share, "{limit}");
            }
            assert!(usize::from(p.current) * 4 * MIB <= share);
        }
        // Small one-record messages: the byte limit lets the record target rule.
        let mut p = Prefetch::new(2000, 4000, share, 4 * MIB);
        for seen in 1..5 {
            assert_eq!(
                p.observe(1, 300),
                None,
                "{seen} seen: within the window (the limit, 5) the largest allowed is still assumed"
            );
        }
        assert_eq!(p.observe(1, 300), Some(2000), "after a window of small bodies");
        // Then one big body: the limit falls at once.
        assert_eq!(p.observe(1, 2 * MIB), Some(10));
        assert!(usize::from(p.current) * 2 * MIB <= share);
        // At a large limit the window is SIZE_WINDOW: one big body among
        // small ones keeps the limit down until a whole window is small.
        let mut p = Prefetch::new(2000, 4000, PLENTY, 4096);
        assert_eq!(p.observe(1, 300), Some(2000));
        assert_eq!(p.observe(1, MIB), Some(64), "a 1 MiB body among small ones");
        for _ in 0..SIZE_WINDOW - 2 {
            assert_eq!(p.observe(1, 300), None, "a window of 64 at a limit of 64");
        }
    }
}
