//! Streaming CSV reading: one row at a time, each either a validated
//! [`Record`] or a [`Rejection`] that names the file, the line and the reason.
//!
//! The reader never holds more than one row, so a file of any size reads in
//! constant memory. A bad row never stops the file: it becomes a rejection
//! and reading goes on with the next line. Only a file that cannot be used
//! at all is refused whole, with one plain sentence ([`SourceError`]): it
//! cannot be opened, it is empty, it is not text, it is not CSV, or its
//! header is none of the layouts the [`Mapping`] knows.
//!
//! Control characters: inside a quoted field a line break (and a tab) is
//! data, as in any spreadsheet's export, and text fields keep it; any other
//! control character is refused (see `record.rs`). Ids never take either.

use crate::mapping::{abbreviate, Layout, Mapping};
use crate::record::{Record, RecordKind};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

/// A row that could not be turned into a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub file: PathBuf,
    /// 1-based line number where the row starts.
    pub line: u64,
    pub reason: String,
    /// The row's fields as read, for the rejects file.
    pub raw: Vec<String>,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// A row that became a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRow {
    /// 1-based line number where the row starts.
    pub line: u64,
    pub record: Record,
}

/// The file as a whole cannot be read: one sentence a person can act on,
/// never the file's bytes.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{file}: cannot open: {source}")]
    Open { file: PathBuf, source: io::Error },
    #[error("{file}: the file is empty")]
    Empty { file: PathBuf },
    #[error("{file}: not a UTF-8 text file (it holds binary data or text in another encoding)")]
    NotText { file: PathBuf },
    #[error("{file}: not a CSV file ({why})")]
    NotCsv { file: PathBuf, why: String },
    #[error("{file}: cannot read the header: {source}")]
    Header { file: PathBuf, source: csv::Error },
    #[error("{file}: header {} {why}", abbreviate(found))]
    UnknownHeader {
        file: PathBuf,
        found: Vec<String>,
        why: String,
    },
    #[error("{file}: header {} does not match the {kind} columns {expected:?}", abbreviate(found), expected = kind.columns())]
    WrongHeader {
        file: PathBuf,
        kind: RecordKind,
        found: Vec<String>,
    },
}

impl SourceError {
    /// The file refused.
    pub fn file(&self) -> &Path {
        match self {
            SourceError::Open { file, .. }
            | SourceError::Empty { file }
            | SourceError::NotText { file }
            | SourceError::NotCsv { file, .. }
            | SourceError::Header { file, .. }
            | SourceError::UnknownHeader { file, .. }
            | SourceError::WrongHeader { file, .. } => file,
        }
    }
}

/// How much of a file is looked at to tell text from binary.
const SNIFF_BYTES: usize = 8192;

/// An open CSV file of one record kind, read row by row.
pub struct CsvSource {
    file: PathBuf,
    /// What the file was opened with, to open it again ([`CsvSource::reopen`]).
    mapping: Mapping,
    layout: Layout,
    reader: csv::Reader<MarkBlankLines<BufReader<File>>>,
    row: csv::ByteRecord,
}

impl CsvSource {
    /// Open a file in one of the brief's layouts, its kind taken from the header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SourceError> {
        Self::open_with(path, &Mapping::brief())
    }

    /// Open a file that must hold records of `kind`, in the brief's layout.
    pub fn open_as(path: impl AsRef<Path>, kind: RecordKind) -> Result<Self, SourceError> {
        let source = Self::open(path.as_ref());
        match source {
            Ok(source) if source.kind() == kind => Ok(source),
            Ok(source) => Err(SourceError::WrongHeader {
                file: source.file,
                kind,
                found: source.layout.header().to_vec(),
            }),
            Err(SourceError::UnknownHeader { file, found, .. }) => Err(SourceError::WrongHeader { file, kind, found }),
            Err(e) => Err(e),
        }
    }

    /// Open a file in any layout `mapping` knows (see [`Mapping::layout_for`]).
    pub fn open_with(path: impl AsRef<Path>, mapping: &Mapping) -> Result<Self, SourceError> {
        let path = path.as_ref();
        let file = path.to_path_buf();
        let open_error = |source| SourceError::Open {
            file: file.clone(),
            source,
        };
        let mut handle = File::open(path).map_err(open_error)?;
        sniff(&mut handle, path)?;
        handle.rewind().map_err(open_error)?;
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .has_headers(false)
            .from_reader(MarkBlankLines::new(BufReader::with_capacity(1 << 16, handle)));
        // The header is the first line that is not blank.
        let mut row = csv::ByteRecord::new();
        loop {
            let more = reader
                .read_byte_record(&mut row)
                .map_err(|source| SourceError::Header {
                    file: file.clone(),
                    source,
                })?;
            if !more {
                return Err(SourceError::Empty { file });
            }
            if !is_blank(&row) {
                break;
            }
        }
        if row.iter().any(|h| std::str::from_utf8(h).is_err()) {
            return Err(SourceError::NotText { file });
        }
        let header: Vec<String> = row
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim_start_matches('\u{feff}')
                    .trim()
                    .to_string()
            })
            .collect();
        if let Some(why) = not_csv(&header) {
            return Err(SourceError::NotCsv { file, why });
        }
        let layout = mapping
            .layout_for(path, &header)
            .map_err(|e| SourceError::UnknownHeader {
                file: file.clone(),
                why: e.explain(mapping),
                found: header,
            })?;
        Ok(CsvSource {
            file,
            mapping: mapping.clone(),
            layout,
            reader,
            row,
        })
    }

    /// The same file from its first row again.
    pub fn reopen(&self) -> Result<Self, SourceError> {
        Self::open_with(&self.file, &self.mapping)
    }

    pub fn kind(&self) -> RecordKind {
        self.layout.kind()
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The file's header as read.
    pub fn header(&self) -> &[String] {
        self.layout.header()
    }

    /// Roughly how far into the file the reader is, in bytes (for progress).
    pub fn byte_position(&self) -> u64 {
        self.reader.position().byte()
    }

    /// The keys of the valid rows on `lines` (sorted), as a person reads
    /// them (`user_id C1`; `product_id P1, user_id C1`), reading the file
    /// from here only as far as the last of them.
    pub fn keys_on(self, lines: &[u64]) -> Vec<(u64, String)> {
        let Some(&last) = lines.last() else {
            return Vec::new();
        };
        self.filter_map(Result::ok)
            .take_while(|row| row.line <= last)
            .filter(|row| lines.binary_search(&row.line).is_ok())
            .map(|row| (row.line, row.record.describe_key()))
            .collect()
    }

    fn reject(&self, line: u64, reason: impl Into<String>) -> Rejection {
        Rejection {
            file: self.file.clone(),
            line,
            reason: reason.into(),
            raw: self
                .row
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect(),
        }
    }

    fn parse_row(&self, line: u64) -> Result<SourceRow, Rejection> {
        let record = self.layout.record(&self.row).map_err(|e| self.reject(line, e.0))?;
        Ok(SourceRow { line, record })
    }
}

/// Why a first line is no CSV header, if it is not: every layout has two
/// columns or more, and no column name starts like JSON or markup.
fn not_csv(header: &[String]) -> Option<String> {
    let first = header.first().map(String::as_str).unwrap_or("");
    if first.starts_with(['{', '[']) {
        return Some("it looks like JSON".into());
    }
    if first.starts_with('<') {
        return Some("it looks like XML or HTML".into());
    }
    if header.len() == 1 {
        return Some(format!("its first line has no commas: {}", abbreviate(header)));
    }
    None
}

/// Refuse, in one sentence, a file that is not text: a NUL byte in its
/// first block (binary data, or UTF-16). Text that is not UTF-8 is caught
/// in the header (the whole file is refused) or in a row (that row is).
fn sniff(handle: &mut File, path: &Path) -> Result<(), SourceError> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    handle
        .by_ref()
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|source| SourceError::Open {
            file: path.to_path_buf(),
            source,
        })?;
    if head.contains(&0) {
        return Err(SourceError::NotText {
            file: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Finds the same key on two lines of one file, so the producer can say so
/// (both lines, and which wins) rather than leave it to show up as an
/// "updated" count.
///
/// Memory must not grow with the file (the producer's bound is 32 MiB at a
/// million rows a file), so the keys are sorted outside memory: each row
/// adds 16 bytes (a 64-bit hash of its key, its line) to an external sort
/// that keeps [`DuplicateKeys::SEGMENT`] entries (1 MiB) in memory and
/// spills sorted runs to temporary files; at the end of the file the runs
/// are merged in hash order, and equal hashes next to each other are the
/// duplicates. A file of up to a segment's rows never touches the disk.
/// Two different keys with one hash would be reported as one; at a million
/// keys the odds are about one in 30 million. The keys themselves are not
/// kept: a report that names them reads them again from the file (see
/// [`CsvSource::keys_on`]).
pub struct DuplicateKeys {
    sorter: extsort::PushExternalSorter<Seen, fn(&Seen, &Seen) -> std::cmp::Ordering>,
}

/// A row whose key an earlier row of the file had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// The line that had the key last before this one.
    pub earlier: u64,
    pub line: u64,
}

impl DuplicateKeys {
    /// Entries held in memory before a sorted run is written out.
    pub const SEGMENT: usize = 1 << 16;

    pub fn new() -> Self {
        fn by_hash_then_line(a: &Seen, b: &Seen) -> std::cmp::Ordering {
            (a.hash, a.line).cmp(&(b.hash, b.line))
        }
        let compare: fn(&Seen, &Seen) -> std::cmp::Ordering = by_hash_then_line;
        DuplicateKeys {
            sorter: extsort::ExternalSorter::new()
                .with_segment_size(Self::SEGMENT)
                .pushed_by(compare),
        }
    }

    /// Note `record`, read on `line`.
    pub fn see(&mut self, record: &Record, line: u64) -> io::Result<()> {
        use std::hash::Hasher;
        // SipHash with fixed keys: the same key always gives the same hash.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        record.hash_key(&mut hasher);
        self.sorter
            .push(Seen {
                hash: hasher.finish(),
                line,
            })
            .map_err(sort_error)
    }

    /// Every duplicate, handed to `each` in no particular order; returns
    /// how many there were.
    pub fn finish(self, mut each: impl FnMut(Duplicate)) -> io::Result<u64> {
        let mut count = 0;
        let mut previous: Option<Seen> = None;
        for seen in self.sorter.done().map_err(sort_error)? {
            let seen = seen?;
            if let Some(before) = previous.as_ref().filter(|p| p.hash == seen.hash) {
                count += 1;
                each(Duplicate {
                    earlier: before.line,
                    line: seen.line,
                });
            }
            previous = Some(seen);
        }
        Ok(count)
    }
}

impl Default for DuplicateKeys {
    fn default() -> Self {
        DuplicateKeys::new()
    }
}

fn sort_error(error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("sorting the keys of the file: {error}"))
}

/// One row's key in [`DuplicateKeys`]' external sort.
struct Seen {
    hash: u64,
    line: u64,
}

impl extsort::Sortable for Seen {
    fn encode<W: io::Write>(&self, writer: &mut W) -> io::Result<()> {
        writer.write_all(&self.hash.to_le_bytes())?;
        writer.write_all(&self.line.to_le_bytes())
    }

    fn decode<R: io::Read>(reader: &mut R) -> io::Result<Self> {
        let mut word = [0u8; 8];
        reader.read_exact(&mut word)?;
        let hash = u64::from_le_bytes(word);
        reader.read_exact(&mut word)?;
        let line = u64::from_le_bytes(word);
        Ok(Seen { hash, line })
    }
}

impl Iterator for CsvSource {
    type Item = Result<SourceRow, Rejection>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut row = std::mem::take(&mut self.row);
            let read = {
                let _stage = tracing::debug_span!(target: "stage", "csv_parse").entered();
                self.reader.read_byte_record(&mut row)
            };
            self.row = row;
            let line = self.row.position().map(|p| p.line()).unwrap_or(0);
            return match read {
                Ok(false) => None,
                // A blank line is not a row (see `MarkBlankLines`); skip it.
                Ok(true) if is_blank(&self.row) => continue,
                Ok(true) => {
                    let _stage = tracing::debug_span!(target: "stage", "validate").entered();
                    Some(self.parse_row(line))
                }
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(line);
                    match e.kind() {
                        csv::ErrorKind::Io(_) => Some(Err(self.reject(line, format!("read error: {e}")))),
                        _ => Some(Err(self.reject(line, format!("malformed CSV: {e}")))),
                    }
                }
            };
        }
    }
}

fn is_blank(row: &csv::ByteRecord) -> bool {
    row.len() == 1 && row[0].is_empty()
}

/// Keeps the parser's line numbers exact.
///
/// The `csv` crate skips blank lines, but the position it reports for the
/// next record is where the skipped lines began; and after a CRLF it counts
/// the LF against the next record. Either way the rows that follow would be
/// reported on the wrong line. So, outside quoted fields, this reader turns
/// CRLF into LF and puts one space on every blank line: a line holding one
/// space is a record of one empty field (after trimming), which
/// [`CsvSource`] skips itself. Quote state is tracked (a doubled quote
/// toggles twice), so quoted fields pass through untouched.
struct MarkBlankLines<R> {
    inner: R,
    out: Vec<u8>,
    at: usize,
    in_quotes: bool,
    at_line_start: bool,
    /// A CR outside quotes, held back until we know whether LF follows.
    held_cr: bool,
    eof: bool,
}

impl<R: io::Read> MarkBlankLines<R> {
    fn new(inner: R) -> Self {
        MarkBlankLines {
            inner,
            out: Vec::with_capacity(1 << 16),
            at: 0,
            in_quotes: false,
            at_line_start: true,
            held_cr: false,
            eof: false,
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        let mut raw = [0u8; 1 << 15];
        self.out.clear();
        self.at = 0;
        while self.out.is_empty() && !self.eof {
            let n = self.inner.read(&mut raw)?;
            if n == 0 {
                self.eof = true;
                if std::mem::take(&mut self.held_cr) {
                    self.out.push(b'\r');
                }
            }
            for &b in &raw[..n] {
                self.push(b);
            }
        }
        Ok(())
    }

    fn push(&mut self, b: u8) {
        if std::mem::take(&mut self.held_cr) && b != b'\n' {
            // A lone CR: pass it on as it was.
            self.out.push(b'\r');
            self.at_line_start = true;
        }
        if self.in_quotes {
            if b == b'"' {
                self.in_quotes = false;
            }
            self.out.push(b);
            return;
        }
        match b {
            b'\r' => self.held_cr = true,
            b'\n' => {
                if self.at_line_start {
                    self.out.push(b' ');
                }
                self.out.push(b'\n');
                self.at_line_start = true;
            }
            _ => {
                if b == b'"' {
                    self.in_quotes = true;
                }
                self.at_line_start = false;
                self.out.push(b);
            }
        }
    }
}

impl<R: io::Read> io::Read for MarkBlankLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.out.len() {
            self.refill()?;
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Writes rejected rows to a CSV a person can open, fix and load again:
/// the line number and reason first, then the row as it was read.
pub struct RejectsWriter {
    path: PathBuf,
    writer: Option<csv::Writer<File>>,
    /// The source file's header: rows are kept in its layout.
    header: Vec<String>,
    count: u64,
}

impl RejectsWriter {
    /// Rows of a file with this `header` (see [`CsvSource::header`]).
    /// Nothing is created until the first rejection arrives.
    pub fn new(path: impl Into<PathBuf>, header: &[String]) -> Self {
        RejectsWriter {
            path: path.into(),
            writer: None,
            header: header.to_vec(),
            count: 0,
        }
    }

    /// The conventional place for the rejects of `source`: beside it, as
    /// `<stem>.rejects.csv`, or in `dir` when one is given.
    pub fn path_for(source: &Path, dir: Option<&Path>) -> PathBuf {
        let stem = source
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = dir
            .map(Path::to_path_buf)
            .or_else(|| source.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        dir.join(format!("{stem}.rejects.csv"))
    }

    pub fn write(&mut self, rejection: &Rejection) -> io::Result<()> {
        if self.writer.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut w = csv::WriterBuilder::new().flexible(true).from_path(&self.path)?;
            let mut header = vec!["line", "reason"];
            header.extend(self.header.iter().map(String::as_str));
            w.write_record(&header)?;
            self.writer = Some(w);
        }
        let w = self.writer.as_mut().expect("opened above");
        let line = rejection.line.to_string();
        let mut row: Vec<&str> = vec![&line, &rejection.reason];
        row.extend(rejection.raw.iter().map(String::as_str));
        // Pad short rows so the file stays rectangular for spreadsheets;
        // a row with extra fields keeps them.
        let width = 2 + self.header.len();
        if row.len() < width {
            row.resize(width, "");
        }
        w.write_record(&row)?;
        self.count += 1;
        Ok(())
    }

    /// Flush to disk; returns the file written, if any row was rejected.
    pub fn finish(mut self) -> io::Result<Option<PathBuf>> {
        match self.writer.take() {
            Some(mut w) => {
                w.flush()?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Rental;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        path
    }

    #[test]
    fn reads_good_rows_and_rejects_bad_ones_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "products.csv",
            "product_id,description,product_type,quantity_available\n\
             P1,Sofa,livingroom,3\n\
             P2,Lamp,livingroom,-1\n\
             \n\
             P3,Bed,bedroom\n\
             P4, Desk ,office,0\n",
        );
        let source = CsvSource::open(&path).unwrap();
        assert_eq!(source.kind(), RecordKind::Product);
        let rows: Vec<_> = source.collect();
        assert_eq!(rows.len(), 4, "{rows:?}");
        let good: Vec<_> = rows.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(good.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 6]);
        assert!(matches!(&good[1].record, Record::Product(p) if p.description == "Desk"));
        let bad: Vec<_> = rows.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(bad[0].line, 3);
        assert!(bad[0].reason.contains("quantity_available"), "{}", bad[0].reason);
        assert_eq!(bad[1].line, 5);
        assert!(bad[1].reason.contains("expected 4 fields"), "{}", bad[1].reason);
        assert!(bad[1].to_string().starts_with(&format!("{}:5:", path.display())));
    }

    #[test]
    fn line_numbers_stay_exact_around_blank_lines_crlf_and_quoted_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "rentals.csv",
            "\nproduct_id,user_id\r\nP1,C1\r\n\r\n\r\nP2,C2\n\"P\n\n3\",C3\nP4,C4\n\n",
        );
        let rows: Vec<_> = CsvSource::open(&path).unwrap().map(|r| r.map(|r| r.line)).collect();
        assert_eq!(rows[0], Ok(3));
        assert_eq!(rows[1], Ok(6));
        // "P\n\n3" has a space in its id, so it is rejected, on the line it starts.
        assert_eq!(rows[2].as_ref().unwrap_err().line, 7);
        assert_eq!(rows[2].as_ref().unwrap_err().raw[0], "P\n\n3");
        assert_eq!(rows[3], Ok(10));
        assert_eq!(rows.len(), 4);
    }

    #[test]
    fn columns_may_come_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "r.csv", "user_id,product_id\nC1,P1\n");
        let rows: Vec<_> = CsvSource::open(&path).unwrap().collect();
        assert_eq!(
            rows[0].as_ref().unwrap().record,
            Record::Rental(Rental {
                product_id: "P1".into(),
                user_id: "C1".into(),
                extra: Default::default(),
                version: None,
            })
        );
    }

    #[test]
    fn unknown_or_mismatched_header_fails_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "x.csv", "id,name\n1,a\n");
        assert!(matches!(CsvSource::open(&path), Err(SourceError::UnknownHeader { .. })));
        let path = write(&dir, "y.csv", "user_id,product_id\n");
        assert!(matches!(
            CsvSource::open_as(&path, RecordKind::Customer),
            Err(SourceError::WrongHeader { .. })
        ));
        assert!(matches!(
            CsvSource::open(dir.path().join("missing.csv")),
            Err(SourceError::Open { .. })
        ));
    }

    #[test]
    fn a_quoted_line_break_is_kept_as_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "customers.csv",
            "user_id,name,address,zip_code,phone_number,email\n\
             C1,Ann,\"Flat 2\r\n12 High St\",98101,555,ann@example.com\n\
             C2,Bo,\"1 Main\u{7}St\",98101,555,bo@example.com\n",
        );
        let rows: Vec<_> = CsvSource::open(&path).unwrap().collect();
        let Ok(SourceRow {
            line: 2,
            record: Record::Customer(ann),
        }) = &rows[0]
        else {
            panic!("{rows:?}")
        };
        assert_eq!(ann.address, "Flat 2\r\n12 High St");
        let bell = rows[1].as_ref().unwrap_err();
        assert_eq!(bell.line, 4, "the row after a two-line field is numbered right");
        assert!(bell.reason.contains("control character '\\u{7}'"), "{}", bell.reason);
    }

    #[test]
    fn empty_binary_and_non_csv_files_get_one_plain_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(&dir, "customers.csv", "");
        let blank = write(&dir, "products.csv", "\n  \r\n\n");
        let json = write(&dir, "rentals.csv", "{\"product_id\": \"P1\", \"user_id\": \"C1\"}\n");
        let prose = write(&dir, "notes.csv", "Dear team\tplease load these\u{1b}[31m\n");
        let latin1 = dir.path().join("latin1.csv");
        std::fs::write(&latin1, b"user_id,nom\xe9\n").unwrap();
        let binary = dir.path().join("photo.csv");
        let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        bytes.extend((0..=255u8).cycle().take(20_000));
        std::fs::write(&binary, &bytes).unwrap();
        let utf16 = dir.path().join("utf16.csv");
        std::fs::write(&utf16, b"\xff\xfeu\0s\0e\0r\0").unwrap();
        for (path, expected) in [
            (&empty, "the file is empty"),
            (&blank, "the file is empty"),
            (&json, "not a CSV file (it looks like JSON)"),
            (
                &prose,
                "its first line has no commas: \"Dear team\\tplease load these\\u{1b}[31m\"",
            ),
            (&latin1, "not a UTF-8 text file"),
            (&binary, "not a UTF-8 text file"),
            (&utf16, "not a UTF-8 text file"),
        ] {
            let err = CsvSource::open(path).err().expect("refused");
            let text = err.to_string();
            assert!(text.contains(expected), "{text}");
            assert!(text.starts_with(&path.display().to_string()), "{text}");
            assert!(text.len() < 300, "one sentence, not a dump: {text}");
            assert!(!text.chars().any(|c| c.is_control()), "{text:?}");
            assert_eq!(err.file(), path.as_path());
        }
        // A header alone is a file with no rows, not a refusal.
        let header_only = write(&dir, "header.csv", "product_id,user_id");
        assert_eq!(CsvSource::open(&header_only).unwrap().count(), 0);
    }

    #[test]
    fn keys_seen_twice_are_found_with_both_lines_even_past_memory() {
        let rental = |p: &str, u: &str| Record::Rental(Rental::new(p, u));
        let mut seen = DuplicateKeys::new();
        // More rows than one segment holds, so runs are written and merged.
        let rows = 2 * DuplicateKeys::SEGMENT as u64 + 10;
        for line in 2..rows {
            seen.see(&rental("P1", &format!("C{line}")), line).unwrap();
        }
        seen.see(&rental("P1", "C5"), rows).unwrap();
        seen.see(&rental("P1", "C5"), rows + 1).unwrap();
        seen.see(&rental("P2", "C5"), rows + 2).unwrap();
        let mut found = Vec::new();
        let count = seen.finish(|d| found.push(d)).unwrap();
        found.sort_by_key(|d| d.line);
        assert_eq!(count, 2);
        assert_eq!(
            found,
            vec![
                Duplicate { earlier: 5, line: rows },
                Duplicate {
                    earlier: rows,
                    line: rows + 1
                },
            ],
            "each repeat names the last line before it"
        );
    }

    #[test]
    fn the_keys_of_given_lines_are_read_again_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "rentals.csv", "product_id,user_id\nP1,C1\nP1,C 2\nP2,C2\nP1,C1\n");
        let mut source = CsvSource::open(&path).unwrap();
        assert_eq!(source.by_ref().count(), 4);
        let keys = source.reopen().unwrap().keys_on(&[2, 4]);
        assert_eq!(
            keys,
            vec![
                (2, "product_id P1, user_id C1".to_string()),
                (4, "product_id P2, user_id C2".to_string())
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_a_rejection_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rentals.csv");
        std::fs::write(&path, b"product_id,user_id\nP1,C\xff1\nP2,C2\n").unwrap();
        let rows: Vec<_> = CsvSource::open(&path).unwrap().collect();
        assert!(rows[0].as_ref().unwrap_err().reason.contains("UTF-8"));
        assert!(rows[1].is_ok());
    }

    #[test]
    fn rejects_file_is_created_only_when_needed_and_keeps_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("customers.csv");
        let path = RejectsWriter::path_for(&source, None);
        assert_eq!(path, dir.path().join("customers.rejects.csv"));
        let header: Vec<String> = RecordKind::Customer.columns().iter().map(|c| c.to_string()).collect();
        let empty = RejectsWriter::new(&path, &header);
        assert_eq!(empty.finish().unwrap(), None);
        assert!(!path.exists());

        let mut w = RejectsWriter::new(&path, &header);
        w.write(&Rejection {
            file: source.clone(),
            line: 7,
            reason: "email: \"x\" is not an email address".into(),
            raw: vec!["C7".into(), "Bo".into(), "".into(), "".into(), "".into(), "x".into()],
        })
        .unwrap();
        w.write(&Rejection {
            file: source.clone(),
            line: 8,
            reason: "expected 6 fields".into(),
            raw: vec!["C8".into(), "Cy".into()],
        })
        .unwrap();
        assert_eq!(w.count(), 2);
        assert_eq!(w.finish().unwrap(), Some(path.clone()));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "line,reason,user_id,name,address,zip_code,phone_number,email"
        );
        assert_eq!(
            lines.next().unwrap(),
            "7,\"email: \"\"x\"\" is not an email address\",C7,Bo,,,,x"
        );
    }
}
