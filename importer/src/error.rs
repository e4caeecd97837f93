//! The importer's errors: those of the shared code (broker, input), plus the
//! store's, plus its own. Each says where it came from ([`Origin`]), so a
//! store failure is never handled, logged or counted as a broker outage.

use crate::store::StoreError;
use hpn_common::{Origin, RecordKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Common(#[from] hpn_common::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A writer ended before the consumer feeding it; the writer's own
    /// error says why (callers report that one, not this).
    #[error("the {0} writer stopped")]
    WriterStopped(RecordKind),
    #[error("internal task failed: {0}")]
    Task(String),
    /// Settings that cannot work together (see `Config::check`).
    #[error("settings: {0}")]
    Settings(String),
}

impl From<lapin::Error> for Error {
    fn from(e: lapin::Error) -> Self {
        Error::Common(e.into())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Common(e.into())
    }
}

impl From<hpn_common::csv_source::SourceError> for Error {
    fn from(e: hpn_common::csv_source::SourceError) -> Self {
        Error::Common(e.into())
    }
}

impl Error {
    /// The broker refused us in a way no retry mends (see
    /// `hpn_common::broker::refused_for_good`).
    pub fn broker_refused_for_good(&self) -> bool {
        matches!(self, Error::Common(e) if e.refused_for_good())
    }

    pub fn origin(&self) -> Origin {
        match self {
            Error::Common(e) => e.origin(),
            Error::Store(_) => Origin::Store,
            Error::WriterStopped(_) | Error::Task(_) => Origin::Internal,
            Error::Settings(_) => Origin::Input,
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
        let broker = Error::from(hpn_common::Error::NotConfirmed("refused a message".into()));
        assert_eq!(broker.origin(), Origin::Broker);
        assert!(broker.to_string().starts_with("RabbitMQ"), "{broker}");
        assert_eq!(Error::WriterStopped(RecordKind::Rental).origin(), Origin::Internal);
    }
}
