//! The store against a real MongoDB-compatible server: keyed upserts, counts,
//! unique indexes and the two business queries.

use hpn_common::store::DUPLICATE_KEY;
use hpn_common::{Customer, Product, Record, RecordKind, Rental};
use hpn_tests::{documents, expected_documents, TestEnv};
use mongodb::bson::doc;

fn customer(id: &str, name: &str) -> Record {
    Record::Customer(Customer {
        user_id: id.into(),
        name: name.into(),
        address: format!("{id} Main St"),
        zip_code: "98101".into(),
        phone_number: "206-555-0100".into(),
        email: format!("{id}@example.com"),
    })
}

fn product(id: &str, quantity: u32) -> Record {
    Record::Product(Product {
        product_id: id.into(),
        description: format!("product {id}"),
        product_type: "livingroom".into(),
        quantity_available: quantity,
    })
}

fn rental(p: &str, u: &str) -> Record {
    Record::Rental(Rental {
        product_id: p.into(),
        user_id: u.into(),
    })
}

#[tokio::test]
async fn upserts_insert_then_update_and_never_duplicate() {
    let env = TestEnv::new("store_upsert");
    let store = env.store().await;
    store.ensure_indexes().await.unwrap();

    let first = vec![customer("C1", "Ann"), customer("C2", "Bob"), customer("C1", "Ann B.")];
    let outcome = store.upsert(RecordKind::Customer, &first).await.unwrap();
    assert_eq!((outcome.inserted, outcome.updated), (2, 1));
    assert!(outcome.failed.is_empty());
    assert_eq!(store.count(RecordKind::Customer).await.unwrap(), 2);

    let again = vec![customer("C2", "Bob"), customer("C3", "Cy")];
    let outcome = store.upsert(RecordKind::Customer, &again).await.unwrap();
    assert_eq!((outcome.inserted, outcome.updated), (1, 1));
    let docs = documents(&store, RecordKind::Customer).await;
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[0].get_str("name").unwrap(), "Ann B.", "later record wins");

    // The unique index really is there: a plain insert of a known key fails with E11000.
    let err = store
        .collection(RecordKind::Customer)
        .insert_one(doc! {"user_id": "C1"})
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&DUPLICATE_KEY.to_string()), "{err}");
    env.cleanup().await;
}

#[tokio::test]
async fn rentals_are_keyed_on_the_pair() {
    let env = TestEnv::new("store_rentals");
    let store = env.store().await;
    store.ensure_indexes().await.unwrap();
    let rentals = vec![
        rental("P1", "C1"),
        rental("P1", "C2"),
        rental("P2", "C1"),
        rental("P1", "C1"),
    ];
    let outcome = store.upsert(RecordKind::Rental, &rentals).await.unwrap();
    assert_eq!((outcome.inserted, outcome.updated), (3, 1));
    assert_eq!(
        documents(&store, RecordKind::Rental).await,
        expected_documents(RecordKind::Rental, &rentals)
    );
    env.cleanup().await;
}

#[tokio::test]
async fn business_queries_return_what_the_brief_says() {
    let env = TestEnv::new("store_queries");
    let store = env.store().await;
    store.ensure_indexes().await.unwrap();
    store
        .upsert(
            RecordKind::Customer,
            &[customer("C1", "Ann"), customer("C2", "Bob"), customer("C3", "Cy")],
        )
        .await
        .unwrap();
    store
        .upsert(
            RecordKind::Product,
            &[product("P1", 2), product("P2", 0), product("P3", 5)],
        )
        .await
        .unwrap();
    store
        .upsert(
            RecordKind::Rental,
            &[rental("P1", "C1"), rental("P1", "C3"), rental("P3", "C2")],
        )
        .await
        .unwrap();

    let available: Vec<String> = store
        .available_products()
        .await
        .unwrap()
        .into_iter()
        .map(|p| format!("{}:{}", p.product_id, p.quantity_available))
        .collect();
    assert_eq!(available, vec!["P1:2", "P3:5"]);

    let renters = store.customers_renting("P1").await.unwrap();
    assert_eq!(
        renters.iter().map(|c| c.user_id.as_str()).collect::<Vec<_>>(),
        vec!["C1", "C3"]
    );
    assert_eq!(renters[1].name, "Cy");
    assert_eq!(renters[1].email, "C3@example.com");
    assert!(store.customers_renting("P2").await.unwrap().is_empty());
    env.cleanup().await;
}
