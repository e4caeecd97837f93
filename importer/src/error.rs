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
    /// A one-shot run that stopped part-way, and what it did: its report,
    /// with nothing known of what is left. Where it came from is its cause's.
    #[error("{cause}")]
    Unfinished {
        cause: Box<Error>,
        report: Box<crate::report::ImportReport>,
    },
    /// Settings that cannot work together or cannot work at all (see
    /// `Config::check`), said before anything connects.
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
            Error::Settings(_) => Origin::Settings,
            Error::Unfinished { cause, .. } => cause.origin(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the error that ends a command came from, whichever of the
/// importer's, the store's or the shared code's errors it is (the exit
/// code follows it: `Origin::exit_code`).
pub fn origin_of(error: &anyhow::Error) -> Option<Origin> {
    let ours = |cause: &(dyn std::error::Error + 'static)| {
        (cause.downcast_ref::<Error>().map(Error::origin))
            .or_else(|| (cause.is::<StoreError>() || cause.is::<mongodb::error::Error>()).then_some(Origin::Store))
    };
    error
        .chain()
        .find_map(ours)
        .or_else(|| hpn_common::error::origin_of(error))
}

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
