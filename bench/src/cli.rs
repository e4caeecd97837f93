//! `hpn-bench`'s command line: the subcommands and what each takes.

use hpn_importer::Tuning;
use std::path::PathBuf;

use crate::reimport::REIMPORT_SIZE;
use crate::targets::TARGET_SIZE;
use crate::{latency, layout, measure};

#[derive(clap::Parser)]
#[command(
    name = "hpn-bench",
    version,
    about = "Benchmark the HP Norton pipeline and write findings.md"
)]
pub struct Cli {
    #[command(flatten)]
    pub broker: hpn_common::BrokerSettings,
    #[command(flatten)]
    pub store: hpn_common::StoreSettings,
    #[command(subcommand)]
    pub command: Command,
}

/// What the modes run on and with, for `run` and `compare` alike.
#[derive(clap::Args)]
pub struct Workload {
    /// Records per message for the producer in the linear and parallel modes.
    #[arg(long, default_value_t = hpn_producer::publish::DEFAULT_ROWS_PER_MESSAGE)]
    pub rows_per_message: usize,
    #[command(flatten)]
    pub tuning: Tuning,
    /// Where the data sets are generated.
    #[arg(long, default_value = "data/bench")]
    pub data: PathBuf,
}

#[derive(clap::Subcommand)]
pub enum Command {
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
    /// Record the nemesis's long runs on the partition cluster (the JSON
    /// lines `scripts/nemesis` writes) into a results file (default: the
    /// newest in bench/results), in place of any recorded before.
    Partitions {
        /// The runs, one JSON line each.
        #[arg(long)]
        record: PathBuf,
        /// The results file to record into.
        #[arg(long)]
        into: Option<PathBuf>,
    },
    /// Write findings.md from a results file (default: the newest in bench/results).
    Findings {
        #[arg(long)]
        results: Option<PathBuf>,
        #[arg(long, default_value = "findings.md")]
        out: PathBuf,
    },
}
