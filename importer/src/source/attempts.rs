//! Bounded delivery attempts: a message that keeps coming back goes to the
//! dead-letter queue instead of being retried forever.
//!
//! Poison the importer can recognise (not JSON, wrong shape, invalid
//! record, unknown kind, too large, wrong content type) is dead-lettered on
//! its first delivery: trying again cannot help. What it cannot recognise
//! is a message on which processing fails without saying why: the process
//! crashes or is killed while holding it, or the connection drops. The broker
//! then delivers it again with `redelivered` set, and on a classic queue it
//! would do so forever, because a classic queue counts no deliveries.
//!
//! **Quorum queues** count them: every delivery that ends without an
//! acknowledgement (a consumer's channel or connection closes, or it
//! rejects with requeue) raises the message's `x-delivery-count` header. So
//! on a quorum queue the importer reads that count and processes the
//! redelivery in place, or dead-letters it with the count in the reason once
//! `max_attempts` deliveries have failed. Nothing is republished. The
//! queue's own `x-delivery-limit` (see `hpn_common::topology`) is only a
//! backstop above `max_attempts`, for a message no importer ever looks at.
//!
//! **Classic queues**: the importer keeps the count in the message itself. A delivery that
//! arrives redelivered is not processed at once: a copy goes back to the
//! same queue with `x-hpn-attempts` one higher, confirmed by the broker, and
//! only then is the original acknowledged (a crash in between leaves both
//! copies, which the keyed writes make harmless). The copy is processed when
//! it comes round. Once `max_attempts` deliveries have ended without the
//! message being written, it is dead-lettered with the count in the reason.
//!
//! The price: a redelivered message is published once more and waits behind
//! the messages queued after it, so it is written after newer messages of
//! the same keys (with several consumers on a queue RabbitMQ does not keep
//! order across a requeue either). The version guard makes that harmless:
//! an older version written last changes nothing (see `crate::store`).
//! A broker restart or an importer crash costs one republish per message
//! that was in hand, a few hundred at most.

use hpn_common::message::{self, header};
use hpn_common::QueueType;
use lapin::BasicProperties;

/// What to do with a delivery, given the deliveries of it that failed before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A first delivery, or a copy put back earlier: process it.
    Process,
    /// Redelivered: put a copy back, counting `failed` failed deliveries.
    Retry { failed: u32 },
    /// Redelivered for the last time allowed: dead-letter it.
    GiveUp { failed: u32 },
}

/// Decide for a delivery from a queue of `queue_type` with these properties
/// and `redelivered` flag, when at most `max_attempts` deliveries of one
/// message may fail.
pub fn verdict(queue_type: QueueType, properties: &BasicProperties, redelivered: bool, max_attempts: u32) -> Verdict {
    if !redelivered {
        return Verdict::Process;
    }
    let failed = failed_so_far(queue_type, properties, redelivered);
    if failed >= max_attempts.max(1) {
        Verdict::GiveUp { failed }
    } else if queue_type == QueueType::Classic {
        Verdict::Retry { failed }
    } else {
        Verdict::Process
    }
}

/// The deliveries of a message that ended without it being written, this
/// one's predecessors included when it is `redelivered`: those counted in
/// `x-hpn-attempts` by earlier copies (put back after a failed delivery on
/// a classic queue, or handed back after being held too long: see
/// `source::hand_back`), plus, when redelivered, the broker's count on a
/// quorum queue or the one that just ended on a classic queue. A copy
/// carries this in `x-hpn-attempts` (see [`message::retry_properties`]).
pub fn failed_so_far(queue_type: QueueType, properties: &BasicProperties, redelivered: bool) -> u32 {
    let count = |name| u32::try_from(message::header_i64(properties, name).unwrap_or(0).max(0)).unwrap_or(u32::MAX);
    let before = count(header::ATTEMPTS);
    if !redelivered {
        return before;
    }
    let this_copy = match queue_type {
        QueueType::Quorum => count(header::DELIVERY_COUNT),
        QueueType::Classic => 1,
    };
    before.saturating_add(this_copy)
}

/// The reason written on a message that ran out of attempts.
pub fn give_up_reason(failed: u32) -> String {
    let times = if failed == 1 { "once" } else { "times" };
    let count = if failed == 1 {
        String::new()
    } else {
        format!("{failed} ")
    };
    format!(
        "delivered {count}{times} without being written: the importer stopped or lost its \
         connection while holding it each time (see its log), so it is set aside"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpn_common::RecordKind;

    use lapin::types::{AMQPValue, FieldTable};

    const CLASSIC: QueueType = QueueType::Classic;
    const QUORUM: QueueType = QueueType::Quorum;

    #[test]
    fn first_deliveries_are_processed_whatever_the_header_says() {
        let props = message::retry_properties(&message::properties(RecordKind::Customer, None), 9);
        assert_eq!(verdict(CLASSIC, &props, false, 3), Verdict::Process);
        assert_eq!(verdict(QUORUM, &delivered(9), false, 3), Verdict::Process);
    }

    #[test]
    fn redeliveries_are_counted_until_the_limit() {
        let fresh = message::properties(RecordKind::Customer, None);
        assert_eq!(verdict(CLASSIC, &fresh, true, 3), Verdict::Retry { failed: 1 });
        let once = message::retry_properties(&fresh, 1);
        assert_eq!(verdict(CLASSIC, &once, true, 3), Verdict::Retry { failed: 2 });
        let twice = message::retry_properties(&fresh, 2);
        assert_eq!(verdict(CLASSIC, &twice, true, 3), Verdict::GiveUp { failed: 3 });
    }

    /// Properties as a quorum queue redelivers them, after `count` failures.
    fn delivered(count: i64) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(header::DELIVERY_COUNT.into(), AMQPValue::LongLongInt(count));
        message::properties(RecordKind::Customer, None).with_headers(headers)
    }

    #[test]
    fn quorum_redeliveries_are_processed_in_place_until_the_brokers_count_reaches_the_limit() {
        assert_eq!(verdict(QUORUM, &delivered(1), true, 3), Verdict::Process);
        assert_eq!(verdict(QUORUM, &delivered(2), true, 3), Verdict::Process);
        assert_eq!(verdict(QUORUM, &delivered(3), true, 3), Verdict::GiveUp { failed: 3 });
    }

    #[test]
    fn a_copy_carries_the_failures_of_the_deliveries_before_it_on_both_queue_types() {
        // A quorum redelivery after two failures, handed back: its copy says 2,
        // and no longer carries the broker's own count.
        let copy = message::retry_properties(&delivered(2), failed_so_far(QUORUM, &delivered(2), true));
        assert_eq!(message::header_i64(&copy, header::DELIVERY_COUNT), None);
        assert_eq!(failed_so_far(QUORUM, &copy, false), 2);
        assert_eq!(verdict(QUORUM, &copy, false, 3), Verdict::Process, "a first delivery");
        // The copy fails once more: the broker counts 1, the copy 2.
        let mut headers = copy.headers().clone().unwrap_or_default();
        headers.insert(header::DELIVERY_COUNT.into(), AMQPValue::LongLongInt(1));
        let again = copy.clone().with_headers(headers);
        assert_eq!(verdict(QUORUM, &again, true, 3), Verdict::GiveUp { failed: 3 });
        assert_eq!(verdict(QUORUM, &again, true, 4), Verdict::Process);
        let fresh = message::properties(RecordKind::Customer, None);
        assert_eq!(failed_so_far(CLASSIC, &fresh, false), 0);
        assert_eq!(failed_so_far(CLASSIC, &fresh, true), 1);
    }

    #[test]
    fn one_attempt_means_no_retry_and_zero_is_taken_as_one() {
        let fresh = message::properties(RecordKind::Product, None);
        assert_eq!(verdict(CLASSIC, &fresh, true, 1), Verdict::GiveUp { failed: 1 });
        assert_eq!(verdict(CLASSIC, &fresh, true, 0), Verdict::GiveUp { failed: 1 });
        assert_eq!(verdict(QUORUM, &delivered(1), true, 1), Verdict::GiveUp { failed: 1 });
    }

    #[test]
    fn the_reason_says_how_often() {
        assert!(give_up_reason(4).starts_with("delivered 4 times without"));
        assert!(give_up_reason(1).starts_with("delivered once without"));
    }
}
