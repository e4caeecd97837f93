//! What the server must have done before it acknowledges a write, so that
//! the importer may acknowledge the message: the write concern.
//!
//! The importer acknowledges a message once its records are written, and
//! the broker then forgets it: nothing is left to redeliver. So "written"
//! must survive a crash of the database. A real `mongod` answers `w: 1`
//! before the write reaches its journal (synced every 100 ms by default),
//! and a replica set's primary answers before any other member has it; a
//! crash or a fail-over then loses writes that were acknowledged. Unless
//! the connection string says otherwise, every write waits for the journal
//! (`j: true`) and, on a replica set or through `mongos`, for a majority
//! (`w: "majority"`): what MongoDB documents as surviving a crash and an
//! election.
//!
//! The connection string may set its own (`w`, `journal`, `wtimeoutMS`):
//! that is the operator's word and is used as given, on every write path,
//! including the `update` commands sent with `run_command` (which the driver
//! sends with no write concern of its own). `w=0` is refused: an
//! unacknowledged write cannot be followed by an acknowledged message.

use super::StoreError;
use mongodb::bson::Document;
use mongodb::options::{Acknowledgment, WriteConcern};

/// Whether a server that answered `hello` with `hello` is a replica set
/// member or `mongos`.
pub fn replicated(hello: &Document) -> bool {
    hello.get_str("setName").is_ok() || hello.get_str("msg") == Ok("isdbgrid")
}

/// The write concern for a server that answered `hello` with `hello`,
/// given the one the connection string set (if any).
pub fn write_concern(from_uri: Option<WriteConcern>, hello: &Document) -> Result<WriteConcern, StoreError> {
    let replicated = replicated(hello);
    let concern = match from_uri {
        Some(given) if given.w == Some(Acknowledgment::Nodes(0)) => {
            return Err(StoreError::Settings(
                "the MongoDB connection string asks for w=0 (unacknowledged writes); the importer \
                 acknowledges a message only after its records are written, so it needs w=1 or more"
                    .into(),
            ))
        }
        Some(given) if given.w.is_some() || given.journal.is_some() || given.w_timeout.is_some() => given,
        _ => WriteConcern::builder()
            .w(if replicated {
                Acknowledgment::Majority
            } else {
                Acknowledgment::Nodes(1)
            })
            .journal(true)
            .build(),
    };
    if concern.journal == Some(false) {
        tracing::warn!(
            "the MongoDB connection string sets journal=false: a database crash can lose writes whose \
             messages were already acknowledged"
        );
    }
    Ok(concern)
}

/// `concern` as the `writeConcern` field of a command.
pub fn as_field(concern: &WriteConcern) -> Document {
    let mut field = Document::new();
    match &concern.w {
        Some(Acknowledgment::Nodes(n)) => {
            field.insert("w", i64::from(*n));
        }
        Some(Acknowledgment::Majority) => {
            field.insert("w", "majority");
        }
        Some(Acknowledgment::Custom(tag)) => {
            field.insert("w", tag.as_str());
        }
        _ => {}
    }
    if let Some(journal) = concern.journal {
        field.insert("j", journal);
    }
    if let Some(timeout) = concern.w_timeout {
        field.insert("wtimeout", timeout.as_millis() as i64);
    }
    field
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;
    use std::time::Duration;

    #[test]
    fn by_default_journaled_and_majority_where_the_server_is_replicated() {
        let standalone = write_concern(None, &doc! {"isWritablePrimary": true}).unwrap();
        assert_eq!(as_field(&standalone), doc! {"w": 1_i64, "j": true});
        let replica = write_concern(None, &doc! {"setName": "rs0"}).unwrap();
        assert_eq!(as_field(&replica), doc! {"w": "majority", "j": true});
        let mongos = write_concern(None, &doc! {"msg": "isdbgrid"}).unwrap();
        assert_eq!(as_field(&mongos), doc! {"w": "majority", "j": true});
        let empty = WriteConcern::builder().build();
        assert_eq!(
            as_field(&write_concern(Some(empty), &doc! {}).unwrap()),
            doc! {"w": 1_i64, "j": true},
            "a URI that sets nothing gets the default"
        );
    }

    #[test]
    fn the_connection_strings_own_is_kept_and_w0_is_refused() {
        let given = WriteConcern::builder()
            .w(Acknowledgment::Nodes(2))
            .w_timeout(Duration::from_secs(3))
            .build();
        assert_eq!(
            as_field(&write_concern(Some(given), &doc! {"setName": "rs0"}).unwrap()),
            doc! {"w": 2_i64, "wtimeout": 3000_i64}
        );
        let unjournaled = WriteConcern::builder().journal(false).build();
        assert_eq!(
            as_field(&write_concern(Some(unjournaled), &doc! {}).unwrap()),
            doc! {"j": false}
        );
        let w0 = WriteConcern::builder().w(Acknowledgment::Nodes(0)).build();
        assert!(matches!(
            write_concern(Some(w0), &doc! {}),
            Err(StoreError::Settings(_))
        ));
    }
}
