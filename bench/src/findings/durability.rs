//! The durability section of findings.md and its line in the
//! recommendation: what `--sync-on-commit` (our own stack keeping `j: true`)
//! costs the pipeline.

use super::short_commit;
use crate::durability::{DurabilityResults, DurabilityScenario, SYNCED, UNSYNCED};
use crate::results::thousands;
use std::fmt::Write;

/// `## Durable on our own stack`: each load's time on both servers and the ratio.
pub fn section(md: &mut String, durability: &DurabilityResults) {
    let _ = writeln!(md, "## Durable on our own stack\n");
    let _ = writeln!(
        md,
        "The local MongoDB-compatible server acknowledges `j: true` before its journal is on disk unless it runs with `--sync-on-commit`, which syncs the journal at every commit; the importer acknowledges a message only once its records are journaled, so `scripts/services`, the images and the test kit start it with the flag. Every other figure in this document is measured on a server started without it (as every recorded run was); this section puts the pipeline (`hpn-producer publish`, then `hpn-importer run --mode parallel`) on a second server started with it, alternating with the first in the same run: a first load into a fresh database, then a changed export over it. {} records per file (three files), medians of {} runs; measured {} at commit {}.\n",
        thousands(durability.records_per_file as f64),
        durability.repeats,
        durability.started,
        short_commit(&durability.commit)
    );
    let _ = writeln!(
        md,
        "| load | without s | with --sync-on-commit s | speed with / without |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    for scenario in &durability.scenarios {
        let (Some(without), Some(with)) = (scenario.server(UNSYNCED), scenario.server(SYNCED)) else {
            continue;
        };
        let _ = writeln!(
            md,
            "| {} | {:.2} ({:.2}–{:.2}) | {:.2} ({:.2}–{:.2}) | {} |",
            scenario.scenario,
            without.total_seconds,
            without.min_seconds,
            without.max_seconds,
            with.total_seconds,
            with.min_seconds,
            with.max_seconds,
            scenario.ratio().map_or("-".into(), |r| format!("{r:.2}")),
        );
    }
    let _ = writeln!(
        md,
        "\nThe importer commits a batch at a time (an `insert` of up to 2,000 documents, or the re-import's transaction), so a sync per commit is a sync per batch. A command whose statements commit one by one (the careful loaders' upserts, the importer's guarded updates) pays one sync per statement on this server, where a real `mongod` waits for its journal once per command; so the comparisons elsewhere in this document are measured without the flag.\n"
    );
}

/// The recommendation's line on durability.
pub fn recommendation(md: &mut String, durability: &DurabilityResults) {
    let ratio = |name| durability.scenario(name).and_then(DurabilityScenario::ratio);
    let (Some(first), Some(changed)) = (ratio(crate::durability::FIRST_LOAD), ratio(crate::durability::CHANGED)) else {
        return;
    };
    let verdict = if first >= 0.9 && changed >= 0.9 {
        "**Keep the local server durable.**"
    } else {
        "**Durability on the local server costs more than a tenth of the speed.**"
    };
    let _ = writeln!(
        md,
        "- {verdict} With `--sync-on-commit` (an acknowledged record is on disk) the pipeline runs a first load at {first:.2}× and a changed export at {changed:.2}× its speed without (section *Durable on our own stack*)."
    );
}
