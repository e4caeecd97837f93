//! End-to-end latency of the long-running importer: from publish to written.
//!
//! The real `hpn-importer serve` runs as a child process, with its HTTP
//! listener on a loopback port it picks and reports. A publisher sends one-record messages
//! at a steady rate (confirmed, persistent, stamped with `x-published-ms`
//! like our producer's), first at 5,000 messages/s, then at rising rates to
//! find the most the pipeline sustains. After each step the importer's own
//! `end_to_end_seconds` histogram is read from `/metrics` and its p50 and
//! p99 taken the way Prometheus' `histogram_quantile` takes them (linear
//! within a bucket): the figures are what an operator's dashboard would
//! show. Timestamps are whole milliseconds, so figures are ±1 ms.
//!
//! A rate counts as sustained when the publisher reached at least 95% of it
//! and the importer had written every record within a second of the last
//! publish (no backlog built up). The steps stop at the first rate that is
//! not sustained.

use crate::measure::Bench;
use crate::results::{Latency, LatencyStep};
use anyhow::{ensure, Result};
use hpn_common::publisher::ConfirmedPublisher;
use hpn_common::{broker, message, ConnectionSettings, Customer, Record, RecordKind};
use hpn_importer::Store;
use std::time::{Duration, Instant};

pub use crate::results::TARGET_RATE;
/// Rates tried after the target rate, in order, while they are sustained.
const RISING: [u32; 6] = [10_000, 15_000, 20_000, 25_000, 30_000, 40_000];
/// How long each rate is held, by default.
pub const STEP: Duration = Duration::from_secs(5);
/// Publishes awaiting confirm, at most.
const CONFIRM_WINDOW: usize = 2048;

/// Run the steps, each held for `length`: the target rate, then rising
/// rates while sustained.
pub async fn measure(bench: &mut Bench, length: Duration) -> Result<Latency> {
    let mut steps = Vec::new();
    for rate in std::iter::once(TARGET_RATE).chain(RISING) {
        let settings = bench.fresh();
        let step = step(bench, &settings, rate, length).await;
        bench.cleanup(&settings).await?;
        let step = step?;
        let cpu: Vec<String> = step
            .cpu
            .iter()
            .map(|c| format!("{} {:.2}", c.process, c.cores))
            .collect();
        crate::say(format!("cores used at {rate} msg/s: {}", cpu.join(", ")));
        crate::say(format!(
            "latency at {rate} msg/s: reached {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, drained {:.2} s after the last publish; {} batch writes, p50 {:.1} ms, p99 {:.1} ms",
            step.achieved_rate, step.p50_ms, step.p99_ms, step.drain_seconds, step.batches, step.write_p50_ms, step.write_p99_ms
        ));
        let sustained = step.sustained;
        steps.push(step);
        if !sustained {
            break;
        }
    }
    Ok(Latency { steps })
}

async fn step(bench: &Bench, settings: &ConnectionSettings, rate: u32, length: Duration) -> Result<LatencyStep> {
    let served = crate::served::Served::start(bench.serve_command(settings)).await?;

    let watched = crate::cpu::pipeline_processes(&[
        ("importer", served.pid()),
        ("publisher (the bench)", std::process::id()),
    ]);
    let cpu_before = crate::cpu::sample(&watched);
    let (messages, publish_seconds) = publish_at(settings, rate, length).await?;
    let published_at = Instant::now();
    let store = Store::connect_to(settings).await?;
    while store.count(RecordKind::Customer).await? < messages {
        ensure!(
            published_at.elapsed() < Duration::from_secs(120),
            "the importer did not write {messages} records within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_seconds = published_at.elapsed().as_secs_f64();
    let cpu = crate::cpu::between(&cpu_before, &crate::cpu::sample(&watched));
    store.shutdown().await;
    // The histogram is observed after the batch write; give the last one a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let metrics = served.metrics().await?;
    let collection = RecordKind::Customer.collection();
    let buckets = histogram_buckets(&metrics, "end_to_end_seconds", collection);
    let writes = histogram_buckets(&metrics, "batch_write_seconds", collection);
    served.stop().await?;

    let total = buckets.last().map(|b| b.1).unwrap_or(0);
    ensure!(total >= messages, "the histogram holds {total} records of {messages}");
    let achieved_rate = messages as f64 / publish_seconds;
    let p99 = quantile(&buckets, 0.99);
    Ok(LatencyStep {
        target_rate: rate,
        achieved_rate,
        messages,
        drain_seconds,
        p50_ms: quantile(&buckets, 0.5) * 1000.0,
        p99_ms: p99 * 1000.0,
        p99_bucket_ms: bucket_bound(&buckets, 0.99) * 1000.0,
        write_p50_ms: quantile(&writes, 0.5) * 1000.0,
        write_p99_ms: quantile(&writes, 0.99) * 1000.0,
        batches: writes.last().map(|b| b.1).unwrap_or(0),
        cpu,
        sustained: achieved_rate >= 0.95 * f64::from(rate) && drain_seconds <= 1.0,
    })
}

/// Publish one-record customer messages at `rate` per second for `length`,
/// with confirms. Returns the messages published and the seconds it took.
async fn publish_at(settings: &ConnectionSettings, rate: u32, length: Duration) -> Result<(u64, f64)> {
    let connection = broker::connect(&settings.amqp_url, "hpn-bench (latency)").await?;
    let mut publisher = ConfirmedPublisher::open(&connection, CONFIRM_WINDOW).await?;
    settings.topology().declare(&connection).await?;
    let exchange = settings.topology().exchange();
    let routing_key = settings.topology().routing_key(RecordKind::Customer);
    // Ticks of 5 ms; each sends what the schedule owes by then, so a late
    // tick catches up instead of lowering the rate.
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    let started = Instant::now();
    let mut sent: u64 = 0;
    while started.elapsed() < length {
        ticks.tick().await;
        let owed = (started.elapsed().as_secs_f64().min(length.as_secs_f64()) * f64::from(rate)) as u64;
        while sent < owed {
            let body = message::encode(&[customer(sent)]);
            let properties = message::properties(RecordKind::Customer, None);
            publisher.publish(&exchange, routing_key, &body, properties).await?;
            sent += 1;
        }
    }
    publisher.close().await?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = connection.close(200, "done".into()).await;
    Ok((sent, seconds))
}

fn customer(n: u64) -> Record {
    Record::Customer(Customer {
        user_id: format!("L{n:09}"),
        name: format!("Latency Customer {n}"),
        address: format!("{} Pine Blvd", n % 9000 + 100),
        zip_code: Some("98101".into()),
        phone_number: "206-555-0100".into(),
        email: format!("latency{n}@example.com"),
        // Versioned like the producer's records, so the guard is in the path measured.
        extra: Default::default(),
        version: Some(n as i64),
    })
}

/// The cumulative buckets (upper bound in seconds, count) of one
/// collection's histogram `name` in a Prometheus text exposition.
pub fn histogram_buckets(metrics: &str, name: &str, collection: &str) -> Vec<(f64, u64)> {
    let prefix = format!("hpn_importer_{name}_bucket{{");
    let label = format!("collection=\"{collection}\"");
    let mut buckets: Vec<(f64, u64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&label))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((bound, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The `q` quantile (seconds) of cumulative buckets, linear within the
/// bucket that holds it, as Prometheus' `histogram_quantile`.
pub fn quantile(buckets: &[(f64, u64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else { return 0.0 };
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank && count > 0 {
            if bound.is_infinite() {
                return lower.0;
            }
            let within = (rank - lower.1 as f64) / (count - lower.1).max(1) as f64;
            return lower.0 + (bound - lower.0) * within;
        }
        lower = (bound, count);
    }
    lower.0
}

/// The upper bound (seconds) of the bucket holding the `q` quantile.
fn bucket_bound(buckets: &[(f64, u64)], q: f64) -> f64 {
    let total = buckets.last().map(|b| b.1).unwrap_or(0);
    buckets
        .iter()
        .find(|(_, count)| *count as f64 >= q * total as f64 && *count > 0)
        .map(|b| b.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# TYPE hpn_importer_end_to_end_seconds histogram
hpn_importer_end_to_end_seconds_sum{collection="customers"} 1.5
hpn_importer_end_to_end_seconds_count{collection="customers"} 100
hpn_importer_end_to_end_seconds_bucket{le="0.01",collection="customers"} 0
hpn_importer_end_to_end_seconds_bucket{le="0.02",collection="customers"} 50
hpn_importer_end_to_end_seconds_bucket{le="0.1",collection="customers"} 98
hpn_importer_end_to_end_seconds_bucket{le="+Inf",collection="customers"} 100
hpn_importer_end_to_end_seconds_bucket{le="0.01",collection="products"} 7
"#;

    #[test]
    fn buckets_are_read_for_one_collection_in_order() {
        let b = histogram_buckets(EXPOSITION, "end_to_end_seconds", "customers");
        assert_eq!(b, vec![(0.01, 0), (0.02, 50), (0.1, 98), (f64::INFINITY, 100)]);
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let b = histogram_buckets(EXPOSITION, "end_to_end_seconds", "customers");
        assert!(
            (quantile(&b, 0.5) - 0.02).abs() < 1e-9,
            "the 50th record is the last of (0.01, 0.02]"
        );
        assert!(
            (quantile(&b, 0.25) - 0.015).abs() < 1e-9,
            "halfway through (0.01, 0.02]"
        );
        assert_eq!(quantile(&b, 0.99), 0.1, "in +Inf: the highest finite bound");
        assert_eq!(bucket_bound(&b, 0.9), 0.1);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
