//! The stored document's shape, as the importer writes it: the field and
//! index names (docs/message-format.md, *What the stored document holds*)
//! and the encoders, for what checks or measures the store from outside:
//! the tests, and the bench's loaders, which build their documents the
//! importer's way so that a slower client does not lower their bar. The
//! rest of the store stays inside the importer.

pub use crate::store::{
    fields_raw, key_id, key_of, stored_document, stored_raw, to_document, DELETED_FIELD, KEY_INDEX, OLD_KEY_INDEXES,
    VERSION_FIELD,
};
