//! The re-import's write against a real MongoDB-compatible server: a batch
//! over keys already stored, written in one transaction (read the versions,
//! count the stale, replace the rest), and every command the store sends
//! within MongoDB's limits whatever the records' size.

use hpn_common::{Deletion, Record, RecordKind};
use hpn_importer::WriteOutcome;
use hpn_tests::{customer, documents, expected_documents, product, rental, versions, TestEnv};
use mongodb::bson::{doc, Document};

/// MongoDB's limit on a command's body: `maxBsonObjectSize` plus 16 KiB.
const MAX_COMMAND_BYTES: usize = 16 * 1024 * 1024 + 16 * 1024;

/// MongoDB's limit on one message (`maxMessageSizeBytes`): what a command
/// whose documents travel beside its body (the driver's inserts) may take.
const MAX_MESSAGE_BYTES: usize = 48_000_000;

fn versioned(records: Vec<Record>, version: i64) -> Vec<Record> {
    records.into_iter().map(|r| r.with_version(version)).collect()
}

fn customers(n: usize, name: &str) -> Vec<Record> {
    (0..n).map(|i| customer(&format!("C{i:05}"), name)).collect()
}

fn counts(o: &WriteOutcome) -> (u64, u64, u64, u64) {
    (o.inserted, o.updated, o.stale, o.failed.len() as u64)
}

/// A first load, a re-import that meets every key (the insert-first path
/// finds them, and the collection's next batch takes the re-import's way),
/// a changed export, a replay and a mixed batch: each reported as it is,
/// and the store ends with the newest version of every key.
#[tokio::test]
async fn a_reimport_counts_and_stores_what_a_guarded_write_would() {
    let env = TestEnv::new("reimport_counts");
    let store = env.store().await;
    let kind = RecordKind::Customer;

    let first = versioned(customers(300, "Ann"), 1);
    assert_eq!(counts(&store.write(kind, &first).await.unwrap()), (300, 0, 0, 0));
    // Every key exists: the insert meets them and the guarded updates apply.
    let second = versioned(customers(300, "Bob"), 2);
    assert_eq!(counts(&store.write(kind, &second).await.unwrap()), (0, 300, 0, 0));
    // The re-import's way from here on.
    let third = versioned(customers(300, "Cy"), 3);
    assert_eq!(counts(&store.write(kind, &third).await.unwrap()), (0, 300, 0, 0));
    assert_eq!(documents(&store, kind).await, expected_documents(kind, &third));
    // A replay of the same versions changes nothing and says so.
    assert_eq!(counts(&store.write(kind, &third).await.unwrap()), (0, 0, 300, 0));
    // Older versions too.
    assert_eq!(counts(&store.write(kind, &second).await.unwrap()), (0, 0, 300, 0));
    assert_eq!(documents(&store, kind).await, expected_documents(kind, &third));

    // A mixed batch: 100 newer, 100 stale, 100 new keys.
    let mut mixed = versioned(customers(100, "Dee"), 4);
    mixed.extend(third[100..200].iter().cloned());
    mixed.extend((300..400).map(|i| customer(&format!("C{i:05}"), "Eve").with_version(4)));
    assert_eq!(counts(&store.write(kind, &mixed).await.unwrap()), (100, 100, 100, 0));
    let stored = versions(&store, kind).await;
    assert_eq!(stored.len(), 400);
    for (i, (document, version)) in stored.iter().enumerate() {
        let (name, v) = match i {
            0..100 => ("Dee", 4),
            100..300 => ("Cy", 3),
            _ => ("Eve", 4),
        };
        assert_eq!((document.get_str("name"), *version), (Ok(name), Some(v)), "{document}");
    }
    assert_eq!(store.count(kind).await.unwrap(), 400);

    // A batch of keys scattered over the collection (its range holds far
    // more documents than it has keys): read by key instead, same counts.
    let scattered: Vec<Record> = [0, 150, 399]
        .iter()
        .map(|i| customer(&format!("C{i:05}"), "Fay").with_version(5))
        .chain([customer("C00200", "Old").with_version(1)])
        .collect();
    assert_eq!(counts(&store.write(kind, &scattered).await.unwrap()), (0, 3, 1, 0));
    let names: Vec<(String, Option<i64>)> = versions(&store, kind)
        .await
        .into_iter()
        .map(|(d, v)| (d.get_str("name").unwrap().to_string(), v))
        .collect();
    assert_eq!(names[0], ("Fay".to_string(), Some(5)));
    assert_eq!(names[150], ("Fay".to_string(), Some(5)));
    assert_eq!(names[200], ("Cy".to_string(), Some(3)));
    assert_eq!(names[399], ("Fay".to_string(), Some(5)));
    assert_eq!(
        names.iter().filter(|(n, _)| n == "Fay").count(),
        3,
        "nothing else in the range changed"
    );
    assert_eq!(store.count(kind).await.unwrap(), 400);
    env.cleanup().await;
}

/// A product re-imported keeps what taking stock recorded on it (fields the
/// import does not own), takes the file's quantity, and a tombstone is
/// replaced by a newer record; records without a version apply on arrival.
#[tokio::test]
async fn a_reimport_keeps_the_fields_it_does_not_own_and_revives_tombstones() {
    let env = TestEnv::new("reimport_owned");
    let store = env.store().await;
    let kind = RecordKind::Product;
    let products = |q: u32, v: i64| -> Vec<Record> {
        (0..50)
            .map(|i| product(&format!("P{i:03}"), q).with_version(v))
            .collect()
    };
    store.write(kind, &products(5, 1)).await.unwrap();
    assert_eq!(
        store.take_stock("P000", "C1").await.unwrap(),
        hpn_importer::StockOutcome::Taken
    );
    let delete = Record::Deleted(Deletion::of(kind, "P001").unwrap()).with_version(2);
    assert_eq!(store.write(kind, &[delete]).await.unwrap().deleted, 1);
    store.write(kind, &products(6, 3)).await.unwrap(); // every key met: the next batch replaces
    let outcome = store.write(kind, &products(7, 4)).await.unwrap();
    assert_eq!(counts(&outcome), (0, 50, 0, 0));

    let stored = store
        .collection(kind)
        .find_one(doc! {"_id": "P000"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_i64("quantity_available"), Ok(7));
    assert_eq!(stored.get_array("rented_to").unwrap().len(), 1, "{stored}");
    assert_eq!(store.count(kind).await.unwrap(), 50, "the tombstone is live again");
    // Taking stock stays exactly once after the re-import.
    assert_eq!(
        store.take_stock("P000", "C1").await.unwrap(),
        hpn_importer::StockOutcome::AlreadyTaken
    );
    // A record without a version replaces any version.
    let unversioned: Vec<Record> = (0..50).map(|i| product(&format!("P{i:03}"), 9)).collect();
    assert_eq!(counts(&store.write(kind, &unversioned).await.unwrap()), (0, 50, 0, 0));
    let stored = versions(&store, kind).await;
    assert!(stored
        .iter()
        .all(|(d, v)| v.is_none() && d.get_i64("quantity_available") == Ok(9)));
    env.cleanup().await;
}

/// Several connections race re-imports of the same keys, each with its own
/// versions in a shuffled order, half through the re-import's transaction
/// (`write`, once the keys are met) and half through guarded statements
/// (`upsert`): a guarded statement beside a transaction that deletes and
/// inserts its document can miss it and then meet the new one, and must
/// not take that for stale. Whatever the interleaving, every key ends at
/// the highest version written, and every record is counted once.
#[tokio::test]
async fn racing_reimports_end_with_the_newest_version_of_every_key() {
    let env = TestEnv::new("reimport_race");
    let kind = RecordKind::Customer;
    let setup = env.store().await;
    setup.write(kind, &versioned(customers(400, "v0"), 0)).await.unwrap();
    let writers = 4;
    let rounds = 12;
    // The race is timing: three runs of it, each above the last's versions.
    for repetition in 0..3_i64 {
        let base = repetition * 1_000;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = hpn_importer::Store::connect_to(&env.settings).await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut total = WriteOutcome::default();
                for round in 0..rounds {
                    // Writer w's versions interleave with the others': w + 4 × round.
                    let version = base + (w + writers * ((round * 7 + w * 3) % rounds)) as i64 + 1;
                    let batch = versioned(customers(400, &format!("v{version}")), version);
                    let outcome = if w % 2 == 0 {
                        store.write(kind, &batch).await
                    } else {
                        store.upsert(kind, &batch).await
                    };
                    // A key that kept changing fails the batch, to be tried again.
                    let outcome = match outcome {
                        Err(e) if e.is_transient() => store.write(kind, &batch).await.unwrap(),
                        other => other.unwrap(),
                    };
                    total.inserted += outcome.inserted;
                    total.updated += outcome.updated;
                    total.stale += outcome.stale;
                    assert!(outcome.failed.is_empty());
                }
                total
            }));
        }
        let mut total = WriteOutcome::default();
        for task in tasks {
            let outcome = task.await.unwrap();
            total.updated += outcome.updated;
            total.stale += outcome.stale;
            total.inserted += outcome.inserted;
        }
        let newest = base + (writers * rounds) as i64;
        assert_eq!(total.inserted, 0);
        assert_eq!(
            total.updated + total.stale,
            (writers * rounds * 400) as u64,
            "each record counted once"
        );
        let stored = versions(&setup, kind).await;
        assert_eq!(stored.len(), 400);
        for (document, version) in &stored {
            assert_eq!(*version, Some(newest), "run {repetition}: {document}");
            assert_eq!(document.get_str("name"), Ok(format!("v{newest}").as_str()));
        }
    }
    env.cleanup().await;
}

/// 250 customers at the contract's limits (32 kept columns of 1,000
/// three-byte characters: about 96 KB each, 24 MB a batch) imported,
/// imported again (the guarded updates), re-imported (the transaction),
/// upserted and deleted: every command the store sends, as command
/// monitoring sees it whole, fits MongoDB's limits, though the local server
/// would take larger ones.
#[tokio::test]
async fn every_command_fits_mongodbs_limits_with_records_at_the_contracts_limits() {
    let env = TestEnv::new("reimport_command_size");
    let (store, sent) = env
        .monitored_store(|started| {
            let largest_document = ["documents", "updates", "deletes"]
                .iter()
                .filter_map(|field| started.command.get_array(*field).ok())
                .flatten()
                .filter_map(|d| d.as_document().map(bson_len))
                .max()
                .unwrap_or(0);
            (
                started.command_name.clone(),
                bson_len(&started.command),
                largest_document,
            )
        })
        .await;
    let kind = RecordKind::Customer;
    let wide = |version: i64, text: &str| -> Vec<Record> {
        (0..250)
            .map(|i| {
                let mut record = customer(&format!("W{i:04}"), "Wide");
                if let Record::Customer(c) = &mut record {
                    c.extra = (0..32).map(|c| (format!("c{c}"), text.repeat(1_000))).collect();
                }
                record.with_version(version)
            })
            .collect()
    };
    let expect = |o: WriteOutcome, inserted, updated| {
        assert_eq!((o.inserted, o.updated, o.failed.len()), (inserted, updated, 0), "{o:?}");
    };
    expect(store.write(kind, &wide(1, "漢")).await.unwrap(), 250, 0);
    expect(store.write(kind, &wide(2, "字")).await.unwrap(), 0, 250);
    expect(store.write(kind, &wide(3, "語")).await.unwrap(), 0, 250);
    expect(store.upsert(kind, &wide(4, "文")).await.unwrap(), 0, 250);
    let deletes: Vec<Record> = (0..250)
        .map(|i| Record::Deleted(Deletion::of(kind, &format!("W{i:04}")).unwrap()).with_version(5))
        .collect();
    assert_eq!(store.write(kind, &deletes).await.unwrap().deleted, 250);
    assert_eq!(store.count(kind).await.unwrap(), 0);

    let sent = sent.lock().unwrap().clone();
    let named = |command: &str| sent.iter().filter(|(name, _, _)| name == command).count();
    assert!(
        named("commitTransaction") >= 2,
        "the re-import's way ran, in transactions of at most 16 MiB"
    );
    for (name, bytes, largest) in &sent {
        assert!(*largest <= 16 * 1024 * 1024, "{name}: a statement of {largest} bytes");
        // The driver sends an insert's documents beside its body, and
        // splits them by the message limit; everything else is all body.
        let limit = if name == "insert" {
            MAX_MESSAGE_BYTES
        } else {
            MAX_COMMAND_BYTES
        };
        assert!(*bytes <= limit, "{name} command of {bytes} bytes (limit {limit})");
    }
    let updates = named("update");
    assert!(
        updates >= 4,
        "the 24 MB of guarded updates went out as several commands: {updates}"
    );
    let largest = sent.iter().filter(|(n, _, _)| n != "insert").map(|(_, b, _)| *b).max();
    assert!(
        largest > Some(8 * 1024 * 1024),
        "commands were filled, not cut small: {largest:?}"
    );
    store.shutdown().await;
    env.cleanup().await;
}

fn bson_len(document: &Document) -> usize {
    let mut bytes = Vec::new();
    document.to_writer(&mut bytes).expect("a command encodes");
    bytes.len()
}

/// An importer's first batch over a filled collection takes the
/// re-import's way, though the process has seen no batch of it yet: no
/// doomed insert and no guarded update per record. And a batch whose keys
/// arrive scattered (rentals keyed by product, exported by customer)
/// reaches the server in key order, which it writes far faster.
#[tokio::test]
async fn a_fresh_importers_first_batch_over_a_filled_store_is_a_reimport_in_key_order() {
    let env = TestEnv::new("reimport_first_batch");
    let kind = RecordKind::Rental;
    let batch = |version: i64| -> Vec<Record> {
        (0..200)
            .map(|i| rental(&format!("P{:03}", (i * 37) % 200), &format!("U{i:03}")).with_version(version))
            .collect()
    };
    let loader = env.store().await;
    assert_eq!(counts(&loader.write(kind, &batch(1)).await.unwrap()), (200, 0, 0, 0));
    loader.shutdown().await;

    let (store, sent) = env
        .monitored_store(|started| (started.command_name.clone(), started.command.clone()))
        .await;
    assert_eq!(counts(&store.write(kind, &batch(2)).await.unwrap()), (0, 200, 0, 0));
    let sent = sent.lock().unwrap().clone();
    let names: Vec<&str> = sent.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.contains(&"commitTransaction") && !names.contains(&"update"),
        "one transaction, no guarded update: {names:?}"
    );
    let inserted: Vec<String> = sent
        .iter()
        .filter(|(name, _)| name == "insert")
        .flat_map(|(_, command)| command.get_array("documents").unwrap().clone())
        .map(|document| document.as_document().unwrap().get_str("_id").unwrap().to_string())
        .collect();
    assert_eq!(inserted.len(), 200);
    assert!(inserted.is_sorted(), "in key order: {inserted:?}");
    assert_eq!(documents(&store, kind).await, expected_documents(kind, &batch(2)));
    store.shutdown().await;
    env.cleanup().await;
}
