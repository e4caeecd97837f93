//! The sections on taking messages: the queue settings compared, and the
//! long-running importer's latency.

use super::*;
use std::fmt::Write;

/// `## Queue types and prefetch`: each queue setting against the broker's raw consume.
pub(super) fn queues(md: &mut String, results: &Results) {
    let l = &results.limits;
    if !results.queues.is_empty() {
        let _ = writeln!(md, "## Queue types and prefetch\n");
        let _ = writeln!(
            md,
            "Parallel import of {} records (published first, then imported) on the single broker, by queue type, prefetch scope and records per message. *Raw consume* is a bare consumer on a queue of the same type and message size, measured in this run; the ratio is import / min(raw consume, raw insert_many {}/s). Medians of {} runs; peak memory is the largest.\n",
            thousands(results.queues[0].records as f64),
            thousands(l.insert_many_per_s),
            results.settings.repeats
        );
        let _ = writeln!(
            md,
            "| queue type | prefetch | records per message | import records/s | raw consume records/s | ratio | CPU ceiling records/s | ceiling ratio | import / ceiling | importer peak |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for q in &results.queues {
            let ceiling = q.cpu_ceiling_records_per_s;
            let or_dash = |v: Option<f64>, show: &dyn Fn(f64) -> String| v.map_or("–".to_string(), show);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} |",
                q.queue_type,
                q.prefetch_scope,
                q.rows_per_message,
                thousands(q.import_records_per_s),
                thousands(q.raw_consume_records_per_s),
                q.ratio,
                or_dash(ceiling, &|c| thousands(c)),
                or_dash(q.ceiling_ratio(l.insert_many_per_s), &|r| format!("{r:.2}")),
                or_dash(ceiling, &|c| format!("{:.2}", q.import_records_per_s / c)),
                mib(q.importer_peak_rss_bytes)
            );
        }
        if let Some(insert_cpu) = l.insert_many_cpu_s_per_doc {
            let cores = results.machine.cores;
            let _ = writeln!(
                md,
                "\n*CPU ceiling*: the broker, the importer and the database share {cores} cores, so an import cannot take records much faster than {cores} cores divided by what one record costs the whole machine at the least: its delivery to a bare consumer (the raw consume's CPU seconds per record, measured with it) plus its raw `insert_many` ({:.1} µs of CPU per document, median of the raw rounds, batches of 1,000; the importer's batches of 2,000 cost the database a little less). *Ceiling ratio* is that ceiling over the same denominator as *ratio*: where it is well below a target's bar, no importer can meet the bar on these cores, and *import / ceiling* shows how much of what is possible ours reaches.",
                insert_cpu * 1e6
            );
        }
        let rate = |t: &str, rows: usize| {
            results
                .queues
                .iter()
                .find(|q| q.queue_type == t && q.prefetch_scope == "per-consumer" && q.rows_per_message == rows)
                .map(|q| q.import_records_per_s)
        };
        if let (Some(c1), Some(q1), Some(c100), Some(q100)) = (
            rate("classic", 1),
            rate("quorum", 1),
            rate("classic", 100),
            rate("quorum", 100),
        ) {
            let _ = writeln!(
                md,
                "\nQuorum / classic, per-consumer prefetch: {:.2}× at 1 record per message, {:.2}× at 100. Defaults in this run: {} queues, {} prefetch.\n",
                q1 / c1,
                q100 / c100,
                results.settings.queue_type,
                results.settings.prefetch_scope
            );
        }
    }
}

/// `## Latency of the long-running importer`: serve at steady publish rates.
pub(super) fn latency(md: &mut String, results: &Results) {
    if let Some(latency) = &results.latency {
        let _ = writeln!(md, "## Latency of the long-running importer\n");
        let _ = writeln!(
            md,
            "`hpn-importer serve` with a publisher sending one record per message at a steady rate for a few seconds per step; p50 and p99 from the importer's own `end_to_end_seconds` histogram on `/metrics` (publish to written).\n"
        );
        let _ = writeln!(
            md,
            "| messages/s asked | reached | p50 | p99 | written after the last publish | sustained |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---|");
        for step in &latency.steps {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} ms | {:.1} ms | {:.2} s | {} |",
                thousands(f64::from(step.target_rate)),
                thousands(step.achieved_rate),
                step.p50_ms,
                step.p99_ms,
                step.drain_seconds,
                if step.sustained { "yes" } else { "no" }
            );
        }
        if let Some(at) = latency.at_target_rate() {
            let cores: Vec<String> = at.cpu.iter().map(|c| format!("{} {:.2}", c.process, c.cores)).collect();
            let _ = writeln!(
                md,
                "\n- Where the time goes at {} messages/s: one batch write takes p50 {:.1} ms, p99 {:.1} ms ({} batches); the rest is waiting for a core. Cores used (of {}): {}. Every hop, publisher to broker to importer to database, shares those cores, so a record waits its turn at each.",
                thousands(f64::from(at.target_rate)),
                at.write_p50_ms,
                at.write_p99_ms,
                at.batches,
                results.machine.cores,
                cores.join(", ")
            );
        }
        match latency.max_sustained() {
            Some(max) => {
                let _ = writeln!(
                    md,
                    "- Highest rate sustained: {} messages/s, p50 {:.1} ms, p99 {:.1} ms. Under light load a record waits for the batch window (`--flush-ms`) and one write, plus its turns for a core; under heavy load batches fill before the window closes.\n",
                    thousands(f64::from(max.target_rate)),
                    max.p50_ms,
                    max.p99_ms
                );
            }
            None => {
                let _ = writeln!(md, "- No rate was sustained in this run.\n");
            }
        }
    }
}
