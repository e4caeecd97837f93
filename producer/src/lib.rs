//! The producer: turns HP Norton's CSV files into messages on RabbitMQ.
//!
//! - [`generate`]: deterministic sample CSVs in the brief's shape;
//! - [`publish`]: streaming, validating, confirmed publishing of CSV files;
//! - [`version`]: the version each published record carries, so the store
//!   keeps the newest whatever order the records are delivered in.
//!
//! The binary `hpn-producer` (src/main.rs) is a thin command line over these.

pub mod generate;
pub mod publish;
pub mod version;

pub use publish::{publish_files, FileSummary, Publication, PublishOptions, Refused};
pub use version::VersionClock;
