//! `hpn-bench`: measures the pipeline against the old loader and against the
//! servers' raw limits, all in one run on the local services, and writes
//! `findings.md` from the recorded results.
//!
//! - `hpn-bench run`: generate data sets, measure every mode at every size
//!   (repeated; medians and spread), the raw limits, per-stage profiles,
//!   peak memory, the contention demonstration and the long-running
//!   importer's end-to-end latency at steady publish rates; write
//!   `bench/results/<date>-<host>.json` and a chart; print HP Norton's tuples
//!   and the ratio table.
//! - `hpn-bench compare`: a few modes at one size, alternating, medians
//!   printed and nothing recorded: the quick A/B check behind a change.
//! - `hpn-bench findings`: regenerate `findings.md` from the newest results file.

mod budget;
mod chart;
mod cpu;
mod durability;
mod findings;
mod latency;
mod layout;
mod limits;
mod measure;
mod reimport;
mod results;
mod served;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use hpn_common::{ConnectionSettings, QueueType, RecordKind};
use hpn_importer::Store;
use hpn_importer::{PrefetchScope, Tuning};
use layout::Layout;
use measure::{Bench, Profile, DIRECT_PARALLEL, LINEAR, MODES, PARALLEL, PARALLEL_ONE_ROW};
use results::{Limits, Machine, Results, Servers, Settings, SizeResults, Target};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "hpn-bench",
    version,
    about = "Benchmark the HP Norton pipeline and write findings.md"
)]
struct Cli {
    #[command(flatten)]
    broker: hpn_common::BrokerSettings,
    #[command(flatten)]
    store: hpn_common::StoreSettings,
    #[command(subcommand)]
    command: Command,
}

/// What the modes run on and with, for `run` and `compare` alike.
#[derive(clap::Args)]
struct Workload {
    /// Records per message for the producer in the linear and parallel modes.
    #[arg(long, default_value_t = hpn_producer::publish::DEFAULT_ROWS_PER_MESSAGE)]
    rows_per_message: usize,
    #[command(flatten)]
    tuning: Tuning,
    /// Where the data sets are generated.
    #[arg(long, default_value = "data/bench")]
    data: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Measure everything and record the results.
    Run {
        /// Records per file for each data set.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        sizes: Vec<usize>,
        /// Also run 1,000,000 records per file (parallel mode, once) for the memory targets.
        #[arg(long)]
        million: bool,
        /// Runs per mode and size (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Also write a CPU flamegraph of the importer (needs hpn-importer built with --features profiling).
        #[arg(long)]
        profile: bool,
        /// A MongoDB-compatible server started with --sync-on-commit: measure
        /// what it costs the pipeline against the bench's own (scripts/bench starts one).
        #[arg(long, env = "HPN_BENCH_SYNCED_MONGODB_URI")]
        synced_mongodb_uri: Option<String>,
        #[command(flatten)]
        workload: Workload,
        /// Where results, chart and flamegraph go.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
    },
    /// Only the latency of `hpn-importer serve` at steady rates (printed, not recorded).
    Latency {
        /// Seconds each rate is held.
        #[arg(long, default_value_t = latency::STEP.as_secs())]
        seconds: u64,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Only the memory budget: the importer's peak under a flood of 4 MiB
    /// messages and the one-record import with and without the budget
    /// (printed, not recorded).
    Budget {
        /// Records per file for the one-record imports.
        #[arg(long, default_value_t = 10_000)]
        size: usize,
        /// Alternating pairs of one-record imports.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[command(flatten)]
        workload: Workload,
    },
    /// A few modes at one size, run in turn, medians printed (nothing recorded).
    Compare {
        /// Modes, by short name, comma-separated; the ratios are to the first.
        #[arg(long, value_delimiter = ',', default_value = "careful,parallel",
              value_parser = clap::builder::PossibleValuesParser::new(measure::SHORT_NAMES.map(|(short, _)| short)))]
        modes: Vec<String>,
        /// Records per file.
        #[arg(long, default_value_t = TARGET_SIZE)]
        size: usize,
        /// Runs per mode.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Where the processes run while they are measured.
        #[arg(long, value_enum, default_value = "shared")]
        layout: layout::Layout,
        #[command(flatten)]
        workload: Workload,
    },
    /// Only the re-import (first load, replay, delta, changed export against
    /// the careful upsert loader, in both layouts), recorded into a results
    /// file (default: the newest in bench/results) whose findings it then
    /// carries.
    Reimport {
        /// Records per file.
        #[arg(long, default_value_t = REIMPORT_SIZE)]
        size: usize,
        /// Runs per mode.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// The results file to record into.
        #[arg(long)]
        into: Option<PathBuf>,
        #[command(flatten)]
        workload: Workload,
    },
    /// Only the cost of `--sync-on-commit`: the pipeline's first load and
    /// changed export on a server started with it against the bench's own,
    /// recorded into a results file (default: the newest in bench/results).
    Durability {
        /// Records per file.
        #[arg(long, default_value_t = TARGET_SIZE)]
        size: usize,
        /// Runs per server.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// The MongoDB-compatible server started with --sync-on-commit.
        #[arg(long, env = "HPN_BENCH_SYNCED_MONGODB_URI")]
        synced_mongodb_uri: String,
        /// The results file to record into.
        #[arg(long)]
        into: Option<PathBuf>,
        #[command(flatten)]
        workload: Workload,
    },
    /// Write findings.md from a results file (default: the newest in bench/results).
    Findings {
        #[arg(long)]
        results: Option<PathBuf>,
        #[arg(long, default_value = "findings.md")]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    hpn_common::telemetry::init();
    let cli = Cli::parse();
    let connection = ConnectionSettings::new(cli.broker.resolve()?, cli.store.resolve()?);
    match cli.command {
        Command::Run {
            sizes,
            million,
            repeats,
            profile,
            synced_mongodb_uri,
            workload,
            out,
        } => {
            let results = run(
                connection,
                sizes,
                million,
                repeats.max(1),
                profile,
                synced_mongodb_uri.as_deref(),
                workload.rows_per_message,
                workload.tuning,
                &workload.data,
                &out,
            )
            .await?;
            print_summary(&results);
        }
        Command::Compare {
            modes,
            size,
            repeats,
            layout,
            workload,
        } => {
            let modes = modes
                .iter()
                .map(|m| measure::mode_named(m).with_context(|| format!("no mode is called {m}")))
                .collect::<Result<Vec<_>>>()?;
            let mut bench = Bench::new(connection, workload.tuning, workload.rows_per_message)?;
            let held = layout::hold(layout)?;
            announce(&held.pinning);
            compare(&mut bench, &modes, size, repeats.max(1), &workload.data).await?;
            held.pinning.still_holds()?;
        }
        Command::Budget {
            size,
            repeats,
            workload,
        } => {
            let dir = workload.data.join(size.to_string());
            let files = hpn_producer::generate::generate(&dir, size, hpn_producer::generate::DEFAULT_SEED)?;
            let files: Vec<PathBuf> = files.paths().iter().map(|p| p.to_path_buf()).collect();
            let mut bench = Bench::new(connection, workload.tuning, workload.rows_per_message)?;
            let budget = budget::measure(&mut bench, &files, repeats.max(1)).await?;
            println!("{}", serde_json::to_string_pretty(&budget)?);
        }
        Command::Latency { seconds, tuning } => {
            let mut bench = Bench::new(connection, tuning, hpn_producer::publish::DEFAULT_ROWS_PER_MESSAGE)?;
            let latency = latency::measure(&mut bench, std::time::Duration::from_secs(seconds)).await?;
            println!("{}", serde_json::to_string_pretty(&latency)?);
        }
        Command::Reimport {
            size,
            repeats,
            into,
            workload,
        } => {
            let mut bench = Bench::new(connection, workload.tuning, workload.rows_per_message)?;
            let reimport = reimport::measure(&mut bench, &workload.data, size, repeats.max(1)).await?;
            record_into(into, "re-import", |results| results.reimport = Some(reimport))?;
        }
        Command::Durability {
            size,
            repeats,
            synced_mongodb_uri,
            into,
            workload,
        } => {
            let mut bench = Bench::new(connection, workload.tuning, workload.rows_per_message)?;
            let durability =
                durability::measure(&mut bench, &synced_mongodb_uri, &workload.data, size, repeats.max(1)).await?;
            record_into(into, "durability", |results| results.durability = Some(durability))?;
        }
        Command::Findings { results, out } => {
            let path = match results {
                Some(path) => path,
                None => newest_results(Path::new("bench/results"))?,
            };
            let results: Results =
                serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)?;
            std::fs::write(&out, findings::render(&results, &path.display().to_string()))?;
            eprintln!("wrote {} from {}", out.display(), path.display());
        }
    }
    Ok(())
}

/// Run `modes` in turn `repeats` times at `size` records per file and print
/// each run and the medians, with every mode's ratio to the first.
async fn compare(bench: &mut Bench, modes: &[&str], size: usize, repeats: usize, data: &Path) -> Result<()> {
    let dir = data.join(size.to_string());
    let files = hpn_producer::generate::generate(&dir, size, hpn_producer::generate::DEFAULT_SEED)?;
    let files: Vec<PathBuf> = files.paths().iter().map(|p| p.to_path_buf()).collect();
    let mut runs: Vec<Vec<measure::Run>> = modes.iter().map(|_| Vec::new()).collect();
    for repeat in 0..repeats {
        for i in rotated(modes.len(), repeat) {
            let (mode, runs) = (modes[i], &mut runs[i]);
            let run = bench.run(mode, &files, Profile::default()).await?;
            let t = &run.times;
            say(format!(
                "run {}/{repeats}: {mode}: {:.2} s (publish {}, import {:.2})",
                repeat + 1,
                t.total(),
                t.publish_seconds.map_or("-".into(), |s| format!("{s:.2}")),
                t.import_seconds
            ));
            runs.push(run);
        }
    }
    let records = 3 * size as u64;
    let summaries: Vec<_> = modes
        .iter()
        .zip(&runs)
        .map(|(mode, runs)| measure::summarise(mode, records, runs))
        .collect();
    let mut table = Table::new();
    let mut header: Vec<String> = [
        "mode",
        "total s (min-max)",
        "publish s",
        "import s",
        "records/s",
        "/ first",
    ]
    .map(String::from)
    .into();
    header.extend(summaries[0].cpu_seconds.iter().map(|t| format!("CPU s: {}", t.process)));
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header);
    for s in &summaries {
        let mut row = vec![
            s.mode.clone(),
            format!("{:.2} ({:.2}-{:.2})", s.total_seconds, s.min_seconds, s.max_seconds),
            s.publish_seconds.map_or("-".into(), |p| format!("{p:.2}")),
            format!("{:.2}", s.import_seconds),
            format!("{:.0}", s.records_per_s),
            format!("{:.2}", s.records_per_s / summaries[0].records_per_s),
        ];
        row.extend(s.cpu_seconds.iter().map(|t| format!("{:.2}", t.seconds)));
        table.add_row(row);
    }
    println!("{size} records per file, medians of {repeats} alternating runs\n{table}");
    Ok(())
}

fn newest_results(dir: &Path) -> Result<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .pop()
        .with_context(|| format!("no results file in {}: run `hpn-bench run` first", dir.display()))
}

fn say(message: impl AsRef<str>) {
    eprintln!("hpn-bench: {}", message.as_ref());
}

/// Say how the processes were laid out on the cores, and what the check found.
fn announce(pinning: &layout::Pinning) {
    say(format!("{}: {}", pinning.layout, pinning.how));
    for line in &pinning.checked {
        say(format!("checked: {line}"));
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
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
    };
    results.targets = targets(&results);
    chart::draw(&results, &out.join(&chart))?;
    let path = out.join(format!("{stem}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    say(format!("results in {}", path.display()));
    Ok(results)
}

/// The order of `n` modes in round `round`: each round starts one mode
/// later. The database server here slows as runs accumulate (its data
/// folder grows though every run's database is dropped: 4.5 s for the
/// careful loader's first runs, 7 s after a dozen), so a fixed order would
/// hand the last mode of every round a slower server.
fn rotated(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n.max(1))
}

/// Rounds of raw `insert_many` at its best concurrency (the median is the limit).
/// Records per file of the re-import (HP Norton's daily export is the size
/// that matters: the bar is at 300,000).
const REIMPORT_SIZE: usize = 300_000;

const INSERT_MANY_ROUNDS: usize = 5;

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
        for i in rotated(modes.len(), repeat) {
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

/// The queue settings compared: classic with either prefetch scope, quorum
/// with the only one it takes.
const QUEUE_VARIANTS: [(QueueType, PrefetchScope); 3] = [
    (QueueType::Classic, PrefetchScope::Channel),
    (QueueType::Classic, PrefetchScope::PerConsumer),
    (QueueType::Quorum, PrefetchScope::PerConsumer),
];

/// Parallel imports for each of [`QUEUE_VARIANTS`] from messages of 1 and
/// 100 records, `repeats` times each in turn, with the broker's raw consume
/// rate for each queue type and message size, and the CPU ceiling on the
/// machine's `cores` (see [`cpu_ceiling`]).
async fn compare_queues(
    bench: &mut Bench,
    connection: &ConnectionSettings,
    limits: &Limits,
    (size, files): &(usize, Vec<PathBuf>),
    repeats: usize,
    cores: usize,
) -> Result<Vec<results::QueueResult>> {
    let records = measure::customer_records(&files[0], 50_000)?;
    let mut raw = Vec::new();
    for queue_type in [QueueType::Classic, QueueType::Quorum] {
        for rows in [1, 100] {
            say(format!("raw consume: {queue_type} queue, {rows} records per message"));
            let body = hpn_common::message::encode(&records[..rows]);
            let queue = format!("hpn_bench_raw_{}", std::process::id());
            let messages = records.len() / rows;
            let raw_queue = limits::RawQueue {
                amqp_url: &connection.amqp_url,
                name: &queue,
                queue_type,
            };
            let best = limits::broker_best(&raw_queue, &body, RecordKind::Customer, messages).await?;
            raw.push((
                queue_type,
                rows,
                best.consume_per_s * rows as f64,
                best.consume_cpu_s_per_message / rows as f64,
            ));
        }
    }
    let cells: Vec<(QueueType, PrefetchScope, usize)> = QUEUE_VARIANTS
        .iter()
        .flat_map(|&(t, s)| [1, 100].map(|rows| (t, s, rows)))
        .collect();
    let mut runs: Vec<Vec<measure::Run>> = cells.iter().map(|_| Vec::new()).collect();
    for repeat in 0..repeats {
        for (i, &(queue_type, scope, rows)) in cells.iter().enumerate() {
            say(format!(
                "{size} records per file, run {}/{repeats}: {queue_type} queues, {} prefetch, {rows} per message",
                repeat + 1,
                scope.as_str()
            ));
            runs[i].push(
                bench
                    .run_queue_variant(files, queue_type, scope, rows, Profile::default())
                    .await?,
            );
        }
    }
    let total = 3 * *size as u64;
    Ok(cells
        .iter()
        .zip(&runs)
        .map(|(&(queue_type, scope, rows), runs)| {
            let summary = measure::summarise("queue variant", total, runs);
            let (raw_consume, consume_cpu) = raw
                .iter()
                .find(|(t, r, _, _)| *t == queue_type && *r == rows)
                .map(|(_, _, rate, cpu)| (*rate, *cpu))
                .unwrap_or((f64::NAN, f64::NAN));
            let ceiling = limits
                .insert_many_cpu_s_per_doc
                .map(|insert_cpu| cpu_ceiling(cores as f64, consume_cpu, insert_cpu))
                .filter(|c| c.is_finite());
            results::QueueResult {
                queue_type: queue_type.to_string(),
                prefetch_scope: scope.as_str().into(),
                rows_per_message: rows,
                records: total,
                import_records_per_s: summary.import_records_per_s,
                records_per_s: summary.records_per_s,
                importer_peak_rss_bytes: runs.iter().filter_map(|r| r.importer_rss).max(),
                raw_consume_records_per_s: raw_consume,
                ratio: summary.import_records_per_s / raw_consume.min(limits.insert_many_per_s),
                cpu_ceiling_records_per_s: ceiling,
            }
        })
        .collect())
}

/// The most records/s an import can reach where the broker, the importer
/// and the database share `cores`: each record costs the machine at least
/// what a bare consumer's delivery of it costs (`consume_cpu`, CPU seconds
/// per record) plus what the database's raw `insert_many` of it costs
/// (`insert_cpu`), both measured whole-machine in the same run.
fn cpu_ceiling(cores: f64, consume_cpu: f64, insert_cpu: f64) -> f64 {
    cores / (consume_cpu + insert_cpu)
}

async fn measure_limits(connection: &ConnectionSettings, customers: &Path) -> Result<Limits> {
    let records = measure::customer_records(customers, 100_000)?;
    let documents: Vec<_> = records.iter().map(hpn_importer::store::stored_document).collect();
    let store = Store::connect(
        &connection.mongodb_uri,
        &format!("hpn_bench_limits_{}", std::process::id()),
    )
    .await?;
    let mut insert_many = Vec::new();
    for concurrency in [1, 2, 4] {
        insert_many.push((
            concurrency,
            limits::insert_many(&store, RecordKind::Customer, &documents, 1000, concurrency)
                .await?
                .per_s,
        ));
    }
    // One round per concurrency picks the best; the figure the targets
    // divide by is the median of more rounds at it (one round swung by
    // ±30 % between runs).
    let concurrency = insert_many
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| *c)
        .unwrap_or(1);
    let mut insert_many_rounds = Vec::new();
    let mut insert_many_cpu = Vec::new();
    for _ in 0..INSERT_MANY_ROUNDS {
        let round = limits::insert_many(&store, RecordKind::Customer, &documents, 1000, concurrency).await?;
        insert_many_rounds.push(round.per_s);
        insert_many_cpu.push(round.cpu_s_per_item);
    }
    let upsert_per_s = limits::upsert(&store, RecordKind::Customer, &records, 1000, 2).await?;
    store.database().drop().await?;
    let insert_many_per_s = results::median(&insert_many_rounds);
    say(format!(
        "raw insert_many, {concurrency} batches at a time: median {insert_many_per_s:.0} docs/s of {INSERT_MANY_ROUNDS} rounds ({:.0}..{:.0})",
        insert_many_rounds.iter().copied().fold(f64::INFINITY, f64::min),
        insert_many_rounds.iter().copied().fold(0.0, f64::max),
    ));

    let queue = format!("hpn_bench_limits_{}", std::process::id());
    let raw_queue = limits::RawQueue {
        amqp_url: &connection.amqp_url,
        name: &queue,
        queue_type: connection.queue_type,
    };
    let one = hpn_common::message::encode(&records[..1]);
    let count = records.len().min(50_000);
    let one_row = limits::broker_best(&raw_queue, &one, RecordKind::Customer, count).await?;
    let hundred = hpn_common::message::encode(&records[..100.min(records.len())]);
    let batched = limits::broker(&raw_queue, &hundred, RecordKind::Customer, count / 100, 256, 1).await?;
    Ok(Limits {
        documents: documents.len(),
        insert_many,
        insert_many_per_s,
        insert_many_rounds,
        insert_many_concurrency: concurrency,
        insert_many_cpu_s_per_doc: Some(results::median(&insert_many_cpu)),
        upsert_per_s,
        publish_one_row_per_s: one_row.publish_per_s,
        consume_one_row_per_s: one_row.consume_per_s,
        publish_hundred_rows_records_per_s: batched.publish_per_s * 100.0,
        consume_hundred_rows_records_per_s: batched.consume_per_s * 100.0,
    })
}

fn ratio_target(name: &str, description: &str, measured: Option<f64>, bar: f64) -> Target {
    Target {
        name: name.into(),
        description: description.into(),
        measured,
        bar: format!("≥ {bar}"),
        met: measured.map(|m| m >= bar),
    }
}

/// Put one measurement into a results file (`into`, or the newest in
/// bench/results), its targets recomputed, and print them.
fn record_into(into: Option<PathBuf>, what: &str, put: impl FnOnce(&mut Results)) -> Result<()> {
    let path = match into {
        Some(path) => path,
        None => newest_results(Path::new("bench/results"))?,
    };
    let mut results: Results =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)?;
    put(&mut results);
    results.targets = targets(&results);
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    say(format!("{what} recorded in {}", path.display()));
    print_summary(&results);
    Ok(())
}

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
        targets.push(ratio_target(
            &format!("reimport_changed_{name}"),
            &format!(
                "a changed export re-imported, {size} per file, {}: ours / the careful upsert loader",
                layout.as_str()
            ),
            ratio(layout, CHANGED),
            1.0,
        ));
    }
    targets.push(ratio_target(
        "reimport_replay",
        &format!("an unchanged replay, {size} per file, shared cores: ours / the careful upsert loader"),
        ratio(Layout::Shared, REPLAY),
        1.0,
    ));
    targets.push(ratio_target(
        "reimport_first_load",
        &format!("a first load, {size} per file, shared cores: ours / the careful upsert loader"),
        ratio(Layout::Shared, FIRST_LOAD),
        1.0,
    ));
    targets
}

/// The size most targets are read at.
const TARGET_SIZE: usize = 100_000;
/// Runs of the modes compared in ratios near 1, at least (see `run`).
const GUARD_REPEATS: usize = 7;

/// Issue 4's bars, each against figures of this run.
fn targets(results: &Results) -> Vec<Target> {
    let l = &results.limits;
    let size = |n: usize| results.sizes.iter().find(|s| s.records_per_file == n);
    let rate = |n: usize, mode: &str| size(n).and_then(|s| s.modes.iter().find(|m| m.mode == mode));
    let at = TARGET_SIZE;
    let mut targets = vec![
        ratio_target(
            "end_to_end_parallel",
            "end to end (publish + import), parallel, 100,000 per file / raw insert_many",
            rate(at, PARALLEL).map(|m| m.records_per_s / l.insert_many_per_s),
            0.8,
        ),
        ratio_target(
            "version_guard_cost",
            "parallel end to end, 100,000 per file, records with versions / without (the version guard's cost)",
            rate(at, PARALLEL)
                .zip(rate(at, measure::PARALLEL_UNVERSIONED))
                .map(|(with, without)| with.records_per_s / without.records_per_s),
            0.95,
        ),
        ratio_target(
            "write_concern_cost",
            "parallel end to end, 100,000 per file, writes journaled (and majority on a replica set) / \
             acknowledged before the journal (w: 1, journal=false)",
            rate(at, PARALLEL)
                .zip(rate(at, measure::PARALLEL_UNJOURNALED))
                .map(|(journaled, not)| journaled.records_per_s / not.records_per_s),
            0.9,
        ),
        ratio_target(
            "direct_parallel",
            "direct parallel / raw insert_many",
            rate(at, DIRECT_PARALLEL).map(|m| m.records_per_s / l.insert_many_per_s),
            0.9,
        ),
        ratio_target(
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
        targets.push(ratio_target(
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
        targets.push(ratio_target(
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
    targets.push(ratio_target(
        "parallel_vs_careful_loader",
        "parallel end to end through the queue, 100,000 per file / the careful loader (insert_many of 1,000, \
         a task per file, no queue, no key index)",
        rate(at, PARALLEL)
            .zip(rate(at, measure::CAREFUL))
            .map(|(parallel, careful)| parallel.records_per_s / careful.records_per_s),
        1.0,
    ));
    targets.push(ratio_target(
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
        targets.push(ratio_target(
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
    targets.push(ratio_target(
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
    targets
}

fn print_summary(results: &Results) {
    println!("HP Norton tuples (processed, count before, count after, seconds), median run:");
    let mut tuples = Table::new();
    tuples.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "records/file",
        "mode",
        "customers",
        "products",
        "rentals",
    ]);
    for size in &results.sizes {
        for m in &size.modes {
            let mut row = vec![size.records_per_file.to_string(), m.mode.clone()];
            for c in &m.collections {
                let (p, b, a, s) = c.tuple();
                row.push(format!("({p}, {b}, {a}, {s:.3})"));
            }
            tuples.add_row(row);
        }
    }
    println!("{tuples}");
    println!(
        "Medians of {} runs each; spread = fastest..slowest total.",
        results.settings.repeats
    );
    let mut ratios = Table::new();
    ratios.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "records/file",
        "mode",
        "records/s",
        "spread (s)",
        "× baseline",
        "× raw insert_many",
        "× linear",
    ]);
    for size in &results.sizes {
        let base = size
            .modes
            .iter()
            .find(|m| m.mode == measure::BASELINE)
            .map(|m| m.records_per_s);
        let linear = size.modes.iter().find(|m| m.mode == LINEAR).map(|m| m.records_per_s);
        for m in &size.modes {
            ratios.add_row(vec![
                size.records_per_file.to_string(),
                m.mode.clone(),
                format!("{:.0}", m.records_per_s),
                format!("{:.2}..{:.2}", m.min_seconds, m.max_seconds),
                base.map(|b| format!("{:.2}", m.records_per_s / b)).unwrap_or_default(),
                format!("{:.2}", m.records_per_s / results.limits.insert_many_per_s),
                linear
                    .map(|l| format!("{:.2}", m.records_per_s / l))
                    .unwrap_or_default(),
            ]);
        }
    }
    println!("{ratios}");
    if let Some(latency) = &results.latency {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
            "serve: msg/s asked",
            "reached",
            "p50 (ms)",
            "p99 (ms)",
            "drained after last publish (s)",
            "sustained",
        ]);
        for s in &latency.steps {
            table.add_row(vec![
                s.target_rate.to_string(),
                format!("{:.0}", s.achieved_rate),
                format!("{:.1}", s.p50_ms),
                format!("{:.1}", s.p99_ms),
                format!("{:.2}", s.drain_seconds),
                if s.sustained { "yes".into() } else { "no".into() },
            ]);
        }
        println!("{table}");
    }
    let mut targets = Table::new();
    targets
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["target", "measured", "bar", "met"]);
    for t in &results.targets {
        targets.add_row(vec![
            t.description.clone(),
            t.measured
                .map(|m| format!("{m:.2}"))
                .unwrap_or_else(|| "not measured".into()),
            t.bar.clone(),
            match t.met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".into(),
            },
        ]);
    }
    println!("{targets}");
}

fn now_rfc3339() -> String {
    let output = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output();
    output
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| s.len() >= 19)
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// The checkout's commit, if git can say.
fn commit() -> Option<String> {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn machine() -> Machine {
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0);
    Machine {
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        memory_bytes,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_default(),
    }
}

async fn servers(connection: &ConnectionSettings) -> Servers {
    let mongodb = match Store::connect(&connection.mongodb_uri, "admin").await {
        Ok(store) => store
            .database()
            .run_command(mongodb::bson::doc! {"buildInfo": 1})
            .await
            .ok()
            .and_then(|d| d.get_str("version").ok().map(str::to_string))
            .unwrap_or_else(|| "unknown".into()),
        Err(_) => "unknown".into(),
    };
    let rabbitmq = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "rabbitmq-server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown (not a Debian package here)".into());
    Servers { rabbitmq, mongodb }
}
