//! The long-running importer: `serve` (reconnects, holds writes through
//! store faults, shuts down cleanly) and its HTTP listener for `/healthz`
//! and `/metrics` (`http`, with the small client `hpn-importer health`
//! uses).

pub mod http;
pub mod serve;
