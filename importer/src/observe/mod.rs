//! What the importer knows about itself while it runs: per-collection
//! counts for the reports (`counters`), Prometheus metrics (`metrics`) and
//! whether it can do its work (`health`). Plain state, written by the
//! source and sink sides and read by the reports and the HTTP listener.

pub mod counters;
pub mod health;
pub mod metrics;
