//! The reader stage of a file's publish: on a blocking thread, rows are
//! read and validated, versioned, packed into message bodies and handed to
//! the publisher task, within a bound in bytes; rejections and duplicate
//! keys are written and reported as they are met.

use crate::pack::{Packed, Packer};
use crate::version::FileVersions;
use hpn_common::csv_source::{CsvSource, Duplicate, DuplicateKeys, RejectsWriter};
use hpn_common::Result;
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tracing::warn;

/// Bytes of message bodies the reader may have handed on and the publisher
/// not yet sent, per file.
pub(super) const IN_HAND_BYTES: usize = 16 << 20;

/// A message on its way to the publisher, and its share of
/// [`IN_HAND_BYTES`], given back once it is sent.
pub(super) type InHand = (Packed, tokio::sync::OwnedSemaphorePermit);

/// The reader's side of the way to the publisher.
pub(super) struct ToPublisher {
    pub(super) tx: mpsc::Sender<InHand>,
    pub(super) bytes: std::sync::Arc<tokio::sync::Semaphore>,
    pub(super) runtime: tokio::runtime::Handle,
}

impl ToPublisher {
    /// Waits for room (in messages and in bytes), then hands `packed` on;
    /// `Err` when the publisher has stopped.
    fn send(&self, packed: Packed) -> std::result::Result<(), ()> {
        // A body larger than the whole allowance takes all of it.
        let share = packed.body.len().clamp(1, IN_HAND_BYTES) as u32;
        let permit = self
            .runtime
            .block_on(self.bytes.clone().acquire_many_owned(share))
            .map_err(|_| ())?;
        self.tx.blocking_send((packed, permit)).map_err(|_| ())
    }
}

/// What the reader stage did with one file.
pub(super) struct ReadSummary {
    pub(super) rejected: u64,
    pub(super) duplicate_keys: u64,
    pub(super) rejects_file: Option<PathBuf>,
    pub(super) versions: Option<(i64, i64)>,
}

/// The reader stage: runs on a blocking thread, versions valid records,
/// packs them into message bodies (see [`crate::pack`]) and hands those on,
/// and writes rejections as it meets them.
pub(super) fn read_rows(
    mut source: CsvSource,
    versions: Option<FileVersions>,
    mut packer: Packer,
    skip_through: u64,
    rejects_path: PathBuf,
    tx: ToPublisher,
    bar: ProgressBar,
) -> Result<ReadSummary> {
    let mut rejects = RejectsWriter::new(&rejects_path, source.header());
    let mut duplicates = Duplicates::new(versions.is_some());
    let mut first_and_last: Option<(i64, i64)> = None;
    let mut rows = 0u64;
    let mut read_to_the_end = true;
    while let Some(row) = source.next() {
        if let Ok(row) = &row {
            duplicates.see(row)?;
        }
        match row {
            // Confirmed on an earlier connection: read again, not sent again.
            Ok(row) if row.line <= skip_through => {}
            Ok(row) => {
                let mut record = row.record;
                if let Some(versions) = &versions {
                    let version = versions.version(row.line);
                    first_and_last = Some((first_and_last.map_or(version, |(first, _)| first), version));
                    record.set_version(Some(version));
                }
                let closed = {
                    let _stage = tracing::debug_span!(target: "stage", "encode").entered();
                    packer.push(&record, row.line)
                };
                if let Some(full) = closed {
                    if tx.send(full).is_err() {
                        // The publisher stopped on an error; it reports it.
                        read_to_the_end = false;
                        break;
                    }
                }
            }
            Err(rejection) => {
                warn!("{rejection} (row kept in {})", rejects_path.display());
                rejects.write(&rejection)?;
            }
        }
        rows += 1;
        if rows.is_multiple_of(4096) {
            bar.set_position(source.byte_position());
        }
    }
    if let Some(last) = packer.finish() {
        let _ = tx.send(last);
    }
    bar.set_position(bar.length().unwrap_or(0));
    // Only a pass that read the whole file reports (a resumed file is read
    // again from the start, and reported then).
    let duplicate_keys = if read_to_the_end {
        duplicates.finish(&source)?
    } else {
        0
    };
    Ok(ReadSummary {
        rejected: rejects.count(),
        duplicate_keys,
        rejects_file: rejects.finish()?,
        versions: first_and_last,
    })
}

/// Reports rows whose key an earlier row of the same file had, once the
/// file has been read (the keys are sorted outside memory; see
/// [`DuplicateKeys`]): the first [`Self::SHOWN`] by line, then the count.
struct Duplicates {
    keys: DuplicateKeys,
    /// Whether records carry versions (then the later line wins for sure).
    versioned: bool,
}

impl Duplicates {
    /// Warnings per file, after which only the count is reported.
    const SHOWN: usize = 20;

    fn new(versioned: bool) -> Self {
        Duplicates {
            keys: DuplicateKeys::new(),
            versioned,
        }
    }

    fn see(&mut self, row: &hpn_common::csv_source::SourceRow) -> Result<()> {
        Ok(self.keys.see(&row.record, row.line)?)
    }

    /// Report what `source` held; returns how many rows repeated a key.
    /// The keys are read again from the file for the rows reported.
    fn finish(self, source: &CsvSource) -> Result<u64> {
        let file = source.file();
        // The earliest lines, kept in a heap of SHOWN whose top is the latest.
        let mut first = std::collections::BinaryHeap::new();
        let Duplicates { keys, versioned } = self;
        let count = keys.finish(|duplicate| {
            first.push(ByLine(duplicate));
            if first.len() > Self::SHOWN {
                first.pop();
            }
        })?;
        let shown: Vec<Duplicate> = first.into_sorted_vec().into_iter().map(|ByLine(d)| d).collect();
        let lines: Vec<u64> = shown.iter().map(|d| d.line).collect();
        let keys = match lines.is_empty() {
            true => Vec::new(),
            false => source.reopen()?.keys_on(&lines),
        };
        for duplicate in &shown {
            let key = keys
                .iter()
                .find(|(line, _)| *line == duplicate.line)
                .map(|(_, key)| key.as_str());
            warn!("{}", describe(file, duplicate, key, versioned));
        }
        if count > Self::SHOWN as u64 {
            warn!(
                "{}: {count} rows repeat an earlier row's key in all (the first {} shown above)",
                file.display(),
                Self::SHOWN
            );
        }
        Ok(count)
    }
}

/// One duplicate, for a person: both lines, the key, and which one wins.
fn describe(file: &Path, duplicate: &Duplicate, key: Option<&str>, versioned: bool) -> String {
    let Duplicate { earlier, line } = duplicate;
    // The file changed under us if the key is not there any more.
    let key = key.unwrap_or("its key");
    let verdict = if versioned {
        format!("line {line} wins (a later line gets a higher version)")
    } else {
        "published without versions, so the order of arrival decides which is kept".to_string()
    };
    format!(
        "{}:{line}: the same key as line {earlier} ({key}); {verdict}",
        file.display()
    )
}

/// Orders duplicates by their line.
struct ByLine(Duplicate);

impl PartialEq for ByLine {
    fn eq(&self, other: &Self) -> bool {
        self.0.line == other.0.line
    }
}
impl Eq for ByLine {}
impl PartialOrd for ByLine {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByLine {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.line.cmp(&other.0.line)
    }
}
