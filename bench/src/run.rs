//! `hpn-bench run`: every measurement in one run, recorded into
//! `bench/results/<date>-<host>.json` with a chart, for findings.md.

use crate::layout::{self, Layout};
use crate::limits::measure_limits;
use crate::measure::{self, Bench, Profile, LINEAR, MODES, PARALLEL, PARALLEL_ONE_ROW};
use crate::provenance::{commit, hostname, machine, now_rfc3339, servers};
use crate::queues::compare_queues;
use crate::reimport::REIMPORT_SIZE;
use crate::results::{self, Results, Settings, SizeResults};
use crate::targets::{targets, GUARD_REPEATS, TARGET_SIZE};
use crate::{announce, budget, chart, durability, latency, reimport, say};
use anyhow::{Context, Result};
use hpn_common::{ConnectionSettings, QueueType};
use hpn_importer::{PrefetchScope, Store, Tuning};
use std::path::{Path, PathBuf};

#[allow(clippy::too_many_arguments)]
pub async fn run(
    connection: ConnectionSettings,
    sizes: Vec<usize>,
    million: bool,
    repeats: usize,
    profile: bool,
    synced_mongodb_uri: Option<&str>,
    rows_per_message: usize,
    tuning: Tuning,
    data: &Path,
    out: &Path,
) -> Result<Results> {
    std::fs::create_dir_all(out)?;
    let started = now_rfc3339();
    let host = hostname();
    let stem = format!("{}-{host}", &started[..19].replace(':', ""));
    let mut bench = Bench::new(connection.clone(), tuning.clone(), rows_per_message)?;
    let machine = machine();
    // Whatever an earlier, interrupted run left pinned gets every core back.
    let shared = layout::apply(Layout::Shared)?;

    let mut all_sizes = sizes.clone();
    if million {
        all_sizes.push(1_000_000);
    }
    let mut files_by_size = Vec::new();
    for &size in &all_sizes {
        let dir = data.join(size.to_string());
        say(format!("generating {size} records per file in {}", dir.display()));
        let generated = hpn_producer::generate::generate(&dir, size, hpn_producer::generate::DEFAULT_SEED)?;
        files_by_size.push((
            size,
            generated.paths().iter().map(|p| p.to_path_buf()).collect::<Vec<_>>(),
        ));
    }

    say("measuring the raw limits of MongoDB and RabbitMQ");
    let limit_file = &files_by_size
        .iter()
        .filter(|(s, _)| *s <= 100_000)
        .max_by_key(|(s, _)| *s)
        .context("a size up to 100,000")?
        .1[0];
    let limits = measure_limits(&connection, limit_file).await?;

    let mut size_results = Vec::new();
    let mut memory = Vec::new();
    for (size, files) in files_by_size.iter().filter(|(s, _)| sizes.contains(s)) {
        let mut runs: Vec<Vec<measure::Run>> = MODES.iter().map(|_| Vec::new()).collect();
        // The targets read as ratios near 1 (the version guard's cost, the
        // second key index's, parallel against linear) differ by about the
        // noise between runs: their modes get more alternating runs than
        // the others, at every size.
        let pair = [
            LINEAR,
            PARALLEL,
            measure::PARALLEL_KEY_INDEX,
            measure::PARALLEL_UNVERSIONED,
            measure::PARALLEL_UNJOURNALED,
        ];
        let most = repeats.max(GUARD_REPEATS);
        for repeat in 0..most {
            for (i, mode) in MODES.iter().enumerate() {
                if repeat >= repeats && !pair.contains(mode) {
                    continue;
                }
                let of = if pair.contains(mode) { most } else { repeats };
                say(format!("{size} records per file, run {}/{of}: {mode}", repeat + 1));
                runs[i].push(bench.run(mode, files, Profile::default()).await?);
            }
        }
        let records = 3 * *size as u64;
        size_results.push(SizeResults {
            records_per_file: *size,
            modes: MODES
                .iter()
                .zip(&runs)
                .map(|(mode, r)| measure::summarise(mode, records, r))
                .collect(),
        });
        memory.extend(
            MODES
                .iter()
                .zip(&runs)
                .filter_map(|(mode, r)| measure::memory(*size, mode, r)),
        );
    }
    let queue_files = &files_by_size
        .iter()
        .filter(|(s, _)| sizes.contains(s) && *s <= TARGET_SIZE)
        .max_by_key(|(s, _)| *s)
        .context("a size up to 100,000")?;
    let own_core = own_core(&mut bench, queue_files, repeats.max(OWN_CORE_REPEATS)).await?;
    let queues = compare_queues(&mut bench, &connection, &limits, queue_files, repeats, machine.cores).await?;
    // The budget's cost is in how fast its prefetch opens at the start of a
    // queue: a size of 10,000 per file shows it as well as a bigger one,
    // in a fraction of the time (one-record messages publish slowly).
    let budget_files = &files_by_size
        .iter()
        .filter(|(s, _)| sizes.contains(s))
        .min_by_key(|(s, _)| s.abs_diff(10_000))
        .context("a size")?
        .1;
    let budget = budget::measure(&mut bench, budget_files, repeats).await?;

    if million {
        let files = &files_by_size.last().expect("the million").1;
        say("1,000,000 records per file: parallel, once, for peak memory");
        let run = bench.run(PARALLEL, files, Profile::default()).await?;
        memory.extend(measure::memory(1_000_000, PARALLEL, std::slice::from_ref(&run)));
        say("1,000,000 records per file: parallel from one-record messages, once, for peak memory");
        let run = bench
            .run_queue_variant(
                files,
                connection.queue_type,
                tuning.prefetch_scope,
                1,
                Profile::default(),
            )
            .await?;
        memory.extend(measure::memory(1_000_000, PARALLEL_ONE_ROW, std::slice::from_ref(&run)));
    }

    let profile_size = sizes
        .iter()
        .copied()
        .filter(|s| *s <= 100_000)
        .max()
        .unwrap_or(sizes[0]);
    let profile_files = &files_by_size
        .iter()
        .find(|(s, _)| *s == profile_size)
        .expect("generated")
        .1;
    let flamegraph = profile.then(|| format!("{stem}-importer-flamegraph.svg"));
    let mut profiles = Vec::new();
    for mode in [LINEAR, PARALLEL] {
        say(format!("profiling stages: {mode}, {profile_size} records per file"));
        let cpu = flamegraph.as_ref().filter(|_| mode == PARALLEL).map(|f| out.join(f));
        let run = bench
            .run(
                mode,
                profile_files,
                Profile {
                    stages: true,
                    cpu: cpu.as_deref(),
                },
            )
            .await?;
        profiles.push(measure::stage_profile(mode, profile_size, &run));
    }

    // The one-record path on quorum queues, where the importer's work per
    // message shows: a flamegraph of it at the budget's size (10,000 per file).
    let one_record_flamegraph = profile.then(|| format!("{stem}-importer-one-record-quorum-flamegraph.svg"));
    if let Some(name) = &one_record_flamegraph {
        say("profiling the importer: one-record messages on quorum queues");
        let path = out.join(name);
        bench
            .run_queue_variant(
                budget_files,
                QueueType::Quorum,
                PrefetchScope::PerConsumer,
                1,
                Profile {
                    stages: false,
                    cpu: Some(&path),
                },
            )
            .await?;
    }

    say("end-to-end latency of hpn-importer serve at steady publish rates");
    let latency = latency::measure(&mut bench, latency::STEP).await?;

    say("contention demonstration");
    let mut scratch = connection.clone();
    scratch.database = format!("hpn_bench_{}", std::process::id());
    scratch.queue_prefix = scratch.database.clone();
    let contention = hpn_importer::contention::run(&scratch, &Default::default()).await?;
    Store::connect(&scratch.mongodb_uri, &format!("{}_contention", scratch.database))
        .await?
        .database()
        .drop()
        .await?;

    let reimport = reimport::measure(&mut bench, data, REIMPORT_SIZE, repeats).await?;
    let durability = match synced_mongodb_uri {
        Some(uri) => Some(durability::measure(&mut bench, uri, data, TARGET_SIZE, repeats).await?),
        None => None,
    };

    let chart = format!("{stem}.svg");
    let mut results = Results {
        started,
        host,
        commit: commit(),
        machine,
        servers: servers(&connection).await,
        settings: Settings {
            repeats,
            rows_per_message,
            consumers: tuning.consumers,
            writers: tuning.writers,
            batch_size: tuning.batch_size,
            prefetch: tuning.prefetch,
            queue_type: connection.queue_type.to_string(),
            prefetch_scope: tuning.prefetch_scope.as_str().into(),
        },
        limits,
        sizes: size_results,
        profiles,
        memory,
        queues,
        budget: Some(budget),
        targets: Vec::new(),
        contention,
        latency: Some(latency),
        shared: Some(shared),
        own_core: Some(own_core),
        chart: chart.clone(),
        flamegraph,
        one_record_flamegraph,
        reimport: Some(reimport),
        durability,
        partitions: last_partitions(out),
    };
    results.targets = targets(&results);
    chart::draw(&results, &out.join(&chart))?;
    let path = out.join(format!("{stem}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    say(format!("results in {}", path.display()));
    Ok(results)
}

/// Runs per mode with the database on its own core, at least: the A/B
/// candidates differ by a few per cent.
const OWN_CORE_REPEATS: usize = 5;

/// [`measure::PINNED_MODES`] with the database server on a core of its own
/// (see [`layout`]), `repeats` alternating runs each at `size` per file.
async fn own_core(
    bench: &mut Bench,
    (size, files): &(usize, Vec<PathBuf>),
    repeats: usize,
) -> Result<results::LayoutResults> {
    let held = layout::hold(Layout::DatabaseOwnCore)?;
    announce(&held.pinning);
    let modes = measure::PINNED_MODES;
    let mut runs: Vec<Vec<measure::Run>> = modes.iter().map(|_| Vec::new()).collect();
    for repeat in 0..repeats {
        for i in measure::rotated(modes.len(), repeat) {
            let mode = modes[i];
            say(format!(
                "database on its own core, {size} per file, run {}/{repeats}: {mode}",
                repeat + 1
            ));
            runs[i].push(bench.run(mode, files, Profile::default()).await?);
        }
    }
    held.pinning.still_holds()?;
    let records = 3 * *size as u64;
    Ok(results::LayoutResults {
        pinning: held.pinning.clone(),
        records_per_file: *size,
        repeats,
        modes: modes
            .iter()
            .zip(&runs)
            .map(|(mode, r)| measure::summarise(mode, records, r))
            .collect(),
    })
}

/// The partition cluster's long runs as last recorded into a results file
/// in `out` (`hpn-bench partitions`): a run measures speed, not those, so it
/// carries them on, with their own date and commit.
fn last_partitions(out: &Path) -> Option<results::PartitionResults> {
    let newest = crate::newest_results(out).ok()?;
    let last: Results = serde_json::from_slice(&std::fs::read(newest).ok()?).ok()?;
    last.partitions
}
