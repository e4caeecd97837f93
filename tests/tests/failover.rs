//! A database failover in the middle of an import, on the real servers: the
//! primary steps down (`replSetStepDown` with `force`; the local server then
//! refuses writes with `NotWritablePrimary` for the seconds asked, as a
//! replica set does while it elects a new primary). A one-shot run rides
//! out a failover shorter than its store patience and reports what the
//! store holds; one longer than its patience stops it with the store's
//! error, its records still queued for the next run; `serve` waits however
//! long it takes. Each ends by checking the store against the source,
//! record by record. And a write whose reply is lost on its way back (a
//! proxy that drops it, see `hpn_tests::lost_reply`) is counted once, where
//! it belongs.
//!
//! All tests here take one lock: a stepped-down server would fail a test
//! running beside it.

use hpn_common::{ConnectionSettings, RecordKind};
use hpn_tests::process::{
    assert_exact, count, customers_file, eventually, importer_program, publish, BrokerSetting, Importer, ServedImport,
};
use hpn_tests::TestEnv;
use mongodb::bson::doc;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// A client of the test's server alone (`directConnection`): it writes to
/// it whatever it is, so a refusal comes at once, where a client of the
/// replica set would wait for a primary to be elected.
async fn direct_client(env: &TestEnv) -> mongodb::Client {
    let uri = with_option(&env.settings.mongodb_uri, "directConnection=true");
    mongodb::Client::with_uri_str(&uri).await.unwrap()
}

/// Whether the server takes a write now.
async fn takes_writes(client: &mongodb::Client) -> bool {
    let probe = client.database("hpn_failover_probe").collection("probe");
    probe.insert_one(doc! {}).await.is_ok()
}

/// The primary steps down for `seconds`: writes are refused meanwhile.
async fn step_down(env: &TestEnv, seconds: u32) {
    let client = direct_client(env).await;
    let asked = client
        .database("admin")
        .run_command(doc! {"replSetStepDown": seconds, "force": true})
        .await;
    // A real primary closes its connections as it steps down, so the
    // reply may never come; what counts is that writes are now refused.
    assert!(
        !takes_writes(&client).await,
        "writes refused after the step-down (it answered {asked:?})"
    );
}

/// Once the server takes writes again (a step-down is over).
async fn writable(env: &TestEnv) {
    let client = direct_client(env).await;
    eventually(Duration::from_secs(90), "the store takes writes again", || {
        let client = client.clone();
        async move { takes_writes(&client).await }
    })
    .await;
}

/// `uri` with one more option (`name=value`).
fn with_option(uri: &str, option: &str) -> String {
    let hosts_end = uri.find("://").map_or(0, |at| at + 3);
    match (uri.contains('?'), uri[hosts_end..].contains('/')) {
        (true, _) => format!("{uri}&{option}"),
        (false, true) => format!("{uri}?{option}"),
        (false, false) => format!("{uri}/?{option}"),
    }
}

fn start_run(settings: &ConnectionSettings, flags: &[&str]) -> Child {
    Command::new(importer_program())
        .args(["run", "--mode", "parallel", "--json"])
        .args(flags)
        .envs(settings.env_vars())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the importer")
}

async fn finished(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

/// Publish `records` customers, 10 to a message (many small writes, so the
/// run is mid-way when the primary steps down), and start a one-shot run;
/// return once it has written some.
async fn run_under_way(
    env: &TestEnv,
    settings: &ConnectionSettings,
    records: usize,
    flags: &[&str],
) -> (std::path::PathBuf, Child) {
    let file = customers_file(env, records);
    publish(env, &file, 10).await;
    let child = start_run(settings, flags);
    eventually(Duration::from_secs(60), "the run under way", || async {
        count(env).await > 0
    })
    .await;
    (file, child)
}

#[tokio::test]
async fn a_one_shot_run_rides_out_a_failover_shorter_than_its_patience_and_reports_the_store() {
    let _serial = SERIAL.lock().await;
    const RECORDS: u64 = 200_000;
    let env = TestEnv::new("failover_ride");
    writable(&env).await;
    let (file, child) = run_under_way(&env, &env.settings, RECORDS as usize, &[]).await;
    let at_step_down = count(&env).await;
    step_down(&env, 8).await;
    let stepped = Instant::now();
    assert!(at_step_down < RECORDS, "the run was done before the failover");
    let output = finished(child).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the run rides the failover out: {stderr}"
    );
    assert!(
        stepped.elapsed() >= Duration::from_secs(7),
        "the run waited for the failover to end ({:?})",
        stepped.elapsed()
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let customers = &report["collections"][0];
    let figure = |name: &str| {
        customers[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {customers}"))
    };
    assert_eq!(figure("processed"), RECORDS);
    assert_eq!(figure("count_after"), count(&env).await, "count after is the store's");
    assert_eq!(
        figure("inserted") + figure("updated") + figure("stale"),
        RECORDS,
        "every record accounted for once: {customers}"
    );
    assert_eq!(figure("rejected"), 0, "nothing dead-lettered for the failover");
    assert_eq!(customers["messages_left"].as_u64(), Some(0));
    assert_exact(&env, &file).await;
    eprintln!("a failover of 8 s with {at_step_down} of {RECORDS} written: run exit 0, all stored");
    env.cleanup().await;
}

#[tokio::test]
async fn a_failover_longer_than_the_patience_stops_the_run_with_the_stores_error_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("failover_patience");
    writable(&env).await;
    // Each attempt waits for a primary at most a second (the server
    // selection timeout; 5 s by default), so the patience decides.
    let mut impatient = env.settings.clone();
    impatient.mongodb_uri = with_option(&impatient.mongodb_uri, "serverSelectionTimeoutMS=1000");
    let (file, child) = run_under_way(&env, &impatient, 200_000, &["--store-patience-ms", "2000"]).await;
    step_down(&env, 10).await;
    let stepped = Instant::now();
    let output = finished(child).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stepped.elapsed() < Duration::from_secs(10),
        "the run stopped within its patience, not at the failover's end ({:?})",
        stepped.elapsed()
    );
    assert_eq!(
        output.status.code(),
        Some(hpn_common::error::EXIT_STORE.into()),
        "the store's exit code: {stderr}"
    );
    assert!(
        stderr.contains("MongoDB did not answer or take writes") && stderr.contains("--store-patience-ms"),
        "the store's error, naming the patience: {stderr}"
    );
    let queue = env.settings.topology().queue(RecordKind::Customer);
    let dead = env.settings.topology().dead_letter_queue(RecordKind::Customer);
    writable(&env).await;
    assert!(env.ready(&queue).await > 0, "what was not written stays queued");
    assert_eq!(env.ready(&dead).await, 0, "nothing dead-lettered for the failover");
    let output = finished(start_run(&env.settings, &[])).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_exact(&env, &file).await;
    env.cleanup().await;
}

#[tokio::test]
async fn serve_rides_out_a_forty_second_failover() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("failover_serve");
    writable(&env).await;
    let import = ServedImport::under_way(&env, 200_000).await;
    let at_step_down = count(&env).await;
    step_down(&env, 40).await;
    assert!(at_step_down < 200_000, "the import was done before the failover");
    // Only then can the test's own reads find a primary again.
    writable(&env).await;
    import.wait_until_done(&env, "a failover of 40 s").await;
    let dead = env.settings.topology().dead_letter_queue(RecordKind::Customer);
    assert_eq!(env.ready(&dead).await, 0, "nothing dead-lettered for the failover");
    import.stop_and_check(&env).await;
    env.cleanup().await;
}

/// A store outage several times longer than the broker's
/// `consumer_timeout` under `serve` spends no delivery attempt: what the
/// importer holds goes back to its queue as copies before the broker would
/// close the channel and count the deliveries as failed (see the importer's
/// `source::hand_back`). The broker here times deliveries out after 15 s
/// (checked every second), on the channels the importer opens while it says
/// so; the store refuses writes for 45 s with 20,000 customers in the
/// queue; one failed delivery dead-letters a message (`--max-attempts 1`).
/// Without the hand-back, the broker closed the channels after 15 s and
/// the redelivered messages went to the dead-letter queue.
#[tokio::test]
async fn a_store_outage_longer_than_the_brokers_consumer_timeout_dead_letters_nothing() {
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::new("failover_held");
    env.settings.queue_type = hpn_common::QueueType::Quorum;
    writable(&env).await;
    let file = customers_file(&env, 20_000);
    let queue = env.settings.topology().queue(RecordKind::Customer);
    let _tick = BrokerSetting::set("channel_tick_interval", 1_000);
    let short_timeout = BrokerSetting::set("consumer_timeout", 15_000);
    let importer = Importer::start(
        &env,
        &[
            "--max-attempts",
            "1",
            "--hold-limit-ms",
            "5000",
            "--store-patience-ms",
            "1000",
        ],
    );
    importer.healthy().await;
    step_down(&env, 45).await;
    let outage = Instant::now();
    publish(&env, &file, 100).await;
    eventually(Duration::from_secs(30), "the importer holds deliveries", || async {
        env.ready(&queue).await < 200
    })
    .await;
    // The importer's channels are open: the broker's default again for any other.
    drop(short_timeout);
    writable(&env).await;
    assert!(
        outage.elapsed() > Duration::from_secs(45),
        "the outage outlasted the timeout by far"
    );
    eventually(
        Duration::from_secs(90),
        "every record stored after the outage",
        || async { count(&env).await == 20_000 },
    )
    .await;
    let dead = env.settings.topology().dead_letter_queue(RecordKind::Customer);
    assert_eq!(env.ready(&dead).await, 0, "nothing dead-lettered for the outage");
    let (_, metrics) = hpn_importer::fetch(&importer.listen, "/metrics")
        .await
        .expect("metrics answer");
    let handed_back = metrics
        .lines()
        .find(|line| line.starts_with("hpn_importer_messages_handed_back_total{collection=\"customers\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(
        handed_back.is_some_and(|n| n > 0),
        "messages were handed back: {metrics}"
    );
    let import = ServedImport::watching(file, 20_000, queue, importer);
    import.wait_until_done(&env, "the outage").await;
    import.stop_and_check(&env).await;
    env.cleanup().await;
}

/// A write whose reply is lost (the proxy lets the first guarded `update`
/// reach the server, which applies it, and closes the connection before
/// the answer comes back) is settled, not counted as if it had failed: the
/// run reports every record once, each where it belongs. Two files of the
/// same 2,000 customers published one after the other, the second changed,
/// into an empty store: the first inserted, the second updated; before, the
/// updates the lost reply covered were sent again as new statements, found
/// their versions stored and were counted stale.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_whose_reply_is_lost_is_counted_once_where_it_belongs() {
    let _serial = SERIAL.lock().await;
    const RECORDS: usize = 2_000;
    let env = TestEnv::new("failover_lost_reply");
    writable(&env).await;
    let header = "user_id,name,address,zip_code,phone_number,email\n";
    let file = |name: &str| {
        let rows: String = (0..RECORDS)
            .map(|i| format!("C{i:05},{name} {i},1 Main St,98101,555-0100,a@example.com\n"))
            .collect();
        let path = env.path(&format!("{name}.csv"));
        std::fs::write(&path, format!("{header}{rows}")).unwrap();
        path
    };
    // One publish after the other: the queue holds the first file, then the
    // changed one, each record of it newer than the first's of its key.
    for file in [file("First"), file("Changed")] {
        let published = hpn_tests::process::run(
            &env,
            &hpn_tests::process::producer_program(),
            &[
                "publish",
                "--rows-per-message",
                "100",
                "--version-clock",
                env.path("clock").to_str().unwrap(),
                file.to_str().unwrap(),
            ],
        );
        assert_eq!(published.code, Some(0), "{}", published.stderr);
    }

    let upstream = env.settings.mongodb_uri.trim_start_matches("mongodb://");
    let upstream = upstream.split(['/', '?']).next().unwrap();
    let proxy = hpn_tests::lost_reply::LostReply::start(upstream, "update").await;
    let through_proxy = ConnectionSettings {
        mongodb_uri: format!("mongodb://{}/?directConnection=true", proxy.address),
        ..env.settings.clone()
    };
    let args = [
        "run",
        "--json",
        "--consumers",
        "1",
        "--writers",
        "1",
        "--batch-size",
        "2000",
    ];
    let ran = tokio::task::spawn_blocking(move || {
        hpn_tests::process::run_with(&through_proxy, &importer_program(), &args, &[("RUST_LOG", "warn")])
    })
    .await
    .unwrap();
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(proxy.lost(), 1, "a reply was lost: {}", ran.stderr);
    let customers = &ran.json()["collections"][0];
    let figure = |name: &str| customers[name].as_u64();
    assert_eq!(
        (
            figure("inserted"),
            figure("updated"),
            figure("stale"),
            figure("count_after")
        ),
        (
            Some(RECORDS as u64),
            Some(RECORDS as u64),
            Some(0),
            Some(RECORDS as u64)
        ),
        "every record counted once, where it belongs: {customers}"
    );
    let names = hpn_tests::documents(&env.store().await, RecordKind::Customer).await;
    assert!(
        names.iter().all(|d| d.get_str("name").unwrap().starts_with("Changed")),
        "the later file's records stored"
    );
    env.cleanup().await;
}
