//! Commands around the import: the brief's two business queries (`query`),
//! the contention demonstration (`contention`), the dead-letter queues'
//! tools (`dead-letters`), and looking after a store and its queues
//! (`admin`: migrate, compact, reset).

pub mod admin;
pub mod contention;
pub mod dead_letters;
pub mod query;
