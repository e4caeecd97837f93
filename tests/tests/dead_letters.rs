//! `hpn-importer dead-letters` end to end, on the real servers: poison of
//! several kinds dead-lettered by an import, `list` grouping it with the
//! right counts, the cause fixed, `replay` of one reason only (a dry run
//! first), killed with SIGKILL half-way and run again: every replayed record
//! stored once, the other dead letters kept.

use hpn_common::{message, RecordKind};
use hpn_tests::process::{importer_program, run_with, Ran};
use hpn_tests::{customer_ids, publish_raw, TestEnv};
use std::time::{Duration, Instant};

/// Customers the store refuses and our validation does not: a 2dsphere
/// index on `extra.location` takes no "nowhere" (MongoDB's code 16755).
const REFUSED: usize = 3_000;
const NOT_JSON: usize = 3;
const INVALID: usize = 2;
const GOOD: usize = 50;

fn dead_letters(env: &TestEnv, args: &[&str]) -> Ran {
    let mut all = vec!["dead-letters"];
    all.extend_from_slice(args);
    let ran = run_with(&env.settings, &importer_program(), &all, &[("RUST_LOG", "warn")]);
    assert_eq!(ran.code, Some(0), "dead-letters {args:?}: {}", ran.stderr);
    ran
}

/// `list --json`: (reason, count) of the customers' dead letters.
fn groups(env: &TestEnv) -> Vec<(String, u64)> {
    dead_letters(env, &["list", "--json", "--collection", "customers"])
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|g| (g["reason"].as_str().unwrap().to_string(), g["count"].as_u64().unwrap()))
        .collect()
}

fn count_of(groups: &[(String, u64)], words: &str) -> u64 {
    groups.iter().filter(|(r, _)| r.contains(words)).map(|(_, n)| n).sum()
}

#[tokio::test]
async fn dead_letters_are_listed_by_reason_and_replayed_by_reason_through_a_sigkill() {
    let env = TestEnv::new("dead_letters");
    let store = env.store().await;
    hpn_tests::refuse_customers_from_nowhere(&store).await;
    let (_connection, channel) = env.channel().await;
    let topology = env.settings.topology();
    let props = || message::properties(RecordKind::Customer, None);
    let publish = |body: String| {
        let (channel, topology) = (&channel, &topology);
        async move { publish_raw(channel, topology, RecordKind::Customer, body.as_bytes(), props()).await }
    };
    for i in 0..REFUSED {
        publish(hpn_tests::customer_from_nowhere(&format!("R{i:05}"))).await;
    }
    for i in 0..NOT_JSON {
        publish(format!("not JSON {i} {{")).await;
    }
    for i in 0..INVALID {
        publish(format!(
            r#"{{"user_id":"I{i}","address":"1 Main St","phone_number":"5","email":"i@x.com"}}"#
        ))
        .await;
    }
    for i in 0..GOOD {
        publish(format!(
            r#"{{"user_id":"G{i:03}","name":"Good","address":"1 Main St","phone_number":"555","email":"g@example.com"}}"#
        ))
        .await;
    }
    let import = || {
        run_with(
            &env.settings,
            &importer_program(),
            &["run", "--json"],
            &[("RUST_LOG", "warn")],
        )
    };
    let first = import();
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(customer_ids(&store).await.len(), GOOD, "only the good ones stored");

    // list: one line per reason, numbers and quoted values folded.
    let listed = groups(&env);
    let table = dead_letters(&env, &["list", "--collection", "customers"]).stdout;
    eprintln!("dead-letters list:\n{table}");
    assert_eq!(count_of(&listed, "code N"), REFUSED as u64, "{listed:?}");
    assert_eq!(count_of(&listed, "JSON"), NOT_JSON as u64, "{listed:?}");
    assert_eq!(count_of(&listed, "missing field"), INVALID as u64, "{listed:?}");
    assert_eq!(listed.len(), 3, "three reasons: {listed:?}");
    assert_eq!(groups(&env), listed, "listing changes nothing");

    // show: whole messages of one reason.
    let shown = dead_letters(&env, &["show", "--json", "--reason", "json", "--limit", "2"]).json();
    assert_eq!(shown.as_array().unwrap().len(), 2);
    assert!(shown[0]["body"].as_str().unwrap().starts_with("not JSON"), "{shown}");
    assert!(shown[0]["headers"]["x-hpn-original-queue"].is_string(), "{shown}");

    // The cause fixed; a dry run counts without moving anything.
    // Right after thousands of refusals the server can be slow enough for
    // the driver to clear its pool once: a retryable error, retried; and
    // when the lost answer was a success, the retry finds no index.
    let mut attempts = 0;
    while let Err(e) = store
        .collection(RecordKind::Customer)
        .drop_index(hpn_tests::GEO_INDEX)
        .await
    {
        let gone = matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 27);
        if attempts > 0 && gone {
            break;
        }
        attempts += 1;
        assert!(
            attempts < 3 && hpn_importer::StoreError::from(e.clone()).is_transient(),
            "dropping the index: {e}"
        );
    }
    let dry = dead_letters(&env, &["replay", "--json", "--reason", "16755", "--dry-run"]).json();
    assert_eq!(dry[0]["replayed"], REFUSED as u64, "{dry}");
    assert_eq!(
        env.ready(&topology.queue(RecordKind::Customer)).await,
        0,
        "a dry run replays nothing"
    );
    assert_eq!(groups(&env), listed, "nor removes anything");

    // replay of that reason only, killed half-way, then run again.
    let mut replay = std::process::Command::new(importer_program())
        .args(["dead-letters", "replay", "--reason", "16755"])
        .envs(env.settings.env_vars())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let queue = topology.queue(RecordKind::Customer);
    let mut at_kill = 0;
    while started.elapsed() < Duration::from_secs(60) {
        at_kill = env.ready(&queue).await;
        if at_kill >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    replay.kill().unwrap();
    replay.wait().unwrap();
    eprintln!("replay killed with {at_kill} of {REFUSED} replayed");
    assert!(
        (300..REFUSED as u32).contains(&at_kill),
        "killed half-way: {at_kill} of {REFUSED} were back on their queue"
    );
    let again = dead_letters(&env, &["replay", "--json", "--reason", "16755"]).json();
    eprintln!("replay run again: {again}");
    let second = import();
    assert_eq!(second.code, Some(0), "{}", second.stderr);

    // Every refused record stored once; the other dead letters kept.
    let ids = customer_ids(&store).await;
    assert_eq!(ids.len(), GOOD + REFUSED, "each key once");
    assert!(ids.iter().filter(|id| id.starts_with('R')).count() == REFUSED);
    let left = groups(&env);
    assert_eq!(count_of(&left, "code N"), 0, "nothing of that reason left: {left:?}");
    assert!(
        count_of(&left, "JSON") >= NOT_JSON as u64 && count_of(&left, "missing field") >= INVALID as u64,
        "{left:?}"
    );
    eprintln!("dead letters left: {left:?}");
    env.cleanup().await;
}

/// A message set aside whole counts every record it held as rejected (an
/// array over the limit: its length), one where it cannot say (not JSON),
/// so processed is still inserted + rejected, record for record.
#[tokio::test]
async fn a_message_set_aside_whole_counts_every_record_it_held() {
    let env = TestEnv::new("dead_letters_whole");
    let (_connection, channel) = env.channel().await;
    let topology = env.settings.topology();
    let props = || message::properties(RecordKind::Customer, None);
    let over = message::MAX_RECORDS_PER_MESSAGE + 1;
    let too_many = format!("[{}]", vec!["{}"; over].join(","));
    let good: Vec<hpn_common::Record> = (0..GOOD)
        .map(|i| hpn_tests::customer(&format!("G{i:03}"), "Good"))
        .collect();
    for body in [too_many.into_bytes(), b"not JSON {".to_vec(), message::encode(&good)] {
        publish_raw(&channel, &topology, RecordKind::Customer, &body, props()).await;
    }
    let stats = hpn_importer::run_parallel(&env.config()).await.expect("import");
    let customers = &stats[0];
    assert_eq!(
        (customers.processed, customers.inserted, customers.rejected),
        ((over + 1 + GOOD) as u64, GOOD as u64, (over + 1) as u64),
        "{customers:?}"
    );
    assert_eq!(env.ready(&topology.dead_letter_queue(RecordKind::Customer)).await, 2);
    env.cleanup().await;
}
