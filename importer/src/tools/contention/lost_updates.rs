//! Scenario 2, lost updates: rentals of one product taken by several
//! consumers at once; read-modify-write of the stock loses all but one.

use super::scratch::Scratch;
use super::{as_mongo, ContentionOptions, ScenarioRow};
use crate::error::{Error, Result};
use crate::store::StockOutcome;
use hpn_common::{Record, RecordKind};
use mongodb::bson::{doc, Document};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockStrategy {
    /// Read the quantity, compute, write it back.
    ReadModifyWrite,
    /// The importer's write: one atomic, guarded, idempotent update.
    AtomicConditional,
}

pub async fn lost_updates(
    scratch: &Scratch,
    options: &ContentionOptions,
    strategy: StockStrategy,
) -> Result<ScenarioRow> {
    let store = scratch.store.clone();
    let products = scratch.empty(RecordKind::Product).await?;
    let seeded: Vec<Document> = (0..options.products)
        .map(|p| {
            let id = format!("P{p:03}");
            doc! {"_id": &id, "product_id": &id, "description": "Contended sofa", "product_type": "livingroom", "quantity_available": i64::from(options.stock)}
        })
        .collect();
    products
        .insert_many(seeded)
        .await
        .map_err(crate::store::StoreError::from)?;
    // Consumer i gets rentals of every product, in the same order as every
    // other consumer, by different customers.
    for round in 0..options.rentals {
        for p in 0..options.products {
            for i in 0..scratch.consumers {
                let rental = Record::Rental(hpn_common::Rental {
                    product_id: format!("P{p:03}"),
                    user_id: format!("R{round}-{i}"),
                    extra: Default::default(),
                    version: None,
                });
                scratch.publish(&scratch.direct(), &scratch.queue(i), &rental).await?;
            }
        }
    }
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (operations, errors) = match strategy {
        StockStrategy::ReadModifyWrite => {
            let products = products.clone();
            scratch
                .race(RecordKind::Rental, move |record, barrier| {
                    let products = products.clone();
                    async move {
                        let Record::Rental(rental) = record else { return Ok(()) };
                        // ---- NAIVE, kept for the demonstration: read, modify, write. ----
                        // Step 1: read the quantity. Every consumer renting this
                        // product reads now, and all read the same number, say 20.
                        let product = products.find_one(doc! {"_id": &rental.product_id}).await?;
                        let quantity = product.and_then(|p| p.get_i64("quantity_available").ok()).unwrap_or(0);
                        barrier.wait().await;
                        // Step 2: each computes 20 - 1 = 19 and writes it back.
                        // Four rentals happened; the stock went down by one. Each
                        // write silently overwrote the others: a lost update, and
                        // no error anywhere to tell anyone.
                        let result = if quantity > 0 {
                            products
                                .update_one(
                                    doc! {"_id": &rental.product_id},
                                    doc! {"$set": {"quantity_available": quantity - 1}},
                                )
                                .await
                                .map(|_| ())
                        } else {
                            Ok(())
                        };
                        barrier.wait().await;
                        result
                    }
                })
                .await?
        }
        StockStrategy::AtomicConditional => {
            let (store, refused) = (store.clone(), refused.clone());
            scratch
                .race(RecordKind::Rental, move |record, barrier| {
                    let (store, refused) = (store.clone(), refused.clone());
                    async move {
                        let Record::Rental(rental) = record else { return Ok(()) };
                        // ---- SAFE: the importer's own stock update. ----
                        // `take_stock` is one atomic update of the product:
                        // `$inc: -1` only where `quantity_available > 0` and this
                        // rental is not yet recorded. The server applies it to
                        // whatever the quantity is at that instant, so concurrent
                        // rentals each take their own unit; the guard is checked
                        // in the same step, so stock never goes below zero; and
                        // a rental that finds no stock is reported, not applied.
                        barrier.wait().await;
                        let outcome = store.take_stock(&rental.product_id, &rental.user_id).await;
                        barrier.wait().await;
                        match outcome {
                            Ok(StockOutcome::OutOfStock) => {
                                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                Ok(())
                            }
                            Ok(_) => Ok(()),
                            Err(e) => Err(as_mongo(e)),
                        }
                    }
                })
                .await?
        }
    };
    let remaining = total_stock(scratch).await?;
    let rentals_per_product = options.rentals as u64 * scratch.consumers as u64;
    let expected = options.products as u64 * u64::from(options.stock).saturating_sub(rentals_per_product);
    let (name, notes) = match strategy {
        StockStrategy::ReadModifyWrite => (
            "naive: read, modify, write",
            format!(
                "{} rentals took {} units",
                options.products as u64 * rentals_per_product,
                options.products as u64 * u64::from(options.stock) - remaining
            ),
        ),
        StockStrategy::AtomicConditional => (
            "safe: atomic conditional $inc",
            format!(
                "{} rentals refused as out of stock, none below zero",
                refused.load(std::sync::atomic::Ordering::Relaxed)
            ),
        ),
    };
    Ok(ScenarioRow {
        scenario: "lost updates".into(),
        strategy: name.into(),
        consumers: scratch.consumers,
        operations,
        errors,
        expected,
        found: remaining,
        measure: "units in stock".into(),
        notes,
    })
}

async fn total_stock(scratch: &Scratch) -> Result<u64> {
    let docs = scratch.documents(RecordKind::Product).await?;
    let mut total = 0i64;
    for d in docs {
        let quantity = d.get_i64("quantity_available").unwrap_or(0);
        if quantity < 0 {
            return Err(Error::Task(format!("stock below zero: {d}")));
        }
        total += quantity;
    }
    Ok(total as u64)
}
