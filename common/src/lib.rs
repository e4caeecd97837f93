//! Shared building blocks of the HP Norton import pipeline.
//!
//! The pipeline moves customer, product and rental records from CSV files,
//! through RabbitMQ, into MongoDB:
//!
//! ```text
//!  CSV ──► csv_source ──► producer ──► message ──► topology (RabbitMQ)
//!                                                      │
//!        store (MongoDB) ◄── importer ◄── message ◄────┘
//! ```
//!
//! Modules, each named after what it holds:
//!
//! - [`record`]: the three record kinds, their fields and validation rules;
//! - [`csv_source`]: streaming CSV reading with file and line on every rejection;
//! - [`message`]: the message format on the queues (a public contract);
//! - [`topology`]: exchange, queue and dead-letter names and their declaration;
//! - [`broker`]: connecting to RabbitMQ;
//! - [`publisher`]: publishing with confirms, the one way we publish;
//! - [`store`]: the MongoDB collections, keyed writes and the business queries;
//! - [`stats`]: the per-collection figures every import run reports;
//! - [`config`]: settings per server, and every `HPN_*` variable name;
//! - [`telemetry`]: logging set-up;
//! - [`profile`]: per-stage timings from tracing spans, and peak memory;
//! - [`error`]: the error type of library code.

pub mod broker;
pub mod config;
pub mod csv_source;
pub mod error;
pub mod message;
pub mod profile;
pub mod publisher;
pub mod record;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod topology;

pub use config::{BrokerSettings, ConnectionSettings, StoreSettings};
pub use error::{Error, Origin, Result};
pub use record::{Customer, Product, Record, RecordKind, Rental};
pub use stats::{ImportReport, ImportStats};
pub use store::Store;
pub use topology::Topology;
