//! The producer: turns HP Norton's CSV files into messages on RabbitMQ.
//!
//! - [`generate`]: deterministic sample CSVs in the brief's shape;
//! - [`publish`]: streaming, validating, confirmed publishing of CSV files.
//!
//! The binary `hpn-producer` (src/main.rs) is a thin command line over these.

pub mod generate;
pub mod publish;

pub use publish::{publish_files, FileSummary, PublishOptions};
