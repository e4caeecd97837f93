//! The read queries the business relies on: the brief's two, and the
//! rentals whose customer or product is missing.

use super::document::{live, rentals_of_product, DELETED_FIELD};
use super::{Store, StoreError};
use futures::TryStreamExt;
use hpn_common::record::{Customer, Product, RecordKind};
use mongodb::bson::{doc, Document};

/// A rental whose customer or product is not in the store (yet: a queue
/// may deliver a rental before its customer; or at all: the file named a
/// customer no file has).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Orphan {
    pub product_id: String,
    pub user_id: String,
    pub missing_customer: bool,
    pub missing_product: bool,
}

/// What [`Store::orphan_rentals`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Orphans {
    /// Rentals looked at: all of them.
    pub rentals: u64,
    /// Those whose customer or product is missing, by product then customer.
    pub orphans: Vec<Orphan>,
}

/// Rentals looked up per round trip by [`Store::orphan_rentals`].
const ORPHAN_BATCH: usize = 1000;

impl Store {
    /// The brief's first query: every product with stock, keyed by `product_id`.
    pub async fn available_products(&self) -> Result<Vec<Product>, StoreError> {
        let projection = doc! {"_id": 0, "product_id": 1, "description": 1, "product_type": 1, "quantity_available": 1};
        let cursor = self
            .db
            .collection::<Product>(RecordKind::Product.collection())
            .find(doc! {"quantity_available": {"$gt": 0}, DELETED_FIELD: {"$ne": true}})
            .projection(projection)
            .sort(doc! {"_id": 1})
            .await?;
        Ok(cursor.try_collect().await?)
    }

    /// The brief's second query: every customer who rented `product_id`.
    /// Both lookups ride the `_id` index: the product's rentals are one
    /// range of it, their customers one `$in`.
    ///
    /// Deleted rentals and deleted customers are left out, and a deleted
    /// product has no renters: its rentals stay in the store as history
    /// (the orphans query lists them), and come back with the product.
    pub async fn customers_renting(&self, product_id: &str) -> Result<Vec<Customer>, StoreError> {
        let tombstone = doc! {"_id": product_id, DELETED_FIELD: true};
        if self
            .collection(RecordKind::Product)
            .find_one(tombstone)
            .await?
            .is_some()
        {
            return Ok(Vec::new());
        }
        let mut of_product = rentals_of_product(product_id);
        of_product.insert(DELETED_FIELD, doc! {"$ne": true});
        let rentals = self
            .collection(RecordKind::Rental)
            .find(of_product)
            .projection(doc! {"_id": 0, "user_id": 1})
            .await?;
        let user_ids: Vec<String> = rentals
            .try_collect::<Vec<Document>>()
            .await?
            .into_iter()
            .filter_map(|d| d.get_str("user_id").ok().map(str::to_string))
            .collect();
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let projection =
            doc! {"_id": 0, "user_id": 1, "name": 1, "address": 1, "zip_code": 1, "phone_number": 1, "email": 1};
        let cursor = self
            .db
            .collection::<Customer>(RecordKind::Customer.collection())
            .find(doc! {"_id": {"$in": user_ids}, DELETED_FIELD: {"$ne": true}})
            .projection(projection)
            .sort(doc! {"_id": 1})
            .await?;
        Ok(cursor.try_collect().await?)
    }

    /// Every rental whose customer or product is not in the store, or
    /// only as a tombstone: a deleted customer's live rentals are listed
    /// here, for someone to end them (deleted rentals are not).
    ///
    /// Rentals are read in key order, a thousand at a time, and each batch's
    /// customers and products are looked up with one `$in` query each: the
    /// memory held is one batch whatever the collections' sizes, and it runs
    /// the same on any MongoDB (no `$lookup`, which would scan a collection
    /// per rental without an index on the foreign side).
    pub async fn orphan_rentals(&self) -> Result<Orphans, StoreError> {
        let mut cursor = self
            .collection(RecordKind::Rental)
            .find(live())
            .projection(doc! {"_id": 0, "product_id": 1, "user_id": 1})
            .sort(doc! {"_id": 1})
            .batch_size(ORPHAN_BATCH as u32)
            .await?;
        let mut found = Orphans::default();
        let mut batch = Vec::with_capacity(ORPHAN_BATCH);
        loop {
            let next = cursor.try_next().await?;
            if let Some(rental) = &next {
                let field = |name| rental.get_str(name).unwrap_or_default().to_string();
                batch.push((field("product_id"), field("user_id")));
            }
            if batch.len() == ORPHAN_BATCH || (next.is_none() && !batch.is_empty()) {
                found.rentals += batch.len() as u64;
                self.find_orphans(&batch, &mut found.orphans).await?;
                batch.clear();
            }
            if next.is_none() {
                return Ok(found);
            }
        }
    }

    async fn find_orphans(&self, rentals: &[(String, String)], orphans: &mut Vec<Orphan>) -> Result<(), StoreError> {
        let user_ids: Vec<&str> = rentals.iter().map(|(_, u)| u.as_str()).collect();
        let product_ids: Vec<&str> = rentals.iter().map(|(p, _)| p.as_str()).collect();
        let customers = self.existing(RecordKind::Customer, &user_ids).await?;
        let products = self.existing(RecordKind::Product, &product_ids).await?;
        for (product_id, user_id) in rentals {
            let missing_customer = !customers.contains(user_id);
            let missing_product = !products.contains(product_id);
            if missing_customer || missing_product {
                orphans.push(Orphan {
                    product_id: product_id.clone(),
                    user_id: user_id.clone(),
                    missing_customer,
                    missing_product,
                });
            }
        }
        Ok(())
    }

    /// Which of the keys `ids` have a live document in `kind`'s collection
    /// (a customer's or a product's: their `_id` is a string).
    async fn existing(&self, kind: RecordKind, ids: &[&str]) -> Result<std::collections::HashSet<String>, StoreError> {
        let documents: Vec<Document> = self
            .collection(kind)
            .find(doc! {"_id": {"$in": ids}, DELETED_FIELD: {"$ne": true}})
            .projection(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(documents
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_string))
            .collect())
    }
}
