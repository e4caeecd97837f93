//! The error type of the pipeline's library code: one variant per outside
//! party that can fail us, each keeping its cause, and each saying where it
//! came from ([`Origin`]) so that a store failure is never handled, logged or
//! counted as a broker outage, and the other way round.

use crate::csv_source::SourceError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("RabbitMQ: the broker {0}")]
    NotConfirmed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A writer ended before the consumer feeding it; the writer's own
    /// error says why (callers report that one, not this).
    #[error("the {0} writer stopped")]
    WriterStopped(crate::RecordKind),
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Where a failure came from: what an operator has to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// RabbitMQ: unreachable, the connection lost, a publish refused.
    Broker,
    /// MongoDB: unreachable, or refusing a write.
    Store,
    /// The input: a file that cannot be read as one of the three layouts.
    Input,
    /// This program: a task that panicked or stopped early.
    Internal,
}

impl Error {
    pub fn origin(&self) -> Origin {
        match self {
            Error::Broker(_) | Error::NotConfirmed(_) => Origin::Broker,
            Error::Store(_) => Origin::Store,
            Error::Source(_) | Error::Io(_) => Origin::Input,
            Error::WriterStopped(_) | Error::Task(_) => Origin::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_names_where_it_came_from() {
        let store = Error::Store(StoreError::WriteConcern("not enough members".into()));
        assert_eq!(store.origin(), Origin::Store);
        assert!(store.to_string().starts_with("MongoDB"), "{store}");
        let broker = Error::NotConfirmed("refused a message".into());
        assert_eq!(broker.origin(), Origin::Broker);
        assert!(broker.to_string().starts_with("RabbitMQ"), "{broker}");
        assert_eq!(
            Error::WriterStopped(crate::RecordKind::Rental).origin(),
            Origin::Internal
        );
    }
}
