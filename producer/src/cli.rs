//! The `hpn-producer` command line: generate sample data, or publish CSV
//! files to RabbitMQ. It lives in the library so that the integration tests
//! can run exactly this program as a child process (see `tests/src/bin`).
//!
//! `publish` exits with a code a script can act on (see [`Outcome`] and
//! the README): 0 all published, 3 a file refused whole, 4 rows rejected;
//! a failed run exits by where it failed (`Origin::exit_code`): 2 a wrong
//! command line or setting, 7 the broker, 1 anything else.

use crate::generate::{generate, DEFAULT_SEED};
use crate::{publish_files, FileSummary, PublishOptions, Refused, VersionClock};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use hpn_common::config::env;
use hpn_common::{profile, BrokerSettings, Mapping};
use std::path::PathBuf;
use std::process::ExitCode;

/// Publish HP Norton CSV files (customers, products, rentals) to RabbitMQ.
#[derive(Parser)]
#[command(name = "hpn-producer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write deterministic sample customers.csv, products.csv and rentals.csv.
    Generate {
        /// Records per file.
        #[arg(long, default_value_t = 1000)]
        records: usize,
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Random seed: the same records and seed give the same files.
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
    },
    /// Validate and publish CSV files (or every *.csv in a directory).
    Publish {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        broker: BrokerSettings,
        /// Records packed into one message (1 sends one JSON object per
        /// message), at most the importer's limit of 10,000.
        #[arg(long, env = env::ROWS_PER_MESSAGE, default_value_t = crate::publish::DEFAULT_ROWS_PER_MESSAGE,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
                  .range(1..=hpn_common::message::MAX_RECORDS_PER_MESSAGE as u64))]
        rows_per_message: usize,
        /// Bytes of body one message may hold: a message closes before the
        /// record that would pass it. The importer refuses larger bodies
        /// (the same variable sets its limit) and so do the brokers, with
        /// their `max_message_size`. At least 1 MiB, more than any valid
        /// record takes.
        #[arg(long, env = env::MAX_MESSAGE_BYTES, default_value_t = hpn_common::message::DEFAULT_MAX_MESSAGE_BYTES,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
                  .range(crate::pack::MIN_MESSAGE_BYTES as u64..))]
        max_message_bytes: usize,
        /// Publishes awaiting a broker confirm at most, per file.
        #[arg(long, env = env::CONFIRM_WINDOW, default_value_t = crate::publish::DEFAULT_CONFIRM_WINDOW)]
        confirm_window: usize,
        /// Directory for rejects files (default: beside each input file).
        #[arg(long)]
        rejects_dir: Option<PathBuf>,
        /// Column mapping (TOML) for files in other layouts than the brief's
        /// (see docs/mapping.md); files in the brief's layouts still work.
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// State file shared by the producers on this machine, so every
        /// publish versions its records above every earlier one
        /// [default: $XDG_STATE_HOME/hpnorton/version-clock, else ~/.local/state/hpnorton/version-clock]
        #[arg(long, env = env::VERSION_CLOCK)]
        version_clock: Option<PathBuf>,
        /// Send the records without versions: the importer then applies them
        /// in arrival order (the benchmark's measure of what versions cost).
        #[arg(long)]
        without_versions: bool,
    },
    /// Publish the deletes of keys: each a versioned record that wins over
    /// what was published of its key before, and loses to what comes after.
    Delete {
        /// The kind of record.
        #[arg(long, value_enum)]
        kind: KindName,
        /// Keys to delete: a user_id, a product_id, or a rental's
        /// "PRODUCT_ID USER_ID" (one argument, a space between).
        keys: Vec<String>,
        /// A file of keys, one per line (blank lines and # comments skipped).
        #[arg(long)]
        keys_file: Option<PathBuf>,
        #[command(flatten)]
        broker: BrokerSettings,
        /// The version clock's state file (see `publish`).
        #[arg(long, env = env::VERSION_CLOCK)]
        version_clock: Option<PathBuf>,
    },
}

/// A record kind, by its name.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum KindName {
    Customer,
    Product,
    Rental,
}

impl From<KindName> for hpn_common::RecordKind {
    fn from(name: KindName) -> Self {
        match name {
            KindName::Customer => hpn_common::RecordKind::Customer,
            KindName::Product => hpn_common::RecordKind::Product,
            KindName::Rental => hpn_common::RecordKind::Rental,
        }
    }
}

/// How a publish ended, as its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Every file published, every row valid.
    Published = 0,
    /// At least one file was refused whole (the others were published).
    FileRefused = 3,
    /// Every file published, but some rows were rejected (kept in rejects files).
    RowsRejected = 4,
}

impl Outcome {
    fn of(report: &PublishReport) -> Outcome {
        if !report.refused.is_empty() {
            Outcome::FileRefused
        } else if report.files.iter().any(|f| f.rejected > 0) {
            Outcome::RowsRejected
        } else {
            Outcome::Published
        }
    }
}

/// Parse the command line and run it; the exit code says how a publish ended.
pub async fn main() -> Result<ExitCode> {
    hpn_common::telemetry::init();
    match run(Cli::parse()).await {
        Ok(code) => Ok(code),
        Err(e) => Ok(hpn_common::error::exit_with(&e, hpn_common::error::origin_of(&e))),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Generate { records, out, seed } => {
            let files = generate(&out, records, seed).with_context(|| format!("writing to {}", out.display()))?;
            for path in files.paths() {
                println!("{}", path.display());
            }
        }
        Command::Publish {
            paths,
            broker,
            rows_per_message,
            max_message_bytes,
            confirm_window,
            rejects_dir,
            mapping,
            json,
            version_clock,
            without_versions,
        } => {
            let broker = broker.resolve()?;
            let mapping = match mapping {
                Some(path) => Mapping::load(&path)?,
                None => Mapping::brief(),
            };
            let files = crate::publish::collect_inputs(&paths)?;
            anyhow::ensure!(!files.is_empty(), "no CSV files in {paths:?}");
            let options = PublishOptions {
                rows_per_message,
                max_message_bytes,
                confirm_window,
                rejects_dir,
                progress: !json,
                version_clock: (!without_versions)
                    .then(|| VersionClock::new(version_clock.unwrap_or_else(VersionClock::default_path))),
                mapping,
            };
            let started = std::time::Instant::now();
            let publication = publish_files(&broker, &files, &options).await?;
            let report = PublishReport {
                seconds: started.elapsed().as_secs_f64(),
                published: publication.published.iter().map(|s| s.published).sum(),
                peak_rss_bytes: profile::peak_rss_bytes(),
                stages: profile::stage_times(),
                files: publication.published,
                refused: publication.refused,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", table(&report.files, &report.refused));
                println!(
                    "{} records published in {:.3}s ({:.0} records/s)",
                    report.published,
                    report.seconds,
                    report.published as f64 / report.seconds.max(1e-9)
                );
                if !report.refused.is_empty() {
                    println!(
                        "{} of {} files refused whole: nothing of them was sent",
                        report.refused.len(),
                        report.refused.len() + report.files.len()
                    );
                }
            }
            return Ok(ExitCode::from(Outcome::of(&report) as u8));
        }
        Command::Delete {
            kind,
            keys,
            keys_file,
            broker,
            version_clock,
        } => {
            let kind = kind.into();
            let broker = broker.resolve()?;
            let clock = VersionClock::new(version_clock.unwrap_or_else(VersionClock::default_path));
            let each_key = || crate::delete::keys(kind, &keys, keys_file.as_deref());
            let sent = crate::delete::publish_deletes(&broker, kind, each_key, clock).await?;
            anyhow::ensure!(sent > 0, "no keys to delete: give some, or --keys-file");
            println!("{sent} {kind} deletes published");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `publish --json` prints.
#[derive(serde::Serialize)]
struct PublishReport {
    /// Wall time of the whole publish, all files.
    seconds: f64,
    published: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stages: Vec<profile::StageTime>,
    /// The files published.
    files: Vec<FileSummary>,
    /// The files refused whole, with the reason.
    refused: Vec<Refused>,
}

fn table(summaries: &[FileSummary], refused: &[Refused]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "file",
        "kind",
        "published",
        "messages",
        "rejected",
        "duplicate keys",
        "seconds",
        "rejects file / refused because",
    ]);
    for s in summaries {
        table.add_row(vec![
            s.file.display().to_string(),
            s.kind.to_string(),
            s.published.to_string(),
            s.messages.to_string(),
            s.rejected.to_string(),
            s.duplicate_keys.to_string(),
            format!("{:.3}", s.elapsed.as_secs_f64()),
            s.rejects_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ]);
    }
    for r in refused {
        table.add_row(vec![
            r.file.display().to_string(),
            "-".into(),
            "REFUSED".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            r.reason.clone(),
        ]);
    }
    table
}
