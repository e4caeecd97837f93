//! The producer: turns HP Norton's CSV files into messages on RabbitMQ.
//!
//! - [`generate`]: deterministic sample CSVs in the brief's shape;
//! - [`publish`]: streaming, validating, confirmed publishing of CSV files;
//! - [`delete`]: the deletes of keys, versioned like the records;
//! - `pack`: records into message bodies, bounded in records and bytes;
//! - [`version`]: the version each published record carries, so the store
//!   keeps the newest whatever order the records are delivered in.
//!
//! The command line ([`main`], in `cli`) is in the library so the
//! integration tests can run the very program; `src/main.rs` only calls it.

mod cli;
pub mod delete;
pub mod generate;
mod pack;
pub mod publish;
pub mod version;

pub use cli::main;
pub use publish::{publish_files, FileSummary, Publication, PublishOptions, Refused};
pub use version::VersionClock;
