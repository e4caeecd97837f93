//! Commands around the import: the brief's two business queries (`query`)
//! and the contention demonstration (`contention`).

pub mod contention;
pub mod query;
