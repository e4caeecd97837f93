//! End to end on real servers: CSV → producer → RabbitMQ → importer → MongoDB,
//! in linear and parallel mode.

use hpn_common::message::header;
use hpn_common::{QueueType, Record, RecordKind};
use hpn_importer::ImportStats;
use hpn_importer::{run_linear, run_parallel};
use hpn_producer::generate::{generate, DEFAULT_SEED};
use hpn_producer::{publish_files, PublishOptions};
use hpn_tests::{
    customer, customer_ids, documents, expected_documents, next_dead_letter, publish_raw, read_csv, TestEnv,
};
use lapin::options::BasicGetOptions;
use std::path::PathBuf;

const RECORDS: usize = 1000;

/// Generate the sample files into the test's directory and publish them.
async fn publish_sample(env: &TestEnv, options: &PublishOptions) -> Vec<PathBuf> {
    let files = generate(&env.path("data"), RECORDS, DEFAULT_SEED).unwrap();
    let paths: Vec<PathBuf> = files.paths().iter().map(|p| p.to_path_buf()).collect();
    let publication = publish_files(&env.settings.broker(), &paths, options).await.unwrap();
    assert_eq!(publication.refused, vec![]);
    for s in &publication.published {
        assert_eq!((s.published, s.rejected), (RECORDS as u64, 0), "{s:?}");
    }
    paths
}

fn assert_fresh_import(stats: &[ImportStats]) {
    let names: Vec<&str> = stats.iter().map(|s| s.collection.as_str()).collect();
    assert_eq!(
        names,
        vec!["customers", "products", "rentals"],
        "customers, then products, then rentals"
    );
    for s in stats {
        assert_eq!(s.processed, RECORDS as u64, "{s:?}");
        assert_eq!(s.count_before, 0, "{s:?}");
        assert_eq!(s.count_after, RECORDS as u64, "{s:?}");
        assert_eq!((s.inserted, s.updated, s.rejected), (RECORDS as u64, 0, 0), "{s:?}");
        assert!(s.elapsed.as_secs_f64() > 0.0, "{s:?}");
        assert_eq!(s.messages_left, Some(0), "the broker said the queue is empty: {s:?}");
    }
}

/// The store holds exactly the CSV rows, no more, no less.
async fn assert_store_matches(env: &TestEnv, files: &[PathBuf]) {
    let store = env.store().await;
    for (kind, file) in RecordKind::ALL.into_iter().zip(files) {
        let expected = expected_documents(kind, &read_csv(file));
        assert_eq!(expected.len(), RECORDS);
        assert_eq!(
            documents(&store, kind).await,
            expected,
            "{kind} documents differ from {}",
            file.display()
        );
    }
}

#[tokio::test]
async fn linear_import_loads_every_row_and_reports_the_four_figures() {
    let env = TestEnv::new("e2e_linear");
    let files = publish_sample(&env, &PublishOptions::default()).await;
    let stats = run_linear(&env.config()).await.unwrap();
    assert_fresh_import(&stats);
    assert_store_matches(&env, &files).await;
    for kind in RecordKind::ALL {
        assert_eq!(
            env.ready(&env.settings.topology().queue(kind)).await,
            0,
            "{kind} queue drained"
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn parallel_import_loads_every_row_and_equals_linear() {
    let parallel = TestEnv::new("e2e_parallel");
    let files = publish_sample(&parallel, &PublishOptions::default()).await;
    let stats = run_parallel(&parallel.racing_config(3, 3, 100)).await.unwrap();
    assert_fresh_import(&stats);
    assert_store_matches(&parallel, &files).await;

    let linear = TestEnv::new("e2e_parallel_vs_linear");
    publish_sample(&linear, &PublishOptions::default()).await;
    run_linear(&linear.config()).await.unwrap();
    let (a, b) = (parallel.store().await, linear.store().await);
    for kind in RecordKind::ALL {
        assert_eq!(
            documents(&a, kind).await,
            documents(&b, kind).await,
            "{kind}: parallel and linear differ"
        );
    }
    parallel.cleanup().await;
    linear.cleanup().await;
}

#[tokio::test]
async fn importing_the_same_records_twice_changes_no_count() {
    let env = TestEnv::new("e2e_twice");
    let options = PublishOptions {
        rows_per_message: 50,
        ..PublishOptions::default()
    };
    let files = publish_sample(&env, &options).await;
    run_parallel(&env.config()).await.unwrap();
    publish_sample(&env, &options).await;
    let second = run_parallel(&env.config()).await.unwrap();
    for s in &second {
        assert_eq!(s.processed, RECORDS as u64, "{s:?}");
        assert_eq!(
            (s.count_before, s.count_after),
            (RECORDS as u64, RECORDS as u64),
            "{s:?}"
        );
        assert_eq!((s.inserted, s.updated), (0, RECORDS as u64), "{s:?}");
    }
    assert_store_matches(&env, &files).await;
    env.cleanup().await;
}

#[tokio::test]
async fn bad_rows_are_reported_with_their_lines_and_good_rows_still_go_in() {
    let env = TestEnv::new("e2e_rejects");
    let file = env.path("customers.csv");
    std::fs::write(
        &file,
        "user_id,name,address,zip_code,phone_number,email\n\
         C1,Ann,1 Main St,98101,555-0101,ann@example.com\n\
         C2,Bob,2 Main St,98101,555-0102,not-an-email\n\
         C3,Cy,3 Main St,98101,555-0103\n\
         C4,Di,4 Main St,98101,555-0104,di@example.com\n\
         ,Ed,5 Main St,98101,555-0105,ed@example.com\n",
    )
    .unwrap();
    let summaries = publish_files(
        &env.settings.broker(),
        std::slice::from_ref(&file),
        &PublishOptions::default(),
    )
    .await
    .unwrap()
    .published;
    assert_eq!((summaries[0].published, summaries[0].rejected), (2, 3));
    let rejects_file = summaries[0].rejects_file.clone().expect("a rejects file");
    assert_eq!(rejects_file, env.path("customers.rejects.csv"));
    let rejects: Vec<(String, String)> = csv::Reader::from_path(&rejects_file)
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[1].to_string())
        })
        .collect();
    let lines: Vec<&str> = rejects.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(lines, vec!["3", "4", "6"]);
    assert!(rejects[0].1.contains("email"), "{rejects:?}");
    assert!(rejects[1].1.contains("expected 6 fields"), "{rejects:?}");
    assert!(rejects[2].1.contains("user_id"), "{rejects:?}");

    let stats = run_linear(&env.config()).await.unwrap();
    assert_eq!((stats[0].processed, stats[0].count_after), (2, 2));
    let ids = customer_ids(&env.store().await).await;
    assert_eq!(ids, vec!["C1", "C4"]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dead_letter_queue_with_its_reason() {
    let env = TestEnv::new("e2e_poison");
    let (_connection, channel) = env.channel().await;
    let topology = env.settings.topology();
    let publish = |body: &'static [u8]| {
        let channel = channel.clone();
        let exchange = topology.exchange();
        async move {
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    "product".into(),
                    Default::default(),
                    body,
                    hpn_common::message::properties(RecordKind::Product, None),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    publish(br#"{"product_id":"P1","description":"Sofa","product_type":"livingroom","quantity_available":1}"#).await;
    publish(b"this is not json").await;
    publish(br#"[{"product_id":"P2","description":"Bed","product_type":"bedroom","quantity_available":2},{"product_id":"P3"}]"#).await;

    let stats = run_parallel(&env.config()).await.unwrap();
    let products = &stats[1];
    assert_eq!(
        (products.inserted, products.rejected, products.count_after),
        (2, 2, 2),
        "{products:?}"
    );

    let dead = topology.dead_letter_queue(RecordKind::Product);
    let mut reasons = Vec::new();
    while let Some(message) = channel
        .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let props = &message.delivery.properties;
        reasons.push((
            hpn_common::message::header_str(props, header::ERROR).unwrap(),
            String::from_utf8_lossy(&message.delivery.data).into_owned(),
        ));
    }
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].0.contains("body is not JSON") && reasons[0].1 == "this is not json",
        "{reasons:?}"
    );
    assert!(
        reasons[1].0.contains("description") && reasons[1].1.contains("P3"),
        "{reasons:?}"
    );
    env.cleanup().await;
}

/// Versions through the queue: out of order inside one array message and
/// across messages, equal versions, the `x-hpn-version` header, and records
/// without a version; three consumers and two writers, then linear.
#[tokio::test]
async fn versions_decide_inside_and_across_messages_whatever_the_consumers() {
    for mode in [hpn_importer::Mode::Parallel, hpn_importer::Mode::Linear] {
        let env = TestEnv::new("e2e_versions");
        let (_connection, channel) = env.channel().await;
        let topology = env.settings.topology();
        let customer = |id: &str, name: &str, version: Option<&str>| {
            let version = version.map(|v| format!(r#","_version":{v}"#)).unwrap_or_default();
            format!(
                r#"{{"user_id":"{id}","name":"{name}","address":"","zip_code":"","phone_number":"","email":"{id}@example.com"{version}}}"#
            )
        };
        let plain = hpn_common::message::properties(RecordKind::Customer, None);
        let mut headers = plain.headers().clone().unwrap_or_default();
        headers.insert(header::VERSION.into(), lapin::types::AMQPValue::LongLongInt(8));
        let versioned_by_header = plain.clone().with_headers(headers);
        let messages = [
            (
                format!(
                    "[{},{},{},{},{}]",
                    customer("A", "A3", Some("3")),
                    customer("A", "A9", Some("9")),
                    customer("A", "A1", Some("1")),
                    customer("B", "B4", Some("4")),
                    customer("B", "B4-equal", Some("4")),
                ),
                plain.clone(),
            ),
            (customer("A", "A5", Some("5")), plain.clone()),
            (customer("C", "C-none", None), plain.clone()),
            (
                format!("[{},{}]", customer("D", "D8", None), customer("D", "D2", Some("2"))),
                versioned_by_header,
            ),
            (customer("B", "B6", Some("6")), plain.clone()),
        ];
        for (body, properties) in &messages {
            channel
                .basic_publish(
                    topology.exchange().as_str().into(),
                    "customer".into(),
                    Default::default(),
                    body.as_bytes(),
                    properties.clone(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let report = hpn_importer::import(&env.racing_config(3, 2, 2), mode).await.unwrap();
        let customers = &report.collections[0];
        assert_eq!(customers.inserted, 4, "{mode:?}: {customers:?}");
        assert_eq!(customers.processed, 10, "{mode:?}: {customers:?}");
        assert_eq!(customers.rejected, 0, "{mode:?}: {customers:?}");
        assert!(customers.stale >= 2, "A1 and B4-equal at least: {mode:?} {customers:?}");
        let stored: Vec<(String, Option<i64>)> = hpn_tests::versions(&env.store().await, RecordKind::Customer)
            .await
            .into_iter()
            .map(|(d, v)| (d.get_str("name").unwrap().to_string(), v))
            .collect();
        assert_eq!(
            stored,
            vec![
                ("A9".to_string(), Some(9)),
                ("B6".to_string(), Some(6)),
                ("C-none".to_string(), None),
                ("D8".to_string(), Some(8)),
            ],
            "{mode:?}"
        );
        env.cleanup().await;
    }
}

/// The direct path (the same writers fed from CSV, no broker) stores exactly
/// the rows, in both modes.
#[tokio::test]
async fn the_direct_path_stores_exactly_the_rows() {
    for mode in [hpn_importer::Mode::Linear, hpn_importer::Mode::Parallel] {
        let env = TestEnv::new("direct");
        let files = generate(&env.path("data"), RECORDS, DEFAULT_SEED).unwrap();
        let paths: Vec<PathBuf> = files.paths().iter().map(|p| p.to_path_buf()).collect();
        let report = hpn_importer::import_files(&env.config(), &paths, mode).await.unwrap();
        assert_eq!(report.processed(), 3 * RECORDS as u64, "{mode:?}");
        assert_store_matches(&env, &paths).await;
        env.cleanup().await;
    }
}

/// `hpn-importer reset` asks for --yes, then drops the collections and
/// empties the queues, declaring them anew with the configured type.
#[tokio::test]
async fn reset_asks_first_then_drops_the_collections_and_purges_the_queues() {
    let env = TestEnv::new("reset");
    let files = publish_sample(&env, &PublishOptions::default()).await;
    run_linear(&env.config()).await.unwrap();
    // Queued again, not imported: reset must purge these.
    publish_files(&env.settings.broker(), &files[..1], &PublishOptions::default())
        .await
        .unwrap();
    let queue = env.settings.topology().queue(RecordKind::Customer);
    assert!(env.ready(&queue).await > 0);
    let reset_as = |yes: bool, queue_type: &str| {
        let mut command = std::process::Command::new(hpn_tests::process::importer_program());
        command
            .arg("reset")
            .envs(env.settings.env_vars())
            .env(hpn_common::config::env::QUEUE_TYPE, queue_type);
        if yes {
            command.arg("--yes");
        }
        command.output().expect("run hpn-importer reset")
    };
    let reset = |yes: bool| reset_as(yes, env.settings.queue_type.as_str());
    let refused = reset(false);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("add --yes"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let store = env.store().await;
    assert_eq!(store.count(RecordKind::Customer).await.unwrap(), RECORDS as u64);
    let done = reset(true);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    for kind in RecordKind::ALL {
        assert_eq!(store.count(kind).await.unwrap(), 0, "{kind}");
    }
    assert_eq!(env.ready(&queue).await, 0);
    // Queues of the other type cannot be declared over these; reset can
    // replace them, which is how an operator changes the type.
    let other = match env.settings.queue_type {
        QueueType::Classic => QueueType::Quorum,
        QueueType::Quorum => QueueType::Classic,
    };
    let converted = reset_as(true, other.as_str());
    let said = String::from_utf8_lossy(&converted.stdout);
    assert!(
        converted.status.success(),
        "{}",
        String::from_utf8_lossy(&converted.stderr)
    );
    assert!(said.contains(&format!("({other})")), "{said}");
    env.cleanup().await;
}

/// A record MongoDB refuses on its merits is dead-lettered with the
/// server's reason, and the rest go in. Here an operator has added a unique
/// index on `email`: a second customer with a taken address is refused (an
/// E11000 that is not about the business key, so not a stale version).
#[tokio::test]
async fn a_record_mongodb_refuses_is_dead_lettered_with_the_reason() {
    let env = TestEnv::new("e2e_refused");
    let store = env.store().await;
    let unique_email = mongodb::IndexModel::builder()
        .keys(mongodb::bson::doc! {"email": 1})
        .options(mongodb::options::IndexOptions::builder().unique(true).build())
        .build();
    store
        .collection(RecordKind::Customer)
        .create_index(unique_email)
        .await
        .unwrap();
    let file = env.path("customers.csv");
    std::fs::write(
        &file,
        "user_id,name,address,zip_code,phone_number,email\n\
         C1,Ann,1 Main St,98101,555,shared@example.com\n\
         C2,Bob,2 Main St,98101,555,bob@example.com\n\
         C3,Cy,3 Main St,98101,555,shared@example.com\n",
    )
    .unwrap();
    publish_files(&env.settings.broker(), &[file], &PublishOptions::default())
        .await
        .unwrap();
    let stats = run_parallel(&env.config()).await.unwrap();
    let customers = &stats[0];
    assert_eq!(
        (customers.inserted, customers.stale, customers.rejected),
        (2, 0, 1),
        "{customers:?}"
    );
    let (_connection, channel) = env.channel().await;
    let dead = env.settings.topology().dead_letter_queue(RecordKind::Customer);
    let message = channel
        .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the refused record");
    let reason = hpn_common::message::header_str(&message.delivery.properties, header::ERROR).unwrap();
    assert!(
        reason.starts_with("MongoDB refused the record (code 11000)"),
        "{reason}"
    );
    // C1 and C3 share the address; they go to different writers, so either
    // may claim it first. Exactly one is refused, and the other is stored.
    let body = String::from_utf8_lossy(&message.delivery.data).into_owned();
    assert!(body.contains("shared@example.com"), "{body}");
    let refused = if body.contains(r#""C1""#) { "C1" } else { "C3" };
    let stored = customer_ids(&store).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored.contains(&"C2".to_string()), "{stored:?}");
    assert!(
        !stored.contains(&refused.to_string()),
        "{refused} refused yet stored: {stored:?}"
    );
    env.cleanup().await;
}

/// No record can hold a collection: a record the store refuses with a code
/// the importer does not know as a record's (here 16755, a `2dsphere` index
/// that cannot read the record's `extra.location`) is dead-lettered with the
/// server's code and words, both in a batch with good records (the store
/// took the others, so the refusal is the record's) and alone in its batch
/// (the store still takes a write that changes nothing, so it is the
/// record's too); the rest of the collection flows. A store refusing writes
/// as such is still held (`faults.rs`, the view).
#[tokio::test]
async fn a_record_only_the_store_refuses_is_dead_lettered_and_never_holds_the_collection() {
    let env = TestEnv::new("e2e_unknown_refusal");
    let store = env.store().await;
    hpn_tests::refuse_customers_from_nowhere(&store).await;
    let (_connection, channel) = env.channel().await;
    let topology = env.settings.topology();
    let nowhere = hpn_tests::customer_from_nowhere;
    let props = || hpn_common::message::properties(RecordKind::Customer, None);
    let mut batch: Vec<Record> = (0..200).map(|i| customer(&format!("G{i:03}"), "Good")).collect();
    let good = String::from_utf8(hpn_common::message::encode(&batch.split_off(100))).unwrap();
    let first = String::from_utf8(hpn_common::message::encode(&batch)).unwrap();
    // Good records, the odd one, more good records: one batch for the writer.
    publish_raw(&channel, &topology, RecordKind::Customer, first.as_bytes(), props()).await;
    publish_raw(
        &channel,
        &topology,
        RecordKind::Customer,
        nowhere("B1").as_bytes(),
        props(),
    )
    .await;
    publish_raw(&channel, &topology, RecordKind::Customer, good.as_bytes(), props()).await;
    let stats = run_parallel(&env.config()).await.expect("not held");
    assert_eq!((stats[0].inserted, stats[0].rejected), (200, 1), "{:?}", stats[0]);
    // The odd one alone.
    publish_raw(
        &channel,
        &topology,
        RecordKind::Customer,
        nowhere("B2").as_bytes(),
        props(),
    )
    .await;
    let stats = run_parallel(&env.config()).await.expect("not held when alone either");
    assert_eq!((stats[0].inserted, stats[0].rejected), (0, 1), "{:?}", stats[0]);

    let dead = topology.dead_letter_queue(RecordKind::Customer);
    for id in ["B1", "B2"] {
        let (reason, message) = next_dead_letter(&channel, &dead).await.expect("the refused record");
        assert!(
            reason.starts_with("MongoDB refused the record (code 16755)"),
            "{reason}"
        );
        assert!(String::from_utf8_lossy(&message.data).contains(id));
    }
    assert_eq!(customer_ids(&store).await.len(), 200);
    env.cleanup().await;
}
