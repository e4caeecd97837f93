//! The error type of the shared library code: one variant per outside
//! party that can fail us, each keeping its cause, and each saying where it
//! came from ([`Origin`]) so that a store failure is never handled, logged or
//! counted as a broker outage, and the other way round. The importer wraps
//! it with its own store errors (`hpn_importer::Error`).

use crate::csv_source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker nacked a publish: it could not take the message then (a
    /// quorum queue without a leader for a moment, a length limit
    /// reached). Sending it again later may succeed.
    #[error("RabbitMQ: the broker {0}")]
    NotConfirmed(String),
    /// The broker returned a publish: nothing is bound to take it. Sending
    /// it again cannot help until the topology changes.
    #[error("RabbitMQ: the broker {0}")]
    Unroutable(String),
    /// The broker closed the channel rather than take a message
    /// (`406 PRECONDITION_FAILED`, most often a body over its
    /// `max_message_size`): the same message would be refused again, so
    /// this is not retried. Holds the broker's own words.
    #[error("RabbitMQ refused a message for good: {0}")]
    MessageRefused(String),
    /// A subscription ended that the consumer had not cancelled: its
    /// channel or connection is gone, or its queue was deleted. Whoever
    /// supervises the consumer reconnects (or, one-shot, fails the run)
    /// instead of taking the end for "done".
    #[error("RabbitMQ: the subscription to {0} ended unasked (channel or connection closed, or the queue deleted)")]
    SubscriptionEnded(String),
    /// The broker did not answer a request within the time it had: its
    /// reply may have been lost (a partition between its nodes), and
    /// waiting on could last for ever. The connection is taken as lost.
    #[error("RabbitMQ did not answer {what} within {after:?}: taking the connection as lost")]
    NoAnswer {
        what: &'static str,
        after: std::time::Duration,
    },
    /// A queue exists with other arguments than we declare: most often one
    /// of the other type. Retrying cannot help; the settings must change.
    #[error(
        "RabbitMQ: queue {queue} exists, but not as the {queue_type} queue we declare (producer, importer \
         and upstream publishers must agree on --queue-type / HPN_QUEUE_TYPE; to change a queue's type, \
         drain and delete it first): {source}"
    )]
    Inequivalent {
        queue: String,
        queue_type: crate::QueueType,
        source: lapin::Error,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("internal task failed: {0}")]
    Task(String),
    /// A setting that can never work (an address malformed, a secret file
    /// unreadable): refused at start, never retried, its secret hidden.
    #[error("settings: {0}")]
    Settings(String),
}

/// Where a failure came from: what an operator has to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// RabbitMQ: unreachable, the connection lost, a publish refused.
    Broker,
    /// MongoDB: unreachable, or refusing a write (the importer's errors).
    Store,
    /// The input: a file that cannot be read as one of the three layouts,
    /// or settings that do not match what the servers hold.
    Input,
    /// This program: a task that panicked or stopped early.
    Internal,
    /// The settings it was started with: wrong before any server was asked.
    Settings,
}

impl Origin {
    /// The exit code a run that failed for this reason ends with (README,
    /// "Exit codes"): a script can tell a wrong setting from a server away.
    pub fn exit_code(self) -> u8 {
        match self {
            Origin::Settings => EXIT_SETTINGS,
            Origin::Store => EXIT_STORE,
            Origin::Broker => EXIT_BROKER,
            Origin::Input | Origin::Internal => EXIT_FAILED,
        }
    }
}

/// Exit codes of a failed run, by where the failure came from.
pub const EXIT_FAILED: u8 = 1;
/// The command line or a setting is wrong (clap's own code for a usage error).
pub const EXIT_SETTINGS: u8 = 2;
/// MongoDB did not answer or refused, past the run's patience.
pub const EXIT_STORE: u8 = 6;
/// RabbitMQ did not answer or refused, past the run's patience.
pub const EXIT_BROKER: u8 = 7;

impl Error {
    /// A broker refusal that trying again cannot mend (see
    /// [`crate::broker::refused_for_good`]): a certificate not trusted, a
    /// login or a permission refused.
    pub fn refused_for_good(&self) -> bool {
        matches!(self, Error::Broker(e) if crate::broker::refused_for_good(e))
    }

    pub fn origin(&self) -> Origin {
        match self {
            Error::Broker(_)
            | Error::NotConfirmed(_)
            | Error::Unroutable(_)
            | Error::MessageRefused(_)
            | Error::SubscriptionEnded(_)
            | Error::NoAnswer { .. } => Origin::Broker,
            Error::Source(_) | Error::Io(_) | Error::Inequivalent { .. } => Origin::Input,
            Error::Task(_) => Origin::Internal,
            Error::Settings(_) => Origin::Settings,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, each cause said once: most of our
/// errors already carry their cause's words (`RabbitMQ: {cause}`), and
/// printing the chain as well would say the same thing three times.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
    }
    line
}

/// What a binary's `main` does with the error that ends it: prints it once
/// to stderr, on one line, and exits with the code of where it came from
/// ([`Origin::exit_code`]; 1 when nothing says).
pub fn exit_with(error: &anyhow::Error, origin: Option<Origin>) -> std::process::ExitCode {
    eprintln!("Error: {}", one_line(error));
    std::process::ExitCode::from(origin.map_or(EXIT_FAILED, Origin::exit_code))
}

/// Where an error of the shared code or of the broker's client, anywhere
/// in `error`'s chain, came from.
pub fn origin_of(error: &anyhow::Error) -> Option<Origin> {
    error.chain().find_map(|cause| {
        (cause.downcast_ref::<Error>().map(Error::origin))
            .or_else(|| cause.is::<lapin::Error>().then_some(Origin::Broker))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_said_again() {
        let io = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let wrapped = anyhow::Error::from(Error::Io(io));
        assert_eq!(one_line(&wrapped), "invalid peer certificate: UnknownIssuer");
        let context = anyhow::anyhow!("disk full").context("writing the rejects file");
        assert_eq!(one_line(&context), "writing the rejects file: disk full");
    }

    #[test]
    fn every_error_names_where_it_came_from() {
        let broker = Error::NotConfirmed("refused a message".into());
        assert_eq!(broker.origin(), Origin::Broker);
        assert!(broker.to_string().starts_with("RabbitMQ"), "{broker}");
        assert_eq!(Error::Task("panicked".into()).origin(), Origin::Internal);
        assert_eq!(Error::Io(std::io::Error::other("gone")).origin(), Origin::Input);
        let settings = Error::Settings("RabbitMQ address h: it has no scheme".into());
        assert_eq!(settings.origin(), Origin::Settings);
        assert!(settings.to_string().starts_with("settings: "), "{settings}");
    }

    #[test]
    fn a_failed_run_exits_with_its_origins_code_apart_from_the_outcome_codes() {
        let failures = [Origin::Settings, Origin::Store, Origin::Broker, Origin::Input].map(Origin::exit_code);
        assert_eq!(failures, [2, 6, 7, 1]);
        // 0 done, 3 and 4 a publish's outcomes, 5 an import not done.
        assert!(failures.iter().all(|code| ![0, 3, 4, 5].contains(code)));
        let error = anyhow::Error::from(Error::Settings("x".into())).context("reading the settings");
        assert_eq!(origin_of(&error), Some(Origin::Settings), "found beneath a context");
    }
}
