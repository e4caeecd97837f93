//! Publishing CSV files to RabbitMQ.
//!
//! Each file runs as a small pipeline of two stages joined by a bounded
//! channel, so reading and publishing overlap and memory stays flat whatever
//! the file size:
//!
//! ```text
//!  reader thread: CSV row ─► validate ─► version ─► pack N rows ─► (bounded channel) ─►
//!  publisher task: encode ─► basic.publish (persistent, mandatory) ─► confirm window ─► done
//!                    rejected rows ─► <file>.rejects.csv + a warning with file and line
//! ```
//!
//! Publisher confirms are how we know the broker has taken responsibility
//! for a message (written it to disk for a durable queue); up to
//! `confirm_window` publishes are in flight (see `hpn_common::publisher`).
//! A nack or an unroutable return fails the file: the run reports it rather
//! than claiming rows it cannot vouch for.
//! Files are published concurrently, one channel each.
//!
//! A file is read in the layout the [`Mapping`] finds for its header (the
//! brief's, or a table of `--mapping`). A file that cannot be read at all
//! (empty, not text, not CSV, an unknown header) is refused whole before
//! anything is sent, and the others are published all the same: the
//! [`Publication`] lists both. The same key on two lines of one file is
//! reported with both lines and which one wins.
//!
//! When the connection is lost mid-file (the broker node went down), the
//! producer connects again, to the first address of `HPN_AMQP_URL` that
//! answers, and resumes each unfinished file after its last row the broker
//! confirmed (files are read again from the start, and the rows already
//! confirmed skipped). Messages in flight at the loss may have reached the
//! queue unconfirmed and are sent again: delivery is at least once, and the
//! importer's keyed, versioned writes make the copies harmless. A nack is
//! resumed the same way (a quorum queue nacks publishes while it elects a
//! new leader); an unroutable message or a queue of the other type fails the
//! run at once. The rows sent again keep the versions their lines had (a
//! version is its file's stamp and its line); the file's summary lists each
//! connection's first and last version (`version_passes`).
//!
//! Every record gets a version from its file's place in the publish and the
//! line it was read on (see [`crate::version`]), so whatever order the
//! importer's consumers write in, the store ends with the last line of each
//! key of the last file that has it, of the newest publish.

mod read;

use crate::pack::Packer;
use crate::version::{FileVersions, PublishVersions, VersionClock};
use hpn_common::csv_source::{CsvSource, RejectsWriter, SourceError};
use hpn_common::message::{self, Origin};
use hpn_common::publisher::ConfirmedPublisher;
use hpn_common::retry::RetryPolicy;
use hpn_common::{broker, BrokerSettings, Error, Mapping, RecordKind, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lapin::Connection;
use read::{read_rows, InHand, ReadSummary, ToPublisher, IN_HAND_BYTES};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn, Instrument};

/// Records per message unless told otherwise. Packing rows moves the
/// bottleneck from the broker's per-message work back to the database
/// (measured by `hpn-bench`: about 10,000 confirmed messages/s here against
/// hundreds of thousands of records/s at 100 per message).
pub const DEFAULT_ROWS_PER_MESSAGE: usize = 100;

/// Publishes awaiting their confirm, per file, unless told otherwise.
pub const DEFAULT_CONFIRM_WINDOW: usize = 1024;

/// How the producer publishes.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// Records packed into one message (1: one JSON object per message).
    pub rows_per_message: usize,
    /// Bytes of body one message may hold at most (see `pack`);
    /// a message closes before the record that would pass it.
    pub max_message_bytes: usize,
    /// Publishes awaiting their confirm at most, per file.
    pub confirm_window: usize,
    /// Where rejects files go (default: beside each input file).
    pub rejects_dir: Option<PathBuf>,
    /// Draw progress bars on stderr (only when it is a terminal).
    pub progress: bool,
    /// Where the stamps of record versions come from; `None` publishes the
    /// records without versions (the importer then applies them in arrival
    /// order; for comparison only).
    pub version_clock: Option<VersionClock>,
    /// The layouts files may come in (default: the brief's alone).
    pub mapping: Mapping,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            rows_per_message: DEFAULT_ROWS_PER_MESSAGE,
            max_message_bytes: hpn_common::message::DEFAULT_MAX_MESSAGE_BYTES,
            confirm_window: DEFAULT_CONFIRM_WINDOW,
            rejects_dir: None,
            progress: false,
            version_clock: Some(VersionClock::new(VersionClock::default_path())),
            mapping: Mapping::brief(),
        }
    }
}

/// What publishing one file did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileSummary {
    pub file: PathBuf,
    pub kind: RecordKind,
    /// Records published and confirmed by the broker.
    pub published: u64,
    pub messages: u64,
    /// Rows refused by validation, written to `rejects_file`.
    pub rejected: u64,
    pub rejects_file: Option<PathBuf>,
    /// Rows whose key an earlier row of the file had (each reported with
    /// both lines): the later row wins.
    pub duplicate_keys: u64,
    /// The versions given to the first and last record published (none for
    /// a file without valid rows), over every connection it took.
    pub versions: Option<(i64, i64)>,
    /// Each connection's first and last version given, in order: after a
    /// reconnect, the rest of the file is sent again with the versions its
    /// lines had, so the passes' ranges follow on (or overlap, for the rows
    /// in flight at the loss).
    pub version_passes: Vec<(i64, i64)>,
    /// Connections lost while publishing it, each resumed after the last
    /// confirmed row (see the module documentation).
    pub resumed: u32,
    #[serde(with = "hpn_common::seconds", rename = "seconds")]
    pub elapsed: Duration,
}

/// A file refused whole, and why (one sentence, without the file's name).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Refused {
    pub file: PathBuf,
    pub reason: String,
}

impl From<SourceError> for Refused {
    fn from(error: SourceError) -> Self {
        let file = error.file().to_path_buf();
        let text = error.to_string();
        let reason = text
            .strip_prefix(&format!("{}: ", file.display()))
            .unwrap_or(&text)
            .to_string();
        Refused { file, reason }
    }
}

/// What publishing a set of files did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Publication {
    /// One summary per file published, in the order given.
    pub published: Vec<FileSummary>,
    /// The files refused whole; nothing of them was sent.
    pub refused: Vec<Refused>,
}

/// The CSV files to publish: the files given, and the `*.csv` files of the
/// directories given (rejects files excluded), customers before products
/// before rentals (by file name, singular or plural).
pub fn collect_inputs(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    name.ends_with(".csv") && !name.ends_with(".rejects.csv")
                })
                .collect();
            found.sort_by_key(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let rank = RecordKind::from_file_name(p)
                    .and_then(|kind| RecordKind::ALL.iter().position(|k| *k == kind))
                    .unwrap_or(RecordKind::ALL.len());
                (rank, name)
            });
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Publish every file, concurrently: one summary per file published, in
/// the order given, and the files refused. Every file is opened (and its
/// header checked) before anything is sent; a refused file does not stop
/// the others. A lost connection is survived as the module documentation
/// says.
pub async fn publish_files(
    settings: &BrokerSettings,
    files: &[PathBuf],
    options: &PublishOptions,
) -> Result<Publication> {
    let mut refused = Vec::new();
    let mut accepted = Vec::new();
    for file in files {
        match CsvSource::open_with(file, &options.mapping) {
            Ok(_) => accepted.push(file.clone()),
            Err(e) => {
                warn!("{e}; the file is refused, the others are published");
                refused.push(Refused::from(e));
            }
        }
    }
    if accepted.is_empty() {
        return Ok(Publication {
            published: Vec::new(),
            refused,
        });
    }
    let files = accepted.as_slice();
    // One step of the clock for the whole publish: the files' versions in
    // the order given, whatever order their threads take them in.
    let versions = options
        .version_clock
        .as_ref()
        .map(|clock| PublishVersions::reserve(clock, files.len()));
    let bars = MultiProgress::with_draw_target(if options.progress && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let mut done: Vec<Option<FileSummary>> = vec![None; files.len()];
    let mut confirmed = vec![Confirmed::default(); files.len()];
    let mut attempt = 0;
    let mut first_failure = None;
    loop {
        let failing_over = attempt > 0;
        let pass = Pass {
            settings,
            options,
            versions,
            bars: &bars,
        };
        match pass.publish(files, &mut done, &mut confirmed, failing_over).await {
            Ok(()) => break,
            Err((error, lost)) => {
                let failing_for = first_failure.get_or_insert_with(std::time::Instant::now).elapsed();
                if !(lost && RetryPolicy::FAILOVER.may_retry(attempt, failing_for)) {
                    return Err(error);
                }
                let wait = RetryPolicy::FAILOVER.backoff(attempt);
                warn!(
                    "{error}; connecting again in {wait:?} and resuming each unfinished file after its last \
                     confirmed row"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
    Ok(Publication {
        published: done.into_iter().map(|s| s.expect("every file published")).collect(),
        refused,
    })
}

/// How far into a file the broker has confirmed, over every connection so far.
#[derive(Clone, Debug, Default)]
struct Confirmed {
    /// The source line of the last record confirmed (0: none yet).
    through_line: u64,
    records: u64,
    messages: u64,
    /// Connections that were lost before the file was done.
    lost: u32,
    /// The first and last version each connection gave.
    versions: Vec<(i64, i64)>,
}

/// What every connection's pass of a publish shares.
struct Pass<'a> {
    settings: &'a BrokerSettings,
    options: &'a PublishOptions,
    /// The publish's stamps (none without versions).
    versions: Option<PublishVersions>,
    bars: &'a MultiProgress,
}

impl Pass<'_> {
    /// One connection's worth of publishing: the files not done yet,
    /// concurrently. On failure, says whether it was the connection that was
    /// lost (worth connecting again) rather than a refusal. Reaching no broker
    /// at all is worth retrying only when `failing_over` from a lost one.
    async fn publish(
        &self,
        files: &[PathBuf],
        done: &mut [Option<FileSummary>],
        confirmed: &mut [Confirmed],
        failing_over: bool,
    ) -> std::result::Result<(), (Error, bool)> {
        let settings = self.settings;
        let connection = broker::connect(&settings.amqp_url, "hpn-producer")
            .await
            .map_err(|e| (e.into(), failing_over))?;
        // A connection that drops while the topology is declared (its node
        // shutting down or pausing: tests/tests/partition.rs) is lost like
        // one that drops while publishing; a declaration the broker refuses
        // (a queue of the other type) is a channel-level (soft) AMQP error
        // and closes a channel, not the connection. The error is read, not
        // only the connection's state: lapin fails the pending declaration
        // with the socket's error before it marks the connection broken
        // (seen: "Connection reset by peer" with the state still connected,
        // and the publish stopped with exit 7).
        if let Err(e) = settings.topology().declare_if_allowed(&connection).await {
            let refused = match &e {
                Error::Inequivalent { .. } => true,
                Error::Broker(b) => b.is_amqp_soft_error(),
                _ => false,
            };
            let lost = !refused || !connection.status().connected();
            return Err((e, lost));
        }
        let tasks = files
            .iter()
            .enumerate()
            .zip(confirmed.iter_mut())
            .zip(done.iter())
            .filter(|(_, summary)| summary.is_none())
            .map(|(((index, file), confirmed), _)| {
                let versions = self.versions.map(|publish| publish.file(index));
                publish_file(
                    &connection,
                    settings,
                    file,
                    self.options,
                    versions,
                    self.bars,
                    confirmed,
                )
            });
        let outcomes = futures::future::join_all(tasks).await;
        let pending = done.iter_mut().filter(|s| s.is_none());
        let mut first_error = None;
        for (slot, outcome) in pending.zip(outcomes) {
            match outcome {
                Ok(summary) => *slot = Some(summary),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Close only a connection that still works (see `broker::close`).
        if first_error.is_none() {
            broker::close(&connection, "done").await;
        }
        match first_error {
            None => Ok(()),
            Some(error) => {
                // A nack is the broker not taking a message for now (during a
                // node's shutdown, a quorum queue nacks until its new leader is
                // elected): resumed like a lost connection. A returned message
                // (unroutable), a message the broker refused for good (over its
                // max_message_size) or a queue of the other type is not.
                let lost = matches!(error, Error::Broker(_) | Error::NotConfirmed(_));
                Err((error, lost))
            }
        }
    }
}

/// Publish one file on `connection`, after the rows `confirmed` covers
/// (all of it the first time); `confirmed` follows the broker's confirms.
async fn publish_file(
    connection: &Connection,
    settings: &BrokerSettings,
    file: &Path,
    options: &PublishOptions,
    versions: Option<FileVersions>,
    bars: &MultiProgress,
    confirmed: &mut Confirmed,
) -> Result<FileSummary> {
    let started = Instant::now();
    let source = CsvSource::open_with(file, &options.mapping)?;
    let kind = source.kind();
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let bar = bars.add(ProgressBar::new(size));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {percent:>3}% {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(kind.collection());

    let mut publisher = ConfirmedPublisher::open(connection, options.confirm_window).await?;

    // Enough messages in hand to keep the publisher busy, no more: 64, and
    // IN_HAND_BYTES of bodies (a message can be as large as
    // max_message_bytes: 64 of 4 MiB would be 256 MiB).
    let (tx, mut rx) = mpsc::channel::<InHand>(64);
    let rejects_path = RejectsWriter::path_for(file, options.rejects_dir.as_deref());
    let packer = Packer::new(options.rows_per_message, options.max_message_bytes);
    let reader_bar = bar.clone();
    let skip_through = confirmed.through_line;
    let reader = tokio::task::spawn_blocking(move || {
        let to_publisher = ToPublisher {
            tx,
            bytes: std::sync::Arc::new(tokio::sync::Semaphore::new(IN_HAND_BYTES)),
            runtime: tokio::runtime::Handle::current(),
        };
        read_rows(
            source,
            versions,
            packer,
            skip_through,
            rejects_path,
            to_publisher,
            reader_bar,
        )
    });

    let origin_file = file.display().to_string();
    let exchange = settings.topology().exchange();
    let mut in_flight = InFlight::default();
    let publishing = async {
        while let Some((chunk, _bytes_in_hand)) = rx.recv().await {
            let origin = Origin {
                file: origin_file.clone(),
                line: chunk.line,
            };
            let properties = message::properties(kind, Some(&origin));
            in_flight.sent.push_back((chunk.last_line, chunk.records));
            let sent = publisher
                .publish(&exchange, kind.as_str(), &chunk.body, properties)
                .instrument(tracing::debug_span!(target: "stage", "publish"))
                .await;
            in_flight.settle(publisher.confirmed(), confirmed);
            sent?;
            if confirmed.messages.is_multiple_of(256) {
                let rate = confirmed.records as f64 / started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{} rows, {rate:.0} rows/s", confirmed.records));
            }
        }
        let flushed = publisher.flush().await;
        in_flight.settle(publisher.confirmed(), confirmed);
        flushed?;
        publisher.close().await
    };
    let published = publishing.await;
    if published.is_err() {
        confirmed.lost += 1;
    }
    // The reader stops once nobody takes its chunks; wait for it either
    // way, so that a resumed pass never writes the rejects file beside it.
    drop(rx);
    let read = reader.await.map_err(|e| Error::Io(std::io::Error::other(e)))?;
    if let Ok(ReadSummary {
        versions: Some(given), ..
    }) = &read
    {
        confirmed.versions.push(*given);
    }
    published?;
    let read = read?;
    let rejected = read.rejected;
    let elapsed = started.elapsed();
    let (records, messages, lost) = (confirmed.records, confirmed.messages, confirmed.lost);
    bar.finish_with_message(format!(
        "{records} rows in {:.2}s, {rejected} rejected",
        elapsed.as_secs_f64()
    ));
    info!(file = %file.display(), %kind, published = records, messages, rejected, seconds = elapsed.as_secs_f64(), "file published");
    Ok(FileSummary {
        file: file.to_path_buf(),
        kind,
        published: records,
        messages,
        rejected,
        rejects_file: read.rejects_file,
        versions: confirmed
            .versions
            .first()
            .zip(confirmed.versions.last())
            .map(|((first, _), (_, last))| (*first, *last)),
        version_passes: confirmed.versions.clone(),
        duplicate_keys: read.duplicate_keys,
        resumed: lost,
        elapsed,
    })
}

/// The messages one connection has sent whose confirms are not counted
/// in [`Confirmed`] yet: their last lines and sizes, oldest first.
#[derive(Default)]
struct InFlight {
    sent: VecDeque<(u64, u64)>,
    /// Of this connection's messages, how many are counted.
    settled: u64,
}

impl InFlight {
    /// The publisher has seen the first `now` confirms of this connection:
    /// count those not counted yet.
    fn settle(&mut self, now: u64, confirmed: &mut Confirmed) {
        while self.settled < now {
            let Some((last_line, records)) = self.sent.pop_front() else {
                break;
            };
            confirmed.through_line = last_line;
            confirmed.records += records;
            confirmed.messages += 1;
            self.settled += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_confirmed_messages_move_the_resume_point() {
        let mut confirmed = Confirmed::default();
        let mut in_flight = InFlight::default();
        for (last_line, records) in [(101, 100), (201, 100), (251, 50)] {
            in_flight.sent.push_back((last_line, records));
        }
        in_flight.settle(2, &mut confirmed);
        assert_eq!(
            (confirmed.through_line, confirmed.records, confirmed.messages),
            (201, 200, 2)
        );
        in_flight.settle(2, &mut confirmed);
        assert_eq!(confirmed.records, 200, "the same confirms are not counted twice");
        in_flight.settle(3, &mut confirmed);
        assert_eq!((confirmed.through_line, confirmed.records), (251, 250));
    }

    #[test]
    fn directories_expand_to_their_csv_files_in_brief_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "rentals.csv",
            "zz.csv",
            "products.csv",
            "customers.csv",
            "customers.rejects.csv",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let extra = dir.path().join("notes.txt");
        let files = collect_inputs(&[dir.path().to_path_buf(), extra.clone()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["customers.csv", "products.csv", "rentals.csv", "zz.csv", "notes.txt"]
        );
    }
}
