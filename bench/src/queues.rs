//! The queue settings compared (classic or quorum queues, either prefetch
//! scope, messages of 1 and 100 records) against the broker's raw consume
//! rate, and the CPU ceiling of these cores.

use crate::measure::{self, Bench, Profile};
use crate::results::{self, Limits};
use crate::{limits, say};
use anyhow::Result;
use hpn_common::{ConnectionSettings, QueueType, RecordKind};
use hpn_importer::PrefetchScope;
use std::path::PathBuf;

/// The queue settings compared: classic with either prefetch scope, quorum
/// with the only one it takes.
const QUEUE_VARIANTS: [(QueueType, PrefetchScope); 3] = [
    (QueueType::Classic, PrefetchScope::Channel),
    (QueueType::Classic, PrefetchScope::PerConsumer),
    (QueueType::Quorum, PrefetchScope::PerConsumer),
];

/// Parallel imports for each of [`QUEUE_VARIANTS`] from messages of 1 and
/// 100 records, `repeats` times each in turn, with the broker's raw consume
/// rate for each queue type and message size, and the CPU ceiling on the
/// machine's `cores` (see [`cpu_ceiling`]).
pub async fn compare_queues(
    bench: &mut Bench,
    connection: &ConnectionSettings,
    limits: &Limits,
    (size, files): &(usize, Vec<PathBuf>),
    repeats: usize,
    cores: usize,
) -> Result<Vec<results::QueueResult>> {
    let records = measure::customer_records(&files[0], 50_000)?;
    let mut raw = Vec::new();
    for queue_type in [QueueType::Classic, QueueType::Quorum] {
        for rows in [1, 100] {
            say(format!("raw consume: {queue_type} queue, {rows} records per message"));
            let body = hpn_common::message::encode(&records[..rows]);
            let queue = format!("hpn_bench_raw_{}", std::process::id());
            let messages = records.len() / rows;
            let raw_queue = limits::RawQueue {
                amqp_url: &connection.amqp_url,
                name: &queue,
                queue_type,
            };
            let best = limits::broker_best(&raw_queue, &body, RecordKind::Customer, messages).await?;
            raw.push((
                queue_type,
                rows,
                best.consume_per_s * rows as f64,
                best.consume_cpu_s_per_message / rows as f64,
            ));
        }
    }
    let cells: Vec<(QueueType, PrefetchScope, usize)> = QUEUE_VARIANTS
        .iter()
        .flat_map(|&(t, s)| [1, 100].map(|rows| (t, s, rows)))
        .collect();
    let mut runs: Vec<Vec<measure::Run>> = cells.iter().map(|_| Vec::new()).collect();
    for repeat in 0..repeats {
        for (i, &(queue_type, scope, rows)) in cells.iter().enumerate() {
            say(format!(
                "{size} records per file, run {}/{repeats}: {queue_type} queues, {} prefetch, {rows} per message",
                repeat + 1,
                scope.as_str()
            ));
            runs[i].push(
                bench
                    .run_queue_variant(files, queue_type, scope, rows, Profile::default())
                    .await?,
            );
        }
    }
    let total = 3 * *size as u64;
    Ok(cells
        .iter()
        .zip(&runs)
        .map(|(&(queue_type, scope, rows), runs)| {
            let summary = measure::summarise("queue variant", total, runs);
            let (raw_consume, consume_cpu) = raw
                .iter()
                .find(|(t, r, _, _)| *t == queue_type && *r == rows)
                .map(|(_, _, rate, cpu)| (*rate, *cpu))
                .unwrap_or((f64::NAN, f64::NAN));
            let ceiling = limits
                .insert_many_cpu_s_per_doc
                .map(|insert_cpu| cpu_ceiling(cores as f64, consume_cpu, insert_cpu))
                .filter(|c| c.is_finite());
            results::QueueResult {
                queue_type: queue_type.to_string(),
                prefetch_scope: scope.as_str().into(),
                rows_per_message: rows,
                records: total,
                import_records_per_s: summary.import_records_per_s,
                records_per_s: summary.records_per_s,
                importer_peak_rss_bytes: runs.iter().filter_map(|r| r.importer_rss).max(),
                raw_consume_records_per_s: raw_consume,
                ratio: summary.import_records_per_s / raw_consume.min(limits.insert_many_per_s),
                cpu_ceiling_records_per_s: ceiling,
            }
        })
        .collect())
}

/// The most records/s an import can reach where the broker, the importer
/// and the database share `cores`: each record costs the machine at least
/// what a bare consumer's delivery of it costs (`consume_cpu`, CPU seconds
/// per record) plus what the database's raw `insert_many` of it costs
/// (`insert_cpu`), both measured whole-machine in the same run.
fn cpu_ceiling(cores: f64, consume_cpu: f64, insert_cpu: f64) -> f64 {
    cores / (consume_cpu + insert_cpu)
}
