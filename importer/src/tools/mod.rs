//! Commands around the import: the brief's two business queries (`query`),
//! the contention demonstration (`contention`) and the dead-letter queues'
//! tools (`dead-letters`).

pub mod contention;
pub mod dead_letters;
pub mod query;
