//! Taking stock for a rental: one atomic, idempotent update of its product.

use super::document::live;
use super::{Store, StoreError};
use hpn_common::record::RecordKind;
use mongodb::bson::doc;

/// What taking stock for a rental did (see [`Store::take_stock`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockOutcome {
    /// One unit was taken for this rental.
    Taken,
    /// This rental had already taken its unit (a redelivery): nothing changed.
    AlreadyTaken,
    /// The product has no stock left: nothing changed.
    OutOfStock,
    /// There is no such product: nothing changed.
    UnknownProduct,
}

impl Store {
    /// Take one unit of stock for a rental, exactly once per rental, never
    /// below zero.
    ///
    /// The whole decision is one atomic update of the product document:
    /// "if it has stock and this customer's rental is not yet recorded on it,
    /// take one unit and record the rental". MongoDB applies an update to a
    /// single document atomically, so two consumers racing on one product
    /// cannot both read the same quantity and write back the same result
    /// (the lost update of the naive read-modify-write): each `$inc` applies
    /// to whatever the quantity is at that moment, and the `$gt: 0` guard
    /// is checked in the same step, so the quantity never goes below zero.
    /// Recording the rental (`rented_to`, the renting `user_id`s) in the same
    /// update makes it idempotent: a redelivered rental finds itself recorded
    /// and changes nothing. The list is bounded by the stock the product ever
    /// had, since each entry took one unit.
    ///
    /// The reads after a refused update only explain the refusal for the
    /// report; they decide nothing.
    ///
    /// A deleted product (a tombstone) has no stock and counts as unknown.
    pub async fn take_stock(&self, product_id: &str, user_id: &str) -> Result<StockOutcome, StoreError> {
        let products = self.collection(RecordKind::Product);
        let result = products
            .update_one(
                doc! {"_id": product_id, "quantity_available": {"$gt": 0}, "rented_to": {"$ne": user_id}},
                doc! {"$inc": {"quantity_available": -1}, "$push": {"rented_to": user_id}},
            )
            .await?;
        if result.modified_count == 1 {
            return Ok(StockOutcome::Taken);
        }
        if products
            .find_one(doc! {"_id": product_id, "rented_to": user_id})
            .await?
            .is_some()
        {
            return Ok(StockOutcome::AlreadyTaken);
        }
        let mut exists = live();
        exists.insert("_id", product_id);
        if products.find_one(exists).await?.is_some() {
            Ok(StockOutcome::OutOfStock)
        } else {
            Ok(StockOutcome::UnknownProduct)
        }
    }
}
