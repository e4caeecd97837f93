//! The version `hpn-producer` gives every record it publishes.
//!
//! The store keeps the highest version of each key (see
//! `hpn_common::record::replaces`), so a version must say which of two
//! records of one key is the newer. Ours orders:
//! - the lines of one file in file order (a later line of the same key wins,
//!   as it would in a linear load of the file);
//! - the files of one `publish` in the order given (a directory's files in
//!   name order): a later file's lines win over an earlier file's, as in a
//!   linear load of the files one after the other;
//! - a later `publish` after an earlier one, including one by another
//!   producer process on the same machine.
//!
//! A version is `stamp << 22 | offset`. A publish takes its stamps in one
//! step ([`PublishVersions`]): a block of [`STAMPS_PER_FILE`] consecutive
//! stamps per file, from a small state file shared by every producer on the
//! machine ([`VersionClock`]): under an exclusive lock it takes
//! `max(milliseconds since 2025-01-01, last stamp + 1)` as the first and
//! writes back the last, so stamps strictly increase even when two
//! producers start in the same millisecond or the clock steps back (a
//! publish runs the clock about a second per file ahead of the wall
//! clock). A record's version is a function of its file's block and its
//! line alone ([`FileVersions::version`]: the line's high bits pick the
//! stamp of the block, its low 22 bits are the offset), so a file resumed
//! after a lost connection sends its rest with the versions it would have
//! had: a publish that started in between still wins. 41 bits of
//! milliseconds last until 2094 within a signed 64-bit integer, the type
//! MongoDB stores.
//!
//! Across machines the stamp is only as good as their clocks, which is why
//! the message contract asks upstream systems for a version from their own
//! change sequence instead (`docs/message-format.md`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bits of a version that hold the line offset.
pub const LINE_BITS: u32 = 22;
/// Stamps each file of a publish owns: lines up to 2^32 (4,294,967,296)
/// keep their order; lines beyond share the block's last stamp.
pub const STAMPS_PER_FILE: i64 = 1 << 10;
/// Milliseconds from the Unix epoch to 2025-01-01T00:00:00Z, where stamps start.
pub const EPOCH_MS: i64 = 1_735_689_600_000;

/// Stamps issued by this process, so they increase even without a state file.
static LAST_STAMP: AtomicI64 = AtomicI64::new(0);

/// Hands out strictly increasing stamps, shared through a state file by
/// every producer on the machine.
#[derive(Clone, Debug)]
pub struct VersionClock {
    path: PathBuf,
}

impl VersionClock {
    pub fn new(path: impl Into<PathBuf>) -> VersionClock {
        VersionClock { path: path.into() }
    }

    /// `$XDG_STATE_HOME/hpnorton/version-clock`, else
    /// `~/.local/state/hpnorton/version-clock`, else one in the temp dir.
    pub fn default_path() -> PathBuf {
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir);
        state.join("hpnorton").join("version-clock")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A stamp greater than every stamp this clock's file has handed out.
    /// Fails only if the state file cannot be created, locked or written.
    pub fn stamp(&self) -> io::Result<i64> {
        self.reserve(1)
    }

    /// The first of `count` consecutive stamps, each greater than every
    /// stamp this clock's file has handed out; the file keeps the last.
    pub fn reserve(&self, count: i64) -> io::Result<i64> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        // Released when `file` is closed at the end of this call.
        file.lock()?;
        let last = read_stamp(&mut file)?;
        let first = next_stamp(last.max(LAST_STAMP.load(Ordering::Acquire)));
        let final_stamp = first + count.max(1) - 1;
        file.seek(SeekFrom::Start(0))?;
        file.set_len(0)?;
        writeln!(file, "{final_stamp}")?;
        file.sync_data()?;
        LAST_STAMP.fetch_max(final_stamp, Ordering::AcqRel);
        Ok(first)
    }

    /// [`VersionClock::reserve`] from this process's memory alone, when the
    /// state file cannot be used: still increasing within the process, and
    /// across processes as far as the clock and millisecond resolution allow.
    pub fn reserve_without_file(count: i64) -> i64 {
        let mut last = LAST_STAMP.load(Ordering::Acquire);
        loop {
            let first = next_stamp(last);
            match LAST_STAMP.compare_exchange(last, first + count.max(1) - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return first,
                Err(seen) => last = seen,
            }
        }
    }
}

fn read_stamp(file: &mut File) -> io::Result<i64> {
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    text.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("version clock holds {text:?}, not a number"),
        )
    })
}

fn next_stamp(last: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    (now - EPOCH_MS).max(last + 1)
}

/// The stamps of one publish: a block of [`STAMPS_PER_FILE`] per file, the
/// files' blocks in the order the files were given.
#[derive(Clone, Copy, Debug)]
pub struct PublishVersions {
    first: i64,
}

impl PublishVersions {
    /// Take the stamps for a publish of `files` files in one step. If the
    /// clock's file cannot be used, says so once and stamps from memory.
    pub fn reserve(clock: &VersionClock, files: usize) -> PublishVersions {
        let count = STAMPS_PER_FILE * files.max(1) as i64;
        let first = clock.reserve(count).unwrap_or_else(|e| {
            tracing::warn!(
                path = %clock.path().display(),
                "version clock unusable ({e}); versions come from this process's clock alone, \
                 so a publish from another process in the same millisecond may not order after this one"
            );
            VersionClock::reserve_without_file(count)
        });
        PublishVersions { first }
    }

    /// The versions of the publish's file number `index` (from 0, in the
    /// order given).
    pub fn file(&self, index: usize) -> FileVersions {
        FileVersions {
            first_stamp: self.first + STAMPS_PER_FILE * index as i64,
        }
    }
}

/// The versions of one file's records, in file order.
#[derive(Clone, Copy, Debug)]
pub struct FileVersions {
    first_stamp: i64,
}

impl FileVersions {
    /// The version of the record on `line`: the same whenever it is asked.
    pub fn version(&self, line: u64) -> i64 {
        let step = ((line >> LINE_BITS) as i64).min(STAMPS_PER_FILE - 1);
        let offset = line & ((1 << LINE_BITS) - 1);
        ((self.first_stamp + step) << LINE_BITS) | offset as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(dir: &tempfile::TempDir) -> VersionClock {
        VersionClock::new(dir.path().join("state").join("version-clock"))
    }

    #[test]
    fn lines_of_one_file_are_versioned_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let versions = PublishVersions::reserve(&clock(&dir), 1).file(0);
        let seen: Vec<i64> = [2, 3, 7, 8, 1000].into_iter().map(|l| versions.version(l)).collect();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(seen[1] - seen[0], 1, "adjacent lines, adjacent versions");
        assert_eq!(
            versions.version(7),
            seen[2],
            "a line's version is the same when asked again"
        );
    }

    #[test]
    fn a_later_file_of_a_publish_and_a_later_publish_order_after_every_line_before() {
        let dir = tempfile::tempdir().unwrap();
        let publish = PublishVersions::reserve(&clock(&dir), 3);
        let last_line = (1u64 << 32) - 1;
        for file in 0..2 {
            assert!(publish.file(file + 1).version(1) > publish.file(file).version(last_line));
        }
        // A new clock on the same file, as another process would have.
        let next = PublishVersions::reserve(&clock(&dir), 1);
        assert!(next.file(0).version(1) > publish.file(2).version(last_line));
    }

    #[test]
    fn a_file_longer_than_the_offset_field_keeps_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let versions = PublishVersions::reserve(&clock(&dir), 1).file(0);
        let before = versions.version((1 << LINE_BITS) - 1);
        let after = versions.version(1 << LINE_BITS);
        let next = versions.version((1 << LINE_BITS) + 1);
        assert!(before < after && after < next, "{before} {after} {next}");
    }

    #[test]
    fn producers_at_once_never_share_a_stamp_and_each_sees_them_rise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("version-clock");
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let clock = VersionClock::new(&path);
                std::thread::spawn(move || (0..40).map(|_| clock.stamp().unwrap()).collect::<Vec<i64>>())
            })
            .collect();
        let mut all = Vec::new();
        for thread in threads {
            let stamps = thread.join().unwrap();
            assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
            all.extend(stamps);
        }
        let issued = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), issued, "every stamp unique");
        let on_file: i64 = std::fs::read_to_string(&path).unwrap().trim().parse().unwrap();
        assert_eq!(on_file, *all.last().unwrap(), "the file holds the highest stamp");
    }

    #[test]
    fn stamps_are_milliseconds_since_2025_and_fit_with_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let stamp = clock(&dir).stamp().unwrap();
        // After 2026-01-01 and far below the 41 bits that fit.
        assert!(stamp > 365 * 24 * 3600 * 1000, "{stamp}");
        assert!(stamp < 1 << (63 - LINE_BITS));
        let broken = dir.path().join("broken");
        std::fs::write(&broken, "not a number").unwrap();
        assert!(VersionClock::new(&broken).stamp().is_err());
    }
}
