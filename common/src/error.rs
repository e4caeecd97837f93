//! The error type of the pipeline's library code: one variant per outside
//! party that can fail us, each keeping its cause.

use crate::csv_source::SourceError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("publisher confirm: the broker {0}")]
    NotConfirmed(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("internal task failed: {0}")]
    Task(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
