//! What the importer's memory budget holds and what it costs, in the same
//! run: the importer's peak memory under a flood of maximum-size messages,
//! with the budget and without one, and the one-record import rate with the
//! budget against the same import without one (the case the budget could
//! slow down: its prefetch starts from the largest body allowed, so the
//! first deliveries come a few at a time until the sizes seen are small).

use crate::measure::{self, Bench};
use crate::results::{median, BudgetResult};
use anyhow::{bail, Result};
use hpn_common::message;
use hpn_common::publisher::ConfirmedPublisher;
use hpn_common::{broker, ConnectionSettings, RecordKind};
use hpn_importer::{ImportReport, PrefetchScope};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Messages in the flood: enough that, without the budget, the importer
/// would hold several hundred MiB of them.
pub const FLOOD_MESSAGES: usize = 150;
/// Good customers published behind the flood, 100 per message: they must
/// all be stored, whatever came before them.
const GOOD_RECORDS: usize = 1_000;
/// A budget no flood reaches (1 TiB): the importer as it was before the
/// budget, its prefetch set by records only.
pub const UNBOUNDED_MIB: usize = 1 << 20;

/// One-record customer messages of nearly the largest body the contract
/// allows (valid JSON; a `name` far over its 1,024 characters, so each is
/// one invalid record, dead-lettered).
fn flood_body() -> Vec<u8> {
    let name = "n".repeat(message::DEFAULT_MAX_MESSAGE_BYTES - 200);
    format!(r#"{{"user_id":"F1","name":"{name}","address":"1 Main St","phone_number":"555","email":"f@example.com"}}"#)
        .into_bytes()
}

/// The flood, then good records, imported by a one-shot parallel run with a
/// budget of `budget_mib`; the importer's peak RSS and the run's seconds.
async fn flood(bench: &mut Bench, customers: &Path, budget_mib: usize) -> Result<(Option<u64>, f64)> {
    let settings = bench.fresh();
    let saved = std::mem::replace(&mut bench.tuning.memory_budget_mib, budget_mib);
    let result = import_flood(bench, &settings, customers).await;
    bench.tuning.memory_budget_mib = saved;
    bench.cleanup(&settings).await?;
    result
}

async fn import_flood(bench: &Bench, settings: &ConnectionSettings, customers: &Path) -> Result<(Option<u64>, f64)> {
    publish_flood(settings, customers).await?;
    let started = Instant::now();
    let mut command = bench.command("hpn-importer", settings, false);
    command.args(["run", "--json", "--mode", "parallel"]);
    bench.tuning_args(&mut command);
    let report: ImportReport = serde_json::from_value(measure::json_output(command).await?)?;
    let seconds = started.elapsed().as_secs_f64();
    let customers = report
        .collections
        .iter()
        .find(|c| c.collection == RecordKind::Customer.collection());
    match customers {
        Some(c) if c.rejected == FLOOD_MESSAGES as u64 && c.inserted == GOOD_RECORDS as u64 => {}
        other => {
            bail!("the flood's import should reject {FLOOD_MESSAGES} and insert {GOOD_RECORDS} customers: {other:?}")
        }
    }
    Ok((report.peak_rss_bytes, seconds))
}

async fn publish_flood(settings: &ConnectionSettings, customers: &Path) -> Result<()> {
    let connection = broker::connect(&settings.amqp_url, "hpn-bench (flood)").await?;
    let topology = settings.topology();
    topology.declare(&connection).await?;
    let mut publisher = ConfirmedPublisher::open(&connection, 16).await?;
    let (exchange, key) = (topology.exchange(), topology.routing_key(RecordKind::Customer));
    let body = flood_body();
    for _ in 0..FLOOD_MESSAGES {
        let properties = message::properties(RecordKind::Customer, None);
        publisher.publish(&exchange, key, &body, properties).await?;
    }
    for chunk in measure::customer_records(customers, GOOD_RECORDS)?.chunks(100) {
        let properties = message::properties(RecordKind::Customer, None);
        publisher
            .publish(&exchange, key, &message::encode(chunk), properties)
            .await?;
    }
    publisher.close().await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// The flood with the bench's budget and without one, then `repeats`
/// alternating pairs of one-record parallel imports of `files` (with the
/// budget, without), on the bench's queue type with per-consumer prefetch.
pub async fn measure(bench: &mut Bench, files: &[PathBuf], repeats: usize) -> Result<BudgetResult> {
    let budget_mib = bench.tuning.memory_budget_mib;
    crate::say(format!(
        "memory budget: a flood of {FLOOD_MESSAGES} messages of 4 MiB, budget {budget_mib} MiB"
    ));
    let (peak, seconds) = flood(bench, &files[0], budget_mib).await?;
    crate::say("memory budget: the same flood without a budget");
    let (unbounded_peak, _) = flood(bench, &files[0], UNBOUNDED_MIB).await?;

    let queue_type = bench.connection.queue_type;
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut records = 0;
    for repeat in 0..repeats {
        for (budget, rates) in [(budget_mib, &mut with), (UNBOUNDED_MIB, &mut without)] {
            crate::say(format!(
                "memory budget, run {}/{repeats}: one record per message, budget {}",
                repeat + 1,
                if budget == UNBOUNDED_MIB {
                    "none".into()
                } else {
                    format!("{budget} MiB")
                }
            ));
            bench.tuning.memory_budget_mib = budget;
            let run = bench
                .run_queue_variant(files, queue_type, PrefetchScope::PerConsumer, 1, Default::default())
                .await;
            bench.tuning.memory_budget_mib = budget_mib;
            let run = run?;
            records = run.collections.iter().map(|c| c.processed).sum();
            rates.push(records as f64 / run.times.import_seconds);
        }
    }
    Ok(BudgetResult {
        budget_mib,
        flood_messages: FLOOD_MESSAGES,
        flood_body_bytes: flood_body().len(),
        flood_good_records: GOOD_RECORDS,
        flood_peak_rss_bytes: peak,
        flood_unbounded_peak_rss_bytes: unbounded_peak,
        flood_seconds: seconds,
        one_record_queue_type: queue_type.to_string(),
        one_record_records: records,
        one_record_import_per_s: median(&with),
        one_record_unbounded_import_per_s: median(&without),
    })
}
