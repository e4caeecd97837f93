//! The importer: consumes the HP Norton queues and writes MongoDB.
//!
//! ```text
//!  queue ──► consume (decode, dead-letter poison, route by key)
//!              │ WorkItem { record, ticket }
//!              ▼
//!            write (one writer per key partition: batch, upsert, complete tickets)
//!              │ ticket done
//!              ▼
//!            ack (in-order acknowledgement back on the consumer's channel)
//! ```
//!
//! Modules:
//! - [`cli`]: the `hpn-importer` command line;
//! - [`config`]: connection settings and tuning knobs;
//! - [`run`]: one-shot linear and parallel runs and their report ([`run_linear`], [`run_parallel`]);
//! - [`consume`]: a consumer on one channel;
//! - [`partition`]: routing records to writers by business key (and what that guarantees);
//! - [`write`]: batching writers and their retry policy;
//! - [`ack`]: tickets and in-order acknowledgement;
//! - [`direct`]: the write path fed straight from CSV, no broker (for the benchmark);
//! - [`dead_letter`]: refused messages and records to the dead-letter queues, with reasons;
//! - [`attempts`]: redelivered messages counted, and set aside after too many failed deliveries;
//! - [`counters`]: live per-collection counts for the report;
//! - [`serve`]: the long-running importer: reconnects, retries, graceful shutdown;
//! - [`http`] and [`metrics`]: `/healthz` and Prometheus `/metrics`;
//! - [`query`]: the two business queries, printed for people or as JSON;
//! - [`contention`]: racing consumers breaking naive writes on purpose, beside the safe ones.
//!
//! Nothing is acknowledged before it is written: a crash at any point leaves
//! unwritten messages in their queue, and writing them again is harmless
//! because every write is keyed on the record's business key and guarded by
//! its version, so the store ends with the newest version of every key
//! whatever order consumers, processes and redeliveries write in.

pub mod ack;
pub mod attempts;
pub mod cli;
pub mod config;
pub mod consume;
pub mod contention;
pub mod counters;
pub mod dead_letter;
pub mod direct;
pub mod http;
pub mod metrics;
pub mod partition;
pub mod query;
pub mod run;
pub mod serve;
pub mod write;

pub use config::{Config, Tuning};
pub use run::{import, run_linear, run_parallel, Mode};
