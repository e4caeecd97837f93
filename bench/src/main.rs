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
mod cli;
mod cpu;
mod durability;
mod findings;
mod latency;
mod layout;
mod limits;
mod measure;
mod partitions;
mod provenance;
mod queues;
mod reimport;
mod results;
mod run;
mod served;
mod summary;
mod targets;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use hpn_common::ConnectionSettings;
use measure::{Bench, Profile};
use results::Results;
use std::path::{Path, PathBuf};
use summary::print_summary;

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
            let results = run::run(
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
        Command::Partitions { record, into } => {
            let partitions = partitions::read(&record)?;
            record_into(into, "partition runs", |results| results.partitions = Some(partitions))?;
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
        for i in measure::rotated(modes.len(), repeat) {
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
    results.targets = targets::targets(&results);
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    say(format!("{what} recorded in {}", path.display()));
    print_summary(&results);
    Ok(())
}
