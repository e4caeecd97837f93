//! The pipeline on servers in containers, started by the testcontainers kit
//! (`hpn-testkit`) the way another team's test suite would: the end-to-end
//! import, and an importer container whose broker container is killed and
//! started again under it. The images come from `HPN_TEST_*_IMAGE` (the official
//! ones by default; `scripts/test` points them at the images that
//! `scripts/containers images` builds here). With no container engine these
//! tests fail and say what is missing: they never pass without running.

use hpn_common::RecordKind;
use hpn_importer::run_parallel;
use hpn_producer::generate::{generate, DEFAULT_SEED};
use hpn_producer::{publish_files, PublishOptions};
use hpn_testkit::Stack;
use hpn_tests::process::{assert_exact, count, customers_file, eventually, publish};
use hpn_tests::{documents, expected_documents, read_csv, TestEnv};
use std::path::PathBuf;
use std::time::Duration;

async fn started(stack: Result<Stack, hpn_testkit::KitError>) -> Stack {
    stack.unwrap_or_else(|e| panic!("the container stack did not start: {e}"))
}

#[tokio::test]
async fn the_pipeline_runs_end_to_end_on_containers() {
    const RECORDS: usize = 1000;
    let stack = started(Stack::start().await).await;
    let env = TestEnv::on_stack("containers_pipeline", &stack);
    let files = generate(&env.path("data"), RECORDS, DEFAULT_SEED).unwrap();
    let paths: Vec<PathBuf> = files.paths().iter().map(|p| p.to_path_buf()).collect();
    let publication = publish_files(&env.settings.broker(), &paths, &PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(publication.refused, vec![]);
    let stats = run_parallel(&env.config()).await.unwrap();
    let figures: Vec<(&str, u64, u64, u64)> = stats
        .iter()
        .map(|s| (s.collection.as_str(), s.processed, s.count_before, s.count_after))
        .collect();
    assert_eq!(
        figures,
        vec![
            ("customers", 1000, 0, 1000),
            ("products", 1000, 0, 1000),
            ("rentals", 1000, 0, 1000)
        ]
    );
    let store = env.store().await;
    for (kind, path) in RecordKind::ALL.into_iter().zip(&paths) {
        let expected = expected_documents(kind, &read_csv(path));
        assert!(
            documents(&store, kind).await == expected,
            "{kind}: the store differs from the file"
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn an_importer_container_rides_out_its_broker_container_killed_and_started() {
    // The importer consumes while the file is published, so the file must
    // be big enough to be still importing when publishing is done (40,000
    // one-record messages were all in before the kill on RabbitMQ 4.0).
    const RECORDS: usize = 200_000;
    let names = TestEnv::new("containers_restart");
    let stack = Stack::builder()
        .with_importer()
        .importer_env("HPN_DATABASE", &names.settings.database)
        .importer_env("HPN_QUEUE_PREFIX", &names.settings.queue_prefix)
        .start()
        .await;
    let stack = started(stack).await;
    let mut env = names;
    env.settings.amqp_url = stack.amqp_url().to_string();
    env.settings.mongodb_uri = stack.mongodb_uri().to_string();
    let file = customers_file(&env, RECORDS);
    publish(&env, &file, 100).await;
    eventually(Duration::from_secs(60), "the importer under way", || async {
        count(&env).await >= 1000
    })
    .await;
    stack.kill_rabbitmq().await.unwrap();
    let at_stop = count(&env).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.start_rabbitmq().await.unwrap();
    let total = RECORDS as u64;
    let finished = tokio::time::timeout(Duration::from_secs(180), async {
        while count(&env).await < total {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    if finished.is_err() {
        panic!(
            "{} of {total} records after the broker came back\n{}",
            count(&env).await,
            stack.logs().await
        );
    }
    assert!(
        at_stop < total,
        "the broker stopped mid-import ({at_stop} of {total} written)"
    );
    assert_exact(&env, &file).await;
    let listen = stack.importer_listen().expect("an importer runs");
    let health = hpn_importer::fetch(listen, "/healthz").await;
    assert!(
        matches!(health, Some((200, _))),
        "the importer is healthy again: {health:?}"
    );
    env.cleanup().await;
}
