//! A mode's figures from its repeats: medians, spread, memory, stages.

use super::Run;
use crate::cpu::CpuTime;
use crate::results::{median, Memory, ModeResult, StageProfile};

/// Summarise the repeats of one mode: medians, spread, the median run's tuples.
pub fn summarise(mode: &str, records: u64, runs: &[Run]) -> ModeResult {
    let totals: Vec<f64> = runs.iter().map(|r| r.times.total()).collect();
    let total_seconds = median(&totals);
    let import_seconds = median(&runs.iter().map(|r| r.times.import_seconds).collect::<Vec<_>>());
    let publishes: Vec<f64> = runs.iter().filter_map(|r| r.times.publish_seconds).collect();
    let median_run = runs
        .iter()
        .min_by(|a, b| {
            (a.times.total() - total_seconds)
                .abs()
                .total_cmp(&(b.times.total() - total_seconds).abs())
        })
        .expect("at least one run");
    ModeResult {
        mode: mode.to_string(),
        records,
        runs: runs.iter().map(|r| r.times.clone()).collect(),
        publish_seconds: (!publishes.is_empty()).then(|| median(&publishes)),
        import_seconds,
        total_seconds,
        min_seconds: totals.iter().copied().fold(f64::INFINITY, f64::min),
        max_seconds: totals.iter().copied().fold(0.0, f64::max),
        records_per_s: records as f64 / total_seconds.max(1e-9),
        import_records_per_s: records as f64 / import_seconds.max(1e-9),
        collections: median_run.collections.clone(),
        cpu_seconds: median_cpu(runs),
        last_write_seconds: runs
            .iter()
            .map(|r| r.times.last_write_seconds)
            .collect::<Option<Vec<f64>>>()
            .map(|last| median(&last)),
    }
}

/// The median CPU seconds of each process over the runs.
fn median_cpu(runs: &[Run]) -> Vec<CpuTime> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .cpu
        .iter()
        .map(|t| CpuTime {
            process: t.process.clone(),
            seconds: median(
                &runs
                    .iter()
                    .filter_map(|r| r.cpu.iter().find(|c| c.process == t.process).map(|c| c.seconds))
                    .collect::<Vec<_>>(),
            ),
        })
        .collect()
}

/// The largest peak memory over the runs of a mode, if the mode ran child processes.
pub fn memory(records_per_file: usize, mode: &str, runs: &[Run]) -> Option<Memory> {
    let producer = runs.iter().filter_map(|r| r.producer_rss).max();
    let importer = runs.iter().filter_map(|r| r.importer_rss).max();
    (producer.is_some() || importer.is_some()).then(|| Memory {
        records_per_file,
        mode: mode.to_string(),
        producer_peak_rss_bytes: producer,
        importer_peak_rss_bytes: importer,
    })
}

pub fn stage_profile(mode: &str, records_per_file: usize, run: &Run) -> StageProfile {
    StageProfile {
        mode: mode.to_string(),
        records_per_file,
        producer: run.producer_stages.clone(),
        importer: run.importer_stages.clone(),
    }
}
