//! The speed sections of findings.md: every mode at every size, what
//! parallelism buys, and where the time goes.

use super::*;
use std::fmt::Write;

/// `## Speed`: every mode at every size.
pub(super) fn speed(md: &mut String, results: &Results, results_file: &str) {
    let _ = writeln!(md, "## Speed\n");
    let _ = writeln!(
        md,
        "![records per second by mode and size]({})\n",
        beside(results_file, &results.chart)
    );
    let _ = writeln!(
        md,
        "| records per file | mode | total s (min–max) | publish s | import s | records/s | import records/s |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|");
    for size in &results.sizes {
        for m in &size.modes {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} ({:.2}–{:.2}) | {} | {:.2} | {} | {} |",
                thousands(size.records_per_file as f64),
                m.mode,
                m.total_seconds,
                m.min_seconds,
                m.max_seconds,
                m.publish_seconds
                    .map(|p| format!("{p:.2}"))
                    .unwrap_or_else(|| "–".into()),
                m.import_seconds,
                thousands(m.records_per_s),
                thousands(m.import_records_per_s)
            );
        }
    }
    let _ = writeln!(md);
}

/// `## What parallelism buys, and where it stops`, at the largest size up to 100,000.
pub(super) fn parallelism(md: &mut String, results: &Results) {
    let l = &results.limits;
    let largest = largest(results);
    if let Some(size) = largest {
        let rate = |mode| find(size, mode).map(|m| m.records_per_s);
        let import_rate = |mode| find(size, mode).map(|m| m.import_records_per_s);
        let _ = writeln!(md, "## What parallelism buys, and where it stops\n");
        if let (Some(lin), Some(par), Some(base)) = (rate(LINEAR), rate(PARALLEL), rate(BASELINE)) {
            let _ = writeln!(
                md,
                "- Through the queue, parallel runs at {:.2}× linear end to end ({} vs {} records/s), and linear already runs at {:.1}× the old loader ({} records/s): batching rows into messages and writes does more than parallelism does.",
                par / lin,
                thousands(par),
                thousands(lin),
                lin / base,
                thousands(base)
            );
        }
        if let (Some(careful), Some(par)) = (rate(CAREFUL), rate(PARALLEL)) {
            let _ = writeln!(
                md,
                "- Against the careful loader that skips the queue (`insert_many` of 1,000, a task per file, no key index: {} records/s), parallel through the queue runs at {:.2}×. Both maintain one index per collection: the careful loader an `ObjectId` `_id` and nothing unique about the business key; ours the `_id`, which is the business key.",
                thousands(careful),
                par / careful
            );
        }
        if let (Some(careful), Some(direct), Some(par)) =
            (find(size, CAREFUL), find(size, DIRECT_PARALLEL), find(size, PARALLEL))
        {
            let publish = par.publish_seconds.unwrap_or(0.0);
            let _ = writeln!(
                md,
                "- Where the seconds between the two go (medians at {} per file): the careful loader {:.2} s; our write path fed straight from the files, no broker (direct parallel), {:.2} s; importing the same records from the queue, {:.2} s; publishing them first, {:.2} s more. So of the {:+.2} s between the careful loader and parallel end to end (by these medians), the write path accounts for {:+.2} s, taking the records from RabbitMQ (delivery, decoding, acknowledgement) for {:+.2} s and publishing for {:+.2} s. On {} cores shared by the database, the broker and both programs, each stage the queue adds takes cores the database would otherwise use; the careful loader only reads files and talks to the database.",
                thousands(size.records_per_file as f64),
                careful.total_seconds,
                direct.total_seconds,
                par.import_seconds,
                publish,
                par.import_seconds + publish - careful.total_seconds,
                direct.total_seconds - careful.total_seconds,
                par.import_seconds - direct.total_seconds,
                publish,
                results.machine.cores,
            );
        }
        cpu_bullet(md, results, size);
        if let (Some(now), Some(before)) = (rate(PARALLEL), rate(PARALLEL_KEY_INDEX)) {
            let _ = writeln!(
                md,
                "- The business key as `_id` (issue 14): the same parallel load on collections that also keep a unique index on the business key, as the store did before, runs at {} records/s; with the key as `_id`, {} records/s: {:.2}× (alternating runs of this benchmark; `hpn-importer migrate` rewrites a store of the old shape, see docs/migration.md).",
                thousands(before),
                thousands(now),
                now / before
            );
        }
        if let (Some(direct), Some(par)) = (rate(DIRECT_PARALLEL), rate(PARALLEL)) {
            let _ = writeln!(
                md,
                "- Direct parallel (no broker) reaches {:.2}× MongoDB's own `insert_many` speed; through the queue, parallel reaches {:.2}× of it: the queue costs {:.0}% of end-to-end speed.",
                direct / l.insert_many_per_s,
                par / l.insert_many_per_s,
                100.0 * (1.0 - par / direct).max(0.0)
            );
        }
        if let (Some(with), Some(without)) = (rate(PARALLEL), rate(PARALLEL_UNVERSIONED)) {
            let _ = writeln!(
                md,
                "- The version guard (every record versioned, every write conditional on the stored version) runs a fresh parallel load at {:.2}× the same load published without versions ({} vs {} records/s, alternating runs): new keys still go in with one `insert_many`, and only keys that already exist pay for the guarded update.",
                with / without,
                thousands(with),
                thousands(without)
            );
        }
        if let (Some(journaled), Some(not)) = (rate(PARALLEL), rate(PARALLEL_UNJOURNALED)) {
            let _ = writeln!(
                md,
                "- Acknowledged means journaled: with every write waiting for the journal (and a majority on a replica set), parallel runs at {:.2}× the same load whose writes are acknowledged before the journal ({} vs {} records/s, alternating runs). That is what it costs that a database crash cannot lose a record whose message was already acknowledged.",
                journaled / not,
                thousands(journaled),
                thousands(not)
            );
        }
        if let Some(one) = import_rate(PARALLEL_ONE_ROW) {
            let _ = writeln!(
                md,
                "- With one record per message, as upstream systems publish, the importer takes {} records/s, {:.2}× what RabbitMQ delivers to a consumer at all ({} messages/s): per-message broker work, not the database, is then the limit. Packing 100 records per message lifts the broker's ceiling to {} records/s.",
                thousands(one),
                one / l.consume_one_row_per_s,
                thousands(l.consume_one_row_per_s),
                thousands(l.consume_hundred_rows_records_per_s)
            );
        }
        let _ = writeln!(
            md,
            "- Parallelism stops helping at the cores and the database: on {} cores shared with both servers, more consumers or writers than the servers can feed only queue up, and MongoDB's `insert_many` rate barely moves with concurrency ({}).\n",
            results.machine.cores,
            l.insert_many.iter().map(|(c, r)| format!("{c} at a time: {}", thousands(*r))).collect::<Vec<_>>().join(", ")
        );
    }
}

/// `## Where the time goes`: the stages' profiles and the flamegraphs.
pub(super) fn time(md: &mut String, results: &Results, results_file: &str) {
    let _ = writeln!(md, "## Where the time goes\n");
    let _ = writeln!(
        md,
        "Wall time per stage, summed over all tasks (stages overlap, so in parallel the sums exceed the run's wall time). From one extra run per mode with stage profiling on.\n"
    );
    for profile in &results.profiles {
        let _ = writeln!(
            md,
            "**{}**, {} records per file:\n",
            profile.mode,
            thousands(profile.records_per_file as f64)
        );
        let _ = writeln!(md, "| process | stage | calls | seconds | µs per call |");
        let _ = writeln!(md, "|---|---|---:|---:|---:|");
        for (process, stages) in [("producer", &profile.producer), ("importer", &profile.importer)] {
            for s in stages {
                let _ = writeln!(
                    md,
                    "| {process} | {} | {} | {:.2} | {:.1} |",
                    s.stage,
                    thousands(s.calls as f64),
                    s.seconds,
                    1e6 * s.seconds / s.calls.max(1) as f64
                );
            }
        }
        let _ = writeln!(md);
    }
    if let Some(flamegraph) = &results.flamegraph {
        let _ = writeln!(
            md,
            "CPU profile of the importer during the parallel run: [{flamegraph}]({}).\n",
            beside(results_file, flamegraph)
        );
    }
    if let Some(flamegraph) = &results.one_record_flamegraph {
        let _ = writeln!(
            md,
            "CPU profile of the importer taking one-record messages from quorum queues (parallel, 10,000 per file): [{flamegraph}]({}).\n",
            beside(results_file, flamegraph)
        );
    }
}
