//! The recommendation to management, from the figures and the targets missed.

use super::*;
use std::fmt::Write;

/// `## Recommendation`: what management should do, from the figures and the targets missed.
pub(super) fn section(md: &mut String, results: &Results) {
    let largest = largest(results);
    let _ = writeln!(md, "## Recommendation\n");
    let missed: Vec<&str> = results
        .targets
        .iter()
        .filter(|t| t.met == Some(false))
        .map(|t| t.description.as_str())
        .collect();
    if let Some(reimport) = &results.reimport {
        reimport::recommendation(md, reimport);
    }
    if let Some(durability) = &results.durability {
        durability::recommendation(md, durability);
    }
    if let Some(runs) = &results.partitions {
        partitions::recommendation(md, runs);
    }
    if let Some(size) = largest {
        if let (Some(lin), Some(par), Some(base)) = (find(size, LINEAR), find(size, PARALLEL), find(size, BASELINE)) {
            let speedup = par.records_per_s / base.records_per_s;
            let _ = writeln!(
                md,
                "- **Adopt the queue-based importer.** On the same hardware it loads {} records in {:.1} s where the old loader takes {:.1} s: {:.0}× faster, with no new servers.",
                thousands(par.records as f64),
                par.total_seconds,
                base.total_seconds,
                speedup
            );
            if par.records_per_s > lin.records_per_s * 1.1 {
                let _ = writeln!(
                    md,
                    "- **Run it in parallel mode.** It is {:.0}% faster than linear here and ends with the same data: every write is keyed and guarded by version, so any number of consumers, and several importer processes, leave the newest version of every record whatever order they write in.",
                    100.0 * (par.records_per_s / lin.records_per_s - 1.0)
                );
            } else {
                let _ = writeln!(
                    md,
                    "- **Parallel mode buys little on this machine** ({:.2}× linear): the two cores are already busy with RabbitMQ and MongoDB. Keep parallel as the default for larger machines, where the servers have cores of their own; it ends with the same data as linear (writes keyed and guarded by version).",
                    par.records_per_s / lin.records_per_s
                );
            }
        }
    }
    if let Some(size) = largest {
        if let (Some(now), Some(before)) = (find(size, PARALLEL), find(size, PARALLEL_KEY_INDEX)) {
            let _ = writeln!(
                md,
                "- **Keep the business key as the `_id`, and migrate existing stores once.** One unique index per collection instead of two loads {:.2}× as fast here ({} against {} records/s); an existing store is rewritten in place by `hpn-importer migrate` with the importers stopped (docs/migration.md). On a sharded cluster the `_id` is also the shard key (docs/scaling.md).",
                now.records_per_s / before.records_per_s,
                thousands(now.records_per_s),
                thousands(before.records_per_s)
            );
            // A median over runs that differ by more than a factor of 3 is
            // the server's story, not the index's: say so next to it.
            if before.max_seconds > 3.0 * before.min_seconds {
                let _ = writeln!(
                    md,
                    "  Read that ratio with care: the runs with two indexes took {:.1} s to {:.1} s, so the server stalled in some of them (the MongoDB-compatible server's inserts into a collection with a second unique index have deadlocked here, see `scripts/services`). The fairer comparison is its fastest run, which took {:.2}× as long as the median run with the key as `_id`.",
                    before.min_seconds,
                    before.max_seconds,
                    before.min_seconds / now.total_seconds
                );
            }
        }
        if let (Some(careful), Some(direct), Some(par)) =
            (find(size, CAREFUL), find(size, DIRECT_PARALLEL), find(size, PARALLEL))
        {
            let _ = writeln!(
                md,
                "- **Know what the queue costs.** A careful script that writes the files straight into MongoDB (`insert_many` of 1,000) loads here at {} records/s; our write path without the broker at {:.2}× that, and through the queue, end to end, at {:.2}×: on {} cores the broker's and the producer's work comes out of the database's share{}. What the difference buys: upstream systems publish straight to the queues, every write is keyed and versioned so reruns and racing importers are harmless, bad rows and messages are kept with their reasons, and importers can be stopped, restarted or added without losing a record.",
                thousands(careful.records_per_s),
                direct.records_per_s / careful.records_per_s,
                par.records_per_s / careful.records_per_s,
                results.machine.cores,
                match (whole_machine(careful), whole_machine(par)) {
                    (Some(c), Some(p)) if c > 0.0 => format!(
                        " (a run through the queue costs {:.2}× the careful loader's CPU: see *Where the CPU goes*)",
                        p / c
                    ),
                    _ => String::new(),
                },
            );
        }
    }
    if let Some(own) = &results.own_core {
        let mode = |m: &str| own.modes.iter().find(|r| r.mode == m);
        if let (Some(careful), Some(running), Some(then)) = (mode(CAREFUL), mode(AS_IT_RUNS), mode(PARALLEL)) {
            let ratio = running.records_per_s / careful.written_records_per_s();
            let _ = writeln!(
                md,
                "- **Judge speed with the database on its own core.** The comparison with the careful loader rests on that layout, because it is production's (the database on a host of its own): on shared cores every CPU second the broker and our programs use is taken from the database, which no production deployment asks. There the pipeline as it runs (importing while the producer publishes) loads at {ratio:.2}× the careful loader{}; publishing everything first and importing after, at {:.2}×. The shared-cores figures above stay as the worst case, one small machine for everything.",
                if ratio >= 1.0 {
                    ": the queue's guarantees cost no speed there".to_string()
                } else {
                    format!(
                        ": {:.0}% short of it; *Where the database's extra work comes from* shows which changes cost what",
                        100.0 * (1.0 - ratio)
                    )
                },
                then.records_per_s / careful.records_per_s
            );
        }
    }
    let per_consumer = |t: &str, rows: usize| {
        results
            .queues
            .iter()
            .find(|q| q.queue_type == t && q.prefetch_scope == "per-consumer" && q.rows_per_message == rows)
    };
    if let (Some(classic), Some(quorum)) = (per_consumer("classic", 100), per_consumer("quorum", 100)) {
        let at_100 = quorum.import_records_per_s / classic.import_records_per_s;
        let at_1 = per_consumer("quorum", 1)
            .zip(per_consumer("classic", 1))
            .map_or(f64::NAN, |(q, c)| q.import_records_per_s / c.import_records_per_s);
        let advice = if at_100 >= 1.0 && at_1 >= 1.0 {
            "Quorum queues cost nothing here, so use them on one broker as on a cluster, where they also survive the loss of a node"
        } else {
            "Quorum queues cost throughput on one broker, where they replicate nothing: use them on a cluster, where they survive the loss of a node"
        };
        let _ = writeln!(
            md,
            "- **Queue type.** On this broker quorum queues imported at {at_100:.2}× the rate of classic ones at 100 records per message and {at_1:.2}× at one. {advice} (docs/scaling.md). This run's default: {} queues; the compose stack runs quorum queues on three nodes.",
            results.settings.queue_type
        );
    }
    let _ = writeln!(
        md,
        "- **Conditions:** ask upstream systems to pack records into array messages (the format allows it): at one record per message the broker, not the database, sets the pace. Give RabbitMQ and MongoDB their own cores before adding consumers: past that, parallelism only queues work up."
    );
    if missed.is_empty() {
        let _ = writeln!(md, "- Every target of the performance plan was met in this run.");
    } else {
        let _ = writeln!(
            md,
            "- Targets not met in this run: {}. The sections above show where the time goes.",
            missed.join("; ")
        );
    }
}
