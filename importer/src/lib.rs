//! The importer: consumes the HP Norton queues and writes MongoDB.
//!
//! Modules follow the path of a record, as vector's sources and sinks do:
//!
//! ```text
//!  queue ──► source (consume: decode, prefetch in records, attempts, poison)
//!              │ WorkItem { record, ticket }
//!              ▼
//!            route (partition by key ─► writer; dead letters; ack tracking)
//!              │
//!              ▼
//!            sink (write: batch, guarded write, retry) ──► MongoDB
//!              │ ticket done
//!              ▼
//!            route::ack (in-order acknowledgement back on the consumer's channel)
//! ```
//!
//! Around that path:
//! - `observe`: counters for the reports, Prometheus metrics, health;
//! - `oneshot`: linear and parallel runs that drain the queues and report
//!   ([`run_linear`], [`run_parallel`], [`import`]), and the direct path
//!   from CSV with no broker ([`import_files`], for the benchmark);
//! - `service`: `hpn-importer serve` and its `/healthz` and `/metrics`;
//! - `supervise`: waiting for consumers and writers, naming the real cause
//!   of a failure;
//! - `tools`: the business queries and the [`contention`] demonstration;
//! - `store`: the MongoDB collections, keyed and version-guarded writes,
//!   the business queries (only the importer uses MongoDB); outside, the
//!   [`Store`] and what its writes return, and the stored document's shape
//!   in [`document`];
//! - [`report`]: HP Norton's per-collection figures, as a table or JSON;
//! - `error`: the importer's [`Error`], which says where it came from;
//! - `config` and `cli`: settings and the command line ([`main`]).
//!
//! Nothing is acknowledged before it is written: a crash at any point leaves
//! unwritten messages in their queue, and writing them again is harmless
//! because every write is keyed on the record's business key and guarded by
//! its version, so the store ends with the newest version of every key
//! whatever order consumers, processes and redeliveries write in.

mod cli;
mod config;
pub mod document;
mod error;
mod observe;
mod oneshot;
pub mod report;
mod route;
mod service;
mod sink;
mod source;
mod store;
mod supervise;
mod tools;

pub use cli::main;
pub use config::{Config, PrefetchScope, Tuning};
pub use error::{Error, Result};
pub use oneshot::direct::import_files;
pub use oneshot::run::{import, run_linear, run_parallel, Mode};
pub use report::{ImportReport, ImportStats};
pub use service::http::fetch;
pub use store::{
    FailedWrite, Migrated, Orphan, Orphans, StockOutcome, Store, StoreError, WriteOutcome, SERVER_SELECTION_TIMEOUT,
};
pub use tools::contention;
