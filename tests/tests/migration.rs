//! Migrating a store of an old shape (an `ObjectId` as `_id` and a second
//! unique index on the business key; rentals keyed by a sub-document) to
//! the business key as `_id`, through
//! the very program operators run: the importer refuses the old shape,
//! `hpn-importer migrate` rewrites it whole, a migration killed half-way is
//! finished by running it again, and the store then imports and answers
//! the business queries as a fresh one does.

use hpn_common::{Record, RecordKind};
use hpn_importer::document::{stored_document, KEY_INDEX, OLD_KEY_INDEXES};
use hpn_importer::Store;
use hpn_tests::process::{importer_program, run};
use hpn_tests::{customer, documents, product, rental, versions, TestEnv};
use mongodb::bson::{doc, Document};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `records` as the old loaders stored them: the same document as now
/// (fields, and version when they have one) under a fresh `ObjectId`.
async fn insert_old(store: &Store, kind: RecordKind, records: &[Record]) {
    let documents: Vec<Document> = records
        .iter()
        .map(|r| {
            let mut d = stored_document(r);
            d.remove("_id");
            d
        })
        .collect();
    for chunk in documents.chunks(10_000) {
        store.collection(kind).insert_many(chunk.to_vec()).await.unwrap();
    }
}

/// The old shape's unique index on the business key.
async fn old_index(store: &Store, kind: RecordKind) {
    let keys: Document = kind.key_fields().iter().map(|f| (f.to_string(), 1.into())).collect();
    let model = mongodb::IndexModel::builder()
        .keys(keys)
        .options(mongodb::options::IndexOptions::builder().unique(true).build())
        .build();
    let name = store.collection(kind).create_index(model).await.unwrap().index_name;
    assert!(OLD_KEY_INDEXES.contains(&(kind, name.as_str())), "{name}");
}

fn customers(range: std::ops::Range<usize>, version: i64) -> Vec<Record> {
    range
        .map(|i| customer(&format!("C{i:05}"), &format!("Customer {i}")).with_version(version))
        .collect()
}

/// One collection's row of `hpn-importer migrate --json`: rewritten,
/// kept_newer, dropped_index, documents.
fn migrated_row(json: &serde_json::Value, collection: &str) -> (u64, u64, bool, u64) {
    let row = json
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["collection"] == collection)
        .unwrap_or_else(|| panic!("no {collection} in {json}"));
    (
        row["rewritten"].as_u64().unwrap(),
        row["kept_newer"].as_u64().unwrap(),
        row["dropped_index"].as_bool().unwrap(),
        row["documents"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn an_old_store_is_refused_then_migrated_whole_and_imports_again() {
    let env = TestEnv::new("migrate_whole");
    let store = env.store().await;
    // Customers: 2,500 old documents (three batches of the migration), one
    // with an extra column and no zip code. As if an earlier migration had
    // stopped half-way: the old index is gone, C00001 already has a keyed
    // copy that is newer than its old document (an importer wrote it), and
    // C00002 a keyed copy equal to its old one.
    let mut old = customers(0..2500, 3);
    if let Record::Customer(c) = &mut old[7] {
        c.zip_code = None;
        c.extra.insert("status".into(), "Active".into());
    }
    insert_old(&store, RecordKind::Customer, &old).await;
    let newer = customer("C00001", "Newer").with_version(9);
    store
        .collection(RecordKind::Customer)
        .insert_many([stored_document(&newer), stored_document(&old[2])])
        .await
        .unwrap();
    // Products and rentals: old documents and the old indexes; P1 has
    // taken stock for a rental (`rented_to`), a field no record carries.
    insert_old(
        &store,
        RecordKind::Product,
        &[product("P1", 2), product("P2", 0), product("P3", 5)],
    )
    .await;
    store
        .collection(RecordKind::Product)
        .update_one(doc! {"product_id": "P1"}, doc! {"$set": {"rented_to": ["C00003"]}})
        .await
        .unwrap();
    old_index(&store, RecordKind::Product).await;
    let rentals = [
        rental("P1", "C00003"),
        rental("P1", "C00000"),
        rental("P3", "C00002"),
        rental("P2", "C09999"),
    ];
    insert_old(&store, RecordKind::Rental, &rentals).await;
    old_index(&store, RecordKind::Rental).await;

    let refused = run(&env, &importer_program(), &["run"]);
    assert_ne!(refused.code, Some(0), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("old shape") && refused.stderr.contains("hpn-importer migrate"),
        "the importer says what to run: {}",
        refused.stderr
    );
    assert_eq!(
        store.count(RecordKind::Customer).await.unwrap(),
        2502,
        "nothing written"
    );

    let started = Instant::now();
    let migrated = run(&env, &importer_program(), &["migrate", "--json"]);
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(migrated.code, Some(0), "{}", migrated.stderr);
    let json = migrated.json();
    assert_eq!(migrated_row(&json, "customers"), (2500, 2, false, 2500), "{json}");
    assert_eq!(migrated_row(&json, "products"), (3, 0, true, 3), "{json}");
    assert_eq!(migrated_row(&json, "rentals"), (4, 0, true, 4), "{json}");
    println!("migrate: 2,507 old documents in {seconds:.2} s");

    // Every document keyed (the helpers check each `_id` against its
    // fields), every field kept, one index a collection.
    for kind in RecordKind::ALL {
        let indexes = store.collection(kind).list_index_names().await.unwrap();
        assert_eq!(indexes, vec![KEY_INDEX], "{kind}");
    }
    let stored = versions(&store, RecordKind::Customer).await;
    assert_eq!(stored.len(), 2500);
    assert_eq!(
        (stored[1].0.get_str("name"), stored[1].1),
        (Ok("Newer"), Some(9)),
        "the newer keyed copy stayed"
    );
    assert_eq!((stored[2].0.get_str("name"), stored[2].1), (Ok("Customer 2"), Some(3)));
    assert_eq!(stored[7].0.get_document("extra").unwrap(), &doc! {"status": "Active"});
    assert!(!stored[7].0.contains_key("zip_code"));
    let products = documents(&store, RecordKind::Product).await;
    assert_eq!(products[0].get_array("rented_to").unwrap().len(), 1, "{products:?}");
    assert_eq!(documents(&store, RecordKind::Rental).await.len(), 4);

    // The business queries and the orphans, on the migrated store.
    let available: Vec<String> = store
        .available_products()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.product_id)
        .collect();
    assert_eq!(available, ["P1", "P3"]);
    let renters: Vec<String> = store
        .customers_renting("P1")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.user_id)
        .collect();
    assert_eq!(renters, ["C00000", "C00003"]);
    let orphans = store.orphan_rentals().await.unwrap();
    assert_eq!((orphans.rentals, orphans.orphans.len()), (4, 1), "{orphans:?}");
    assert_eq!(orphans.orphans[0].user_id, "C09999");

    // Again: nothing left to do. And the importer now runs on it.
    let json = run(&env, &importer_program(), &["migrate", "--json"]).json();
    for name in ["customers", "products", "rentals"] {
        assert_eq!(migrated_row(&json, name).0, 0, "{json}");
    }
    let imported = run(&env, &importer_program(), &["run", "--json"]);
    assert_eq!(imported.code, Some(0), "{}", imported.stderr);
    env.cleanup().await;
}

/// A migration killed at a random point of its work is finished by running
/// it again: nothing is lost, nothing doubled, versions respected.
#[tokio::test]
async fn a_migration_killed_half_way_is_finished_by_running_it_again() {
    let env = TestEnv::new("migrate_killed");
    let store = env.store().await;
    let total = 60_000;
    insert_old(&store, RecordKind::Customer, &customers(0..total, 4)).await;
    old_index(&store, RecordKind::Customer).await;

    let mut child = Command::new(importer_program())
        .arg("migrate")
        .envs(env.settings.env_vars())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some keyed documents exist, while old ones remain.
    let collection = store.collection(RecordKind::Customer);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keyed = collection
            .count_documents(doc! {"_id": {"$type": "string"}})
            .await
            .unwrap();
        if keyed >= 3000 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "migrate ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "no keyed documents after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let old_left = collection
        .count_documents(doc! {"_id": {"$type": "objectId"}})
        .await
        .unwrap();
    assert!(old_left > 0, "killed after the end: the test proves nothing");
    println!("killed with {old_left} of {total} old documents left");

    let refused = run(&env, &importer_program(), &["run"]);
    assert!(
        refused.stderr.contains("old shape"),
        "half-migrated is still refused: {}",
        refused.stderr
    );

    let again = run(&env, &importer_program(), &["migrate", "--json"]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let stored = versions(&store, RecordKind::Customer).await;
    assert_eq!(stored.len(), total);
    for (i, (document, version)) in stored.iter().enumerate() {
        assert_eq!(document.get_str("user_id"), Ok(format!("C{i:05}").as_str()));
        assert_eq!(*version, Some(4));
    }
    env.cleanup().await;
}

/// Rentals keyed by a `{product_id, user_id}` sub-document, as for a while
/// after the key became the `_id`, are refused and rewritten under their
/// string key; a string-keyed copy that is newer stays.
#[tokio::test]
async fn rentals_keyed_by_a_sub_document_are_rewritten_under_their_string_key() {
    let env = TestEnv::new("migrate_rental_ids");
    let store = env.store().await;
    let rentals: Vec<Record> = (0..1500)
        .map(|i| rental(&format!("P{:03}", i % 7), &format!("C{i:05}")).with_version(2))
        .collect();
    let by_sub_document: Vec<Document> = rentals
        .iter()
        .map(|r| {
            let mut d = stored_document(r);
            let Record::Rental(x) = r else { unreachable!() };
            d.insert("_id", doc! {"product_id": &x.product_id, "user_id": &x.user_id});
            d
        })
        .collect();
    let collection = store.collection(RecordKind::Rental);
    collection.insert_many(by_sub_document).await.unwrap();
    let newer = rentals[5].clone().with_version(8);
    let mut marked = stored_document(&newer);
    marked.insert("note", "newer");
    collection.insert_one(marked).await.unwrap();

    let refused = run(&env, &importer_program(), &["run"]);
    assert_ne!(refused.code, Some(0), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("rentals collection is of the old shape"),
        "{}",
        refused.stderr
    );

    let migrated = run(&env, &importer_program(), &["migrate", "--json"]);
    assert_eq!(migrated.code, Some(0), "{}", migrated.stderr);
    let json = migrated.json();
    assert_eq!(migrated_row(&json, "rentals"), (1500, 1, false, 1500), "{json}");
    // The helpers check every `_id` against its fields.
    let stored = versions(&store, RecordKind::Rental).await;
    assert_eq!(stored.len(), 1500);
    let kept = stored
        .iter()
        .find(|(d, _)| d.get_str("user_id") == Ok("C00005"))
        .unwrap();
    assert_eq!((kept.0.get_str("note"), kept.1), (Ok("newer"), Some(8)));
    assert!(stored.iter().all(|(_, v)| v.is_some()));
    let orphans = store.orphan_rentals().await.unwrap();
    assert_eq!(
        (orphans.rentals, orphans.orphans.len()),
        (1500, 1500),
        "no customer or product loaded"
    );
    let imported = run(&env, &importer_program(), &["run", "--json"]);
    assert_eq!(imported.code, Some(0), "{}", imported.stderr);
    env.cleanup().await;
}
