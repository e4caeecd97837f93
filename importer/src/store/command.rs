//! Write commands within the server's limits.
//!
//! The guarded updates (and the migration's copies) go out as `update`
//! commands sent with `run_command`, and `run_command` puts every statement
//! inside the command's body: unlike the driver's own `insert_many`, which
//! sends its documents beside the body (an OP_MSG document sequence) and
//! splits them by itself. MongoDB refuses a body over `maxBsonObjectSize`
//! (16 MiB) plus 16 KiB for the command's own fields (`BSONObjectTooLarge`),
//! and a batch of more than `maxWriteBatchSize` statements (100,000). A
//! batch of 2,000 records at the contract's limits (about 100 KB each) is
//! over 16 MiB as statements: a real mongod refuses it whole, and since
//! that is no outage, a collection would stop on it for good. (The local
//! MongoDB-compatible server takes larger bodies: only a test that measures
//! every command sees this.)
//!
//! So [`CommandLimits::split`] cuts a list of statements into runs whose
//! encoded size is at most `maxBsonObjectSize` and whose count is at most
//! `maxWriteBatchSize`, both as the server's `hello` states them; the 16 KiB
//! the server allows beyond it covers the command's other fields (name,
//! `ordered`, `writeConcern`, and what the driver adds: `$db`, `lsid`,
//! `$clusterTime`). A statement over the limit on its own is sent alone,
//! for the server to refuse with its own words.

use super::document::on_key_index;
use super::error::DUPLICATE_KEY;
use super::{durability, Store, StoreError};
use mongodb::bson::{doc, Bson, Document};

/// MongoDB's documented defaults, for a server whose `hello` omits them.
const DEFAULT_MAX_BSON_OBJECT_SIZE: usize = 16 * 1024 * 1024;
const DEFAULT_MAX_WRITE_BATCH_SIZE: usize = 100_000;

/// The two limits a write command must keep, as the server states them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandLimits {
    /// Bytes the statements of one command may take, encoded.
    pub max_bson_object_size: usize,
    /// Statements in one command.
    pub max_write_batch_size: usize,
}

impl Default for CommandLimits {
    fn default() -> Self {
        CommandLimits {
            max_bson_object_size: DEFAULT_MAX_BSON_OBJECT_SIZE,
            max_write_batch_size: DEFAULT_MAX_WRITE_BATCH_SIZE,
        }
    }
}

impl CommandLimits {
    /// The limits out of a `hello` reply (the defaults where it says none).
    pub fn from_hello(hello: &Document) -> CommandLimits {
        let read = |field: &str, default: usize| match hello.get(field) {
            Some(Bson::Int32(n)) if *n > 0 => *n as usize,
            Some(Bson::Int64(n)) if *n > 0 => *n as usize,
            Some(Bson::Double(n)) if *n >= 1.0 => *n as usize,
            _ => default,
        };
        CommandLimits {
            max_bson_object_size: read("maxBsonObjectSize", DEFAULT_MAX_BSON_OBJECT_SIZE),
            max_write_batch_size: read("maxWriteBatchSize", DEFAULT_MAX_WRITE_BATCH_SIZE),
        }
    }

    /// Whether a run of `count` items taking `bytes` is full before one of
    /// `next` bytes: an empty run never is, so an item over the limit on
    /// its own goes alone.
    pub fn full(&self, count: usize, bytes: usize, next: usize) -> bool {
        count > 0 && (bytes + next > self.max_bson_object_size || count >= self.max_write_batch_size)
    }

    /// `statements` cut into runs, in order, each within both limits (see
    /// the module's docs). Each run is returned with the index of its first
    /// statement in `statements`, which the server's reply counts from.
    pub fn split(&self, statements: Vec<Document>) -> Vec<(usize, Vec<Document>)> {
        let mut runs = Vec::new();
        let mut run: Vec<Document> = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, statement) in statements.into_iter().enumerate() {
            // As an element of the `updates` array: a type byte, its index
            // as a decimal string and its terminating zero, then the document.
            let len = encoded_len(&statement);
            let element = |index: usize| 1 + decimal_digits(index) + 1 + len;
            if self.full(run.len(), bytes, element(run.len())) {
                runs.push((start, std::mem::take(&mut run)));
                start = i;
                bytes = 0;
            }
            bytes += element(run.len());
            run.push(statement);
        }
        if !run.is_empty() {
            runs.push((start, run));
        }
        runs
    }
}

/// What the server said of the statements of one [`Store::run_update`],
/// over all the commands it took, indexed as the statements were given.
#[derive(Debug, Default)]
pub struct UpdateReply {
    /// Statements that matched a document or inserted one (`n`).
    pub matched: u64,
    /// Statements that inserted a document (`upserted`).
    pub upserted: u64,
    /// Statements refused, in the order the server listed them.
    pub errors: Vec<StatementError>,
}

/// One refused statement of an [`UpdateReply`].
#[derive(Debug)]
pub struct StatementError {
    /// Index of the statement in the list given to [`Store::run_update`].
    pub index: usize,
    pub code: i32,
    pub message: String,
    /// A duplicate key on the `_id`: a document of the key exists (with an
    /// equal or newer version, for a guarded statement).
    pub key_conflict: bool,
}

impl Store {
    /// Send `statements` on `collection` as `update` commands, unordered,
    /// with the store's write concern (which `run_command` would not add),
    /// each within the server's limits (see the module's docs); a write
    /// concern the server could not satisfy is an error.
    pub(super) async fn run_update(
        &self,
        collection: &str,
        statements: Vec<Document>,
    ) -> Result<UpdateReply, StoreError> {
        let mut reply = UpdateReply::default();
        for (start, run) in self.limits.split(statements) {
            let answer = self
                .db
                .run_command(doc! {
                    "update": collection,
                    "updates": run,
                    "ordered": false,
                    "writeConcern": durability::as_field(&self.write_concern),
                })
                .await?;
            if let Ok(wce) = answer.get_document("writeConcernError") {
                return Err(StoreError::WriteConcern(wce.to_string()));
            }
            reply.matched += number(&answer, "n")?;
            reply.upserted += answer.get_array("upserted").map_or(0, |list| list.len() as u64);
            for error in answer.get_array("writeErrors").into_iter().flatten() {
                let Bson::Document(error) = error else { continue };
                let code = number(error, "code")? as i32;
                let message = error.get_str("errmsg").unwrap_or("").to_string();
                reply.errors.push(StatementError {
                    index: start + number(error, "index")? as usize,
                    code,
                    key_conflict: code == DUPLICATE_KEY
                        && on_key_index(&message, error.get_document("keyPattern").ok()),
                    message,
                });
            }
        }
        Ok(reply)
    }
}

/// Read an integer reply field, whatever width the server chose.
fn number(reply: &Document, field: &'static str) -> Result<u64, StoreError> {
    match reply.get(field) {
        Some(Bson::Int32(n)) => Ok(*n as u64),
        Some(Bson::Int64(n)) => Ok(*n as u64),
        Some(Bson::Double(n)) => Ok(*n as u64),
        _ => Err(StoreError::Reply {
            command: "update",
            field,
            reply: reply.to_string(),
        }),
    }
}

/// Bytes of `document` encoded as BSON.
pub fn encoded_len(document: &Document) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter fails only on a value BSON cannot encode, which
    // the server would refuse anyway: count what was written until then.
    let _ = document.to_writer(&mut counter);
    counter.0
}

/// An `io::Write` that keeps only the number of bytes written.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn decimal_digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(text_bytes: usize) -> Document {
        doc! {"q": {"_id": "K"}, "u": {"$set": {"t": "x".repeat(text_bytes)}}, "upsert": true}
    }

    /// The encoded size of an `updates` array holding `statements`, as the server counts it.
    fn array_len(statements: &[Document]) -> usize {
        let array: Vec<Bson> = statements.iter().cloned().map(Bson::Document).collect();
        encoded_len(&doc! {"updates": array}) - encoded_len(&doc! {"updates": []})
    }

    #[test]
    fn runs_keep_the_byte_limit_and_the_order() {
        let limits = CommandLimits {
            max_bson_object_size: 10_000,
            max_write_batch_size: 100_000,
        };
        let statements: Vec<Document> = (0..50).map(|_| statement(900)).collect();
        let runs = limits.split(statements.clone());
        assert!(runs.len() > 1, "50 statements of about 1 KB do not fit 10,000 bytes");
        let mut next = 0;
        for (start, run) in &runs {
            assert_eq!(*start, next, "runs follow each other");
            assert!(array_len(run) <= limits.max_bson_object_size, "{}", array_len(run));
            next += run.len();
        }
        assert_eq!(next, 50);
        // As full as the limit allows: each run but the last would overflow with one more.
        for pair in runs.windows(2) {
            let mut grown = pair[0].1.clone();
            grown.push(pair[1].1[0].clone());
            assert!(array_len(&grown) > limits.max_bson_object_size);
        }
        let flat: Vec<Document> = runs.into_iter().flat_map(|(_, run)| run).collect();
        assert_eq!(flat, statements);
    }

    #[test]
    fn runs_keep_the_count_limit() {
        let limits = CommandLimits {
            max_bson_object_size: 16 * 1024 * 1024,
            max_write_batch_size: 3,
        };
        let runs = limits.split((0..7).map(|_| statement(1)).collect());
        let shape: Vec<(usize, usize)> = runs.iter().map(|(start, run)| (*start, run.len())).collect();
        assert_eq!(shape, [(0, 3), (3, 3), (6, 1)]);
    }

    #[test]
    fn a_statement_over_the_limit_goes_alone() {
        let limits = CommandLimits {
            max_bson_object_size: 1_000,
            max_write_batch_size: 100,
        };
        let runs = limits.split(vec![statement(10), statement(5_000), statement(10)]);
        let shape: Vec<(usize, usize)> = runs.iter().map(|(start, run)| (*start, run.len())).collect();
        assert_eq!(shape, [(0, 1), (1, 1), (2, 1)]);
        assert!(limits.split(Vec::new()).is_empty());
    }

    #[test]
    fn the_limits_come_from_hello_or_the_documented_defaults() {
        let hello = doc! {"maxBsonObjectSize": 1_000_i32, "maxWriteBatchSize": 7_i64};
        assert_eq!(
            CommandLimits::from_hello(&hello),
            CommandLimits {
                max_bson_object_size: 1_000,
                max_write_batch_size: 7
            }
        );
        assert_eq!(CommandLimits::from_hello(&doc! {}), CommandLimits::default());
        assert_eq!(
            CommandLimits::from_hello(&doc! {"maxBsonObjectSize": -1}),
            CommandLimits::default()
        );
    }

    #[test]
    fn reply_numbers_of_any_width_are_read() {
        let reply = doc! {"a": 1_i32, "b": 2_i64, "c": 3.0_f64, "d": "x"};
        assert_eq!(number(&reply, "a").unwrap(), 1);
        assert_eq!(number(&reply, "b").unwrap(), 2);
        assert_eq!(number(&reply, "c").unwrap(), 3);
        assert!(number(&reply, "d").is_err());
        assert!(number(&reply, "missing").is_err());
    }

    #[test]
    fn the_encoded_length_is_the_bytes_bson_writes() {
        let document = statement(123);
        let mut bytes = Vec::new();
        document.to_writer(&mut bytes).unwrap();
        assert_eq!(encoded_len(&document), bytes.len());
        assert_eq!(decimal_digits(0), 1);
        assert_eq!(decimal_digits(9), 1);
        assert_eq!(decimal_digits(10), 2);
        assert_eq!(decimal_digits(1999), 4);
    }
}
