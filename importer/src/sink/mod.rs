//! The sink side: writing to MongoDB. Writers batch the records routed to
//! them and write each batch in one round trip, keyed and guarded by
//! version (`crate::store`); `retry` is how they, and every other retry
//! in the importer, wait before trying again.

pub mod retry;
pub mod write;
