//! The source side: taking messages off the queues. A consumer decodes each
//! delivery, sets aside what cannot be used (dead letters), counts
//! redeliveries so a message cannot come back for ever, and hands each good
//! record on to the route, with the delivery's ticket. Its prefetch, sized in
//! records, keeps memory flat however deep the queue. What `serve` holds
//! too long while MongoDB is away goes back to its queue before the broker
//! takes it back as a failed delivery.

pub mod attempts;
pub mod consume;
pub mod drain;
pub mod flight;
pub mod hand_back;
pub mod prefetch;
