//! Whether a store error is the store's or a record's, and whether trying
//! again may mend it: what the writers decide on (retry, hold, dead-letter)
//! and what the operator reads.

use mongodb::error::{Error as MongoError, ErrorKind};

/// MongoDB's duplicate-key error code (the "E11000" in its messages).
pub const DUPLICATE_KEY: i32 = 11000;

/// Server error codes that mean "try again": the operation did not fail on
/// its merits (the same list the driver retries reads on, plus time-outs
/// and write conflicts).
const TRANSIENT_CODES: [i32; 16] = [
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50, 134, 64, 112,
];

/// Per-record write error codes that mean "this record is unfit": it is
/// refused on its merits and goes to the dead-letter queue. A per-record
/// error with another code may be the record's (a geo index that cannot
/// read its field, say) or the store's (a view, no permission, a full disk):
/// [`Store::whose_refusal`] finds out, so that one odd record can never hold
/// a collection, and a store that refuses writes never loses records to the
/// dead-letter queue.
pub(super) const RECORD_REFUSALS: [i32; 9] = [
    DUPLICATE_KEY, // on a unique index other than the `_id` (the business key)
    121,           // DocumentValidationFailure
    10334,         // BSONObjectTooLarge
    17419,         // document too large after the update
    2,             // BadValue
    52,            // DollarPrefixedFieldName
    55,            // InvalidDBRef
    57,            // DottedFieldName
    66,            // ImmutableField
];

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The driver's error, in `describe`'s words (not also as the
    /// error's source: its own text repeats what they say, at length).
    #[error("MongoDB: {}", describe(.0))]
    Mongo(MongoError),
    #[error("MongoDB replied to {command} without {field}: {reply}")]
    Reply {
        command: &'static str,
        field: &'static str,
        reply: String,
    },
    #[error("MongoDB write concern not satisfied: {0}")]
    WriteConcern(String),
    /// The store refused a write as such, not the record in it.
    #[error("MongoDB refused the write (code {code}): {message}")]
    Refused { code: i32, message: String },
    /// The connection string asks for something the importer cannot work with.
    #[error("MongoDB settings: {0}")]
    Settings(String),
    /// Records whose key other writers kept changing under their guarded
    /// statements, past the retries: the batch fails, to be tried again.
    #[error(
        "MongoDB: {records} record(s) of {collection} met keys that other writers kept changing; \
         the batch is tried again"
    )]
    Contended { collection: &'static str, records: usize },
    /// A one-shot run retried an outage for as long as it may (its store
    /// patience) and stops: the last error says what the server said.
    #[error(
        "MongoDB did not answer or take writes for {:.0} s, the run's patience (--store-patience-ms); \
         the records not written stay in their queue. Last error: {last}",
        after.as_secs_f64()
    )]
    GaveUp {
        after: std::time::Duration,
        last: Box<StoreError>,
    },
    /// The store holds a collection of the shape before the business key
    /// became the `_id`; nothing is written to it until it is migrated.
    #[error(
        "MongoDB: the {collection} collection is of the old shape ({why}); \
         stop every importer and run `hpn-importer migrate` (docs/migration.md)"
    )]
    OldShape { collection: &'static str, why: String },
}

impl From<MongoError> for StoreError {
    fn from(error: MongoError) -> Self {
        StoreError::Mongo(error)
    }
}

impl StoreError {
    /// Whether the server refused us in a way no retry mends: its
    /// certificate not trusted or not for this host, ours refused, the
    /// login or the user's rights refused. (`is_transient` may still say
    /// yes to these: the driver reports a failed handshake as a server it
    /// could not select.)
    pub fn refused_for_good(&self) -> bool {
        match self {
            StoreError::Mongo(e) => {
                matches!(e.kind.as_ref(), ErrorKind::Authentication { .. })
                    || matches!(e.kind.as_ref(), ErrorKind::Command(c) if [13, 18].contains(&c.code))
                    || [
                        "certificate",
                        "CertificateRequired",
                        "HandshakeFailure",
                        "tls handshake",
                    ]
                    .iter()
                    .any(|needle| e.to_string().contains(needle))
            }
            StoreError::Refused { code, .. } => [13, 18].contains(code),
            _ => false,
        }
    }

    /// Whether trying again later may succeed: the server was unreachable,
    /// stepping down or too busy, not that the request was wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Mongo(e) => is_transient(e),
            StoreError::WriteConcern(_) | StoreError::Contended { .. } => true,
            StoreError::Refused { code, .. } => TRANSIENT_CODES.contains(code),
            StoreError::Reply { .. }
            | StoreError::OldShape { .. }
            | StoreError::Settings(_)
            | StoreError::GaveUp { .. } => false,
        }
    }
}

/// A driver error in a person's words: the server's code, its name and its
/// message, without the raw reply the driver's own text carries.
fn describe(error: &MongoError) -> String {
    match error.kind.as_ref() {
        ErrorKind::Command(c) => format!("code {} ({}): {}", c.code, c.code_name, c.message),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => {
            format!("code {}: {}", w.code, w.message)
        }
        ErrorKind::ServerSelection { message, .. } => match server_errors(message) {
            Some(servers) => format!("no server could be used ({servers})"),
            None => message.clone(),
        },
        other => other.to_string(),
    }
}

/// Each server's own error out of the driver's server-selection text
/// (`… Servers: [ { Address: h:p, Type: Unknown, Error: Kind: <why>, labels: … } ] }`):
/// what the operator needs, without the topology dump around it.
fn server_errors(message: &str) -> Option<String> {
    let servers: Vec<String> = message
        .split("{ Address: ")
        .skip(1)
        .filter_map(|server| {
            let address = server.split(',').next()?;
            let why = server.split_once("Error: Kind: ")?.1;
            let why = why.split(", labels:").next()?;
            Some(format!("{address}: {why}"))
        })
        .collect();
    (!servers.is_empty()).then(|| servers.join("; "))
}

#[cfg(test)]
#[test]
fn a_server_selection_failure_says_each_servers_own_error() {
    let driver = "Server selection timeout: No available servers. Topology: { Type: Single, Servers: [ { Address: \
                  localhost:27018, Type: Unknown, Error: Kind: I/O error: invalid peer certificate: UnknownIssuer, \
                  labels: {\"RetryableError\"}, source: None, server response: None } ] }";
    assert_eq!(
        server_errors(driver).as_deref(),
        Some("localhost:27018: I/O error: invalid peer certificate: UnknownIssuer")
    );
    assert_eq!(server_errors("Server selection timeout: No available servers."), None);
}

/// Whether a driver error is worth retrying.
pub fn is_transient(error: &MongoError) -> bool {
    if error.contains_label("RetryableWriteError") || error.contains_label("RetryableError") {
        return true;
    }
    match error.kind.as_ref() {
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } | ErrorKind::ServerSelection { .. } => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        _ => false,
    }
}
