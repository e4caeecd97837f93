//! What a durable `j: true` costs on our own stack. secantusd-rs
//! acknowledges `j: true` before its journal is on disk unless it runs with
//! `--sync-on-commit` (then it syncs the journal at every commit), and the
//! importer acknowledges a message only once its records are journaled:
//! `scripts/services` starts it with the flag. Every other figure here is
//! measured on a server without it, as all recorded runs were; this one
//! puts the pipeline on a second server started with it, beside the first,
//! in the same run, alternating.
//!
//! Each run loads a fresh database twice, each load timed end to end
//! (`hpn-producer publish`, then `hpn-importer run --mode parallel`): the
//! first load, then the changed export over it (the re-import's
//! transactions). The target keeps the synced server at 0.9 of the other's
//! speed at least.

use crate::measure::{self, Bench};
use crate::reimport;
use crate::results::Target;
pub use crate::results::{DurabilityResults, DurabilityScenario, CHANGED, FIRST_LOAD, SYNCED, UNSYNCED};
use anyhow::Result;

use std::path::Path;

const SERVERS: [&str; 2] = [UNSYNCED, SYNCED];

const SCENARIOS: [&str; 2] = [FIRST_LOAD, CHANGED];

/// Measure both loads on both servers, `repeats` times in alternating order.
/// `synced_uri` is the server started with `--sync-on-commit`; the bench's
/// own is the other.
pub async fn measure(
    bench: &mut Bench,
    synced_uri: &str,
    data: &Path,
    size: usize,
    repeats: usize,
) -> Result<DurabilityResults> {
    let exports = reimport::exports(data, size)?;
    let started = crate::provenance::now_rfc3339();
    // runs[server][scenario]
    let mut runs: Vec<Vec<Vec<measure::Run>>> = SERVERS.iter().map(|_| vec![Vec::new(), Vec::new()]).collect();
    for repeat in 0..repeats {
        for i in measure::rotated(SERVERS.len(), repeat) {
            crate::say(format!(
                "durability, {size} per file, run {}/{repeats}: {}",
                repeat + 1,
                SERVERS[i]
            ));
            let mut settings = bench.fresh();
            if SERVERS[i] == SYNCED {
                settings.mongodb_uri = synced_uri.to_string();
            }
            let loads = async {
                measure::declare_queues(&settings).await?;
                let first = bench.publish_and_import(&settings, &exports.first).await?;
                let changed = bench.publish_and_import(&settings, &exports.changed).await?;
                anyhow::Ok([first, changed])
            }
            .await;
            bench.cleanup(&settings).await?;
            for (scenario, run) in loads?.into_iter().enumerate() {
                runs[i][scenario].push(run);
            }
        }
    }
    let records = 3 * size as u64;
    Ok(DurabilityResults {
        started,
        commit: crate::provenance::commit(),
        records_per_file: size,
        repeats,
        scenarios: SCENARIOS
            .iter()
            .enumerate()
            .map(|(s, scenario)| DurabilityScenario {
                scenario: scenario.to_string(),
                servers: SERVERS
                    .iter()
                    .enumerate()
                    .map(|(i, server)| measure::summarise(server, records, &runs[i][s]))
                    .collect(),
            })
            .collect(),
    })
}

/// Issue 36's bar: the synced server keeps 0.9 of the other's speed.
pub fn targets(durability: &DurabilityResults) -> Vec<Target> {
    let size = crate::results::thousands(durability.records_per_file as f64);
    [(FIRST_LOAD, "first_load"), (CHANGED, "changed")]
        .into_iter()
        .map(|(scenario, name)| {
            Target::at_least(
                &format!("sync_on_commit_{name}"),
                &format!(
                    "{scenario}, {size} per file, shared cores: the pipeline on a server with --sync-on-commit / without"
                ),
                durability.scenario(scenario).and_then(DurabilityScenario::ratio),
                0.9,
            )
        })
        .collect()
}
