//! The partitions section of findings.md and its line in the
//! recommendation: the nemesis's long runs on the partition cluster, as
//! `scripts/nemesis` recorded them (see `crate::partitions`).

use super::short_commit;
use crate::partitions::totals;
use crate::results::{thousands, PartitionResults};
use std::fmt::Write;

/// `## Through network partitions`: per broker, the runs, cuts, restarts and what was lost.
pub fn section(md: &mut String, partitions: &PartitionResults) {
    let _ = writeln!(md, "## Through network partitions\n");
    let _ = writeln!(
        md,
        "A test, not a measurement: `scripts/nemesis` runs the nemesis of `tests/tests/partition.rs` again and again on the 3-node cluster whose nodes live in network namespaces (quorum queues, `pause_minority`, `net_ticktime` 5 s). In each run two `hpn-importer serve` processes, given the addresses in different orders, race on the same keys while `hpn-producer publish` sends the same changed export again and again, one record to a message; the nemesis cuts at random (a node cut off from the other two, from the clients too or not, or two nodes cut apart, for 3 to 10 s, then healed) and kills one importer with SIGKILL half-way, starting another. At the end the store is checked record by record: every key at the newest version published, the records equal to the export, nothing dead-lettered. After each heal `scripts/services partition recover` restarts, as an operator would, a node that did not start again or that stayed on a side of its own. Recorded {} at commit {}.\n",
        partitions.recorded,
        short_commit(&partitions.commit)
    );
    let _ = writeln!(
        md,
        "| broker | runs (passed) | minutes under the nemesis | cuts | nodes restarted | records published | publishes resumed after a lost connection | importers killed | keys lost | dead-lettered |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut brokers: Vec<&str> = partitions.runs.iter().map(|r| r.broker.as_str()).collect();
    brokers.dedup();
    for broker in brokers {
        let runs: Vec<_> = partitions.runs.iter().filter(|r| r.broker == broker).collect();
        let sum = |f: fn(&crate::results::NemesisRun) -> u64| runs.iter().map(|r| f(r)).sum::<u64>();
        let known = |f: fn(&crate::results::NemesisRun) -> Option<u64>| {
            runs.iter()
                .map(|r| f(r))
                .sum::<Option<u64>>()
                .map_or("unknown".to_string(), |n| n.to_string())
        };
        let _ = writeln!(
            md,
            "| {broker} | {} ({}) | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            runs.len(),
            runs.iter().filter(|r| r.passed).count(),
            sum(|r| r.seconds) as f64 / 60.0,
            sum(|r| r.cuts),
            sum(|r| r.node_restarts),
            thousands(sum(|r| r.publishes * r.records_per_publish) as f64),
            sum(|r| r.resumed),
            sum(|r| r.importers_killed),
            known(|r| r.lost),
            known(|r| r.dead_lettered),
        );
    }
    let _ = writeln!(md);
}

/// The recommendation's line on partitions.
pub fn recommendation(md: &mut String, partitions: &PartitionResults) {
    let (runs, passed, cuts, restarts, lost) = totals(partitions);
    if passed == runs && lost == Some(0) {
        let _ = writeln!(
            md,
            "- **Run the importers on a cluster with quorum queues.** Through {cuts} network partitions in {runs} runs, with an importer killed in each, no record was lost and every key ended at the newest version published (section *Through network partitions*). Give every importer every node's address. RabbitMQ itself needed an operator {restarts} times: a node that did not start again, or stayed on a side of its own, after a heal; watch the nodes' partitions and restart such a node."
        );
    } else {
        let _ = writeln!(
            md,
            "- **Partitions are not yet ridden out.** {} of {runs} nemesis runs failed on the partition cluster (section *Through network partitions*); what they lost is {}.",
            runs - passed,
            lost.map_or("unknown".to_string(), |l| format!("{l} keys"))
        );
    }
}
