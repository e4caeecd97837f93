//! Where a record and its message go between the source and the sink: to
//! the writer that owns the record's key (`partition`), back to the broker
//! as an acknowledgement once everything in the message is written (`ack`),
//! or to a dead-letter queue with the reason (`dead_letter`). A one-shot
//! run notes each message once it is handled (`handled`), so that one the
//! broker delivers again after a lost connection is not counted twice.

pub mod ack;
pub mod dead_letter;
pub mod handled;
pub mod partition;
