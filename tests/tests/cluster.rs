//! On RabbitMQ's distributed engine: the local 3-node cluster
//! (`scripts/services cluster start`) with quorum queues, reached through
//! the comma-separated address list. One node is stopped in the middle of
//! an import, so the tests in this file take one lock.

use hpn_common::message::{self, header};
use hpn_common::{QueueType, RecordKind, Topology};
use hpn_importer::{fetch, run_linear, run_parallel};
use hpn_producer::generate::{generate, DEFAULT_SEED};
use hpn_producer::{publish_files, PublishOptions};
use hpn_tests::process::{
    assert_exact, assert_reported_once, count, customers_file, eventually, publish, services, services_said, Importer,
};
use hpn_tests::{customer_ids, next_dead_letter, publish_raw, versions, TestEnv};
use lapin::options::{BasicGetOptions, BasicRejectOptions, QueueDeclareOptions};
use lapin::types::AMQPValue;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// An address where nothing answers, put first in lists to prove it is skipped.
const DEAD_ADDRESS: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

/// The node (1-3) that leads a quorum queue.
fn leader(queue: &str) -> usize {
    services_said(&["cluster", "leader", queue]).parse().unwrap()
}

#[tokio::test]
async fn quorum_queues_are_declared_consumed_and_kept_apart_from_classic_ones() {
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::on_cluster("cluster_quorum");
    env.settings.amqp_url = format!("{DEAD_ADDRESS},{}", env.settings.amqp_url);
    let files = generate(&env.path("data"), 1000, DEFAULT_SEED).unwrap();
    let paths: Vec<PathBuf> = files.paths().iter().map(|p| p.to_path_buf()).collect();
    publish_files(&env.settings.broker(), &paths, &PublishOptions::default())
        .await
        .unwrap();

    let stats = run_parallel(&env.config())
        .await
        .expect("parallel import from quorum queues");
    let after: Vec<u64> = stats.iter().map(|s| s.count_after).collect();
    assert_eq!(after, vec![1000, 1000, 1000]);

    // The queues really are quorum queues: declaring one as classic fails.
    let (connection, _) = env.channel().await;
    let probe = connection.create_channel().await.unwrap();
    let classic_topology = Topology::new(env.settings.queue_prefix.clone(), QueueType::Classic);
    let mut classic = classic_topology.queue_arguments();
    classic.insert("x-queue-type".into(), AMQPValue::LongString("classic".into()));
    let queue = env.settings.topology().queue(RecordKind::Customer);
    let refused = probe
        .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), classic)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("inequivalent arg"), "{refused}");

    // An importer set for classic queues refuses them rather than counting
    // deliveries the wrong way.
    let mut wrong = env.config();
    wrong.connection.queue_type = QueueType::Classic;
    let error = run_linear(&wrong).await.unwrap_err();
    assert!(error.to_string().contains("not as the classic queue"), "{error}");
    assert_eq!(
        error.origin(),
        hpn_common::Origin::Input,
        "not a broker outage to retry"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_message_redelivered_up_to_the_limit_is_dead_lettered_with_the_brokers_count() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::on_cluster("cluster_limit");
    let (_connection, channel) = env.channel().await;
    let topology = env.settings.topology();
    let queue = topology.queue(RecordKind::Customer);
    let send = |id: &'static str| {
        let body = message::encode(&[hpn_tests::customer(id, &format!("Customer {id}"))]);
        let (channel, topology) = (&channel, &topology);
        async move {
            let properties = message::properties(RecordKind::Customer, None);
            publish_raw(channel, topology, RecordKind::Customer, &body, properties).await
        }
    };
    // B1 fails three deliveries (taken and handed back, as by a consumer
    // that dies holding it); the broker counts them in x-delivery-count.
    send("B1").await;
    for _ in 0..3 {
        // A quorum queue takes a returned message back asynchronously.
        let started = Instant::now();
        let taken = loop {
            let got = channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .unwrap();
            match got {
                Some(taken) => break taken,
                None => assert!(started.elapsed() < Duration::from_secs(10), "B1 back in its queue"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        taken
            .delivery
            .acker
            .reject(BasicRejectOptions { requeue: true })
            .await
            .unwrap();
    }
    send("A1").await;

    let mut importer = Importer::start(&env, &["--max-attempts", "3"]);
    let dead = topology.dead_letter_queue(RecordKind::Customer);
    eventually(Duration::from_secs(30), "B1 dead-lettered", || async {
        env.ready(&dead).await == 1
    })
    .await;
    eventually(Duration::from_secs(30), "A1 stored", || async {
        count(&env).await == 1
    })
    .await;
    importer.signal("TERM");
    assert!(importer.wait(Duration::from_secs(10)).await.success());

    let (reason, dead_letter) = next_dead_letter(&channel, &dead).await.expect("the dead letter");
    assert!(reason.starts_with("delivered 3 times"), "{reason}");
    assert!(
        message::header_i64(&dead_letter.properties, header::ATTEMPTS).is_none(),
        "nothing was republished with our own counter"
    );
    let ids = customer_ids(&env.store().await).await;
    assert_eq!(ids, vec!["A1"]);
    env.cleanup().await;
}

#[tokio::test]
async fn the_producer_resumes_on_another_node_when_its_node_stops() {
    let _serial = SERIAL.lock().await;
    const RECORDS: usize = 60_000;
    let env = TestEnv::on_cluster("cluster_producer");
    let file = customers_file(&env, RECORDS);
    // The producer connects to the first address: node 1.
    let (settings, path) = (env.settings.broker(), file.clone());
    let publishing = tokio::spawn(async move {
        let options = PublishOptions {
            rows_per_message: 1,
            ..PublishOptions::default()
        };
        publish_files(&settings, &[path], &options).await
    });
    let queue = env.settings.topology().queue(RecordKind::Customer);
    eventually(Duration::from_secs(60), "publishing under way", || async {
        env.ready(&queue).await >= 500
    })
    .await;
    let started = Instant::now();
    services(&["cluster", "stop-node", "1"]);
    let stopped = started.elapsed();
    let summaries = tokio::time::timeout(Duration::from_secs(120), publishing)
        .await
        .expect("the publish ends")
        .unwrap()
        .expect("the publish survives its node")
        .published;
    let published = started.elapsed();
    // Once or more: a node shutting down may nack first and close later.
    let resumed = summaries[0].resumed;
    assert!(resumed >= 1, "the node stopped before the file was done");
    assert_eq!(summaries[0].published, RECORDS as u64, "every row confirmed once");
    let queued = env.ready(&queue).await;
    assert!(
        queued as usize >= RECORDS,
        "nothing lost: {queued} messages for {RECORDS} rows"
    );
    let stats = run_parallel(&env.config()).await.expect("import");
    eprintln!(
        "cluster: node 1 stopped in {:.1} s under the producer, which resumed {resumed} times and was done \
         {:.1} s after the stop began; {} messages queued for {RECORDS} rows",
        stopped.as_secs_f64(),
        published.as_secs_f64(),
        queued
    );
    assert_eq!(stats[0].count_after, RECORDS as u64);
    assert_exact(&env, &file).await;
    // Every version stored was given by one of the connections the report
    // lists, the rows confirmed before the stop keeping the first one's.
    let passes = &summaries[0].version_passes;
    assert!(
        passes.len() >= 2 && passes.len() <= resumed as usize + 1,
        "one range per connection that sent rows: {passes:?}, resumed {resumed}"
    );
    assert_eq!(summaries[0].versions, Some((passes[0].0, passes[passes.len() - 1].1)));
    let stored = versions(&env.store().await, RecordKind::Customer).await;
    let given = |v: i64| passes.iter().any(|(first, last)| (*first..=*last).contains(&v));
    assert!(
        stored.iter().all(|(_, v)| v.is_some_and(given)),
        "every stored version in a listed range"
    );
    assert!(
        stored.iter().any(|(_, v)| v.is_some_and(|v| v <= passes[0].1)),
        "rows confirmed before the stop keep the first connection's versions"
    );
    assert!(
        passes.windows(2).all(|w| w[1].0 <= w[0].1 + 1),
        "a resumed file goes on with the versions its lines had, not a later stamp: {passes:?}"
    );
    services(&["cluster", "start-node", "1"]);
    env.cleanup().await;
}

#[tokio::test]
async fn an_import_survives_stopping_the_node_that_leads_its_queue() {
    leader_lost_mid_import("cluster_leader", "stop-node").await;
}

/// The same with the leader's node crashing (SIGKILL) instead of stopping.
#[tokio::test]
async fn an_import_survives_sigkill_of_the_node_that_leads_its_queue() {
    leader_lost_mid_import("cluster_leader_kill", "kill-node").await;
}

/// `serve` importing 200,000 customers while the node that leads the queue
/// (and holds the importer's connection) is taken away by `how`
/// (`scripts/services cluster stop-node` or `kill-node`), then started
/// again: the import goes on on the other nodes and the store ends exactly
/// equal to the file.
async fn leader_lost_mid_import(test: &str, how: &str) {
    let _serial = SERIAL.lock().await;
    const RECORDS: usize = 200_000;
    let mut env = TestEnv::on_cluster(test);
    let file = customers_file(&env, RECORDS);
    let started = Instant::now();
    publish(&env, &file, 100).await;
    let published = started.elapsed();

    // The importer's first address is the leader's node, so stopping that
    // node takes both the queue's leader and the importer's connection.
    let queue = env.settings.topology().queue(RecordKind::Customer);
    let node = leader(&queue);
    let mut urls: Vec<String> = env.settings.amqp_url.split(',').map(str::to_string).collect();
    urls.rotate_left(node - 1);
    env.settings.amqp_url = urls.join(",");
    let importer = Importer::start(&env, &[]);
    let started = Instant::now();
    eventually(Duration::from_secs(120), "a quarter imported", || async {
        count(&env).await >= RECORDS as u64 / 4
    })
    .await;
    let at_stop = count(&env).await;
    services(&["cluster", how, &node.to_string()]);
    let stopped = started.elapsed();
    eventually(
        Duration::from_secs(60),
        "the import goes on without the node",
        || async { count(&env).await >= at_stop + 20_000 },
    )
    .await;
    assert_ne!(leader(&queue), node, "another node leads the queue now");
    services(&["cluster", "start-node", &node.to_string()]);
    eventually(Duration::from_secs(180), "every record imported", || async {
        count(&env).await == RECORDS as u64
    })
    .await;
    let imported = started.elapsed();
    eventually(Duration::from_secs(20), "queue empties", || async {
        env.ready(&queue).await == 0
    })
    .await;
    let dead = env.settings.topology().dead_letter_queue(RecordKind::Customer);
    assert_eq!(env.ready(&dead).await, 0, "nothing dead-lettered");
    let (_, metrics) = fetch(&importer.listen, "/metrics").await.expect("metrics answer");
    assert!(
        metrics.contains(r#"hpn_importer_reconnects_total{server="rabbitmq"}"#),
        "the importer moved to another node by itself"
    );
    let mut importer = importer;
    importer.signal("TERM");
    assert!(importer.wait(Duration::from_secs(10)).await.success());
    assert_exact(&env, &file).await;
    eprintln!(
        "cluster: {RECORDS} records published in {:.1} s; node {node} (leader) taken away ({how}) at {:.1} s \
         with {at_stop} written; all imported at {:.1} s",
        published.as_secs_f64(),
        stopped.as_secs_f64(),
        imported.as_secs_f64()
    );
    env.cleanup().await;
}

/// A one-shot run never says "done" with records still queued: the leader
/// of the queue paused (SIGSTOP) for 3 s in the middle of a run whose
/// importer is connected to another node. While paused, the broker answers
/// "how many are ready?" with its stand-in 0/0; a run that believed it
/// exited 0 having imported a third to two thirds of the queue (issue 22).
/// Every round must end with every record imported and exit 0, or exit 5
/// with the report saying what is left; then a second run finishes the
/// queue and the store holds exactly the file.
#[tokio::test]
async fn a_paused_queue_leader_never_makes_a_one_shot_run_report_done_early() {
    let _serial = SERIAL.lock().await;
    const RECORDS: u64 = 40_000;
    const ROUNDS: usize = 10;
    let env = TestEnv::on_cluster("cluster_pause");
    let file = customers_file(&env, RECORDS as usize);
    let queue = env.settings.topology().queue(RecordKind::Customer);
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        env.store().await.drop_collections().await.unwrap();
        publish(&env, &file, 1).await;
        // The importer's first address is a node that does not lead the queue.
        let node = leader(&queue);
        let urls: Vec<String> = cluster_urls_without(node);
        let mut importer_env = env.settings.clone();
        importer_env.amqp_url = urls.join(",");
        let child = start_run(
            &importer_env,
            &["run", "--mode", "parallel", "--json", "--drain-patience-ms", "20000"],
        );
        tokio::time::sleep(Duration::from_millis(1000 + 100 * round as u64)).await;
        services(&["cluster", "pause-node", &node.to_string()]);
        tokio::time::sleep(Duration::from_secs(3)).await;
        services(&["cluster", "resume-node", &node.to_string()]);
        let output = finished(child).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let report: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("round {round}: not JSON ({e}): {stdout}\n{stderr}"));
        let customers = &report["collections"][0];
        let processed = customers["processed"].as_u64().unwrap();
        let left = customers["messages_left"].as_u64();
        let stored = count(&env).await;
        assert_eq!(
            customers["count_after"].as_u64(),
            Some(stored),
            "round {round}: count after is the store's"
        );
        match output.status.code() {
            Some(0) => {
                assert_eq!(
                    processed, RECORDS,
                    "round {round}: exit 0 with records not imported\n{stderr}"
                );
                assert_eq!(left, Some(0), "round {round}");
                assert_eq!(env.ready(&queue).await, 0, "round {round}: exit 0 with messages queued");
            }
            Some(5) => {
                assert!(left != Some(0), "round {round}: exit 5 names what is left: {customers}");
                assert!(stderr.contains("not done"), "round {round}: {stderr}");
                if let Some(left) = left {
                    assert!(
                        left > 0 && processed + left >= RECORDS,
                        "round {round}: {processed} + {left}"
                    );
                }
                // Nothing was lost: a second run takes the rest.
                let again = hpn_tests::process::run(&env, &hpn_tests::process::importer_program(), &["run", "--json"]);
                assert_eq!(again.code, Some(0), "round {round}: {}", again.stderr);
                assert_eq!(count(&env).await, RECORDS, "round {round}");
            }
            other => panic!("round {round}: exit {other:?}\n{stderr}"),
        }
        let seconds = report["total_seconds"].as_f64().unwrap_or_default();
        assert!(
            seconds > 4.0,
            "round {round}: the run ended before the pause did ({seconds} s)"
        );
        rounds.push(format!(
            "{processed}/{RECORDS} in {seconds:.1} s, exit {}",
            output.status.code().unwrap()
        ));
    }
    eprintln!("pause rounds (processed, exit code): {}", rounds.join(", "));
    assert_exact(&env, &file).await;
    env.cleanup().await;
}

/// A one-shot run whose node (the first of its addresses, and the queue's
/// leader) is killed (SIGKILL) or stopped in the middle goes on on another
/// node and ends done, with a report that counts every record once: every
/// one inserted, none stale though messages handled before the loss come
/// again, nothing left, the count after the store's (issue 36).
#[tokio::test]
async fn a_one_shot_run_goes_on_on_another_node_when_its_node_is_lost() {
    let _serial = SERIAL.lock().await;
    const RECORDS: u64 = 60_000;
    let env = TestEnv::on_cluster("cluster_oneshot_failover");
    let file = customers_file(&env, RECORDS as usize);
    let queue = env.settings.topology().queue(RecordKind::Customer);
    let mut rounds = Vec::new();
    for how in ["kill-node", "stop-node"] {
        env.store().await.drop_collections().await.unwrap();
        publish(&env, &file, 1).await;
        let node = leader(&queue);
        let mut urls: Vec<String> = env.settings.amqp_url.split(',').map(str::to_string).collect();
        urls.rotate_left(node - 1);
        let mut importer_env = env.settings.clone();
        importer_env.amqp_url = urls.join(",");
        let child = start_run(
            &importer_env,
            // A killed or stopped node is seen gone at once: no need to
            // wait the 75 s its net_ticktime allows for a cut (--loss-settle-ms).
            &[
                "run",
                "--json",
                "--batch-size",
                "200",
                "--broker-patience-ms",
                "60000",
                "--loss-settle-ms",
                "5000",
            ],
        );
        eventually(Duration::from_secs(60), "the run under way", || async {
            count(&env).await >= RECORDS / 10
        })
        .await;
        let at_loss = count(&env).await;
        services(&["cluster", how, &node.to_string()]);
        let output = finished(child).await;
        services(&["cluster", "start-node", &node.to_string()]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(at_loss < RECORDS, "{how}: the run was done before the node was lost");
        assert_eq!(
            output.status.code(),
            Some(0),
            "{how}: the run goes on and ends done\n{stderr}"
        );
        assert!(stderr.contains("connecting again"), "{how}: the loss is said: {stderr}");
        assert_reported_once(&env, &file, RECORDS, &stdout, how).await;
        rounds.push(format!(
            "{how} of node {node} at {at_loss} stored: exit 0, {RECORDS} processed once"
        ));
    }
    eprintln!("one-shot failover: {}", rounds.join("; "));
    env.cleanup().await;
}

/// A one-shot run given one node, which is killed in the middle and not
/// back within the run's patience: the run stops with the broker's exit
/// code and prints its report (what it imported, the store's count after,
/// nothing known of what is left); a second run, the node back, finishes
/// the queue and the store holds exactly the file.
#[tokio::test]
async fn a_one_shot_run_no_node_answers_for_stops_with_the_brokers_code_and_its_report() {
    let _serial = SERIAL.lock().await;
    const RECORDS: u64 = 60_000;
    let env = TestEnv::on_cluster("cluster_oneshot_gives_up");
    let file = customers_file(&env, RECORDS as usize);
    let queue = env.settings.topology().queue(RecordKind::Customer);
    publish(&env, &file, 1).await;
    // A node that does not lead the queue: the queue itself stays up.
    let node = (leader(&queue) % 3) + 1;
    let mut importer_env = env.settings.clone();
    importer_env.amqp_url = env.settings.amqp_url.split(',').nth(node - 1).unwrap().to_string();
    let child = start_run(
        &importer_env,
        &["run", "--json", "--batch-size", "200", "--broker-patience-ms", "3000"],
    );
    eventually(Duration::from_secs(60), "the run under way", || async {
        count(&env).await >= RECORDS / 10
    })
    .await;
    services(&["cluster", "kill-node", &node.to_string()]);
    let output = finished(child).await;
    services(&["cluster", "start-node", &node.to_string()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(hpn_common::error::EXIT_BROKER.into()),
        "the broker's exit code\n{stderr}"
    );
    assert!(stderr.contains("Error: RabbitMQ"), "the broker's error: {stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("a report ({e}): {stdout}\n{stderr}"));
    let customers = &report["collections"][0];
    let stored = count(&env).await;
    assert!(stored < RECORDS, "the run was done before the node was lost");
    assert_eq!(
        customers["count_after"].as_u64(),
        Some(stored),
        "the store's count: {customers}"
    );
    assert_eq!(customers["inserted"].as_u64(), Some(stored), "{customers}");
    assert!(
        customers["messages_left"].is_null(),
        "nothing known of what is left: {customers}"
    );
    let again = hpn_tests::process::run(&env, &hpn_tests::process::importer_program(), &["run", "--json"]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(
        again.json()["collections"][0]["inserted"].as_u64(),
        Some(RECORDS - stored),
        "the second run inserts the rest"
    );
    assert_exact(&env, &file).await;
    eprintln!("no node for 3 s: exit 7 with {stored} of {RECORDS} reported and stored; the second run took the rest");
    env.cleanup().await;
}

/// `hpn-importer` with `args` against `settings`, its output piped.
fn start_run(settings: &hpn_common::ConnectionSettings, args: &[&str]) -> std::process::Child {
    Command::new(hpn_tests::process::importer_program())
        .args(args)
        .envs(settings.env_vars())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the importer")
}

/// What a child process said, once it has ended.
async fn finished(child: std::process::Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

/// The cluster's addresses with node `skip` (1-3) left out.
fn cluster_urls_without(skip: usize) -> Vec<String> {
    hpn_tests::cluster_urls()
        .split(',')
        .enumerate()
        .filter(|(i, _)| i + 1 != skip)
        .map(|(_, url)| url.to_string())
        .collect()
}
