//! The three kinds of record HP Norton loads, and the rules a record must
//! pass before it may be stored.
//!
//! Field names match the CSV columns of the brief one for one, so a record
//! reads the same in a CSV file, in a queue message and in MongoDB. Each kind
//! has a business key (`user_id`, `product_id`, the `(product_id, user_id)`
//! pair for a rental): the store writes on that key, so importing a record
//! twice leaves one document.
//!
//! A record may also carry a version (`_version` on the wire and in the
//! store). Versions make writes independent of delivery order: the store
//! applies a record only if its version is higher than the one it holds
//! ([`replaces`]), so racing consumers, several importer processes and
//! redeliveries end with the newest version of every key whatever order
//! they write in. A record without a version is applied on arrival.
//!
//! A record may also be a delete ([`Deletion`]: its key, `"_deleted": true`
//! and a version). It is ordered by the same rule as any record: the store
//! keeps a tombstone of the key at the delete's version, so an older record
//! of the key that arrives later changes nothing, and a newer one brings
//! the key back (`docs/message-format.md`, *Deletes*).
//!
//! Files from other systems carry columns the brief does not name (a
//! customer's status, a rental's date). A record keeps those it was told to
//! keep (see `crate::mapping`) as [`Extra`]: text under the names given, in
//! one `extra` object on the wire and in the store, so a newer version
//! replaces the whole set and no stale extra outlives it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

mod rules;

use rules::check_id;
pub use rules::{check_extra_name, Invalid, MAX_EXTRAS, MAX_ID_LEN, MAX_TEXT_LEN};

/// Which of the three record kinds a row, message or collection holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Customer,
    Product,
    Rental,
}

impl RecordKind {
    /// Every kind, in the order reports list them: customers, products, rentals.
    pub const ALL: [RecordKind; 3] = [RecordKind::Customer, RecordKind::Product, RecordKind::Rental];

    /// The name used on the wire: the AMQP `type` property and routing key.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Customer => "customer",
            RecordKind::Product => "product",
            RecordKind::Rental => "rental",
        }
    }

    /// The MongoDB collection (and queue suffix) for this kind.
    pub fn collection(self) -> &'static str {
        match self {
            RecordKind::Customer => "customers",
            RecordKind::Product => "products",
            RecordKind::Rental => "rentals",
        }
    }

    /// The CSV file name the brief gives this kind.
    pub fn file_name(self) -> &'static str {
        match self {
            RecordKind::Customer => "customers.csv",
            RecordKind::Product => "products.csv",
            RecordKind::Rental => "rentals.csv",
        }
    }

    /// The CSV header, in the brief's column order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            RecordKind::Customer => &["user_id", "name", "address", "zip_code", "phone_number", "email"],
            RecordKind::Product => &["product_id", "description", "product_type", "quantity_available"],
            RecordKind::Rental => &["product_id", "user_id"],
        }
    }

    /// The columns a file may lack (see `docs/mapping.md`): those no key and
    /// neither business query needs. Every other column is required.
    pub fn optional_columns(self) -> &'static [&'static str] {
        match self {
            RecordKind::Customer => &["zip_code"],
            RecordKind::Product | RecordKind::Rental => &[],
        }
    }

    /// The fields that identify one record of this kind in the store.
    pub fn key_fields(self) -> &'static [&'static str] {
        match self {
            RecordKind::Customer => &["user_id"],
            RecordKind::Product => &["product_id"],
            RecordKind::Rental => &["product_id", "user_id"],
        }
    }

    /// The kind a file's name says it holds: `customer.csv`,
    /// `customers.csv`, `Rentals-2025.csv` (the leading letters of its name,
    /// singular or plural, any case).
    pub fn from_file_name(path: &std::path::Path) -> Option<RecordKind> {
        let stem = path.file_stem()?.to_string_lossy().to_lowercase();
        let word: String = stem.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        RecordKind::ALL
            .into_iter()
            .find(|k| word == k.as_str() || word == k.collection())
    }

    /// Guess the kind of a CSV file from its header (column order ignored).
    pub fn from_header<S: AsRef<str>>(header: &[S]) -> Option<RecordKind> {
        let mut names: Vec<&str> = header.iter().map(|h| h.as_ref()).collect();
        names.sort_unstable();
        RecordKind::ALL.into_iter().find(|kind| {
            let mut expected = kind.columns().to_vec();
            expected.sort_unstable();
            expected == names
        })
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is neither a record kind nor a collection name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown record kind {0:?} (expected customer, product or rental)")]
pub struct UnknownKind(pub String);

impl FromStr for RecordKind {
    type Err = UnknownKind;

    /// Accepts the singular wire name or the collection name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordKind::ALL
            .into_iter()
            .find(|k| s == k.as_str() || s == k.collection())
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// Columns kept beside a record's own fields, by the name given in the
/// mapping: text as it was in the file.
pub type Extra = BTreeMap<String, String>;

/// A customer, as in `customers.csv`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub user_id: String,
    pub name: String,
    pub address: String,
    /// The one field of the brief a file may lack (no business query needs
    /// it): `None` when the file has no such column, and then the stored
    /// document has no `zip_code` either. An empty cell is `Some("")`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zip_code: Option<String>,
    pub phone_number: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
    /// Orders versions of one key: the store keeps the highest it has seen
    /// (see [`Record::version`]). Not a column of the CSV files.
    #[serde(rename = "_version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

/// A product, as in `products.csv`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub product_id: String,
    pub description: String,
    pub product_type: String,
    pub quantity_available: u32,
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
    /// Orders versions of one key: the store keeps the highest it has seen
    /// (see [`Record::version`]). Not a column of the CSV files.
    #[serde(rename = "_version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

/// A rental, as in `rentals.csv`: one customer renting one product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rental {
    pub product_id: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
    /// Orders versions of one key: the store keeps the highest it has seen
    /// (see [`Record::version`]). Not a column of the CSV files.
    #[serde(rename = "_version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

/// Any one record, tagged with its kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Record {
    Customer(Customer),
    Product(Product),
    Rental(Rental),
    /// The delete of a key of any kind.
    Deleted(Deletion),
}

/// The field that marks a record as a delete, on the wire.
pub const DELETED_FIELD: &str = "_deleted";

/// A delete: the key of a record of `kind` and the version it was deleted
/// at. On the wire, the key's fields, `"_deleted": true` and `_version`
/// (`{"user_id": "C1", "_deleted": true, "_version": 7}`); the record's
/// other fields may be sent too, and are not looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub kind: RecordKind,
    /// The key's first field (`user_id`, `product_id`, or a rental's
    /// `product_id`) and its second (a rental's `user_id`; empty otherwise).
    pub key: (String, String),
    pub version: Option<i64>,
}

impl Deletion {
    /// The delete of a customer's or a product's key (`id`), or of a rental's
    /// (`"P1 C1"`: `product_id`, a space, `user_id`).
    pub fn of(kind: RecordKind, id: &str) -> Result<Deletion, Invalid> {
        let key = match kind {
            RecordKind::Rental => match id.split_once(' ') {
                Some((product_id, user_id)) => (product_id.to_string(), user_id.to_string()),
                None => {
                    return Err(Invalid::new(
                        "product_id",
                        format!("{id:?} is not a rental's key (product_id, a space, user_id)"),
                    ))
                }
            },
            _ => (id.to_string(), String::new()),
        };
        let deletion = Deletion {
            kind,
            key,
            version: None,
        };
        deletion.validate()?;
        Ok(deletion)
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        let fields = self.kind.key_fields();
        check_id(fields[0], &self.key.0)?;
        match fields.get(1) {
            Some(second) => check_id(second, &self.key.1),
            None if self.key.1.is_empty() => Ok(()),
            None => Err(Invalid::new(fields[0], "a one-field key has no second part")),
        }
    }

    /// Parse one JSON object that says `"_deleted"`: `None` when it does
    /// not (it is then no delete at all), a record when it says `false`
    /// (an ordinary record), a delete when it says `true`. A delete holds
    /// the key's fields, optionally `_version`, and nothing but the kind's
    /// other fields (whose values are not looked at).
    fn from_json(kind: RecordKind, json: &str) -> Option<Result<Record, String>> {
        let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).ok()?;
        let marker = object.remove(DELETED_FIELD)?;
        Some(match marker {
            serde_json::Value::Bool(false) => Record::from_json(kind, &serde_json::Value::Object(object).to_string()),
            serde_json::Value::Bool(true) => Deletion::from_object(kind, object),
            other => Err(format!(
                "not a valid {kind} record: {DELETED_FIELD} is {other}, not true or false"
            )),
        })
    }

    fn from_object(kind: RecordKind, mut object: serde_json::Map<String, serde_json::Value>) -> Result<Record, String> {
        let refused = |problem: String| format!("not a valid {kind} delete: {problem}");
        let mut key = Vec::with_capacity(2);
        for field in kind.key_fields() {
            match object.remove(*field) {
                Some(serde_json::Value::String(id)) => key.push(id),
                Some(other) => return Err(refused(format!("{field} is {other}, not a string"))),
                None => return Err(refused(format!("missing field `{field}`"))),
            }
        }
        let version = match object.remove("_version") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(other) => return Err(refused(format!("_version is {other}, expected i64"))),
        };
        if let Some(unknown) = object
            .keys()
            .find(|name| !kind.columns().contains(&name.as_str()) && name.as_str() != "extra")
        {
            return Err(refused(format!("unknown field `{unknown}`")));
        }
        let mut key = key.into_iter();
        let deletion = Deletion {
            kind,
            key: (key.next().unwrap_or_default(), key.next().unwrap_or_default()),
            version,
        };
        deletion.validate().map_err(|e| e.to_string())?;
        Ok(Record::Deleted(deletion))
    }
}

impl Serialize for Deletion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = self.kind.key_fields();
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(fields[0], &self.key.0)?;
        if let Some(second) = fields.get(1) {
            map.serialize_entry(second, &self.key.1)?;
        }
        map.serialize_entry(DELETED_FIELD, &true)?;
        if let Some(version) = self.version {
            map.serialize_entry("_version", &version)?;
        }
        map.end()
    }
}

/// What a delete keeps of the columns: none.
static NO_EXTRA: Extra = Extra::new();

/// Whether a record of version `incoming` replaces what the store holds at
/// version `stored` (`None`: no document, or one written without a version).
///
/// The one rule of the version guard, used by the store's writes and by a
/// writer folding a batch: a versioned record replaces only an older version;
/// an equal or newer one stays. A record without a version always replaces
/// (arrival order, as before versions), and so does any record replacing a
/// document stored without one.
pub fn replaces(incoming: Option<i64>, stored: Option<i64>) -> bool {
    match (incoming, stored) {
        (Some(new), Some(old)) => new > old,
        _ => true,
    }
}

impl Rental {
    /// A rental with no extras and no version.
    pub fn new(product_id: impl Into<String>, user_id: impl Into<String>) -> Rental {
        Rental {
            product_id: product_id.into(),
            user_id: user_id.into(),
            extra: Extra::new(),
            version: None,
        }
    }
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Customer(_) => RecordKind::Customer,
            Record::Product(_) => RecordKind::Product,
            Record::Rental(_) => RecordKind::Rental,
            Record::Deleted(d) => d.kind,
        }
    }

    /// The record's version, if it has one.
    pub fn version(&self) -> Option<i64> {
        match self {
            Record::Customer(c) => c.version,
            Record::Product(p) => p.version,
            Record::Rental(r) => r.version,
            Record::Deleted(d) => d.version,
        }
    }

    /// Set (or clear) the record's version.
    pub fn set_version(&mut self, version: Option<i64>) {
        match self {
            Record::Customer(c) => c.version = version,
            Record::Product(p) => p.version = version,
            Record::Rental(r) => r.version = version,
            Record::Deleted(d) => d.version = version,
        }
    }

    /// The record with `version` set.
    pub fn with_version(mut self, version: i64) -> Record {
        self.set_version(Some(version));
        self
    }

    /// The business key as one string (a rental's is `product_id/user_id`),
    /// for routing and for messages to people.
    pub fn key(&self) -> String {
        match self {
            Record::Customer(c) => c.user_id.clone(),
            Record::Product(p) => p.product_id.clone(),
            Record::Rental(r) => format!("{}/{}", r.product_id, r.user_id),
            Record::Deleted(d) if d.kind == RecordKind::Rental => format!("{}/{}", d.key.0, d.key.1),
            Record::Deleted(d) => d.key.0.clone(),
        }
    }

    /// The business key for a person: `user_id C1`, `product_id P1, user_id C1`.
    pub fn describe_key(&self) -> String {
        let (first, second) = self.key_parts();
        match self.kind().key_fields() {
            [one] => format!("{one} {first}"),
            fields => format!("{} {first}, {} {second}", fields[0], fields[1]),
        }
    }

    /// The business key as its parts (the second is empty but for rentals),
    /// for comparing keys without building strings.
    pub fn key_parts(&self) -> (&str, &str) {
        match self {
            Record::Customer(c) => (&c.user_id, ""),
            Record::Product(p) => (&p.product_id, ""),
            Record::Rental(r) => (&r.product_id, &r.user_id),
            Record::Deleted(d) => (&d.key.0, &d.key.1),
        }
    }

    /// Feed the business key to a hasher without building a string.
    pub fn hash_key<H: std::hash::Hasher>(&self, state: &mut H) {
        use std::hash::Hash;
        match self {
            Record::Customer(c) => c.user_id.hash(state),
            Record::Product(p) => p.product_id.hash(state),
            Record::Rental(r) => {
                r.product_id.hash(state);
                r.user_id.hash(state);
            }
            // Hashed as the record of its key would be, so a delete goes
            // to the same writer as the upserts of its key.
            Record::Deleted(d) if d.kind == RecordKind::Rental => {
                d.key.0.hash(state);
                d.key.1.hash(state);
            }
            Record::Deleted(d) => d.key.0.hash(state),
        }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            Record::Customer(c) => c.validate(),
            Record::Product(p) => p.validate(),
            Record::Rental(r) => r.validate(),
            Record::Deleted(d) => d.validate(),
        }
    }

    /// Whether this record is a delete.
    pub fn is_deletion(&self) -> bool {
        matches!(self, Record::Deleted(_))
    }

    /// Parse one JSON object as a record of `kind` (or the delete of one),
    /// then validate it.
    pub fn from_json(kind: RecordKind, json: &str) -> Result<Record, String> {
        let record = match kind {
            RecordKind::Customer => serde_json::from_str(json).map(Record::Customer),
            RecordKind::Product => serde_json::from_str(json).map(Record::Product),
            RecordKind::Rental => serde_json::from_str(json).map(Record::Rental),
        };
        let record = match record {
            Ok(record) => record,
            // Only an object the record's own fields refuse can be a delete
            // (they know no `_deleted`): the common case pays nothing.
            Err(e) => {
                return Deletion::from_json(kind, json)
                    .unwrap_or_else(|| Err(format!("not a valid {kind} record: {e}")));
            }
        };
        record.validate().map_err(|e| e.to_string())?;
        Ok(record)
    }

    /// Build a record of `kind` from its fields' text, in the order of
    /// [`RecordKind::columns`] (`None`: the file has no such column), and the
    /// extras to keep; then validate it. This is where CSV text becomes a
    /// record, whatever the file's layout.
    pub fn from_fields(kind: RecordKind, fields: &[Option<&str>], extra: Extra) -> Result<Record, Invalid> {
        debug_assert_eq!(fields.len(), kind.columns().len());
        let field = |i: usize| -> Result<String, Invalid> {
            fields[i]
                .map(str::to_string)
                .ok_or_else(|| Invalid::new(kind.columns()[i], "is missing"))
        };
        let record = match kind {
            RecordKind::Customer => Record::Customer(Customer {
                user_id: field(0)?,
                name: field(1)?,
                address: field(2)?,
                zip_code: fields[3].map(str::to_string),
                phone_number: field(4)?,
                email: field(5)?,
                extra,
                version: None,
            }),
            RecordKind::Product => {
                let quantity = field(3)?;
                let quantity_available = quantity.parse::<u32>().map_err(|_| {
                    Invalid::new(
                        "quantity_available",
                        format!("{quantity:?} is not a whole number of 0 or more"),
                    )
                })?;
                Record::Product(Product {
                    product_id: field(0)?,
                    description: field(1)?,
                    product_type: field(2)?,
                    quantity_available,
                    extra,
                    version: None,
                })
            }
            RecordKind::Rental => Record::Rental(Rental {
                product_id: field(0)?,
                user_id: field(1)?,
                extra,
                version: None,
            }),
        };
        record.validate()?;
        Ok(record)
    }

    /// The columns kept beside the record's own fields.
    pub fn extra(&self) -> &Extra {
        match self {
            Record::Customer(c) => &c.extra,
            Record::Product(p) => &p.extra,
            Record::Rental(r) => &r.extra,
            Record::Deleted(_) => &NO_EXTRA,
        }
    }

    /// The record's fields as strings, in CSV column order (an absent
    /// optional field as an empty string; extras left out).
    pub fn to_fields(&self) -> Vec<String> {
        match self {
            Record::Customer(c) => vec![
                c.user_id.clone(),
                c.name.clone(),
                c.address.clone(),
                c.zip_code.clone().unwrap_or_default(),
                c.phone_number.clone(),
                c.email.clone(),
            ],
            Record::Product(p) => vec![
                p.product_id.clone(),
                p.description.clone(),
                p.product_type.clone(),
                p.quantity_available.to_string(),
            ],
            Record::Rental(r) => vec![r.product_id.clone(), r.user_id.clone()],
            // The key's fields where the kind has them, the rest empty.
            Record::Deleted(d) => d
                .kind
                .columns()
                .iter()
                .map(|column| match d.kind.key_fields().iter().position(|k| k == column) {
                    Some(0) => d.key.0.clone(),
                    Some(_) => d.key.1.clone(),
                    None => String::new(),
                })
                .collect(),
        }
    }
}

impl From<Customer> for Record {
    fn from(c: Customer) -> Self {
        Record::Customer(c)
    }
}
impl From<Product> for Record {
    fn from(p: Product) -> Self {
        Record::Product(p)
    }
}
impl From<Rental> for Record {
    fn from(r: Rental) -> Self {
        Record::Rental(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer() -> Customer {
        Customer {
            user_id: "C000001".into(),
            name: "Ada Lovelace".into(),
            address: "12 St James's Square".into(),
            zip_code: Some("98101".into()),
            phone_number: "206-555-0100".into(),
            email: "ada@example.com".into(),
            extra: Extra::new(),
            version: None,
        }
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in RecordKind::ALL {
            assert_eq!(kind.as_str().parse::<RecordKind>().unwrap(), kind);
            assert_eq!(kind.collection().parse::<RecordKind>().unwrap(), kind);
        }
        assert!("invoices".parse::<RecordKind>().is_err());
    }

    #[test]
    fn kind_is_detected_from_header_in_any_order() {
        assert_eq!(
            RecordKind::from_header(&["user_id", "product_id"]),
            Some(RecordKind::Rental)
        );
        assert_eq!(
            RecordKind::from_header(&["quantity_available", "product_id", "description", "product_type"]),
            Some(RecordKind::Product)
        );
        assert_eq!(RecordKind::from_header(&["user_id"]), None);
    }

    #[test]
    fn kind_is_read_from_a_file_name_singular_or_plural() {
        use std::path::Path;
        assert_eq!(
            RecordKind::from_file_name(Path::new("/in/product.csv")),
            Some(RecordKind::Product)
        );
        assert_eq!(
            RecordKind::from_file_name(Path::new("Rentals-2025.csv")),
            Some(RecordKind::Rental)
        );
        assert_eq!(
            RecordKind::from_file_name(Path::new("customers.csv")),
            Some(RecordKind::Customer)
        );
        assert_eq!(RecordKind::from_file_name(Path::new("export.csv")), None);
    }

    #[test]
    fn good_customer_passes_and_bad_fields_are_named() {
        assert_eq!(customer().validate(), Ok(()));
        let mut c = customer();
        c.email = "not-an-email".into();
        assert_eq!(c.validate().unwrap_err().field, "email");
        let mut c = customer();
        c.user_id = "C 1".into();
        assert_eq!(c.validate().unwrap_err().field, "user_id");
        let mut c = customer();
        c.name = "  ".into();
        assert_eq!(c.validate().unwrap_err().field, "name");
    }

    #[test]
    fn json_parsing_rejects_unknown_fields_and_negative_stock() {
        let ok = r#"{"product_id":"P1","description":"Sofa","product_type":"livingroom","quantity_available":3}"#;
        assert!(
            matches!(Record::from_json(RecordKind::Product, ok), Ok(Record::Product(p)) if p.quantity_available == 3)
        );
        let negative = ok.replace(":3", ":-3");
        assert!(Record::from_json(RecordKind::Product, &negative).is_err());
        let extra = r#"{"product_id":"P1","user_id":"C1","colour":"red"}"#;
        let err = Record::from_json(RecordKind::Rental, extra).unwrap_err();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn text_may_hold_line_breaks_and_tabs_but_no_other_control_character() {
        let mut c = customer();
        c.address = "Flat 2\r\n12 High St\tRear".into();
        assert_eq!(c.validate(), Ok(()));
        c.address = "12 High St\u{0}".into();
        let err = c.validate().unwrap_err();
        assert_eq!(err.field, "address");
        assert!(err.problem.contains("'\\0'"), "{err}");
        let mut c = customer();
        c.user_id = "C\n1".into();
        assert_eq!(c.validate().unwrap_err().field, "user_id", "ids take no line breaks");
    }

    #[test]
    fn lengths_are_counted_in_characters_not_bytes() {
        let mut c = customer();
        c.user_id = "é".repeat(MAX_ID_LEN);
        c.name = "é".repeat(MAX_TEXT_LEN);
        assert_eq!(c.validate(), Ok(()), "two bytes a character, at the limit");
        c.name.push('é');
        assert_eq!(c.validate().unwrap_err().field, "name");
        c.name = "n".into();
        c.user_id.push('é');
        assert_eq!(c.validate().unwrap_err().field, "user_id");
    }

    #[test]
    fn extras_travel_in_one_object_and_their_names_are_checked() {
        let mut c = customer();
        c.extra.insert("status".into(), "Active".into());
        c.zip_code = None;
        let json = serde_json::to_string(&Record::Customer(c.clone())).unwrap();
        assert!(json.contains(r#""extra":{"status":"Active"}"#), "{json}");
        assert!(!json.contains("zip_code"), "an absent zip code is left out: {json}");
        assert_eq!(
            Record::from_json(RecordKind::Customer, &json),
            Ok(Record::Customer(c.clone()))
        );
        for bad in ["_id", "name", "a.b", "", "extra"] {
            assert!(check_extra_name(RecordKind::Customer, bad).is_err(), "{bad:?}");
        }
        assert!(check_extra_name(RecordKind::Customer, "credit_limit").is_ok());
        c.extra.insert("$where".into(), "x".into());
        assert_eq!(c.validate().unwrap_err().field, "extra");
    }

    #[test]
    fn fields_become_records_with_optional_ones_absent() {
        let fields = [
            Some("C1"),
            Some("Ann Lee"),
            Some(""),
            None,
            Some(""),
            Some("ann@example.com"),
        ];
        let record = Record::from_fields(RecordKind::Customer, &fields, Extra::new()).unwrap();
        assert!(matches!(&record, Record::Customer(c) if c.zip_code.is_none() && c.name == "Ann Lee"));
        let fields = [Some("P1"), Some("Sofa"), Some("livingroom"), Some("three")];
        let err = Record::from_fields(RecordKind::Product, &fields, Extra::new()).unwrap_err();
        assert_eq!(err.field, "quantity_available");
        let fields = [Some("P1"), None];
        assert_eq!(
            Record::from_fields(RecordKind::Rental, &fields, Extra::new())
                .unwrap_err()
                .field,
            "user_id"
        );
    }

    #[test]
    fn a_delete_is_its_key_the_marker_and_a_version() {
        let delete = Record::from_json(RecordKind::Customer, r#"{"user_id":"C1","_deleted":true,"_version":7}"#);
        let expected = Record::Deleted(Deletion {
            kind: RecordKind::Customer,
            key: ("C1".into(), String::new()),
            version: Some(7),
        });
        assert_eq!(delete, Ok(expected.clone()));
        assert_eq!(
            serde_json::to_string(&expected).unwrap(),
            r#"{"user_id":"C1","_deleted":true,"_version":7}"#
        );
        // The record's other fields may come along; they are not looked at.
        let full = r#"{"user_id":"C1","name":"","email":3,"_deleted":true,"_version":7}"#;
        assert_eq!(Record::from_json(RecordKind::Customer, full), Ok(expected));
        let rental = Record::from_json(
            RecordKind::Rental,
            r#"{"_deleted":true,"user_id":"C1","product_id":"P1"}"#,
        )
        .unwrap();
        assert_eq!(rental.key_parts(), ("P1", "C1"));
        assert_eq!(rental.version(), None);
        assert_eq!(rental.kind(), RecordKind::Rental);
        assert_eq!(
            Deletion::of(RecordKind::Rental, "P1 C1").map(Record::Deleted),
            Ok(rental)
        );
        // `false` is an ordinary record.
        let kept = Record::from_json(
            RecordKind::Rental,
            r#"{"product_id":"P1","user_id":"C1","_deleted":false}"#,
        );
        assert_eq!(kept, Ok(Record::Rental(Rental::new("P1", "C1"))));
        for (bad, says) in [
            (r#"{"user_id":"C1","_deleted":"yes"}"#, "not true or false"),
            (r#"{"_deleted":true}"#, "missing field `user_id`"),
            (r#"{"user_id":"C 1","_deleted":true}"#, "user_id"),
            (r#"{"user_id":7,"_deleted":true}"#, "not a string"),
            (r#"{"user_id":"C1","_deleted":true,"_version":"7"}"#, "expected i64"),
            (
                r#"{"user_id":"C1","_deleted":true,"colour":"red"}"#,
                "unknown field `colour`",
            ),
            (r#"{"user_id":"C1","name":"Ann","_deleted":false}"#, "missing field"),
        ] {
            let err = Record::from_json(RecordKind::Customer, bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(Deletion::of(RecordKind::Rental, "P1").is_err());
    }

    #[test]
    fn rental_key_combines_both_ids() {
        let r = Record::Rental(Rental::new("P1", "C9"));
        assert_eq!(r.key(), "P1/C9");
        assert_eq!(r.to_fields(), vec!["P1", "C9"]);
    }
}
