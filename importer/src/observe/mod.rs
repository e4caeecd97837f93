//! What the importer knows about itself while it runs: per-collection
//! counts for the reports (`counters`), Prometheus metrics (`metrics`) and
//! whether it can do its work (`health`). Plain state, written by the
//! source and sink sides and read by the reports, the HTTP listener and
//! the live lines of a run on a terminal (`progress`); and, when built
//! with the `profiling` feature, where a run spends its CPU (`cpu_profile`).

pub mod counters;
pub mod cpu_profile;
pub mod health;
pub mod metrics;
pub mod progress;
