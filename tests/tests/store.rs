//! The store against a real MongoDB-compatible server: keyed upserts, counts,
//! the key as `_id`, the version guard and the two business queries.

use hpn_common::{Record, RecordKind};
/// MongoDB's code for a duplicate key.
const DUPLICATE_KEY: i32 = 11000;
use hpn_tests::{customer, documents, expected_documents, product, rental, versions, TestEnv};
use mongodb::bson::doc;

#[tokio::test]
async fn upserts_insert_then_update_and_never_duplicate() {
    let env = TestEnv::new("store_upsert");
    let store = env.store().await;

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

    // The key is the _id: a plain insert of a known key fails with E11000,
    // and the _id index is the collection's only index.
    let indexes = store.collection(RecordKind::Customer).list_index_names().await.unwrap();
    assert_eq!(indexes, vec![hpn_importer::document::KEY_INDEX]);
    let err = store
        .collection(RecordKind::Customer)
        .insert_one(doc! {"_id": "C1", "user_id": "C1"})
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&DUPLICATE_KEY.to_string()), "{err}");
    env.cleanup().await;
}

#[tokio::test]
async fn rentals_are_keyed_on_the_pair() {
    let env = TestEnv::new("store_rentals");
    let store = env.store().await;
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
            // P10 shares P1's first characters: not one of P1's rentals.
            &[
                rental("P1", "C1"),
                rental("P1", "C3"),
                rental("P3", "C2"),
                rental("P10", "C2"),
            ],
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

/// (user_id, name, stored version) of every customer.
async fn customers(store: &hpn_importer::Store) -> Vec<(String, String, Option<i64>)> {
    versions(store, RecordKind::Customer)
        .await
        .into_iter()
        .map(|(d, v)| {
            (
                d.get_str("user_id").unwrap().to_string(),
                d.get_str("name").unwrap().to_string(),
                v,
            )
        })
        .collect()
}

/// Versions decide, not arrival: older or equal versions change nothing and
/// are counted stale, in the insert-first write and in the plain upsert
/// alike; a record without a version is applied on arrival and clears the
/// stored version.
#[tokio::test]
async fn the_version_guard_keeps_the_newest_whatever_order_batches_arrive_in() {
    let env = TestEnv::new("store_versions");
    let store = env.store().await;
    let v = |id: &str, name: &str, version: i64| customer(id, name).with_version(version);

    // One batch, out of order: A's newest comes first, B has two equal versions.
    let first = vec![v("A", "A5", 5), v("A", "A3", 3), v("B", "B2", 2), v("B", "B2bis", 2)];
    let outcome = store.write(RecordKind::Customer, &first).await.unwrap();
    assert_eq!(
        (outcome.inserted, outcome.updated, outcome.stale),
        (2, 0, 2),
        "{outcome:?}"
    );

    // Across batches: older (A4) and equal (B2) are stale, newer (B7) wins;
    // C has no version, then D is new.
    let second = vec![
        v("A", "A4", 4),
        v("B", "B7", 7),
        customer("C", "C-none"),
        v("D", "D1", 1),
    ];
    let outcome = store.write(RecordKind::Customer, &second).await.unwrap();
    assert_eq!(
        (outcome.inserted, outcome.updated, outcome.stale),
        (2, 1, 1),
        "{outcome:?}"
    );
    let outcome = store
        .write(RecordKind::Customer, &[v("B", "B2again", 2)])
        .await
        .unwrap();
    assert_eq!(outcome.stale, 1, "an equal version changes nothing: {outcome:?}");

    // The plain upsert path, same rule: stale A1, versioned C over an
    // unversioned document, unversioned D over a versioned one.
    let third = vec![v("A", "A1", 1), v("C", "C3", 3), customer("D", "D-none")];
    let outcome = store.upsert(RecordKind::Customer, &third).await.unwrap();
    assert_eq!(
        (outcome.inserted, outcome.updated, outcome.stale),
        (0, 2, 1),
        "{outcome:?}"
    );
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    // Once D is unversioned, any version replaces it.
    let outcome = store.upsert(RecordKind::Customer, &[v("D", "D0", 0)]).await.unwrap();
    assert_eq!(outcome.updated, 1, "{outcome:?}");

    assert_eq!(
        customers(&store).await,
        vec![
            ("A".into(), "A5".into(), Some(5)),
            ("B".into(), "B7".into(), Some(7)),
            ("C".into(), "C3".into(), Some(3)),
            ("D".into(), "D0".into(), Some(0)),
        ]
    );
    env.cleanup().await;
}

/// Many writers racing on the same new keys with shuffled versions: the
/// race on the insert, the retry of the losing upsert and the guard
/// together leave the highest version of every key.
#[tokio::test]
async fn racing_writers_on_new_keys_end_at_the_highest_version() {
    let env = TestEnv::new("store_version_race");
    let store = env.store().await;
    let keys = 200;
    let mut tasks = Vec::new();
    for writer in 0..6_i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Writer w writes version (w * 7) % 6 of every key: a different
            // order of versions per writer, all at once.
            let version = (writer * 7 + 3) % 6;
            let batch: Vec<Record> = (0..keys)
                .map(|k| customer(&format!("K{k:03}"), &format!("v{version}")).with_version(version))
                .collect();
            let (write, upsert) = batch.split_at(keys / 2);
            let a = store.write(RecordKind::Customer, write).await.unwrap();
            let b = store.upsert(RecordKind::Customer, upsert).await.unwrap();
            assert!(a.failed.is_empty() && b.failed.is_empty(), "{a:?} {b:?}");
            a.inserted + a.updated + a.stale + b.inserted + b.updated + b.stale
        }));
    }
    let mut handled = 0;
    for task in tasks {
        handled += task.await.unwrap();
    }
    assert_eq!(handled, 6 * keys as u64, "every record accounted for");
    let stored = customers(&store).await;
    assert_eq!(stored.len(), keys);
    for (id, name, version) in stored {
        assert_eq!((name.as_str(), version), ("v5", Some(5)), "{id}");
    }
    env.cleanup().await;
}

/// Every write command the store sends carries a durable write concern, as
/// the server receives it (the driver's command monitoring shows each
/// command whole): the inserts, the guarded updates sent with
/// `run_command`, and the stock updates: `j: true`, and `w: "majority"`
/// where the server says it is a replica set (the local server answers
/// `hello` as a one-member set unless started `--standalone`), else `w: 1`.
#[tokio::test]
async fn every_write_command_is_sent_journaled() {
    let env = TestEnv::new("store_write_concern");
    let (store, sent) = env
        .monitored_store(|started| (started.command_name.clone(), started.command.clone()))
        .await;
    let hello = store
        .client()
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .unwrap();
    let majority = hello.get_str("setName").is_ok();
    let customers = vec![customer("C1", "Ann"), customer("C2", "Bob")];
    store.write(RecordKind::Customer, &customers).await.unwrap();
    // The same keys again: the insert meets them, the guarded update applies.
    let outcome = store.write(RecordKind::Customer, &customers).await.unwrap();
    assert_eq!(outcome.updated, 2, "the guarded-update path ran");
    store.upsert(RecordKind::Product, &[product("P1", 3)]).await.unwrap();
    store.take_stock("P1", "C1").await.unwrap();

    let writes: Vec<(String, mongodb::bson::Document)> = sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| ["insert", "update", "delete", "findAndModify"].contains(&name.as_str()))
        .cloned()
        .collect();
    let names: Vec<&str> = writes.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.contains(&"insert") && names.contains(&"update"),
        "both paths: {names:?}"
    );
    assert!(writes.len() >= 4, "{names:?}");
    for (name, command) in &writes {
        let concern = command
            .get_document("writeConcern")
            .unwrap_or_else(|_| panic!("{name} sent without a write concern: {command}"));
        assert_eq!(concern.get_bool("j"), Ok(true), "{name}: {concern}");
        let w = concern.get("w").expect("w is set");
        if majority {
            assert_eq!(w.as_str(), Some("majority"), "{name}: {concern}");
        } else {
            assert!(w.as_i64() == Some(1) || w.as_i32() == Some(1), "{name}: {concern}");
        }
    }
    store.shutdown().await;
    env.cleanup().await;
}

/// Records folded into a key's winner count as the winner does against the
/// store: updates when it wins, stale when the store holds a newer version
/// (stored v5, a batch of v3 and v4: nothing changed, both stale), whichever
/// write path takes the batch.
#[tokio::test]
async fn records_folded_into_a_stale_winner_are_stale_too() {
    let env = TestEnv::new("store_folded_stale");
    let store = env.store().await;
    let kind = RecordKind::Customer;
    let at = |name: &str, v: i64| customer("C1", name).with_version(v);
    let counts = |o: &hpn_importer::WriteOutcome| (o.inserted, o.updated, o.stale);
    assert_eq!(counts(&store.write(kind, &[at("Five", 5)]).await.unwrap()), (1, 0, 0));
    let older = [at("Three", 3), at("Four", 4)];
    assert_eq!(counts(&store.write(kind, &older).await.unwrap()), (0, 0, 2), "write");
    assert_eq!(counts(&store.upsert(kind, &older).await.unwrap()), (0, 0, 2), "upsert");
    let fresh = env.store().await;
    assert_eq!(
        counts(&fresh.write(kind, &older).await.unwrap()),
        (0, 0, 2),
        "a new importer's first batch"
    );
    // The winner newer than the store: the record folded into it counts as
    // applied, then overwritten.
    let newer = [at("Six", 6), at("Seven", 7)];
    assert_eq!(counts(&store.write(kind, &newer).await.unwrap()), (0, 2, 0));
    let stored = versions(&store, kind).await;
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].0.get_str("name"), stored[0].1), (Ok("Seven"), Some(7)));
    env.cleanup().await;
}
