//! Column mappings: how a CSV file from another system becomes records.
//!
//! HP Norton's files do not all have the brief's columns: a column is
//! renamed (`Id` for `user_id`), a name is split over two columns, a column
//! is misspelt, extra columns are worth keeping. A mapping, written by the
//! person who knows the file, says for each record kind where each field
//! comes from:
//!
//! ```toml
//! [customer]
//! user_id = "Id"                      # a column
//! name = "{Name} {Last_name}"         # a template joining columns
//! email = "Email_address"
//! address = "Home_address"
//! phone_number = "Phone_number"       # zip_code left out: the file has none
//!
//! [customer.keep]                     # extra columns, stored as they are
//! status = "Status"
//! ```
//!
//! A file is read with the table whose source columns its header holds
//! ([`Mapping::layout_for`]), and its rows become records through the
//! resolved [`Layout`], so validation is the same whatever the layout.
//! Without a mapping ([`Mapping::brief`]) a header must be exactly one of
//! the brief's three (in any order); with one, such a header still works.
//! `docs/mapping.md` is the user's guide to this module.

use crate::record::{check_extra_name, Extra, Invalid, Record, RecordKind};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// A mapping file that cannot be used, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("mapping {file}: cannot read it: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("mapping {file}: not valid TOML: {message}")]
    Toml { file: PathBuf, message: String },
    #[error("mapping {file}: {problem}")]
    Invalid { file: PathBuf, problem: String },
}

/// Where one field's text comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Column(String),
    /// Literal text and columns, joined in order; the result is trimmed.
    Template(Vec<Piece>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Column(String),
}

impl Source {
    /// A value with `{` is a template: `{Column}` names a column, `{{` and
    /// `}}` stand for braces.
    fn parse(value: &str) -> Result<Source, String> {
        if !value.contains(['{', '}']) {
            return Ok(Source::Column(value.to_string()));
        }
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut column = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        column.push(c);
                    }
                    if column.is_empty() || !closed {
                        return Err(format!("template {value:?} has an empty {{}} or an unclosed {{"));
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Column(column));
                }
                _ => {
                    if c == '}' {
                        return Err(format!(
                            "template {value:?} has a }} with no {{ (write }}}} for a brace)"
                        ));
                    }
                    text.push(c);
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        if !pieces.iter().any(|p| matches!(p, Piece::Column(_))) {
            return Err(format!("template {value:?} names no column"));
        }
        Ok(Source::Template(pieces))
    }

    fn columns(&self) -> Vec<&str> {
        match self {
            Source::Column(c) => vec![c.as_str()],
            Source::Template(pieces) => pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Column(c) => Some(c.as_str()),
                    Piece::Text(_) => None,
                })
                .collect(),
        }
    }
}

/// One kind's table: a source for each field (in the order of
/// [`RecordKind::columns`]; `None` for an optional field left out) and the
/// columns to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Table {
    kind: RecordKind,
    fields: Vec<Option<Source>>,
    keep: Vec<(String, String)>,
}

impl Table {
    /// The brief's own layout for `kind`: each field from its namesake.
    fn brief(kind: RecordKind) -> Table {
        Table {
            kind,
            fields: kind
                .columns()
                .iter()
                .map(|c| Some(Source::Column(c.to_string())))
                .collect(),
            keep: Vec::new(),
        }
    }

    /// Every column the table reads.
    fn source_columns(&self) -> BTreeSet<&str> {
        self.fields
            .iter()
            .flatten()
            .flat_map(Source::columns)
            .chain(self.keep.iter().map(|(_, column)| column.as_str()))
            .collect()
    }

    fn resolve(&self, header: &[String]) -> Layout {
        let at = |column: &str| {
            header
                .iter()
                .position(|h| h == column)
                .expect("the table matched this header")
        };
        let fields = self
            .fields
            .iter()
            .map(|source| {
                source.as_ref().map(|source| match source {
                    Source::Column(c) => Resolved::Column(at(c)),
                    Source::Template(pieces) => Resolved::Template(
                        pieces
                            .iter()
                            .map(|p| match p {
                                Piece::Text(t) => ResolvedPiece::Text(t.clone()),
                                Piece::Column(c) => ResolvedPiece::Column(at(c)),
                            })
                            .collect(),
                    ),
                })
            })
            .collect();
        Layout {
            kind: self.kind,
            fields,
            keep: self
                .keep
                .iter()
                .map(|(name, column)| (name.clone(), at(column)))
                .collect(),
            header: header.to_vec(),
        }
    }
}

/// How files are matched to record kinds and read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The mapping file, for messages (`None`: the brief's layouts alone).
    file: Option<PathBuf>,
    tables: Vec<Table>,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping::brief()
    }
}

impl Mapping {
    /// No mapping: the brief's three headers, exactly (in any order).
    pub fn brief() -> Mapping {
        Mapping {
            file: None,
            tables: Vec::new(),
        }
    }

    /// Read a mapping file (TOML; see the module documentation).
    pub fn load(path: &Path) -> Result<Mapping, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|source| MappingError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Mapping::parse(&text, path)
    }

    /// Parse a mapping's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Mapping, MappingError> {
        let invalid = |problem: String| MappingError::Invalid {
            file: path.to_path_buf(),
            problem,
        };
        let root: toml::Table = toml::from_str(text).map_err(|e| MappingError::Toml {
            file: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })?;
        let mut tables = Vec::new();
        for (name, value) in &root {
            let kind: RecordKind = name.parse().map_err(|_| {
                invalid(format!(
                    "[{name}] is not a record kind (write [customer], [product] or [rental])"
                ))
            })?;
            if tables.iter().any(|t: &Table| t.kind == kind) {
                return Err(invalid(format!("[{name}]: a second table for {kind} records")));
            }
            let toml::Value::Table(entries) = value else {
                return Err(invalid(format!("{name} must be a table ([{name}])")));
            };
            tables.push(parse_table(kind, entries).map_err(|problem| invalid(format!("[{kind}] {problem}")))?);
        }
        if tables.is_empty() {
            return Err(invalid(
                "maps nothing: add a [customer], [product] or [rental] table".into(),
            ));
        }
        Ok(Mapping {
            file: Some(path.to_path_buf()),
            tables,
        })
    }

    /// The mapping file, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Which table reads a file with this `header`, resolved against it.
    ///
    /// The mapping's tables come first: a table matches when the header
    /// holds every column it reads (other columns are ignored). A header
    /// that no table matches may still be exactly one of the brief's. When
    /// several tables match (a rentals file that repeats each customer's
    /// details holds the customer table's columns too), the file's name
    /// decides: `rental.csv`, `rentals-2025.csv` are rentals. Otherwise the
    /// file is refused, with its header, rather than guessed at.
    pub fn layout_for(&self, file: &Path, header: &[String]) -> Result<Layout, HeaderError> {
        let columns: BTreeSet<&str> = header.iter().map(String::as_str).collect();
        let matching: Vec<&Table> = self
            .tables
            .iter()
            .filter(|t| t.source_columns().is_subset(&columns))
            .collect();
        let chosen = match matching.as_slice() {
            [one] => Some((*one).clone()),
            [] => RecordKind::from_header(header).map(Table::brief),
            several => {
                let by_name = RecordKind::from_file_name(file);
                match several.iter().find(|t| Some(t.kind) == by_name) {
                    Some(table) => Some((*table).clone()),
                    None => {
                        return Err(HeaderError::Ambiguous {
                            kinds: several.iter().map(|t| t.kind).collect(),
                        })
                    }
                }
            }
        };
        chosen.map(|table| table.resolve(header)).ok_or(HeaderError::Unknown {
            mapped: self.file.is_some(),
        })
    }

    /// What a table of `kind` reads, for messages: `[customer] Id, Name, …`.
    fn describe(&self) -> String {
        self.tables
            .iter()
            .map(|t| {
                let columns: Vec<&str> = t.source_columns().into_iter().collect();
                format!("[{}] {}", t.kind, columns.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Why no table reads a header (see [`Mapping::layout_for`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Neither a table of the mapping (if any) nor a brief layout.
    Unknown { mapped: bool },
    /// Several tables read it and the file's name does not say which.
    Ambiguous { kinds: Vec<RecordKind> },
}

impl HeaderError {
    /// The sentence for a person, given the mapping that was tried.
    pub fn explain(&self, mapping: &Mapping) -> String {
        let brief = format!(
            "the brief's layouts are customers: {}; products: {}; rentals: {}",
            RecordKind::Customer.columns().join(","),
            RecordKind::Product.columns().join(","),
            RecordKind::Rental.columns().join(",")
        );
        match self {
            HeaderError::Unknown { mapped: false } => {
                format!("is not one of the known layouts ({brief}; for another layout, publish with --mapping)")
            }
            HeaderError::Unknown { mapped: true } => format!(
                "matches no table of {} ({}) nor the brief ({brief})",
                mapping.file().map(|f| f.display().to_string()).unwrap_or_default(),
                mapping.describe()
            ),
            HeaderError::Ambiguous { kinds } => format!(
                "holds the columns of {} tables of the mapping, and the file's name does not say which \
                 (name it after the kind, e.g. {}.csv)",
                kinds.iter().map(|k| format!("[{k}]")).collect::<Vec<_>>().join(" and "),
                kinds[0].as_str()
            ),
        }
    }
}

fn parse_table(kind: RecordKind, entries: &toml::Table) -> Result<Table, String> {
    let mut fields: Vec<Option<Source>> = vec![None; kind.columns().len()];
    let mut keep = Vec::new();
    for (name, value) in entries {
        if name == "keep" {
            let toml::Value::Table(kept) = value else {
                return Err(format!("keep must be a table ([{kind}.keep]) of name = \"Column\""));
            };
            for (name, column) in kept {
                check_extra_name(kind, name).map_err(|e| format!("keep: {e}"))?;
                let toml::Value::String(column) = column else {
                    return Err(format!("keep: {name} must name a column, as a string"));
                };
                keep.push((name.clone(), column.clone()));
            }
            continue;
        }
        let Some(at) = kind.columns().iter().position(|c| c == name) else {
            return Err(format!(
                "{name} is not a field of a {kind} record (fields: {}; extra columns go under [{kind}.keep])",
                kind.columns().join(", ")
            ));
        };
        let toml::Value::String(value) = value else {
            return Err(format!("{name} must be a column name or a template, as a string"));
        };
        fields[at] = Some(Source::parse(value).map_err(|e| format!("{name}: {e}"))?);
    }
    let missing: Vec<&str> = kind
        .columns()
        .iter()
        .zip(&fields)
        .filter(|(column, source)| source.is_none() && !kind.optional_columns().contains(column))
        .map(|(column, _)| *column)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "names no source for {} (only {} may be left out)",
            missing.join(", "),
            match kind.optional_columns() {
                [] => "no field".to_string(),
                optional => optional.join(", "),
            }
        ));
    }
    if keep.len() > crate::record::MAX_EXTRAS {
        return Err(format!("keeps more than {} columns", crate::record::MAX_EXTRAS));
    }
    Ok(Table { kind, fields, keep })
}

/// A table resolved against one file's header: for each field of the
/// kind, the column index (or the template) it is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    kind: RecordKind,
    fields: Vec<Option<Resolved>>,
    keep: Vec<(String, usize)>,
    header: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Resolved {
    Column(usize),
    Template(Vec<ResolvedPiece>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ResolvedPiece {
    Text(String),
    Column(usize),
}

/// A row that is not a record, and why (no file or line: the caller has them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError(pub String);

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Invalid> for RowError {
    fn from(e: Invalid) -> Self {
        RowError(e.to_string())
    }
}

impl Layout {
    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    /// The file's header as read (for the rejects file, which keeps rows
    /// in the file's own layout so they can be fixed and loaded again).
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The record a row of the file holds, validated.
    pub fn record(&self, row: &csv::ByteRecord) -> Result<Record, RowError> {
        if row.len() != self.header.len() {
            return Err(RowError(format!(
                "expected {} fields ({}), found {}",
                self.header.len(),
                abbreviate(&self.header),
                row.len()
            )));
        }
        let text = |at: usize| {
            std::str::from_utf8(&row[at]).map_err(|_| RowError(format!("{}: not valid UTF-8", self.header[at])))
        };
        let mut joined = Vec::new();
        for resolved in self.fields.iter().flatten() {
            if let Resolved::Template(pieces) = resolved {
                let mut value = String::new();
                for piece in pieces {
                    match piece {
                        ResolvedPiece::Text(t) => value.push_str(t),
                        ResolvedPiece::Column(at) => value.push_str(text(*at)?),
                    }
                }
                // "{Name} {Last_name}" with no last name is "Ann", not "Ann ".
                joined.push(value.trim().to_string());
            }
        }
        let mut joined = joined.iter();
        let mut values: Vec<Option<&str>> = Vec::with_capacity(self.fields.len());
        for resolved in &self.fields {
            values.push(match resolved {
                None => None,
                Some(Resolved::Column(at)) => Some(text(*at)?),
                Some(Resolved::Template(_)) => Some(joined.next().expect("one value per template").as_str()),
            });
        }
        let mut extra = Extra::new();
        for (name, at) in &self.keep {
            extra.insert(name.clone(), text(*at)?.to_string());
        }
        Ok(Record::from_fields(self.kind, &values, extra)?)
    }
}

/// A header for a message: its first dozen columns, each cut at 40
/// characters and quoted, so a line of garbage never floods a terminal.
pub fn abbreviate(header: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut names: Vec<String> = header
        .iter()
        .take(SHOWN)
        .map(|h| {
            let cut: String = h.chars().take(40).collect();
            if cut.len() < h.len() {
                format!("{cut:?}…")
            } else {
                format!("{cut:?}")
            }
        })
        .collect();
    if header.len() > SHOWN {
        names.push(format!("… {} more", header.len() - SHOWN));
    }
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Customer;

    const OTHER_SYSTEM: &str = r#"
        [customer]
        user_id = "Id"
        name = "{Name} {Last_name}"
        address = "Home_address"
        phone_number = "Phone_number"
        email = "Email_address"
        [customer.keep]
        status = "Status"
        credit_limit = "Credit_limit"

        [rental]
        product_id = "product_id"
        user_id = "customer_id"
        [rental.keep]
        rental_id = "rental_id"
    "#;

    fn mapping(text: &str) -> Result<Mapping, MappingError> {
        Mapping::parse(text, Path::new("other.toml"))
    }

    fn header(columns: &str) -> Vec<String> {
        columns.split(',').map(str::to_string).collect()
    }

    fn row(fields: &str) -> csv::ByteRecord {
        csv::ByteRecord::from(fields.split(',').collect::<Vec<_>>())
    }

    #[test]
    fn a_mapped_row_joins_templates_keeps_extras_and_leaves_out_the_missing_zip_code() {
        let mapping = mapping(OTHER_SYSTEM).unwrap();
        let header = header("Id,Name,Last_name,Home_address,Phone_number,Email_address,Status,Credit_limit,Notes");
        let layout = mapping.layout_for(Path::new("customer.csv"), &header).unwrap();
        assert_eq!(layout.kind(), RecordKind::Customer);
        let record = layout
            .record(&row(
                "C1,Ann,Lee,1 Main St,555-0100,ann@example.com,Active,500,call first",
            ))
            .unwrap();
        let Record::Customer(Customer {
            name, zip_code, extra, ..
        }) = record
        else {
            panic!("a customer")
        };
        assert_eq!(name, "Ann Lee");
        assert_eq!(zip_code, None);
        assert_eq!(
            extra.into_iter().collect::<Vec<_>>(),
            vec![
                ("credit_limit".to_string(), "500".to_string()),
                ("status".to_string(), "Active".to_string())
            ],
            "kept under the names given; the unnamed Notes column is ignored"
        );
        let lone = layout.record(&row("C2,Bo,,,,bo@example.com,,,")).unwrap();
        assert!(
            matches!(lone, Record::Customer(c) if c.name == "Bo"),
            "no trailing space"
        );
        let bad = layout.record(&row("C3,Cy,Ng,,,not-an-email,,,")).unwrap_err();
        assert!(bad.0.starts_with("email:"), "validation still applies: {bad}");
    }

    #[test]
    fn the_file_name_settles_a_header_that_two_tables_read() {
        let mapping = mapping(OTHER_SYSTEM).unwrap();
        // A rentals export that repeats each customer's details.
        let header = header(
            "rental_id,product_id,customer_id,Id,Name,Last_name,Home_address,Phone_number,Email_address,Status,Credit_limit",
        );
        let layout = mapping.layout_for(Path::new("/x/rental.csv"), &header).unwrap();
        assert_eq!(layout.kind(), RecordKind::Rental);
        let err = mapping.layout_for(Path::new("/x/export.csv"), &header).unwrap_err();
        assert_eq!(
            err,
            HeaderError::Ambiguous {
                kinds: vec![RecordKind::Customer, RecordKind::Rental]
            }
        );
        assert!(
            err.explain(&mapping).contains("[customer] and [rental]"),
            "{}",
            err.explain(&mapping)
        );
    }

    #[test]
    fn brief_headers_still_work_with_a_mapping_and_others_are_refused() {
        let mapping = mapping(OTHER_SYSTEM).unwrap();
        let brief = header("product_id,description,product_type,quantity_available");
        assert_eq!(
            mapping.layout_for(Path::new("products.csv"), &brief).unwrap().kind(),
            RecordKind::Product
        );
        let unknown = header("sku,title");
        let err = mapping.layout_for(Path::new("p.csv"), &unknown).unwrap_err();
        assert_eq!(err, HeaderError::Unknown { mapped: true });
        assert!(
            err.explain(&mapping).contains("other.toml"),
            "{}",
            err.explain(&mapping)
        );
        // Without a mapping, extra columns are not silently dropped.
        let wider = header("product_id,user_id,rental_date");
        assert!(Mapping::brief().layout_for(Path::new("rentals.csv"), &wider).is_err());
    }

    #[test]
    fn mapping_mistakes_are_named() {
        let cases = [
            ("[invoice]\nid = \"Id\"", "[invoice] is not a record kind"),
            (
                "[product]\nproduct_id = \"Id\"",
                "names no source for description, product_type, quantity_available",
            ),
            (
                "[rental]\nproduct_id = \"p\"\nuser_id = \"u\"\ndate = \"d\"",
                "date is not a field",
            ),
            (
                "[rental]\nproduct_id = \"p\"\nuser_id = \"u\"\n[rental.keep]\n_id = \"x\"",
                "keep:",
            ),
            ("[rental]\nproduct_id = \"{p\"\nuser_id = \"u\"", "unclosed"),
            ("[rental]\nproduct_id = 3\nuser_id = \"u\"", "as a string"),
            ("[rental", "not valid TOML"),
            ("", "maps nothing"),
        ];
        for (text, expected) in cases {
            let err = mapping(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(err.starts_with("mapping other.toml:"), "{err}");
        }
    }

    #[test]
    fn templates_take_literal_braces() {
        assert_eq!(
            Source::parse("{{{A}}} - {B}").unwrap(),
            Source::Template(vec![
                Piece::Text("{".into()),
                Piece::Column("A".into()),
                Piece::Text("} - ".into()),
                Piece::Column("B".into()),
            ])
        );
        assert_eq!(Source::parse("Id").unwrap(), Source::Column("Id".into()));
        assert!(Source::parse("{}").is_err());
        assert!(Source::parse("a}").is_err());
    }

    #[test]
    fn long_headers_are_cut_for_messages() {
        let many: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
        let text = abbreviate(&many);
        assert!(text.ends_with("… 8 more"), "{text}");
        let long = vec!["x".repeat(100)];
        assert_eq!(abbreviate(&long), format!("{:?}…", "x".repeat(40)));
    }
}
