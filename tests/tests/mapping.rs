//! Files from another system, end to end through the queue: one mapping,
//! a customers file, a products file and a rentals file in three layouts
//! that between them hold every variation HP Norton's exports show (the
//! worked example of `docs/mapping.md`), beside a file in the brief's
//! layout and files that must be refused.

use hpn_common::RecordKind;
use hpn_importer::run_parallel;
use hpn_tests::process::{importer_program, producer_program, run};
use hpn_tests::{documents, TestEnv};
use mongodb::bson::{doc, Document};
use std::path::{Path, PathBuf};

/// The worked example of `docs/mapping.md`, so the guide cannot drift
/// from what works. Its files hold every variation of HP Norton's exports:
/// - `other-system.toml`: renamed columns (`customer_id`, `Id`,
///   `Email_address`, `Home_address`, `Phone_number`), a name joined from
///   two columns, a misspelt header (`qantity_available`), kept extras (a
///   customer's status and credit limit, a rental's id and date), no zip code;
/// - `customer.csv`: singular name, a byte-order mark, CRLF, no newline at
///   the end, no zip code, one customer without a last name, an address on
///   two lines, a column (Notes) nobody asked for;
/// - `product.csv`: `Id` for `product_id`, the misspelt quantity, a colour;
/// - `rental.csv`: each rental repeats its customer's details (so the
///   customer table's columns are all there too: the file's name says it
///   holds rentals), has its own id and date, and two name a customer or a
///   product that no file has;
/// - `rentals.csv`: the brief's own layout, in the same directory.
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/mapping-example")
        .join(name)
}

/// `hpn-producer publish --json` of `path` (a file or a directory) through
/// `mapping`, with the test's own version clock and `more` arguments.
fn publish_with_mapping(env: &TestEnv, mapping: &Path, path: &Path, more: &[&str]) -> hpn_tests::process::Ran {
    let clock = env.path("clock");
    let mut args = vec![
        "publish",
        "--json",
        "--mapping",
        mapping.to_str().unwrap(),
        "--version-clock",
        clock.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    args.push(path.to_str().unwrap());
    run(env, &producer_program(), &args)
}

#[tokio::test]
async fn files_in_other_layouts_go_through_the_queue_with_their_extras() {
    let env = TestEnv::new("mapping");
    let dir = env.path("export");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["customer.csv", "product.csv", "rental.csv", "rentals.csv"] {
        std::fs::copy(example(name), dir.join(name)).unwrap();
    }
    // Beside them, three files to refuse.
    std::fs::write(dir.join("notes.csv"), "Exported by the back office on Monday\n").unwrap();
    std::fs::write(dir.join("empty.csv"), "").unwrap();
    std::fs::write(dir.join("photo.csv"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\x01\x02").unwrap();
    let ran = publish_with_mapping(&env, &example("other-system.toml"), &dir, &[]);
    assert_eq!(ran.code, Some(3), "a refused file sets exit code 3\n{}", ran.stderr);
    let report = ran.json();
    let published: Vec<(String, u64)> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["file"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
            (name, f["published"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        published,
        vec![
            ("customer.csv".to_string(), 3),
            ("product.csv".to_string(), 3),
            ("rental.csv".to_string(), 4),
            ("rentals.csv".to_string(), 1),
        ],
        "customers, products, rentals, whatever the names' number"
    );
    let refused: Vec<(String, String)> = report["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let name = r["file"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
            (name, r["reason"].as_str().unwrap().to_string())
        })
        .collect();
    let reason = |name: &str| {
        refused
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.as_str())
            .unwrap_or_else(|| panic!("{name} refused: {refused:?}"))
    };
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert_eq!(reason("empty.csv"), "the file is empty");
    assert!(reason("notes.csv").starts_with("not a CSV file"), "{refused:?}");
    assert!(reason("photo.csv").starts_with("not a UTF-8 text file"), "{refused:?}");

    let stats = run_parallel(&env.config()).await.unwrap();
    let after: Vec<(&str, u64, u64)> = stats
        .iter()
        .map(|s| (s.collection.as_str(), s.processed, s.count_after))
        .collect();
    assert_eq!(after, vec![("customers", 3, 3), ("products", 3, 3), ("rentals", 5, 5)]);

    let store = env.store().await;
    let customers = documents(&store, RecordKind::Customer).await;
    assert_eq!(
        customers[0],
        doc! {
            "user_id": "C1", "name": "Ann Lee", "address": "1 Main St", "phone_number": "206-555-0100",
            "email": "ann@example.com", "extra": {"credit_limit": "500", "status": "Active"},
        },
        "no zip code field, the name joined, the extras kept under their names"
    );
    assert_eq!(customers[1].get_str("name"), Ok("Bo"));
    assert_eq!(customers[2].get_str("address"), Ok("Flat 2\r\n12 High St"));
    let products = documents(&store, RecordKind::Product).await;
    let quantities: Vec<(&str, i64)> = products
        .iter()
        .map(|p| {
            (
                p.get_str("product_id").unwrap(),
                p.get_i64("quantity_available").unwrap(),
            )
        })
        .collect();
    assert_eq!(quantities, vec![("P1", 3), ("P2", 0), ("P3", 5)]);
    assert!(products.iter().all(|p| !p.contains_key("extra")), "Colour was not kept");
    let rentals = documents(&store, RecordKind::Rental).await;
    let first: &Document = &rentals[0];
    assert_eq!(
        first,
        &doc! {"product_id": "P1", "user_id": "C1", "extra": {"rental_id": "R1", "rented_on": "2025-01-02"}}
    );
    assert!(
        rentals.iter().all(|r| !r.contains_key("name")),
        "a rental keeps no customer details"
    );

    // The brief's two queries.
    let available: Vec<String> = store
        .available_products()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.product_id)
        .collect();
    assert_eq!(available, vec!["P1", "P3"]);
    let renting = |product: &'static str| {
        let store = store.clone();
        async move {
            store
                .customers_renting(product)
                .await
                .unwrap()
                .into_iter()
                .map(|c| (c.user_id, c.name))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(renting("P1").await, vec![("C1".to_string(), "Ann Lee".to_string())]);
    assert_eq!(
        renting("P3").await,
        vec![
            ("C1".to_string(), "Ann Lee".to_string()),
            ("C2".to_string(), "Bo".to_string())
        ]
    );

    // The orphans, through the importer's own command line.
    let ran = run(&env, &importer_program(), &["query", "orphans", "--json"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(
        ran.json(),
        serde_json::json!({
            "rentals": 5,
            "orphans": [
                {"product_id": "P1", "user_id": "C404", "missing_customer": true, "missing_product": false},
                {"product_id": "P9", "user_id": "C3", "missing_customer": false, "missing_product": true},
            ]
        })
    );
    let ran = run(&env, &importer_program(), &["query", "orphans"]);
    assert!(
        ran.stdout
            .contains("2 of 5 rentals name a customer or product that is not in the store"),
        "{}",
        ran.stdout
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_bad_mapping_is_refused_before_anything_is_sent() {
    let env = TestEnv::new("bad_mapping");
    let mapping = env.path("bad.toml");
    std::fs::write(&mapping, "[customer]\nuser_id = \"Id\"\nzipcode = \"Zip\"\n").unwrap();
    let file = env.path("customer.csv");
    std::fs::write(&file, "Id,Zip\nC1,98101\n").unwrap();
    let ran = run(
        &env,
        &producer_program(),
        &[
            "publish",
            "--mapping",
            mapping.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("zipcode is not a field of a customer record"),
        "{}",
        ran.stderr
    );
    env.cleanup().await;
}

/// Rows with many long kept columns: 120 customers of 32 kept columns of
/// 1,000 characters, three bytes each, so about 96 KB a record, and 100 of
/// them (the default records per message) about 9.6 MB: over the 4 MiB the
/// importer takes and the broker's `max_message_size`, which closed the
/// producer's channel on every try, so the file never loaded. The producer
/// now closes each message before the record that would pass the limit.
#[tokio::test]
async fn rows_with_long_kept_columns_are_packed_under_the_message_limit() {
    let env = TestEnv::new("wide_rows");
    let (mapping_file, file, wide) = wide_customers(&env);

    let ran = publish_with_mapping(&env, &mapping_file, &file, &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let report = ran.json();
    let published = &report["files"][0];
    assert_eq!(published["published"], 120, "{report}");
    let messages = published["messages"].as_u64().unwrap();
    // About 43 records fit 4 MiB: three messages, not the two a count of
    // 100 would give.
    assert!((3..=4).contains(&messages), "{messages} messages");

    let stats = run_parallel(&env.config()).await.unwrap();
    let customers = stats.iter().find(|s| s.collection == "customers").unwrap();
    assert_eq!(
        (customers.processed, customers.count_after, customers.rejected),
        (120, 120, 0),
        "every record stored, none dead-lettered"
    );
    let store = env.store().await;
    let stored = documents(&store, RecordKind::Customer).await;
    let extra = stored[119].get_document("extra").unwrap();
    assert_eq!(stored[119].get_str("user_id"), Ok("W119"));
    assert_eq!(extra.len(), 32);
    assert!(extra.iter().all(|(_, v)| v.as_str() == Some(wide.as_str())));
    env.cleanup().await;
}

/// A producer told to pack more than the broker takes (16 MiB against its
/// 4 MiB `max_message_size`): the broker closes the channel over the first
/// message, and the producer says so in the broker's words, once, instead of
/// retrying the same refused message eight times and ending on "invalid
/// channel state: Closed", as it did.
#[tokio::test]
async fn a_message_the_broker_refuses_fails_the_publish_with_its_reason() {
    let env = TestEnv::new("refused_message");
    let (mapping_file, file, _) = wide_customers(&env);

    let ran = publish_with_mapping(&env, &mapping_file, &file, &["--max-message-bytes", "16777216"]);
    assert_eq!(ran.code, Some(hpn_common::error::EXIT_BROKER.into()), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("RabbitMQ refused a message for good")
            && ran.stderr.contains("larger than configured max size"),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains("connecting again"), "retried: {}", ran.stderr);
    env.cleanup().await;
}

/// 120 customers through a mapping that keeps 32 columns of 1,000 CJK
/// characters each (about 96 KB a record): the mapping, the file, and the
/// long text every kept column holds.
fn wide_customers(env: &TestEnv) -> (PathBuf, PathBuf, String) {
    let columns: Vec<String> = (0..32).map(|i| format!("c{i}")).collect();
    let mut mapping = String::from(
        "[customer]\nuser_id = \"Id\"\nname = \"Name\"\naddress = \"Address\"\nphone_number = \"Phone\"\nemail = \"Email\"\n\n[customer.keep]\n",
    );
    for c in &columns {
        mapping.push_str(&format!("{c} = \"{c}\"\n"));
    }
    let mapping_file = env.path("wide.toml");
    std::fs::write(&mapping_file, mapping).unwrap();
    let wide = "漢".repeat(1_000);
    let mut csv = format!("Id,Name,Address,Phone,Email,{}\n", columns.join(","));
    for i in 0..120 {
        csv.push_str(&format!("W{i:03},Name {i},1 Main St,555,w{i}@example.com"));
        for _ in &columns {
            csv.push(',');
            csv.push_str(&wide);
        }
        csv.push('\n');
    }
    let file = env.path("customers.csv");
    std::fs::write(&file, csv).unwrap();
    (mapping_file, file, wide)
}
