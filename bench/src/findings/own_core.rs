//! `## With the database on its own core`: the layout production has,
//! and what each change from the careful loader's writes to ours costs.

use super::*;
use std::fmt::Write;

const CANDIDATES: [(&str, &str, &str); 11] = [
    (
        "the business key as a string `_id` instead of an ObjectId",
        CAREFUL,
        CAREFUL_KEY_ID,
    ),
    ("a version in `_v`", CAREFUL_KEY_ID, CAREFUL_KEY_ID_VERSION),
    (
        "`insert_many` unordered instead of ordered",
        CAREFUL_KEY_ID_VERSION,
        CAREFUL_UNORDERED,
    ),
    ("journaled writes (`j: true`)", CAREFUL_UNORDERED, CAREFUL_AS_OURS),
    (
        "our write path around the same insert (routing, batching, counting)",
        CAREFUL_AS_OURS,
        DIRECT_PARALLEL_BATCH_1000,
    ),
    (
        "batches of 2,000 (the importer's) instead of 1,000",
        DIRECT_PARALLEL_BATCH_1000,
        DIRECT_PARALLEL,
    ),
    (
        "two writers per collection instead of one",
        DIRECT_PARALLEL,
        DIRECT_PARALLEL_TWO_WRITERS,
    ),
    (
        "batches of 4,000 instead of 2,000",
        DIRECT_PARALLEL,
        DIRECT_PARALLEL_BATCH_4000,
    ),
    (
        "writes not waiting for the journal",
        DIRECT_PARALLEL,
        DIRECT_PARALLEL_UNJOURNALED,
    ),
    (
        "through the broker: publish everything, then import",
        DIRECT_PARALLEL,
        PARALLEL,
    ),
    (
        "the pipeline as it runs: importing while publishing",
        PARALLEL,
        AS_IT_RUNS,
    ),
];

/// The comparison modes and the A/B candidates with the database server on
/// a core of its own.
pub(super) fn section(md: &mut String, results: &Results, own: &LayoutResults) {
    let mode = |m: &str| own.modes.iter().find(|r| r.mode == m);
    let _ = writeln!(md, "## With the database on its own core\n");
    let _ = writeln!(
        md,
        "In production the database runs on a host of its own; on this {}-core machine the nearest layout is {}. Checked after pinning and again after the last run, from each thread's `Cpus_allowed_list`:\n",
        results.machine.cores, own.pinning.how
    );
    for line in &own.pinning.checked {
        let _ = writeln!(md, "- {line}");
    }
    let _ = writeln!(
        md,
        "\nThe database's core is then the limit, so its CPU seconds are close to its wall time and two write paths that ask different work of it can be told apart. {} records per file, {} alternating runs of each mode, medians; *as it runs* publishes and imports at once, timed from the producer's start to the last record written (its publish column is when the producer finished).\n",
        thousands(own.records_per_file as f64),
        own.repeats
    );
    let careful = mode(CAREFUL).map(|m| m.records_per_s);
    let _ = writeln!(
        md,
        "| mode | total s (min–max) | publish s | records/s | × careful loader | {DATABASE} CPU s | {BROKER} CPU s | {OUR_PROGRAMS} CPU s |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for m in &own.modes {
        let cpu = |p: &str| cpu_of(m, p).map_or("–".into(), |s| format!("{s:.2}"));
        let _ = writeln!(
            md,
            "| {} | {:.2} ({:.2}–{:.2}) | {} | {} | {} | {} | {} | {} |",
            m.mode,
            m.total_seconds,
            m.min_seconds,
            m.max_seconds,
            m.publish_seconds.map_or("–".into(), |p| format!("{p:.2}")),
            thousands(m.records_per_s),
            careful.map_or("–".into(), |c| format!("{:.2}", m.records_per_s / c)),
            cpu(DATABASE),
            cpu(BROKER),
            cpu(OUR_PROGRAMS),
        );
    }
    let _ = writeln!(
        md,
        "\n**Where the database's extra work comes from**: one change at a time, from the careful loader's documents and writes to ours and on through the queue. *Time B / A* above 1 is slower; the database's CPU seconds show whether it was asked more work or only waited.\n"
    );
    let _ = writeln!(
        md,
        "| change (A → B) | A s | B s | time B / A | fastest B / fastest A | {DATABASE} CPU s, A → B |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for (change, a, b) in CANDIDATES {
        let (Some(a), Some(b)) = (mode(a), mode(b)) else {
            continue;
        };
        let db = |m: &ModeResult| cpu_of(m, DATABASE).map_or("–".into(), |s| format!("{s:.2}"));
        let _ = writeln!(
            md,
            "| {change} | {:.2} | {:.2} | {:.2} | {:.2} | {} → {} |",
            a.total_seconds,
            b.total_seconds,
            b.total_seconds / a.total_seconds.max(1e-9),
            b.min_seconds / a.min_seconds.max(1e-9),
            db(a),
            db(b)
        );
    }
    let _ = writeln!(
        md,
        "\nThe runs of one mode spread widely here (see the table above): this database server slows as runs accumulate, though each run's database is dropped (its data folder grows), so each round of runs starts one mode later, and the fastest runs are shown beside the medians. A change whose two columns disagree is within that noise."
    );
    let _ = writeln!(
        md,
        "\nNot measured here: the database's write tickets (a server setting; changing it means restarting the server between runs, see `scripts/services`).\n"
    );
    if let (Some(careful), Some(running), Some(then)) = (mode(CAREFUL), mode(AS_IT_RUNS), mode(PARALLEL)) {
        let _ = writeln!(
            md,
            "With the database on its own core, the pipeline as it runs loads at {:.2}× the careful loader ({} against {} records/s, both to their last record written: the careful loader's seconds above also hold the count after each collection, {:.2} s in all against {:.2} s to its last write); publishing everything first and importing after, at {:.2}× (both clocks holding the counts after).\n",
            running.records_per_s / careful.written_records_per_s(),
            thousands(running.records_per_s),
            thousands(careful.written_records_per_s()),
            careful.total_seconds,
            careful.last_write_seconds.unwrap_or(careful.total_seconds),
            then.records_per_s / careful.records_per_s
        );
    }
}
