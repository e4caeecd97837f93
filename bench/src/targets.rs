//! The bars each recorded run is judged against, every one a figure of the
//! same run (a ratio against a baseline measured beside it).

use crate::layout::Layout;
use crate::measure::{self, DIRECT_PARALLEL, LINEAR, PARALLEL};
use crate::results::{self, Results, Target};
use crate::{cpu, durability, latency, partitions, reimport};

/// Issue 35's bars: the re-import against the careful upsert loader.
fn reimport_targets(results: &Results) -> Vec<Target> {
    use reimport::{ReimportScenario, CHANGED, FIRST_LOAD, REPLAY};
    let Some(reimport) = &results.reimport else {
        return Vec::new();
    };
    let size = results::thousands(reimport.records_per_file as f64);
    let ratio = |layout, scenario| reimport.scenario(layout, scenario).and_then(ReimportScenario::ratio);
    let mut targets = Vec::new();
    for (layout, name) in [(Layout::Shared, "shared"), (Layout::DatabaseOwnCore, "own_core")] {
        targets.push(Target::at_least(
            &format!("reimport_changed_{name}"),
            &format!(
                "a changed export re-imported, {size} per file, {}: ours / the careful upsert loader",
                layout.as_str()
            ),
            ratio(layout, CHANGED),
            1.0,
        ));
    }
    targets.push(Target::at_least(
        "reimport_replay",
        &format!("an unchanged replay, {size} per file, shared cores: ours / the careful upsert loader"),
        ratio(Layout::Shared, REPLAY),
        1.0,
    ));
    targets.push(Target::at_least(
        "reimport_first_load",
        &format!("a first load, {size} per file, shared cores: ours / the careful upsert loader"),
        ratio(Layout::Shared, FIRST_LOAD),
        1.0,
    ));
    targets
}

/// The size most targets are read at.
pub const TARGET_SIZE: usize = 100_000;
/// Runs of the modes compared in ratios near 1, at least (see `run`).
pub const GUARD_REPEATS: usize = 7;

/// Issue 4's bars, each against figures of this run.
pub fn targets(results: &Results) -> Vec<Target> {
    let l = &results.limits;
    let size = |n: usize| results.sizes.iter().find(|s| s.records_per_file == n);
    let rate = |n: usize, mode: &str| size(n).and_then(|s| s.modes.iter().find(|m| m.mode == mode));
    let at = TARGET_SIZE;
    let mut targets = vec![
        Target::at_least(
            "end_to_end_parallel",
            "end to end (publish + import), parallel, 100,000 per file / raw insert_many",
            rate(at, PARALLEL).map(|m| m.records_per_s / l.insert_many_per_s),
            0.8,
        ),
        Target::at_least(
            "version_guard_cost",
            "parallel end to end, 100,000 per file, records with versions / without (the version guard's cost)",
            rate(at, PARALLEL)
                .zip(rate(at, measure::PARALLEL_UNVERSIONED))
                .map(|(with, without)| with.records_per_s / without.records_per_s),
            0.95,
        ),
        Target::at_least(
            "write_concern_cost",
            "parallel end to end, 100,000 per file, writes journaled (and majority on a replica set) / \
             acknowledged before the journal (w: 1, journal=false)",
            rate(at, PARALLEL)
                .zip(rate(at, measure::PARALLEL_UNJOURNALED))
                .map(|(journaled, not)| journaled.records_per_s / not.records_per_s),
            0.9,
        ),
        Target::at_least(
            "direct_parallel",
            "direct parallel / raw insert_many",
            rate(at, DIRECT_PARALLEL).map(|m| m.records_per_s / l.insert_many_per_s),
            0.9,
        ),
        Target::at_least(
            "linear_vs_baseline",
            "linear through the queue / baseline",
            rate(at, LINEAR)
                .zip(rate(at, measure::BASELINE))
                .map(|(lin, base)| lin.records_per_s / base.records_per_s),
            10.0,
        ),
    ];
    for queue_type in ["classic", "quorum"] {
        let cell = results
            .queues
            .iter()
            .find(|q| q.queue_type == queue_type && q.prefetch_scope == "per-consumer" && q.rows_per_message == 1);
        targets.push(Target::at_least(
            &format!("import_one_record_messages_{queue_type}"),
            &format!(
                "parallel import from one-record messages, {queue_type} queues, per-consumer prefetch / \
                 min(raw consume of the same queue type, raw insert_many)"
            ),
            cell.map(|q| q.ratio),
            0.8,
        ));
        if let Some(ceiling_ratio) = cell.and_then(|q| q.ceiling_ratio(l.insert_many_per_s)) {
            targets.push(Target {
                name: format!("cpu_ceiling_one_record_messages_{queue_type}"),
                description: format!(
                    "one-record messages, {queue_type} queues: the most an import can reach on these cores, the CPU ceiling (whole-machine CPU of a \
                     bare consume plus a raw insert_many, per record) / the same min(raw consume, raw insert_many) \
                     (reported beside it)"
                ),
                measured: Some(ceiling_ratio),
                bar: "reported".into(),
                met: None,
            });
        }
    }
    if let Some(b) = &results.budget {
        let measured = b.flood_peak_rss_bytes.map(|bytes| bytes as f64 / (1024.0 * 1024.0));
        targets.push(Target {
            name: "importer_memory_under_flood".into(),
            description: format!(
                "importer peak RSS under a flood of {} one-record messages of {:.1} MiB, against its memory budget (MiB)",
                b.flood_messages,
                b.flood_body_bytes as f64 / (1024.0 * 1024.0)
            ),
            measured,
            bar: format!("≤ {} MiB", b.budget_mib),
            met: measured.map(|m| m <= b.budget_mib as f64),
        });
        targets.push(Target::at_least(
            "memory_budget_cost",
            &format!(
                "parallel import from one-record messages, {} queues, with the memory budget / without one \
                 (the noise between alternating runs is a few per cent)",
                b.one_record_queue_type
            ),
            Some(b.one_record_import_per_s / b.one_record_unbounded_import_per_s),
            0.95,
        ));
    }
    for (name, description, bar, pick) in [
        (
            "importer_memory",
            "importer peak RSS at 1,000,000 per file, 1 or 100 records per message (MiB)",
            64.0,
            0,
        ),
        (
            "producer_memory",
            "producer peak RSS at 1,000,000 per file (MiB)",
            32.0,
            1,
        ),
    ] {
        let measured = results
            .memory
            .iter()
            .filter(|m| m.records_per_file == 1_000_000)
            .filter_map(|m| {
                if pick == 0 {
                    m.importer_peak_rss_bytes
                } else {
                    m.producer_peak_rss_bytes
                }
            })
            .max()
            .map(|b| b as f64 / (1024.0 * 1024.0));
        targets.push(Target {
            name: name.into(),
            description: description.into(),
            measured,
            bar: format!("≤ {bar} MiB"),
            met: measured.map(|m| m <= bar),
        });
    }
    let p99 = results
        .latency
        .as_ref()
        .and_then(|l| l.at_target_rate())
        .map(|s| s.p99_ms);
    targets.push(Target {
        name: "latency_p99_at_5000".into(),
        description: format!(
            "serve: p99 publish-to-written latency at {} msg/s (ms)",
            latency::TARGET_RATE
        ),
        measured: p99,
        bar: "≤ 100 ms".into(),
        met: results
            .latency
            .as_ref()
            .and_then(|l| l.at_target_rate())
            .map(|s| s.sustained && s.p99_bucket_ms <= 100.0),
    });
    targets.push(Target::at_least(
        "parallel_vs_careful_loader",
        "parallel end to end through the queue, 100,000 per file / the careful loader (insert_many of 1,000, \
         a task per file, no queue, no key index)",
        rate(at, PARALLEL)
            .zip(rate(at, measure::CAREFUL))
            .map(|(parallel, careful)| parallel.records_per_s / careful.records_per_s),
        1.0,
    ));
    targets.push(Target::at_least(
        "key_as_id",
        "parallel end to end, 100,000 per file, the business key as _id / the same with a second unique index \
         on the key (the store before issue 14)",
        rate(at, PARALLEL)
            .zip(rate(at, measure::PARALLEL_KEY_INDEX))
            .map(|(now, before)| now.records_per_s / before.records_per_s),
        1.0,
    ));
    // The whole machine's CPU for the same load, queue against no queue.
    let whole = |m: &results::ModeResult| {
        m.cpu_seconds
            .iter()
            .find(|c| c.process == cpu::WHOLE_MACHINE)
            .map(|c| c.seconds)
    };
    let cpu_ratio = rate(at, PARALLEL)
        .and_then(whole)
        .zip(rate(at, measure::CAREFUL).and_then(whole))
        .map(|(ours, theirs)| ours / theirs);
    targets.push(Target {
        name: "cpu_parallel_vs_careful_shared".into(),
        description: "shared cores: whole-machine CPU seconds of parallel end to end, 100,000 per file / the careful \
                      loader's"
            .into(),
        measured: cpu_ratio,
        bar: "≤ 1.25".into(),
        met: cpu_ratio.map(|r| r <= 1.25),
    });
    if let Some(own) = &results.own_core {
        let mode = |m: &str| own.modes.iter().find(|r| r.mode == m);
        let careful = mode(measure::CAREFUL);
        targets.push(Target::at_least(
            "as_it_runs_vs_careful_own_core",
            &format!(
                "database on its own core: the pipeline as it runs (serve consuming while the producer publishes), \
                 {} per file / the careful loader, both timed to their last record written",
                own.records_per_file
            ),
            mode(measure::AS_IT_RUNS)
                .zip(careful)
                .map(|(ours, theirs)| ours.records_per_s / theirs.written_records_per_s()),
            1.0,
        ));
        let then = mode(PARALLEL)
            .zip(careful)
            .map(|(ours, theirs)| ours.records_per_s / theirs.records_per_s);
        targets.push(Target {
            name: "publish_then_import_vs_careful_own_core".into(),
            description: format!(
                "database on its own core: publish everything, then import (parallel), {} per file / the careful \
                 loader (reported beside the one above)",
                own.records_per_file
            ),
            measured: then,
            bar: "reported".into(),
            met: None,
        });
    }
    // Parallel must never lose to linear: the smallest ratio over the sizes.
    let worst = results
        .sizes
        .iter()
        .filter_map(|s| {
            let mode = |m: &str| s.modes.iter().find(|r| r.mode == m);
            mode(PARALLEL)
                .zip(mode(LINEAR))
                .map(|(p, l)| (s.records_per_file, p.records_per_s / l.records_per_s))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1));
    targets.push(Target::at_least(
        "parallel_vs_linear_every_size",
        &format!(
            "parallel / linear end to end, the smallest over every size{}",
            worst.map(|(n, _)| format!(" (at {n} per file)")).unwrap_or_default()
        ),
        worst.map(|(_, ratio)| ratio),
        1.0,
    ));
    for mode in [LINEAR, PARALLEL] {
        let measured = rate(100_000, mode)
            .zip(rate(10_000, mode))
            .map(|(big, small)| big.records_per_s / small.records_per_s);
        targets.push(Target {
            name: format!("linear_growth_{}", if mode == LINEAR { "linear" } else { "parallel" }),
            description: format!("records/s at 100,000 / at 10,000, {mode}"),
            measured,
            bar: "0.8 to 1.2".into(),
            met: measured.map(|m| (0.8..=1.2).contains(&m)),
        });
    }
    targets.extend(reimport_targets(results));
    targets.extend(results.durability.as_ref().map(durability::targets).unwrap_or_default());
    targets.extend(results.partitions.as_ref().map(partitions::targets).unwrap_or_default());
    targets
}
