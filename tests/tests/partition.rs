//! Network partitions, made for real: the 3-node cluster whose nodes live
//! in network namespaces (`scripts/services partition start`), cut apart by
//! iptables DROP rules inside the namespaces (packets dropped, processes
//! untouched), with quorum queues and `pause_minority`. Every case checks
//! the store against the source record by record, and that nothing good
//! was dead-lettered:
//!
//! - a one-shot run given every address goes on through the cut and ends
//!   done with a report equal to the store: the queue's leader cut off from
//!   the other two, and the run's own node (the first of its addresses) in
//!   the minority, paused by the broker;
//! - the nemesis: two `serve` importers racing on the same keys while the
//!   producer publishes the next export again and again, through random
//!   cuts (a node isolated, from the clients too or not, two nodes cut
//!   apart) and a SIGKILL of one importer: every key ends at the newest
//!   version published. `HPN_NEMESIS_SECONDS` sets how long it cuts (45 s
//!   here; `scripts/nemesis` runs it for longer and records the rounds for
//!   findings.md), `HPN_NEMESIS_SEED` replays a run's cuts.
//!
//! After each heal `scripts/services partition recover` makes the cluster
//! whole as an operator would, and says so: it restarts a node that does
//! not start again (RabbitMQ 3.10 on OTP 25, sometimes, after a pause) or
//! that stayed on a side of its own (seen on 4.0: pause_minority never
//! mends a node that saw the others come back before it paused, which
//! then serves clients from a stale view of the queues).
//!
//! The tests here take one lock: a cut affects every queue of the cluster.

use hpn_common::{ConnectionSettings, RecordKind};
use hpn_tests::process::{
    assert_reported_once, count, customers_file, eventually, importer_program, producer_program, publish,
    services_said, Importer,
};
use hpn_tests::{documents, expected_documents, read_csv, versions, TestEnv};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// `scripts/services partition ARGS`: what it printed.
fn partition(args: &[&str]) -> String {
    services_said(&[&["partition"], args].concat())
}

/// The test's servers, on the partition cluster with quorum queues, as
/// its clients' user (`hpn`, whose password the services script keeps in a file).
fn on_partition_cluster(test: &str) -> TestEnv {
    let mut env = TestEnv::new(test);
    let password = std::fs::read_to_string(partition(&["password-file"])).expect("the cluster's password file");
    env.settings.amqp_url = partition(&["urls"]).replace("amqp://hpn@", &format!("amqp://hpn:{}@", password.trim()));
    env.settings.queue_type = hpn_common::QueueType::Quorum;
    env
}

/// `settings` with its broker addresses starting at node `first` (1 to 3).
fn starting_at(settings: &ConnectionSettings, first: usize) -> ConnectionSettings {
    let mut urls: Vec<&str> = settings.amqp_url.split(',').collect();
    urls.rotate_left(first - 1);
    let mut settings = settings.clone();
    settings.amqp_url = urls.join(",");
    settings
}

/// The last lines of a child's log, for a failure's message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Heal whatever a test cut, whether it passed or not.
struct Healed;

impl Drop for Healed {
    fn drop(&mut self) {
        partition(&["heal"]);
    }
}

/// Heal, then `partition recover`: what it restarted, on one line ("" if nothing).
async fn heal_and_recover() -> String {
    partition(&["heal"]);
    let recovered = tokio::task::spawn_blocking(|| partition(&["recover"])).await.unwrap();
    recovered.replace('\n', ", ")
}

/// Which cut a round makes, given the node leading the queue.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// The queue's leader cut off from the other two nodes; the run is
    /// connected to it.
    LeaderIsolated,
    /// The run's own node (not the leader) cut off from the other two:
    /// the broker pauses it (`pause_minority`) and closes its connections.
    OwnNodeInMinority,
}

#[tokio::test]
async fn a_one_shot_run_rides_out_a_partition_and_reports_the_store() {
    let _serial = SERIAL.lock().await;
    let _healed = Healed;
    const RECORDS: u64 = 20_000;
    let env = on_partition_cluster("partition_oneshot");
    let file = customers_file(&env, RECORDS as usize);
    let queue = env.settings.topology().queue(RecordKind::Customer);
    let mut rounds = Vec::new();
    for cut in [Cut::LeaderIsolated, Cut::OwnNodeInMinority] {
        env.store().await.drop_collections().await.unwrap();
        publish(&env, &file, 1).await;
        let leader: usize = partition(&["leader", &queue]).parse().expect("a node number");
        let node = match cut {
            Cut::LeaderIsolated => leader,
            Cut::OwnNodeInMinority => leader % 3 + 1,
        };
        // The run's first address is the node cut off.
        let settings = starting_at(&env.settings, node);
        let log = env.path(&format!("run-{cut:?}.log"));
        let child = Command::new(importer_program())
            // The cluster sees a node cut off within net_ticktime (5 s) × 1.25.
            .args(["run", "--json", "--batch-size", "200", "--broker-patience-ms", "180000"])
            .args(["--loss-settle-ms", "10000"])
            .envs(settings.env_vars())
            .env("RUST_LOG", "warn,hpn_importer=info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("the run's log"))
            .spawn()
            .expect("start the importer");
        eventually(Duration::from_secs(60), "the run under way", || async {
            count(&env).await >= RECORDS / 10
        })
        .await;
        let at_cut = count(&env).await;
        partition(&["isolate", &node.to_string()]);
        // Long enough for the cluster to notice (net_ticktime 5 s) and act.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let recovered = heal_and_recover().await;
        // At most 5 minutes: a run that waits on after that fails the test.
        let pid = child.id();
        let output = tokio::time::timeout(
            Duration::from_secs(300),
            tokio::task::spawn_blocking(move || child.wait_with_output()),
        )
        .await
        .unwrap_or_else(|_| {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!(
                "{cut:?}: the run still going after 5 minutes (killed){recovered}\n{}",
                tail(&log)
            )
        })
        .unwrap()
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(at_cut < RECORDS, "{cut:?}: the run was done before the cut");
        let what = format!("{cut:?} (recovered: {recovered:?})\n{}", tail(&log));
        assert_eq!(output.status.code(), Some(0), "{what}: the run ends done");
        assert_reported_once(&env, &file, RECORDS, &stdout, &what).await;
        let recovered = if recovered.is_empty() {
            String::new()
        } else {
            format!(" ({recovered})")
        };
        rounds.push(format!(
            "{cut:?} (node {node}, leader {leader}) at {at_cut} stored: exit 0{recovered}"
        ));
        // The cluster whole again before the next round.
        eventually(Duration::from_secs(120), "the cut node back", || async {
            partition(&["leader", &queue]).parse::<usize>().is_ok()
        })
        .await;
    }
    eprintln!("partition, one-shot: {}", rounds.join("; "));
    env.cleanup().await;
}

/// One cut of the nemesis.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// A node cut off from the other two (the broker pauses it).
    Isolated(usize),
    /// A node cut off from the other two and from the clients.
    IsolatedFromClientsToo(usize),
    /// Two nodes that cannot reach each other, both reaching the third.
    Apart(usize, usize),
}

impl Fault {
    fn random(rng: &mut impl Rng) -> Fault {
        let node = rng.random_range(1..=3);
        match rng.random_range(0..3) {
            0 => Fault::Isolated(node),
            1 => Fault::IsolatedFromClientsToo(node),
            _ => Fault::Apart(node, node % 3 + 1),
        }
    }

    fn make(self) {
        match self {
            Fault::Isolated(n) => partition(&["isolate", &n.to_string()]),
            Fault::IsolatedFromClientsToo(n) => partition(&["isolate", &n.to_string(), "client"]),
            Fault::Apart(a, b) => partition(&["cut", &a.to_string(), &b.to_string()]),
        };
    }
}

/// `hpn-producer publish` of `file`, one record to a message, on
/// `settings`: its JSON report, or the test fails with its log.
fn publish_as_upstream(settings: &ConnectionSettings, file: &Path, log: &Path) -> serde_json::Value {
    let output = Command::new(producer_program())
        .args(["publish", "--json", "--rows-per-message", "1"])
        .arg(file)
        .envs(settings.env_vars())
        .env("RUST_LOG", "warn,hpn_producer=info")
        .stderr(std::fs::File::create(log).expect("the producer's log"))
        .output()
        .expect("run the producer");
    assert!(
        output.status.success(),
        "the producer exits 0 through the cuts ({:?})\n{}",
        output.status,
        tail(log)
    );
    serde_json::from_slice(&output.stdout).expect("the producer's JSON report")
}

#[tokio::test]
async fn serve_and_publish_ride_out_random_cuts_and_a_kill() {
    let _serial = SERIAL.lock().await;
    let _healed = Healed;
    const RECORDS: usize = 20_000;
    let seconds: u64 = std::env::var("HPN_NEMESIS_SECONDS").map_or(45, |s| s.parse().expect("HPN_NEMESIS_SECONDS"));
    let seed: u64 = std::env::var("HPN_NEMESIS_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        },
        |s| s.parse().expect("HPN_NEMESIS_SEED"),
    );
    let env = on_partition_cluster("partition_nemesis");
    // Yesterday's export in the store's queue, then today's (every row
    // changed) published again and again through the cuts.
    let yesterday = customers_file(&env, RECORDS);
    let today = hpn_producer::generate::generate(&env.path("today"), RECORDS, 12)
        .unwrap()
        .customers;
    publish(&env, &yesterday, 10).await;
    let serve = |first: usize, log: &str| Importer::start_on(&starting_at(&env.settings, first), &[], &env.path(log));
    let mut importers = vec![serve(1, "serve-a.log"), serve(2, "serve-b.log")];
    let producer_settings = starting_at(&env.settings, 3);
    let (stop_publishing, publishing) = (
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        std::sync::Arc::new(std::sync::Mutex::new(Vec::new())),
    );
    let producer = {
        let (stop, reports, file, dir) = (
            stop_publishing.clone(),
            publishing.clone(),
            today.clone(),
            env.path("producer"),
        );
        std::fs::create_dir_all(&dir).unwrap();
        tokio::task::spawn_blocking(move || {
            let mut round = 0;
            while round == 0 || !stop.load(std::sync::atomic::Ordering::SeqCst) {
                round += 1;
                let report = publish_as_upstream(&producer_settings, &file, &dir.join(format!("{round}.log")));
                reports.lock().unwrap().push(report);
            }
        })
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (started, mut faults, mut recovered, mut killed) = (Instant::now(), Vec::new(), Vec::new(), false);
    while started.elapsed() < Duration::from_secs(seconds) {
        let fault = Fault::random(&mut rng);
        fault.make();
        faults.push(fault);
        tokio::time::sleep(Duration::from_millis(rng.random_range(3_000..=10_000))).await;
        let said = heal_and_recover().await;
        if !said.is_empty() {
            recovered.push(said);
        }
        if !killed && started.elapsed() >= Duration::from_secs(seconds / 2) {
            // A crash in the middle: the other importer goes on, and a new one starts.
            importers[0].signal("KILL");
            importers[0] = serve(3, "serve-c.log");
            killed = true;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..=6_000))).await;
    }
    stop_publishing.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(300), producer)
        .await
        .expect("the producer done within 5 minutes of the last heal")
        .expect("every publish exits 0");
    let reports = publishing.lock().unwrap().clone();
    let newest = reports.last().expect("a publish")["files"][0]["versions"].clone();
    let (first, last) = (newest[0].as_i64().unwrap(), newest[1].as_i64().unwrap());
    let resumed: u64 = reports.iter().map(|r| r["files"][0]["resumed"].as_u64().unwrap()).sum();
    let what = format!(
        "nemesis seed {seed}, cuts {faults:?}, recovered {recovered:?}\nserve-b.log:\n{}",
        tail(&env.path("serve-b.log"))
    );
    // Every key at the newest publish's version: the store converges on it.
    let store = env.store().await;
    let converged = tokio::time::timeout(Duration::from_secs(240), async {
        loop {
            let stored = versions(&store, RecordKind::Customer).await;
            if stored.len() == RECORDS && stored.iter().all(|(_, v)| v.is_some_and(|v| v >= first)) {
                return stored;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}\nthe store never held the newest publish of every key"));
    assert!(
        converged.iter().all(|(_, v)| v.is_some_and(|v| v <= last)),
        "{what}\nno version above what was published"
    );
    let expected = expected_documents(RecordKind::Customer, &read_csv(&today));
    assert!(
        documents(&store, RecordKind::Customer).await == expected,
        "{what}\nthe store is today's export, record by record"
    );
    let queue = env.settings.topology().queue(RecordKind::Customer);
    eventually(Duration::from_secs(60), "the queue drained", || async {
        env.ready(&queue).await == 0
    })
    .await;
    let dead = env.settings.topology().dead_letter_queue(RecordKind::Customer);
    assert_eq!(env.ready(&dead).await, 0, "{what}\nnothing dead-lettered");
    for importer in &mut importers {
        importer.signal("TERM");
        assert!(
            importer.wait(Duration::from_secs(30)).await.success(),
            "{what}\nserve stops cleanly"
        );
    }
    let node_restarts = recovered.iter().map(|said| said.split(", ").count()).sum::<usize>();
    if let Ok(record) = std::env::var("HPN_NEMESIS_RECORD") {
        // One line of scripts/nemesis's record, for findings.md (`hpn-bench partitions`).
        let line = serde_json::json!({
            "broker": std::env::var("HPN_NEMESIS_BROKER").unwrap_or_else(|_| "RabbitMQ".into()),
            "passed": true,
            "seconds": seconds,
            "seed": seed,
            "cuts": faults.len(),
            "node_restarts": node_restarts,
            "publishes": reports.len(),
            "records_per_publish": RECORDS,
            "resumed": resumed,
            "importers_killed": 1,
            "keys": RECORDS,
            "lost": 0,
            "dead_lettered": 0,
        });
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(record)
            .expect("the record");
        writeln!(file, "{line}").expect("write the record");
    }
    eprintln!(
        "partition, nemesis: {seconds} s, seed {seed}, {} cuts {faults:?}, {} publishes of {RECORDS} ({resumed} resumed after a lost connection), one importer killed, recovered {recovered:?}, every key at the newest version, nothing dead-lettered",
        faults.len(),
        reports.len(),
    );
    env.cleanup().await;
}
