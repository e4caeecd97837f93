//! The partition cluster's long runs, brought into the results: the
//! nemesis of `tests/tests/partition.rs` (two `serve` importers and the
//! producer through random cuts and a SIGKILL) is a test, not a
//! measurement, so `scripts/nemesis` runs it as long as asked, one JSON
//! line per run, and `hpn-bench partitions` records those lines here for
//! findings.md. A run that passed checked its store record by record: every
//! key at the newest version published, nothing dead-lettered. The target
//! is what operations need to hear: nothing lost, in every run.

use crate::results::{NemesisRun, PartitionResults, Target};
use anyhow::{Context, Result};
use std::path::Path;

/// The runs recorded in `record` (JSON lines, as `scripts/nemesis` writes them).
pub fn read(record: &Path) -> Result<PartitionResults> {
    let text = std::fs::read_to_string(record).with_context(|| format!("reading {}", record.display()))?;
    let runs = parse(&text).with_context(|| format!("in {}", record.display()))?;
    anyhow::ensure!(!runs.is_empty(), "{} records no run", record.display());
    Ok(PartitionResults {
        recorded: crate::provenance::now_rfc3339(),
        commit: crate::provenance::commit(),
        runs,
    })
}

fn parse(text: &str) -> Result<Vec<NemesisRun>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| serde_json::from_str(line).with_context(|| format!("line {}", i + 1)))
        .collect()
}

/// The runs' totals: (runs, passed, cuts, node restarts, keys lost).
/// Lost is `None` when a run could not tell.
pub fn totals(partitions: &PartitionResults) -> (usize, usize, u64, u64, Option<u64>) {
    let runs = &partitions.runs;
    let lost = runs.iter().map(|r| r.lost).sum::<Option<u64>>();
    (
        runs.len(),
        runs.iter().filter(|r| r.passed).count(),
        runs.iter().map(|r| r.cuts).sum(),
        runs.iter().map(|r| r.node_restarts).sum(),
        lost,
    )
}

/// Issue 36's bar: every run passed, nothing lost.
pub fn targets(partitions: &PartitionResults) -> Vec<Target> {
    let (runs, passed, cuts, _, lost) = totals(partitions);
    let measured = if passed == runs { lost.map(|l| l as f64) } else { None };
    vec![Target {
        name: "partitions_lost".into(),
        description: format!(
            "the nemesis on the partition cluster ({runs} runs, {cuts} cuts, one importer killed in each): keys not at the newest version published"
        ),
        measured,
        bar: "= 0".into(),
        // A run that failed is not met, whatever it lost.
        met: if passed < runs { Some(false) } else { measured.map(|m| m == 0.0) },
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_leaves_the_loss_unknown_and_the_target_unmet() {
        let passed = r#"{"broker":"RabbitMQ 4.0.5","passed":true,"seconds":300,"cuts":31,"node_restarts":2,"lost":0,"dead_lettered":0}"#;
        let failed = r#"{"broker":"RabbitMQ 4.0.5","passed":false}"#;
        let record = |lines: &[&str]| PartitionResults {
            recorded: String::new(),
            commit: None,
            runs: parse(&lines.join("\n")).unwrap(),
        };
        let good = record(&[passed, "", passed]);
        assert_eq!(totals(&good), (2, 2, 62, 4, Some(0)));
        assert_eq!(targets(&good)[0].met, Some(true));
        let bad = record(&[passed, failed]);
        assert_eq!(totals(&bad), (2, 1, 31, 2, None));
        let target = &targets(&bad)[0];
        assert_eq!(
            (target.measured, target.met),
            (None, Some(false)),
            "unknown, and not met"
        );
        assert!(parse("{not json").is_err());
    }
}
