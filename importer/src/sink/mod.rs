//! The sink side: writing to MongoDB. Writers batch the records routed to
//! them and write each batch in one round trip, keyed and guarded by
//! version (`crate::store`), waiting between attempts as
//! `hpn_common::retry` says.

pub mod write;
