//! The two business queries of the brief, formatted for a terminal or as
//! JSON keyed the way the brief describes: products by `product_id`,
//! customers by `user_id`; and the orphan rentals, whose customer or
//! product is not in the store; and what `migrate` did.

use crate::store::{Migrated, Orphans, Store};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use hpn_common::{Customer, Product};
use serde_json::{json, Map, Value};

/// The queries `hpn-importer query` answers.
#[derive(clap::Subcommand)]
pub enum Query {
    /// Every product with quantity_available > 0.
    AvailableProducts,
    /// Every customer who rented a product.
    Rentals { product_id: String },
    /// Rentals whose customer or product is not in the store, or deleted.
    Orphans,
}

/// `hpn-importer query`: answer `query` from `store`, as a table with a
/// summary line or as JSON.
pub async fn answer(store: &Store, query: Query, json: bool) -> crate::Result<()> {
    match query {
        Query::AvailableProducts => {
            let products = store.available_products().await?;
            if json {
                println!("{:#}", products_json(&products));
            } else {
                println!("{}\n{}", products_table(&products), products_summary(&products));
            }
        }
        Query::Rentals { product_id } => {
            let customers = store.customers_renting(&product_id).await?;
            if json {
                println!("{:#}", customers_json(&customers));
            } else {
                println!(
                    "{}\n{}",
                    customers_table(&customers),
                    renters_summary(&customers, &product_id)
                );
            }
        }
        Query::Orphans => {
            let found = store.orphan_rentals().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found).expect("orphans as JSON"));
            } else {
                println!("{}\n{}", orphans_table(&found), orphans_summary(&found));
            }
        }
    }
    Ok(())
}

/// Available products as a JSON object keyed by `product_id`.
pub fn products_json(products: &[Product]) -> Value {
    let map: Map<String, Value> = products
        .iter()
        .map(|p| {
            let value = json!({
                "description": p.description,
                "product_type": p.product_type,
                "quantity_available": p.quantity_available,
            });
            (p.product_id.clone(), value)
        })
        .collect();
    Value::Object(map)
}

/// Customers as a JSON object keyed by `user_id`.
pub fn customers_json(customers: &[Customer]) -> Value {
    let map: Map<String, Value> = customers
        .iter()
        .map(|c| {
            let value = json!({
                "name": c.name,
                "address": c.address,
                "phone_number": c.phone_number,
                "email": c.email,
            });
            (c.user_id.clone(), value)
        })
        .collect();
    Value::Object(map)
}

pub fn products_table(products: &[Product]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "product_id",
        "description",
        "product_type",
        "quantity_available",
    ]);
    for p in products {
        table.add_row(vec![
            p.product_id.clone(),
            p.description.clone(),
            p.product_type.clone(),
            p.quantity_available.to_string(),
        ]);
    }
    table
}

pub fn customers_table(customers: &[Customer]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["user_id", "name", "address", "phone_number", "email"]);
    for c in customers {
        table.add_row(vec![
            c.user_id.clone(),
            c.name.clone(),
            c.address.clone(),
            c.phone_number.clone(),
            c.email.clone(),
        ]);
    }
    table
}

/// What is missing for one orphan, in words.
fn missing(customer: bool, product: bool) -> &'static str {
    match (customer, product) {
        (true, true) => "customer and product",
        (true, false) => "customer",
        (false, true) => "product",
        (false, false) => "nothing",
    }
}

pub fn orphans_table(found: &Orphans) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["product_id", "user_id", "not in the store (or deleted)"]);
    for o in &found.orphans {
        table.add_row(vec![
            o.product_id.as_str(),
            o.user_id.as_str(),
            missing(o.missing_customer, o.missing_product),
        ]);
    }
    table
}

/// One line under the table.
pub fn orphans_summary(found: &Orphans) -> String {
    format!(
        "{} of {} rentals name a customer or product that is not in the store, or deleted",
        found.orphans.len(),
        found.rentals
    )
}

/// The line under the products table: how many are available.
pub fn products_summary(products: &[Product]) -> String {
    format!("{} available", counted(products.len(), "product", "products"))
}

/// The line under the customers table of a product's rentals.
pub fn renters_summary(customers: &[Customer], product_id: &str) -> String {
    format!(
        "{} rented {product_id}",
        counted(customers.len(), "customer", "customers")
    )
}

/// `n` and the noun in the number it takes.
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What `migrate` did, one row per collection.
pub fn migrated_table(done: &[Migrated]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "collection",
        "old documents rewritten",
        "of which a newer keyed one stayed",
        "old key index dropped",
        "documents now",
    ]);
    for m in done {
        table.add_row(vec![
            m.collection.to_string(),
            m.rewritten.to_string(),
            m.kept_newer.to_string(),
            if m.dropped_index { "yes" } else { "no" }.to_string(),
            m.documents.to_string(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_keyed_by_business_key() {
        let products = vec![Product {
            product_id: "P1".into(),
            description: "Sofa".into(),
            product_type: "livingroom".into(),
            quantity_available: 2,
            extra: Default::default(),
            version: None,
        }];
        let value = products_json(&products);
        assert_eq!(value["P1"]["quantity_available"], 2);
        assert_eq!(value["P1"]["description"], "Sofa");
        let customers = vec![Customer {
            user_id: "C1".into(),
            name: "Ann".into(),
            address: "1 Main St".into(),
            zip_code: Some("98101".into()),
            phone_number: "555".into(),
            email: "ann@example.com".into(),
            extra: Default::default(),
            version: None,
        }];
        let value = customers_json(&customers);
        assert_eq!(value["C1"]["email"], "ann@example.com");
        assert!(
            value["C1"].get("zip_code").is_none(),
            "the brief's query lists no zip code"
        );
        assert!(products_table(&products).to_string().contains("Sofa"));
        assert!(customers_table(&customers).to_string().contains("ann@example.com"));
    }

    #[test]
    fn orphans_say_what_is_missing() {
        let found = Orphans {
            rentals: 3,
            orphans: vec![crate::store::Orphan {
                product_id: "P1".into(),
                user_id: "C404".into(),
                missing_customer: true,
                missing_product: false,
            }],
        };
        let table = orphans_table(&found).to_string();
        assert!(table.contains("C404") && table.contains("customer"), "{table}");
        assert!(!table.contains("customer and product"), "{table}");
        assert_eq!(
            orphans_summary(&found),
            "1 of 3 rentals name a customer or product that is not in the store, or deleted"
        );
    }

    #[test]
    fn one_is_said_in_the_singular() {
        assert_eq!(counted(1, "customer", "customers"), "1 customer");
        assert_eq!(counted(0, "customer", "customers"), "0 customers");
        assert_eq!(counted(2, "product", "products"), "2 products");
        assert_eq!(renters_summary(&[], "P1"), "0 customers rented P1");
    }
}
