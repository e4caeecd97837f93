//! The rules a record must pass before it may be stored: identifiers,
//! text, email addresses and kept columns, each refused with the field and
//! a reason a person can act on.

use super::{Customer, Extra, Product, RecordKind, Rental};

/// Why a record is not fit to store, in words a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: &'static str,
    pub problem: String,
}

impl Invalid {
    pub(super) fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Invalid {
            field,
            problem: problem.into(),
        }
    }
}

/// Longest identifier we accept; real ids are short, so anything longer is a
/// shifted column or garbage.
pub const MAX_ID_LEN: usize = 64;
/// Longest free-text field we accept.
pub const MAX_TEXT_LEN: usize = 1024;

pub(super) fn check_id(field: &'static str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "is empty"));
    }
    // A string holds at least as many bytes as characters: count the
    // characters only when the bytes are too many.
    if value.len() > MAX_ID_LEN && value.chars().count() > MAX_ID_LEN {
        return Err(Invalid::new(field, format!("is longer than {MAX_ID_LEN} characters")));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::new(
            field,
            format!("{value:?} contains spaces or control characters"),
        ));
    }
    Ok(())
}

/// Whether a character may stand in a text field: anything printable, and
/// the line breaks and tabs a quoted CSV field or a JSON string may carry
/// (an address on two lines). Other control characters (NUL, escape,
/// backspace, ...) are refused: they are garbage from a broken export, not
/// data.
fn allowed_in_text(c: char) -> bool {
    !c.is_control() || matches!(c, '\n' | '\r' | '\t')
}

fn check_text(field: &'static str, value: &str, required: bool) -> Result<(), Invalid> {
    if required && value.trim().is_empty() {
        return Err(Invalid::new(field, "is empty"));
    }
    if value.len() > MAX_TEXT_LEN && value.chars().count() > MAX_TEXT_LEN {
        return Err(Invalid::new(field, format!("is longer than {MAX_TEXT_LEN} characters")));
    }
    if let Some(c) = value.chars().find(|&c| !allowed_in_text(c)) {
        return Err(Invalid::new(
            field,
            format!("contains the control character {c:?} (only line breaks and tabs are allowed)"),
        ));
    }
    Ok(())
}

/// Most extra columns one record may keep.
pub const MAX_EXTRAS: usize = 32;

/// Whether `name` may name a kept column of a `kind` record: 1 to 64
/// letters, digits, `_` or `-`, not starting with `_` (reserved for the
/// store's own fields, like `_id` and `_version`), and not one of the
/// kind's own fields. (Checked once per mapping, and again per record on
/// the wire.)
pub fn check_extra_name(kind: RecordKind, name: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name.chars().count() <= MAX_ID_LEN
        && !name.starts_with('_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    if !well_formed {
        return Err(format!(
            "{name:?} is not a usable name for a kept column (1 to {MAX_ID_LEN} letters, digits, '_' or '-', \
             not starting with '_')"
        ));
    }
    if kind.columns().contains(&name) || name == "extra" {
        return Err(format!("{name:?} is a field of a {kind} record already"));
    }
    Ok(())
}

fn check_extra(kind: RecordKind, extra: &Extra) -> Result<(), Invalid> {
    if extra.len() > MAX_EXTRAS {
        return Err(Invalid::new("extra", format!("has more than {MAX_EXTRAS} entries")));
    }
    for (name, value) in extra {
        check_extra_name(kind, name).map_err(|problem| Invalid::new("extra", problem))?;
        check_text("extra", value, false).map_err(|e| Invalid::new("extra", format!("{name}: {}", e.problem)))?;
    }
    Ok(())
}

fn check_email(value: &str) -> Result<(), Invalid> {
    check_text("email", value, true)?;
    let mut parts = value.split('@');
    let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
        (Some(l), Some(d), None) => (l, d),
        _ => return Err(Invalid::new("email", format!("{value:?} is not an email address"))),
    };
    let domain_ok = domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.');
    if local.is_empty() || !domain_ok || value.contains(char::is_whitespace) {
        return Err(Invalid::new("email", format!("{value:?} is not an email address")));
    }
    Ok(())
}

impl Customer {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_id("user_id", &self.user_id)?;
        check_text("name", &self.name, true)?;
        check_text("address", &self.address, false)?;
        check_text("zip_code", self.zip_code.as_deref().unwrap_or(""), false)?;
        check_text("phone_number", &self.phone_number, false)?;
        check_email(&self.email)?;
        check_extra(RecordKind::Customer, &self.extra)
    }
}

impl Product {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_id("product_id", &self.product_id)?;
        check_text("description", &self.description, true)?;
        check_text("product_type", &self.product_type, true)?;
        check_extra(RecordKind::Product, &self.extra)
    }
}

impl Rental {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_id("product_id", &self.product_id)?;
        check_id("user_id", &self.user_id)?;
        check_extra(RecordKind::Rental, &self.extra)
    }
}
