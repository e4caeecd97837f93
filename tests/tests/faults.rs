//! The long-running importer under faults, on real servers: SIGKILL and
//! restart, a broker restart, a database outage, poison messages, SIGTERM
//! under load, and several importers racing on the same keys. Each ends by
//! checking the store against the source: every record, none missing, none
//! doubled, every key at its newest version.
//!
//! The importer runs as a child process (the same program as
//! `hpn-importer`, built here as `hpn-tests-importer`). The tests that stop
//! a server use `scripts/services`; all tests in this file take one lock,
//! because stopping a server would break a test running beside it.

use hpn_common::message;
use hpn_common::{QueueType, RecordKind};
use hpn_importer::fetch;
use hpn_producer::{publish_files, PublishOptions};
use hpn_tests::process::{
    assert_exact, count, customers_file, eventually, importer_program, producer_program, publish, run, services,
    Importer, ServedImport,
};
use hpn_tests::{customer_ids, documents, next_dead_letter, publish_raw, TestEnv};
use lapin::options::BasicGetOptions;
use lapin::BasicProperties;
use mongodb::bson::doc;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// `hpn-importer health` against `address`: whether it exits 0.
fn health_command(address: &str) -> bool {
    Command::new(importer_program())
        .args(["health", "--listen", address])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run hpn-importer health")
        .success()
}

async fn healthz(address: &str) -> Option<u16> {
    fetch(address, "/healthz").await.map(|(status, _)| status)
}

#[tokio::test]
async fn sigkill_three_times_during_a_200k_import_loses_and_doubles_nothing() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("fault_sigkill");
    let file = customers_file(&env, 200_000);
    publish(&env, &file, 100).await;
    for kill in 0..3 {
        let mut importer = Importer::start(&env, &[]);
        // A different point each time: after some records are in, before all are.
        let target = 30_000 * (kill + 1);
        eventually(Duration::from_secs(60), "import progresses", || async {
            count(&env).await >= target
        })
        .await;
        importer.signal("KILL");
        importer.wait(Duration::from_secs(5)).await;
    }
    assert!(count(&env).await < 200_000, "the kills came before the end");
    let mut importer = Importer::start(&env, &[]);
    eventually(Duration::from_secs(90), "import finishes", || async {
        count(&env).await == 200_000
    })
    .await;
    let queue = env.settings.topology().queue(RecordKind::Customer);
    eventually(Duration::from_secs(10), "queue empties", || async {
        env.ready(&queue).await == 0
    })
    .await;
    importer.signal("TERM");
    assert!(importer.wait(Duration::from_secs(10)).await.success());
    assert_exact(&env, &file).await;
    env.cleanup().await;
}

#[tokio::test]
async fn sigterm_under_load_exits_zero_within_ten_seconds_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("fault_sigterm");
    let file = customers_file(&env, 50_000);
    let mut importer = Importer::start(&env, &[]);
    publish(&env, &file, 10).await;
    eventually(Duration::from_secs(30), "import under way", || async {
        count(&env).await > 0
    })
    .await;
    importer.signal("TERM");
    let started = Instant::now();
    let status = importer.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // What it did not take stays queued; a second importer finishes it.
    let mut importer = Importer::start(&env, &[]);
    eventually(Duration::from_secs(60), "import finishes", || async {
        count(&env).await == 50_000
    })
    .await;
    importer.signal("TERM");
    assert!(importer.wait(Duration::from_secs(10)).await.success());
    assert_exact(&env, &file).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_rabbitmq_restart_mid_import_is_survived() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("fault_rabbitmq");
    let import = ServedImport::under_way(&env, 200_000).await;
    assert!(
        env.ready(&import.queue).await > 0,
        "the import was done before the restart"
    );
    services(&["restart", "rabbitmq"]);
    import.wait_until_done(&env, "the restart").await;
    let (_, metrics) = fetch(&import.listen, "/metrics").await.expect("metrics answer");
    assert!(
        metrics.contains(r#"hpn_importer_reconnects_total{server="rabbitmq"}"#),
        "the importer reconnected by itself: {metrics}"
    );
    import.stop_and_check(&env).await;
    env.cleanup().await;
}

/// A crash of a server in the middle of an import, the way a crash comes:
/// SIGKILL, no chance to flush or say goodbye. What the importer had
/// acknowledged must have been journaled by the database and what the
/// producer had confirmed fsynced by the broker: after the server is
/// started again the store holds exactly the file, record by record.
async fn crash_mid_import(test: &str, server: &str) {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new(test);
    let import = ServedImport::under_way(&env, 200_000).await;
    let at_crash = count(&env).await;
    assert!(at_crash < 200_000, "the import was done before the crash");
    services(&["kill", server]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    services(&["start", server]);
    import.wait_until_done(&env, &format!("SIGKILL of {server}")).await;
    eprintln!("SIGKILL of {server} with {at_crash} of 200000 records written: all 200000 stored after it");
    import.stop_and_check(&env).await;
    env.cleanup().await;
}

#[tokio::test]
async fn sigkill_of_the_database_mid_import_loses_and_doubles_nothing() {
    crash_mid_import("fault_kill_mongodb", "mongodb").await;
}

#[tokio::test]
async fn sigkill_of_the_broker_mid_import_loses_and_doubles_nothing() {
    crash_mid_import("fault_kill_rabbitmq", "rabbitmq").await;
}

/// The producer SIGKILLed in the middle of a publish, then the same
/// publish run again to the end (what an operator does): the store ends
/// with exactly the file once imported, each row once, the queue empty,
/// and the one-shot run's report right.
#[tokio::test]
async fn a_producer_killed_mid_publish_then_run_again_leaves_exactly_the_file() {
    let _serial = SERIAL.lock().await;
    const RECORDS: u64 = 100_000;
    let env = TestEnv::new("fault_kill_producer");
    let file = customers_file(&env, RECORDS as usize);
    let clock = env.path("version-clock");
    let publish_args = |clock: &Path| {
        vec![
            "publish".to_string(),
            file.display().to_string(),
            "--rows-per-message".into(),
            "1".into(),
            "--version-clock".into(),
            clock.display().to_string(),
        ]
    };
    let mut producer = Command::new(producer_program())
        .args(publish_args(&clock))
        .envs(env.settings.env_vars())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the producer");
    let queue = env.settings.topology().queue(RecordKind::Customer);
    eventually(Duration::from_secs(60), "publishing under way", || async {
        env.ready(&queue).await >= 5_000
    })
    .await;
    producer.kill().expect("SIGKILL the producer");
    producer.wait().expect("reap the producer");
    let partial = u64::from(env.ready(&queue).await);
    assert!(partial < RECORDS, "the producer was done before the kill");
    let args = publish_args(&clock);
    let again = run(
        &env,
        &producer_program(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(again.code, Some(0), "the publish run again: {}", again.stderr);
    let queued = u64::from(env.ready(&queue).await);
    assert!(
        queued >= partial + RECORDS,
        "nothing confirmed was lost: {queued} queued"
    );
    let import = run(&env, &importer_program(), &["run", "--json"]);
    assert_eq!(import.code, Some(0), "{}", import.stderr);
    let customers = &import.json()["collections"][0];
    assert_eq!(
        customers["processed"].as_u64(),
        Some(queued),
        "every message queued was processed"
    );
    assert_eq!(customers["count_after"].as_u64(), Some(RECORDS));
    assert_eq!(customers["messages_left"].as_u64(), Some(0));
    assert_eq!(env.ready(&queue).await, 0);
    eprintln!("producer SIGKILLed with {partial} of {RECORDS} confirmed; {queued} imported after the rerun");
    assert_exact(&env, &file).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_database_outage_pauses_consuming_and_acknowledges_nothing_meanwhile() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("fault_mongodb");
    let import = ServedImport::under_way(&env, 200_000).await;
    let (queue, listen) = (import.queue.clone(), import.listen.clone());
    eventually(Duration::from_secs(10), "healthy while both servers answer", || async {
        healthz(&listen).await == Some(200)
    })
    .await;
    services(&["stop", "mongodb"]);
    // While the database is down nothing can be written, so nothing may be
    // acknowledged: the queue's ready messages plus what the importer holds
    // unacknowledged must not shrink. Ready messages alone may drop by at
    // most what the prefetch lets the consumers hold.
    let ready_at_stop = env.ready(&queue).await;
    assert!(ready_at_stop > 0, "the database went down before the import was done");
    eventually(
        Duration::from_secs(10),
        "unhealthy while the database is down",
        || async { healthz(&listen).await == Some(503) },
    )
    .await;
    assert!(
        !health_command(&listen),
        "`hpn-importer health` fails while the database is down"
    );
    // Down for longer than a write waits for a server, so the writers'
    // own retries (logged, counted, backed off) must take over.
    tokio::time::sleep(hpn_importer::SERVER_SELECTION_TIMEOUT + Duration::from_secs(2)).await;
    let ready_after = env.ready(&queue).await;
    assert!(
        ready_after + 200 >= ready_at_stop,
        "consumed {} messages with the database down",
        ready_at_stop - ready_after
    );
    services(&["start", "mongodb"]);
    import.wait_until_done(&env, "the outage").await;
    eventually(Duration::from_secs(10), "healthy again", || async {
        healthz(&listen).await == Some(200)
    })
    .await;
    assert!(
        health_command(&listen),
        "`hpn-importer health` passes once both servers answer"
    );
    let (status, metrics) = fetch(&listen, "/metrics").await.expect("metrics answer");
    assert_eq!(status, 200);
    let written = counter(
        &metrics,
        r#"hpn_importer_records_total{collection="customers",outcome="written"}"#,
    );
    assert!(written >= 200_000, "metrics count every write: {written}");
    assert!(
        metrics.contains(r#"hpn_importer_retries_total{server="mongodb"}"#),
        "the outage shows as retries"
    );
    assert!(
        metrics.contains("hpn_importer_end_to_end_seconds_bucket"),
        "latency histogram"
    );
    import.stop_and_check(&env).await;
    env.cleanup().await;
}

/// A message that keeps coming back (its consumer died holding it) is
/// retried a bounded number of times, then dead-lettered with the count.
#[tokio::test]
async fn a_message_redelivered_too_often_is_dead_lettered_and_one_redelivery_is_retried() {
    let _serial = SERIAL.lock().await;
    // The classic queues' scheme (a counted copy put back); quorum queues
    // count deliveries themselves (tests/tests/cluster.rs).
    let mut env = TestEnv::new("fault_attempts");
    env.settings.queue_type = QueueType::Classic;
    let (_connection, channel) = env.channel().await;
    let topology = env.settings.topology();
    let queue = topology.queue(RecordKind::Customer);
    let customer = |id: &str| message::encode(&[hpn_tests::customer(id, &format!("Customer {id}"))]);
    let fresh = message::properties(RecordKind::Customer, None);
    // As if an importer had already put it back once after a failed delivery.
    let failed_once = message::retry_properties(&fresh, 1);
    for (body, properties) in [(customer("A1"), fresh), (customer("B1"), failed_once)] {
        publish_raw(&channel, &topology, RecordKind::Customer, &body, properties).await;
    }
    // A consumer takes both and dies without acknowledging: RabbitMQ
    // delivers them again, marked redelivered.
    let holder = env.channel().await;
    for _ in 0..2 {
        let taken = holder
            .1
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await;
        assert!(taken.unwrap().is_some(), "a message to hold");
    }
    holder.0.close(200, "gone".into()).await.unwrap();

    let mut importer = Importer::start(&env, &["--max-attempts", "2"]);
    let dead = topology.dead_letter_queue(RecordKind::Customer);
    eventually(Duration::from_secs(30), "B1 dead-lettered", || async {
        env.ready(&dead).await == 1
    })
    .await;
    eventually(Duration::from_secs(30), "A1 stored", || async {
        count(&env).await == 1
    })
    .await;
    eventually(Duration::from_secs(10), "queue empties", || async {
        env.ready(&queue).await == 0
    })
    .await;
    importer.signal("TERM");
    assert!(importer.wait(Duration::from_secs(10)).await.success());

    let (reason, dead_letter) = next_dead_letter(&channel, &dead).await.expect("the dead letter");
    assert!(reason.starts_with("delivered 2 times"), "{reason}");
    assert!(dead_letter.data == customer("B1"), "the body is kept as published");
    let ids = customer_ids(&env.store().await).await;
    assert_eq!(ids, vec!["A1"]);
    env.cleanup().await;
}

#[tokio::test]
async fn every_kind_of_poison_is_dead_lettered_with_its_reason_and_good_records_go_in() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("fault_poison");
    let (_connection, channel) = env.channel().await;
    let topology = env.settings.topology();
    let good = |i: usize| hpn_tests::customer(&format!("G{i}"), &format!("Good {i}"));
    let json = message::properties(RecordKind::Customer, None);
    // Over the importer's limit (set lower here), under the broker's, which
    // refuses bodies over the contract's 4 MiB at publish (tests/broker.rs).
    const LIMIT: usize = 1 << 20;
    let big = vec![b' '; LIMIT + 1];
    let batch_with_bad = format!(
        "[{},{{\"user_id\":\"B1\"}},{}]",
        String::from_utf8(message::encode(&[good(2)])).unwrap(),
        String::from_utf8(message::encode(&[good(3)])).unwrap()
    );
    let messages: Vec<(Vec<u8>, BasicProperties, &str)> = vec![
        (message::encode(&[good(1)]), json.clone(), ""),
        (b"not json at all".to_vec(), json.clone(), "body is not JSON"),
        (b"[1,2".to_vec(), json.clone(), "body is not JSON"),
        (
            b"\"a string\"".to_vec(),
            json.clone(),
            "neither a record object nor an array",
        ),
        (
            br#"{"user_id":"X1","name":"","address":"","zip_code":"","phone_number":"","email":"x@example.com"}"#
                .to_vec(),
            json.clone(),
            "invalid record: name",
        ),
        (
            message::encode(&[good(9)]),
            json.clone().with_type("invoice".into()),
            "not a record kind",
        ),
        (
            message::encode(&[good(9)]),
            json.clone().with_type("product".into()),
            "type property says product",
        ),
        (big, json.clone(), "over the limit"),
        (
            message::encode(&[good(9)]),
            json.clone().with_content_type("text/csv".into()),
            "content type",
        ),
        (batch_with_bad.into_bytes(), json.clone(), "name"),
    ];
    for (body, properties, _) in &messages {
        publish_raw(&channel, &topology, RecordKind::Customer, body, properties.clone()).await;
    }
    let mut importer = Importer::start(&env, &["--max-message-bytes", &LIMIT.to_string()]);
    let dead = topology.dead_letter_queue(RecordKind::Customer);
    eventually(Duration::from_secs(30), "poison dead-lettered", || async {
        env.ready(&dead).await == 9
    })
    .await;
    eventually(Duration::from_secs(30), "good records stored", || async {
        count(&env).await == 3
    })
    .await;
    importer.signal("TERM");
    assert!(importer.wait(Duration::from_secs(10)).await.success());

    let mut reasons = Vec::new();
    while let Some((reason, _)) = next_dead_letter(&channel, &dead).await {
        reasons.push(reason);
    }
    for (_, _, reason) in messages.iter().filter(|m| !m.2.is_empty()) {
        assert!(
            reasons.iter().any(|r| r.contains(reason)),
            "no dead letter says {reason:?}: {reasons:?}"
        );
    }
    let ids = customer_ids(&env.store().await).await;
    assert_eq!(ids, vec!["G1", "G2", "G3"]);
    env.cleanup().await;
}

/// `keys` customers, each on `versions` adjacent lines whose names end in
/// "v1" … "vN": the last line of a key is its newest version.
fn versioned_customers(env: &TestEnv, keys: usize, versions: usize) -> PathBuf {
    use std::fmt::Write;
    let mut text = String::from("user_id,name,address,zip_code,phone_number,email\n");
    for key in 0..keys {
        for version in 1..=versions {
            writeln!(
                text,
                "K{key:06},Customer {key} v{version},{key} Main St,98101,555-0100,k{key}@example.com"
            )
            .unwrap();
        }
    }
    let path = env.path("customers.csv");
    std::fs::write(&path, text).unwrap();
    path
}

/// Publish one record per message; the versions the producer gave the file.
async fn publish_one_per_message(env: &TestEnv, file: &Path, clock: &Path) -> (i64, i64) {
    let options = PublishOptions {
        rows_per_message: 1,
        version_clock: Some(hpn_producer::VersionClock::new(clock)),
        ..PublishOptions::default()
    };
    let summaries = publish_files(&env.settings.broker(), &[file.to_path_buf()], &options)
        .await
        .unwrap()
        .published;
    summaries[0].versions.expect("versions of a file with rows")
}

/// Every key holds the name and version of its last line in the publish
/// whose first version is `first`: (keys at their newest, keys elsewhere).
async fn keys_at_newest(env: &TestEnv, first: i64, versions: i64) -> (usize, Vec<String>) {
    let stored = hpn_tests::versions(&env.store().await, RecordKind::Customer).await;
    let mut wrong = Vec::new();
    for (key, (doc, version)) in stored.iter().enumerate() {
        let key = key as i64;
        // Line 2 + key * versions + (v - 1) holds version v of the key; the
        // producer numbers versions by line from `first` at line 2.
        let newest = first + key * versions + (versions - 1);
        let name = doc.get_str("name").unwrap();
        if *version != Some(newest) || !name.ends_with(&format!(" v{versions}")) {
            wrong.push(format!("{}: {name} at {version:?}", doc.get_str("user_id").unwrap()));
        }
    }
    (stored.len() - wrong.len(), wrong)
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// How operations scale out: two `serve` processes with three consumers
/// each take 20,000 keys × 5 versions, one record per message, so versions
/// of one key are written by different consumers and processes in any
/// order; one process is SIGKILLed mid-stream and restarted (its messages
/// come back redelivered, behind newer ones). Every key must end at its last
/// version. Then the same file published again: newer versions of the same
/// data, raced the same way, must leave the data unchanged.
#[tokio::test]
async fn racing_importers_killed_mid_stream_end_with_the_newest_version_of_every_key() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("fault_converge");
    let (keys, versions) = (20_000_usize, 5_usize);
    let file = versioned_customers(&env, keys, versions);
    let clock = env.path("version-clock");
    let queue = env.settings.topology().queue(RecordKind::Customer);
    let start = || Importer::start(&env, &["--consumers", "3", "--writers", "2", "--batch-size", "200"]);

    let (first, last) = publish_one_per_message(&env, &file, &clock).await;
    assert_eq!(last - first, (keys * versions - 1) as i64, "one version per line");
    let survivor = start();
    let mut victim = start();
    eventually(Duration::from_secs(60), "import under way", || async {
        count(&env).await >= 5_000
    })
    .await;
    victim.signal("KILL");
    victim.wait(Duration::from_secs(5)).await;
    assert!(env.ready(&queue).await > 0, "killed while messages were still queued");
    let mut restarted = start();
    eventually(Duration::from_secs(120), "every key at its newest version", || async {
        keys_at_newest(&env, first, versions as i64).await.0 == keys
    })
    .await;
    eventually(Duration::from_secs(30), "queue empties", || async {
        env.ready(&queue).await == 0
    })
    .await;
    let after_first = documents(&env.store().await, RecordKind::Customer).await;
    assert_eq!(after_first.len(), keys, "none missing, none doubled");

    // The same file again, through the same racing importers.
    let (first_again, _) = publish_one_per_message(&env, &file, &clock).await;
    assert!(first_again > last, "a later publish versions above an earlier one");
    eventually(
        Duration::from_secs(120),
        "every key at its newest version again",
        || async { keys_at_newest(&env, first_again, versions as i64).await.0 == keys },
    )
    .await;
    let (_, metrics) = fetch(&survivor.listen, "/metrics").await.expect("metrics answer");
    let stale = counter(
        &metrics,
        r#"hpn_importer_records_total{collection="customers",outcome="stale"}"#,
    );
    assert!(
        stale > 0,
        "older versions did arrive after newer ones, and changed nothing"
    );
    let mut survivor = survivor;
    for importer in [&mut survivor, &mut restarted] {
        importer.signal("TERM");
        assert!(importer.wait(Duration::from_secs(10)).await.success());
    }
    assert_eq!(env.ready(&queue).await, 0, "nothing left unwritten");
    let (at_newest, wrong) = keys_at_newest(&env, first_again, versions as i64).await;
    assert_eq!(at_newest, keys, "first of the keys elsewhere: {:?}", wrong.first());
    assert!(
        documents(&env.store().await, RecordKind::Customer).await == after_first,
        "publishing the same file again leaves the data unchanged"
    );
    env.cleanup().await;
}

/// Memory is bounded in bytes, not only in records: a flood of one-record
/// messages of nearly 4 MiB each (valid JSON, a `name` far over the 1,024
/// characters allowed, so each is dead-lettered) keeps the importer's peak
/// resident memory under its budget. Before the byte budget, the prefetch
/// aimed at 4,000 records, so such a flood (one record each) filled it with
/// up to 2,000 bodies per consumer: 510 MiB were seen with 150 of them.
#[tokio::test]
async fn a_flood_of_maximum_size_messages_stays_within_the_memory_budget() {
    const MESSAGES: usize = 120;
    const BUDGET_MIB: u64 = 256;
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("fault_flood");
    let (_connection, channel) = env.channel().await;
    let topology = env.settings.topology();
    let name = "n".repeat(message::DEFAULT_MAX_MESSAGE_BYTES - 200);
    let body = format!(
        r#"{{"user_id":"F1","name":"{name}","address":"1 Main St","phone_number":"555","email":"f@example.com"}}"#
    );
    assert!(body.len() <= message::DEFAULT_MAX_MESSAGE_BYTES);
    for _ in 0..MESSAGES {
        let props = message::properties(RecordKind::Customer, None);
        publish_raw(&channel, &topology, RecordKind::Customer, body.as_bytes(), props).await;
    }
    let good = customers_file(&env, 1_000);
    publish(&env, &good, 100).await;
    let mut importer = Importer::start(&env, &["--memory-budget-mib", &BUDGET_MIB.to_string()]);
    let dead = topology.dead_letter_queue(RecordKind::Customer);
    eventually(Duration::from_secs(120), "the flood dead-lettered", || async {
        env.ready(&dead).await as usize == MESSAGES
    })
    .await;
    eventually(Duration::from_secs(30), "the good records stored", || async {
        count(&env).await == 1_000
    })
    .await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", importer.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    importer.signal("TERM");
    assert!(importer.wait(Duration::from_secs(10)).await.success());
    eprintln!(
        "flood of {MESSAGES} messages of {} bytes: importer peak RSS {:.1} MiB (budget {BUDGET_MIB} MiB)",
        body.len(),
        peak_kib as f64 / 1024.0
    );
    assert!(
        peak_kib < BUDGET_MIB * 1024,
        "peak RSS {peak_kib} KiB is over the budget of {BUDGET_MIB} MiB"
    );
    let (reason, _) = next_dead_letter(&channel, &dead).await.expect("a dead letter");
    assert!(reason.contains("name"), "{reason}");
    assert_exact(&env, &good).await;
    env.cleanup().await;
}

/// A publisher's garbage is set aside once per message, not once per item,
/// and the good records queued behind it flow: an array of 500,000 items
/// `[0,0,…]` (over the 10,000 records a message may hold) and an array of
/// 5,000 invalid customers, then 1,000 good customers one per message. Each
/// array is one dead letter carrying its counts; the log says a few lines,
/// not one per item (before: 500,000 dead letters and as many log lines for
/// the first array, over four minutes, the good records waiting).
#[tokio::test]
async fn garbage_arrays_are_dead_lettered_once_whole_and_the_good_records_behind_them_flow() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("fault_amplification");
    let log = env.path("serve.log");
    let (_connection, channel) = env.channel().await;
    let topology = env.settings.topology();
    let zeros = format!("[{}]", vec!["0"; 500_000].join(","));
    let props = || message::properties(RecordKind::Customer, None);
    publish_raw(&channel, &topology, RecordKind::Customer, zeros.as_bytes(), props()).await;
    let invalid: Vec<String> = (0..5_000).map(|i| format!(r#"{{"user_id":"X{i}"}}"#)).collect();
    let invalid = format!("[{}]", invalid.join(","));
    publish_raw(&channel, &topology, RecordKind::Customer, invalid.as_bytes(), props()).await;
    let file = customers_file(&env, 1_000);
    publish(&env, &file, 1).await;

    let started = Instant::now();
    let mut importer = Importer::start_logged(&env, &[], &log);
    let _dump = DumpOnPanic(log.clone());
    eventually(Duration::from_secs(60), "the good records stored", || async {
        count(&env).await == 1_000
    })
    .await;
    let took = started.elapsed();
    let dead = topology.dead_letter_queue(RecordKind::Customer);
    eventually(Duration::from_secs(10), "two dead letters", || async {
        env.ready(&dead).await == 2
    })
    .await;
    importer.signal("TERM");
    assert!(importer.wait(Duration::from_secs(10)).await.success());

    let (reason, zeros) = next_dead_letter(&channel, &dead).await.expect("the first dead letter");
    assert!(
        reason.starts_with("array of 500000 records is over the limit of 10000"),
        "{reason}"
    );
    assert_eq!(
        message::header_i64(&zeros.properties, message::header::RECORDS),
        Some(500_000)
    );
    let (reason, whole) = next_dead_letter(&channel, &dead).await.expect("the second dead letter");
    assert!(reason.starts_with("5000 of 5000 records are invalid"), "{reason}");
    assert!(
        reason.contains("record 0:") && !reason.contains("record 3:"),
        "{reason}"
    );
    assert_eq!(
        message::header_i64(&whole.properties, message::header::INVALID_RECORDS),
        Some(5_000)
    );
    assert_eq!(whole.data, invalid.as_bytes(), "set aside whole and unchanged");
    assert_eq!(env.ready(&dead).await, 0, "one dead letter per array, nothing per item");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().filter(|l| l.contains("dead-lettered")).count();
    assert!((1..=4).contains(&lines), "{lines} dead-letter log lines:\n{text}");
    eprintln!(
        "garbage arrays: both set aside and the 1,000 good records behind them stored {:.2} s after serve \
         started; {lines} dead-letter log lines",
        took.as_secs_f64()
    );
    assert_exact(&env, &file).await;
    env.cleanup().await;
}

/// A store that answers but refuses the writes is a store problem, not a
/// broker one. Here `customers` is a view, which MongoDB cannot write: the
/// writers hold their batch, `/healthz` says MongoDB refuses writes (with
/// its words) while RabbitMQ stays connected, the refusal is logged once per
/// writer, nothing is acknowledged or dead-lettered and no broker reconnect
/// happens. Once the view is dropped, everything goes in.
#[tokio::test]
async fn a_store_refusing_writes_pauses_serve_and_never_blames_the_broker() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("fault_refusal");
    let log = env.path("serve.log");
    let mut importer = Importer::start_logged(&env, &["--writers", "2"], &log);
    let listen = importer.listen.clone();
    importer.healthy().await;
    // After start-up, someone replaces the collection with a view.
    make_a_view(&env, RecordKind::Customer).await;
    let file = customers_file(&env, 2_000);
    publish(&env, &file, 100).await;
    let _dump = DumpOnPanic(log.clone());
    eventually(Duration::from_secs(30), "healthz reports the refusal", || async {
        fetch(&listen, "/healthz")
            .await
            .is_some_and(|(status, body)| status == 503 && body.contains("refusing writes"))
    })
    .await;
    let (_, body) = fetch(&listen, "/healthz").await.unwrap();
    println!("/healthz while the store refuses writes:\n{body}");
    assert!(body.contains("rabbitmq: connected"), "{body}");
    // Long enough for several retries of the held batch.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, metrics) = fetch(&listen, "/metrics").await.unwrap();
    assert!(
        !metrics.contains(r#"reconnects_total{server="rabbitmq"}"#),
        "a store refusal must not reconnect the broker: {metrics}"
    );
    assert!(
        counter(&metrics, r#"hpn_importer_retries_total{server="mongodb"}"#) >= 2,
        "the held batch is retried: {metrics}"
    );
    let dead = env.settings.topology().dead_letter_queue(RecordKind::Customer);
    assert_eq!(env.ready(&dead).await, 0, "nothing dead-lettered for a store refusal");

    // Fix the cause: the held batches go in, then everything else.
    env.store()
        .await
        .database()
        .collection::<mongodb::bson::Document>("customers")
        .drop()
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "everything written after the fix", || async {
        count(&env).await == 2_000
    })
    .await;
    eventually(Duration::from_secs(10), "healthy again", || async {
        healthz(&listen).await == Some(200)
    })
    .await;
    importer.signal("TERM");
    assert!(importer.wait(Duration::from_secs(10)).await.success());
    assert_exact(&env, &file).await;
    let log = std::fs::read_to_string(&log).unwrap();
    println!("the importer's log:\n{log}");
    let refusals = log.matches("MongoDB refuses this batch").count();
    assert!(
        (1..=2).contains(&refusals),
        "the refusal is logged once per writer holding a batch, not once per retry: {refusals} in\n{log}"
    );
    assert!(!log.contains("reconnecting"), "no broker reconnect in the log:\n{log}");
    // The collection MongoDB made again on the first insert has the only
    // index the writes rely on: the `_id`, which is the business key.
    let indexes = env
        .store()
        .await
        .collection(RecordKind::Customer)
        .list_index_names()
        .await
        .unwrap();
    assert_eq!(indexes, vec![hpn_importer::document::KEY_INDEX]);
    env.cleanup().await;
}

/// A one-shot run that meets the same refusal fails with the store's own
/// error, not "writer stopped", and acknowledges nothing it did not write.
/// Linear mode makes the timing certain: while customers are imported, no
/// writer touches `products`, which becomes a view; the products phase
/// then meets the refusal.
#[tokio::test]
async fn a_one_shot_run_fails_with_the_store_error_and_keeps_the_messages() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("fault_refusal_run");
    let files = hpn_producer::generate::generate(&env.path("data"), 40_000, 11).unwrap();
    for file in [&files.customers, &files.products] {
        publish(&env, file, 100).await;
    }
    let config = env.config();
    let run = tokio::spawn(async move { hpn_importer::run_linear(&config).await });
    eventually(Duration::from_secs(30), "customers under way", || async {
        count(&env).await > 0
    })
    .await;
    make_a_view(&env, RecordKind::Product).await;
    let error = run.await.unwrap().expect_err("the run fails");
    let text = error.to_string();
    assert_eq!(error.origin(), hpn_common::Origin::Store, "{text}");
    assert!(text.starts_with("MongoDB"), "the store's own words: {text}");
    assert!(text.contains("is a view"), "{text}");
    assert!(!text.contains("writer stopped"), "{text}");
    assert_eq!(count(&env).await, 40_000, "the customers went in");
    let products = env.settings.topology().queue(RecordKind::Product);
    assert_eq!(
        env.ready(&products).await,
        400,
        "every product message back in its queue"
    );
    env.cleanup().await;
}

/// Replace a collection with a view, which MongoDB refuses to write to: a
/// store refusal that is not an outage. Call it while no writer writes that
/// collection.
async fn make_a_view(env: &TestEnv, kind: RecordKind) {
    let store = env.store().await;
    store.collection(kind).drop().await.unwrap();
    let view = doc! {"create": kind.collection(), "viewOn": "elsewhere", "pipeline": []};
    store.database().run_command(view).await.expect("create a view");
}

/// Prints a child's log when the test fails, for the person reading CI output.
struct DumpOnPanic(PathBuf);

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!("---- {} ----\n{log}", self.0.display());
        }
    }
}
