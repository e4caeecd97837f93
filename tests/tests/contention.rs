//! Contention on real servers: the naive strategies break, the safe ones
//! do not, redelivered rentals take stock once, and a parallel import with
//! several consumers ends equal to a linear one.

use hpn_common::RecordKind;
use hpn_importer::contention::{self, ContentionOptions};
use hpn_importer::StockOutcome;
use hpn_importer::{run_linear, run_parallel};
use hpn_producer::{publish_files, PublishOptions};
use hpn_tests::{documents, TestEnv};
use mongodb::bson::doc;
use std::path::PathBuf;

async fn publish(env: &TestEnv, files: &[PathBuf]) {
    publish_files(&env.settings.broker(), files, &PublishOptions::default())
        .await
        .unwrap();
}

fn write(env: &TestEnv, name: &str, text: &str) -> PathBuf {
    let path = env.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn naive_strategies_break_every_time_and_safe_ones_stay_clean() {
    let env = TestEnv::new("contention_demo");
    let options = ContentionOptions {
        consumers: 3,
        keys: 20,
        products: 2,
        stock: 5,
        rentals: 3,
    };
    let rows = contention::run(&env.settings, &options).await.unwrap();
    let row = |scenario: &str, strategy_starts: &str| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.strategy.starts_with(strategy_starts))
            .unwrap_or_else(|| panic!("no row {scenario} / {strategy_starts} in {rows:?}"))
            .clone()
    };

    let unkeyed = row("duplicate keys", "naive: check then insert, key not unique");
    assert_eq!(unkeyed.expected, 20);
    assert_eq!(unkeyed.found, 60, "every consumer inserted every customer: {unkeyed:?}");
    assert!(!unkeyed.is_clean());

    let keyed = row("duplicate keys", "naive: check then insert, key as _id");
    assert_eq!(keyed.errors.get("11000"), Some(&40), "two losers per key: {keyed:?}");
    assert_eq!(keyed.found, 20);
    assert!(!keyed.is_clean());

    let upsert = row("duplicate keys", "safe");
    assert!(upsert.errors.is_empty(), "{upsert:?}");
    assert_eq!((upsert.expected, upsert.found), (20, 20));
    assert_eq!(upsert.operations, 60);

    // 3 consumers x 3 rentals = 9 rentals per product, 5 in stock.
    let naive_stock = row("lost updates", "naive");
    assert_eq!(naive_stock.expected, 0);
    assert_eq!(
        naive_stock.found,
        2 * (5 - 3),
        "one unit per round of three rentals: {naive_stock:?}"
    );
    assert!(!naive_stock.is_clean());

    let safe_stock = row("lost updates", "safe");
    assert!(safe_stock.is_clean(), "{safe_stock:?}");
    assert!(safe_stock.notes.starts_with("8 rentals refused"), "{safe_stock:?}");

    // 3 consumers hold versions 3, 2 and 1 of 20 customers; the oldest is written last.
    let last_arrival = row("stale overwrite by reordering", "naive");
    assert_eq!(last_arrival.expected, 20);
    assert_eq!(
        last_arrival.found, 0,
        "every customer ends at version 1: {last_arrival:?}"
    );
    assert!(!last_arrival.is_clean());
    let guarded = row("stale overwrite by reordering", "safe");
    assert!(guarded.is_clean(), "{guarded:?}");
    assert_eq!(guarded.operations, 60);
    assert!(guarded.notes.starts_with("40 older versions"), "{guarded:?}");

    // 3 consumers: the delete (version 3) is written first, then versions 2 and 1.
    let removed = row("resurrection by reordering", "naive");
    assert_eq!(removed.expected, 20);
    assert_eq!(removed.found, 0, "every deleted customer is back: {removed:?}");
    assert!(
        removed.notes.starts_with("20 of 20 deleted customers are back"),
        "{removed:?}"
    );
    assert!(!removed.is_clean());
    let tombstone = row("resurrection by reordering", "safe");
    assert!(tombstone.is_clean(), "{tombstone:?}");
    assert_eq!(tombstone.operations, 60);
    assert!(tombstone.notes.starts_with("40 older updates"), "{tombstone:?}");

    let json = serde_json::to_value(&rows).unwrap();
    assert_eq!(json[1]["errors"]["11000"], 40);
    for field in [
        "scenario",
        "strategy",
        "consumers",
        "operations",
        "errors",
        "expected",
        "found",
    ] {
        assert!(json[0].get(field).is_some(), "JSON rows have {field}");
    }

    let scratch = hpn_importer::Store::connect(
        &env.settings.mongodb_uri,
        &format!("{}_contention", env.settings.database),
    )
    .await
    .unwrap();
    scratch.database().drop().await.unwrap();
    env.cleanup().await;
}

async fn stock(env: &TestEnv) -> Vec<(String, i64)> {
    documents(&env.store().await, RecordKind::Product)
        .await
        .iter()
        .map(|d| {
            (
                d.get_str("product_id").unwrap().to_string(),
                d.get_i64("quantity_available").unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn redelivered_rentals_take_stock_only_once() {
    let env = TestEnv::new("contention_redelivery");
    let products = write(
        &env,
        "products.csv",
        "product_id,description,product_type,quantity_available\nP1,Sofa,livingroom,3\nP2,Bed,bedroom,1\n",
    );
    let rentals = write(
        &env,
        "rentals.csv",
        "product_id,user_id\nP1,C1\nP1,C2\nP2,C1\nP2,C2\nP9,C1\n",
    );
    let mut cfg = env.config();
    cfg.rentals_take_stock = true;

    // A crash after a rental took its stock but before the rental was stored:
    // the stock is taken, the rental document is missing.
    let store = env.store().await;
    publish(&env, std::slice::from_ref(&products)).await;
    run_parallel(&cfg).await.unwrap();
    assert_eq!(store.take_stock("P1", "C1").await.unwrap(), StockOutcome::Taken);
    assert_eq!(stock(&env).await, vec![("P1".into(), 2), ("P2".into(), 1)]);

    publish(&env, std::slice::from_ref(&rentals)).await;
    let first = run_parallel(&cfg).await.unwrap();
    let rentals_stats = &first[2];
    assert_eq!(
        (rentals_stats.inserted, rentals_stats.rejected),
        (3, 2),
        "{rentals_stats:?}"
    );
    // P1: C1's unit was already taken before the crash, C2 takes one more.
    assert_eq!(stock(&env).await, vec![("P1".into(), 1), ("P2".into(), 0)]);

    // The same rentals delivered again: nothing changes but the updated count.
    publish(&env, std::slice::from_ref(&rentals)).await;
    let again = run_linear(&cfg).await.unwrap();
    let rentals_stats = &again[2];
    assert_eq!(
        (rentals_stats.inserted, rentals_stats.updated),
        (0, 3),
        "{rentals_stats:?}"
    );
    assert_eq!((rentals_stats.count_before, rentals_stats.count_after), (3, 3));
    assert_eq!(stock(&env).await, vec![("P1".into(), 1), ("P2".into(), 0)]);
    let renters = store.customers_renting("P2").await.unwrap();
    assert!(renters.is_empty(), "no customers imported, so none listed");
    let p2 = store
        .collection(RecordKind::Rental)
        .count_documents(doc! {"product_id": "P2"})
        .await
        .unwrap();
    assert_eq!(p2, 1, "the rental refused for lack of stock is not stored");
    env.cleanup().await;
}

/// 100 customers, each written 10 times; `versions` decides whether the
/// copies differ (later wins) or are identical (redeliveries).
fn overlapping_customers(env: &TestEnv, name: &str, versions_differ: bool) -> PathBuf {
    let mut text = String::from("user_id,name,address,zip_code,phone_number,email\n");
    for version in 0..10 {
        for key in 0..100 {
            let name = if versions_differ {
                format!("Customer {key} v{version}")
            } else {
                format!("Customer {key}")
            };
            text.push_str(&format!(
                "C{key:03},{name},{key} Main St,98101,555-0100,c{key}@example.com\n"
            ));
        }
    }
    write(env, name, &text)
}

/// Three consumers and four writers take the ten copies of a key in any
/// order; the versions make the end state the linear one all the same.
#[tokio::test]
async fn parallel_import_with_heavy_key_overlap_equals_linear() {
    for versions_differ in [true, false] {
        let linear = TestEnv::new("overlap_linear");
        let parallel = TestEnv::new("overlap_parallel");
        let file = overlapping_customers(&linear, "customers.csv", versions_differ);
        publish(&linear, std::slice::from_ref(&file)).await;
        publish(&parallel, std::slice::from_ref(&file)).await;

        run_linear(&linear.config()).await.unwrap();
        let stats = run_parallel(&parallel.racing_config(3, 4, 37)).await.unwrap();
        assert_eq!(
            (stats[0].processed, stats[0].count_after),
            (1000, 100),
            "{:?}",
            stats[0]
        );
        assert_eq!(
            (stats[0].inserted, stats[0].updated + stats[0].stale),
            (100, 900),
            "{:?}",
            stats[0]
        );

        let (a, b) = (linear.store().await, parallel.store().await);
        let linear_docs = documents(&a, RecordKind::Customer).await;
        assert_eq!(linear_docs.len(), 100);
        assert_eq!(
            documents(&b, RecordKind::Customer).await,
            linear_docs,
            "versions differ: {versions_differ}"
        );
        if versions_differ {
            assert!(
                linear_docs.iter().all(|d| d.get_str("name").unwrap().ends_with("v9")),
                "the last version wins"
            );
        }
        linear.cleanup().await;
        parallel.cleanup().await;
    }
}
