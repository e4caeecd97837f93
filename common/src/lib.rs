//! What both binaries use, and nothing else: the records, reading them from
//! CSV, the message format on the queues, the queue topology, publishing
//! with confirms, settings, errors, logging and profiling.
//!
//! ```text
//!  CSV ──► csv_source ──► producer ──► message ──► topology (RabbitMQ)
//!                                                      │
//!           MongoDB ◄── importer (its own store) ◄─────┘
//! ```
//!
//! The MongoDB store and the import reports live in the importer, the only
//! crate that uses them, so the producer never links the database driver.
//!
//! Modules, each named after what it holds:
//!
//! - [`record`]: the three record kinds, their fields, validation, and the version rule;
//! - [`csv_source`]: streaming CSV reading with file and line on every rejection;
//! - [`mapping`]: how a file in another system's layout becomes records;
//! - [`message`]: the message format on the queues (a public contract);
//! - [`topology`]: exchange, queue and dead-letter names and their declaration;
//! - [`broker`]: connecting to RabbitMQ;
//! - [`address`]: server addresses checked at start, shown without their password;
//! - [`publisher`]: publishing with confirms, the one way we publish;
//! - [`retry`]: how long to wait before trying again, for every retry;
//! - [`config`]: settings per server, and every `HPN_*` variable name;
//! - [`seconds`]: durations as fractional seconds in reports;
//! - [`telemetry`]: logging set-up;
//! - [`profile`]: per-stage timings from tracing spans, and peak memory;
//! - [`error`]: the error type, and where an error came from ([`Origin`]).

pub mod address;
pub mod broker;
pub mod config;
pub mod csv_source;
pub mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod mapping;
pub mod message;
pub mod profile;
pub mod publisher;
pub mod record;
pub mod retry;
pub mod seconds;
pub mod telemetry;
pub mod topology;

pub use config::{BrokerSettings, ConnectionSettings, StoreAddress, StoreSettings};
pub use error::{Error, Origin, Result};
pub use mapping::Mapping;
pub use record::{Customer, Deletion, Extra, Product, Record, RecordKind, Rental};
pub use topology::{QueueType, Topology};
