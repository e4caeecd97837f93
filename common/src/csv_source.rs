//! Streaming CSV reading: one row at a time, each either a validated
//! [`Record`] or a [`Rejection`] that names the file, the line and the reason.
//!
//! The reader never holds more than one row, so a file of any size reads in
//! constant memory. A bad row never stops the file: it becomes a rejection
//! and reading goes on with the next line. Only a file that cannot be opened,
//! or whose header is not one of the three the brief defines, fails as a whole.

use crate::record::{Customer, Product, Record, RecordKind, Rental};
use std::fs::File;
use std::io::{self, BufReader};
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

/// The file as a whole cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{file}: cannot open: {source}")]
    Open { file: PathBuf, source: io::Error },
    #[error("{file}: cannot read the header: {source}")]
    Header { file: PathBuf, source: csv::Error },
    #[error(
        "{file}: header {found:?} is not one of the known layouts \
         (customers: {customers:?}; products: {products:?}; rentals: {rentals:?})",
        customers = RecordKind::Customer.columns(),
        products = RecordKind::Product.columns(),
        rentals = RecordKind::Rental.columns()
    )]
    UnknownHeader { file: PathBuf, found: Vec<String> },
    #[error("{file}: header {found:?} does not match the {kind} columns {expected:?}", expected = kind.columns())]
    WrongHeader {
        file: PathBuf,
        kind: RecordKind,
        found: Vec<String>,
    },
}

/// An open CSV file of one record kind, read row by row.
pub struct CsvSource {
    file: PathBuf,
    kind: RecordKind,
    reader: csv::Reader<MarkBlankLines<BufReader<File>>>,
    /// For each of the kind's columns (in brief order), its index in the file.
    positions: Vec<usize>,
    row: csv::ByteRecord,
}

impl CsvSource {
    /// Open a file and work out its kind from the header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SourceError> {
        Self::open_inner(path.as_ref(), None)
    }

    /// Open a file that must hold records of `kind`.
    pub fn open_as(path: impl AsRef<Path>, kind: RecordKind) -> Result<Self, SourceError> {
        Self::open_inner(path.as_ref(), Some(kind))
    }

    fn open_inner(path: &Path, expected: Option<RecordKind>) -> Result<Self, SourceError> {
        let file = path.to_path_buf();
        let handle = File::open(path).map_err(|source| SourceError::Open {
            file: file.clone(),
            source,
        })?;
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
            if !more || !is_blank(&row) {
                break;
            }
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
        let kind = match (expected, RecordKind::from_header(&header)) {
            (Some(want), Some(found)) if want == found => want,
            (None, Some(found)) => found,
            (Some(kind), _) => {
                return Err(SourceError::WrongHeader {
                    file,
                    kind,
                    found: header,
                })
            }
            (None, None) => return Err(SourceError::UnknownHeader { file, found: header }),
        };
        let positions = kind
            .columns()
            .iter()
            .map(|col| header.iter().position(|h| h == col).expect("header matched the kind"))
            .collect();
        Ok(CsvSource {
            file,
            kind,
            reader,
            positions,
            row,
        })
    }

    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Roughly how far into the file the reader is, in bytes (for progress).
    pub fn byte_position(&self) -> u64 {
        self.reader.position().byte()
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
        let expected = self.positions.len();
        if self.row.len() != expected {
            return Err(self.reject(
                line,
                format!(
                    "expected {expected} fields ({}), found {}",
                    self.kind.columns().join(","),
                    self.row.len()
                ),
            ));
        }
        let mut fields = Vec::with_capacity(expected);
        for (col, &pos) in self.kind.columns().iter().zip(&self.positions) {
            match std::str::from_utf8(&self.row[pos]) {
                Ok(value) => fields.push(value),
                Err(_) => return Err(self.reject(line, format!("{col}: not valid UTF-8"))),
            }
        }
        let record = match self.kind {
            RecordKind::Customer => Record::Customer(Customer {
                user_id: fields[0].to_string(),
                name: fields[1].to_string(),
                address: fields[2].to_string(),
                zip_code: fields[3].to_string(),
                phone_number: fields[4].to_string(),
                email: fields[5].to_string(),
                version: None,
            }),
            RecordKind::Product => {
                let quantity = fields[3].parse::<u32>().map_err(|_| {
                    self.reject(
                        line,
                        format!("quantity_available: {:?} is not a whole number of 0 or more", fields[3]),
                    )
                })?;
                Record::Product(Product {
                    product_id: fields[0].to_string(),
                    description: fields[1].to_string(),
                    product_type: fields[2].to_string(),
                    quantity_available: quantity,
                    version: None,
                })
            }
            RecordKind::Rental => Record::Rental(Rental {
                product_id: fields[0].to_string(),
                user_id: fields[1].to_string(),
                version: None,
            }),
        };
        record.validate().map_err(|e| self.reject(line, e.to_string()))?;
        Ok(SourceRow { line, record })
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
    kind: RecordKind,
    count: u64,
}

impl RejectsWriter {
    /// Nothing is created until the first rejection arrives.
    pub fn new(path: impl Into<PathBuf>, kind: RecordKind) -> Self {
        RejectsWriter {
            path: path.into(),
            writer: None,
            kind,
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
            header.extend_from_slice(self.kind.columns());
            w.write_record(&header)?;
            self.writer = Some(w);
        }
        let w = self.writer.as_mut().expect("opened above");
        let line = rejection.line.to_string();
        let mut row: Vec<&str> = vec![&line, &rejection.reason];
        row.extend(rejection.raw.iter().map(String::as_str));
        // Pad short rows so the file stays rectangular for spreadsheets;
        // a row with extra fields keeps them.
        let width = 2 + self.kind.columns().len();
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
        let empty = RejectsWriter::new(&path, RecordKind::Customer);
        assert_eq!(empty.finish().unwrap(), None);
        assert!(!path.exists());

        let mut w = RejectsWriter::new(&path, RecordKind::Customer);
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
