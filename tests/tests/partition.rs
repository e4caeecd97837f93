//! Network partitions, made for real: the 3-node cluster whose nodes live
//! in network namespaces (`scripts/services partition start`), cut apart by
//! iptables DROP rules inside the namespaces (packets dropped, processes
//! untouched), with quorum queues and `pause_minority`. A one-shot run
//! given every address goes on through the cut and ends done with a report
//! equal to the store: the queue's leader cut off from the other two, and
//! the run's own node (the first of its addresses) in the minority, paused
//! by the broker. Every case checks the store against the source record by
//! record, and that nothing good was dead-lettered.
//!
//! The tests here take one lock: a cut affects every queue of the cluster.
//!
//! Not yet in `scripts/test` (ignored; run them with `scripts/services
//! partition start` and `cargo test -p hpn-tests --test partition --
//! --ignored`): on RabbitMQ 3.10 a node cut off sometimes comes back broken
//! (its rabbit application paused for good, "Global hang workaround" of
//! OTP 25 in its log), which `partition recover` now mends as an operator
//! would; and on 4.0 two runs of three stopped making progress after the
//! heal, the run's live consumers holding 10 deliveries unacknowledged and
//! unwritten with 12,302 messages ready (seen once on 3.10 too; cause not
//! found yet, issue 36).

use hpn_common::RecordKind;
use hpn_tests::process::{
    assert_reported_once, count, customers_file, eventually, importer_program, publish, services_said,
};
use hpn_tests::TestEnv;
use std::process::{Command, Stdio};
use std::time::Duration;
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

/// Heal whatever a test cut, whether it passed or not.
struct Healed;

impl Drop for Healed {
    fn drop(&mut self) {
        partition(&["heal"]);
    }
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
#[ignore = "not yet steady on RabbitMQ 4.0 (issue 36): run with scripts/services partition start"]
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
        let mut urls: Vec<String> = env.settings.amqp_url.split(',').map(str::to_string).collect();
        urls.rotate_left(node - 1);
        let mut settings = env.settings.clone();
        settings.amqp_url = urls.join(",");
        let child = Command::new(importer_program())
            // The cluster sees a node cut off within net_ticktime (5 s) × 1.25.
            .args(["run", "--json", "--batch-size", "200", "--broker-patience-ms", "180000"])
            .args(["--loss-settle-ms", "10000"])
            .envs(settings.env_vars())
            .env("RUST_LOG", "warn,hpn_importer=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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
        partition(&["heal"]);
        // A node that does not start again (RabbitMQ 3.10 after a pause,
        // sometimes) is restarted, as an operator would; said in the rounds.
        let recovered = tokio::task::spawn_blocking(|| partition(&["recover"])).await.unwrap();
        // At most 5 minutes: a run that waits on after that fails the test.
        let pid = child.id();
        let output = tokio::time::timeout(
            Duration::from_secs(300),
            tokio::task::spawn_blocking(move || child.wait_with_output()),
        )
        .await
        .unwrap_or_else(|_| {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("{cut:?}: the run still going after 5 minutes (killed)")
        })
        .unwrap()
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(at_cut < RECORDS, "{cut:?}: the run was done before the cut");
        assert_eq!(output.status.code(), Some(0), "{cut:?}: the run ends done\n{stderr}");
        assert_reported_once(&env, &file, RECORDS, &stdout, &format!("{cut:?}\n{stderr}")).await;
        let recovered = if recovered.is_empty() {
            String::new()
        } else {
            format!(" ({})", recovered.replace('\n', ", "))
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
