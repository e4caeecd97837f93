//! Running the modes and collecting their figures.
//!
//! Every run gets a fresh database and fresh queues (a unique name for
//! both), dropped afterwards. The queued modes run the real binaries,
//! `hpn-producer` and `hpn-importer`, as child processes and read their JSON
//! reports, so what is timed is exactly what HP Norton would run and the
//! peak memory reported is each process's own. The baseline and the direct
//! modes run in this process. Repeats run the modes in turn (mode A, B, C,
//! then A, B, C again) so slow drift on a shared machine spreads over all
//! modes instead of landing on one.

use crate::cpu::CpuTime;
use crate::results::RunTimes;
use anyhow::{bail, Context, Result};
use hpn_common::csv_source::CsvSource;
use hpn_common::profile::StageTime;
use hpn_common::{broker, ConnectionSettings, QueueType, RecordKind};
use hpn_importer::{Config, Mode, PrefetchScope, Tuning};
use hpn_importer::{ImportReport, ImportStats, Store};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::process::Command;

mod figures;
mod loaders;
mod modes;

pub use figures::{memory, stage_profile, summarise};
use loaders::{baseline, careful, Careful};
use modes::THROUGH_THE_QUEUE;
pub use modes::*;

/// One run of one mode.
pub struct Run {
    pub times: RunTimes,
    pub collections: Vec<ImportStats>,
    pub producer_rss: Option<u64>,
    pub importer_rss: Option<u64>,
    pub producer_stages: Vec<StageTime>,
    pub importer_stages: Vec<StageTime>,
    /// CPU seconds the run took, per process (see [`crate::cpu::servers_and_us`]).
    pub cpu: Vec<CpuTime>,
}

pub struct Bench {
    pub connection: ConnectionSettings,
    pub tuning: Tuning,
    pub rows_per_message: usize,
    /// Where hpn-producer and hpn-importer are.
    pub bin_dir: PathBuf,
    next: usize,
}

impl Bench {
    pub fn new(connection: ConnectionSettings, tuning: Tuning, rows_per_message: usize) -> Result<Bench> {
        let bin_dir = std::env::current_exe()?
            .parent()
            .context("the bench binary has a directory")?
            .to_path_buf();
        for bin in ["hpn-producer", "hpn-importer"] {
            if !bin_dir.join(bin).exists() {
                bail!(
                    "{bin} is not beside hpn-bench in {}: build the workspace first",
                    bin_dir.display()
                );
            }
        }
        Ok(Bench {
            connection,
            tuning,
            rows_per_message,
            bin_dir,
            next: 0,
        })
    }

    /// Fresh, unique names for one run.
    pub fn fresh(&mut self) -> ConnectionSettings {
        self.next += 1;
        let name = format!("hpn_bench_{}_{}", std::process::id(), self.next);
        ConnectionSettings {
            database: name.clone(),
            queue_prefix: name,
            ..self.connection.clone()
        }
    }

    pub async fn cleanup(&self, settings: &ConnectionSettings) -> Result<()> {
        let store = Store::connect_to(settings).await?;
        store.database().drop().await?;
        let connection = broker::connect(&settings.amqp_url, "hpn-bench (cleanup)").await?;
        let channel = connection.create_channel().await?;
        settings.topology().delete(&channel).await?;
        let _ = channel.close(200, "done".into()).await;
        let _ = connection.close(200, "done".into()).await;
        store.shutdown().await;
        Ok(())
    }

    /// Run one mode once on `files` (customers, products, rentals).
    pub async fn run(&mut self, mode: &str, files: &[PathBuf], profile: Profile<'_>) -> Result<Run> {
        let settings = self.fresh();
        let result = async {
            prepare(&settings, mode).await?;
            // CPU is counted over what the clock times, not the preparation.
            let watched = crate::cpu::servers_and_us();
            if let Err(busy) = crate::cpu::wait_until_quiet(&watched).await {
                crate::say(format!(
                    "{mode}: the servers still used {busy:.2} cores after {} s of waiting for them to be idle; \
                     this run's time and CPU include that work",
                    crate::cpu::QUIET_PATIENCE.as_secs()
                ));
            }
            let before = crate::cpu::sample(&watched);
            let run = self.run_in(&settings, mode, files, profile).await?;
            Ok(Run {
                cpu: crate::cpu::time_between(&before, &crate::cpu::sample(&watched)),
                ..run
            })
        }
        .await;
        self.cleanup(&settings).await?;
        result
    }

    async fn run_in(
        &self,
        settings: &ConnectionSettings,
        mode: &str,
        files: &[PathBuf],
        profile: Profile<'_>,
    ) -> Result<Run> {
        let config = Config {
            connection: settings.clone(),
            tuning: self.tuning.clone(),
            rentals_take_stock: false,
        };
        match mode {
            BASELINE | CAREFUL | CAREFUL_KEY_ID | CAREFUL_KEY_ID_VERSION | CAREFUL_UNORDERED | CAREFUL_AS_OURS => {
                let started = Instant::now();
                let (collections, last_write) = if mode == BASELINE {
                    (baseline(settings, files).await?, None)
                } else {
                    let (collections, last_write) = careful(settings, files, Careful::of(mode), started).await?;
                    (collections, Some(last_write))
                };
                let mut times = RunTimes::in_turn(None, started.elapsed().as_secs_f64());
                times.last_write_seconds = last_write;
                Ok(Run::in_process(times, collections))
            }
            DIRECT_LINEAR
            | DIRECT_PARALLEL
            | DIRECT_PARALLEL_TWO_WRITERS
            | DIRECT_PARALLEL_BATCH_1000
            | DIRECT_PARALLEL_BATCH_4000
            | DIRECT_PARALLEL_UNJOURNALED => {
                let mut config = config;
                match mode {
                    DIRECT_PARALLEL_TWO_WRITERS => config.tuning.writers = 2,
                    DIRECT_PARALLEL_BATCH_1000 => config.tuning.batch_size = 1000,
                    DIRECT_PARALLEL_BATCH_4000 => config.tuning.batch_size = 4000,
                    DIRECT_PARALLEL_UNJOURNALED => {
                        config.connection.mongodb_uri = with_uri_options(&settings.mongodb_uri, UNJOURNALED)
                    }
                    _ => {}
                }
                let mode = if mode == DIRECT_LINEAR {
                    Mode::Linear
                } else {
                    Mode::Parallel
                };
                let report = hpn_importer::import_files(&config, files, mode).await?;
                Ok(Run::in_process(
                    RunTimes::in_turn(None, report.total.as_secs_f64()),
                    report.collections,
                ))
            }
            mode if THROUGH_THE_QUEUE.contains(&mode) => {
                let rows = if mode == PARALLEL_ONE_ROW {
                    1
                } else {
                    self.rows_per_message
                };
                let import_mode = if mode == LINEAR { "linear" } else { "parallel" };
                let versions = mode != PARALLEL_UNVERSIONED;
                let published = self.publish(settings, files, rows, versions, profile.stages).await?;
                let importing = if mode == PARALLEL_UNJOURNALED {
                    &ConnectionSettings {
                        mongodb_uri: with_uri_options(&settings.mongodb_uri, UNJOURNALED),
                        ..settings.clone()
                    }
                } else {
                    settings
                };
                let (report, importer_rss) = self.import(importing, import_mode, profile).await?;
                let expected = published["published"].as_u64().unwrap_or(0);
                let processed = report.processed();
                if processed != expected {
                    bail!("{mode}: published {expected} records but the import processed {processed}");
                }
                Ok(Run {
                    times: RunTimes::in_turn(published["seconds"].as_f64(), report.total.as_secs_f64()),
                    collections: report.collections,
                    producer_rss: published["peak_rss_bytes"].as_u64(),
                    importer_rss,
                    producer_stages: serde_json::from_value(published["stages"].clone()).unwrap_or_default(),
                    importer_stages: report.stages,
                    cpu: Vec::new(),
                })
            }
            AS_IT_RUNS => self.as_it_runs(settings, files, profile.stages).await,
            other => bail!("unknown mode {other}"),
        }
    }

    /// [`AS_IT_RUNS`]: `serve` consuming first, then the producer; done
    /// when the importer's counters hold every record published.
    async fn as_it_runs(&self, settings: &ConnectionSettings, files: &[PathBuf], stages: bool) -> Result<Run> {
        let store = Store::connect_to(settings).await?;
        let mut before = Vec::new();
        for kind in RecordKind::ALL {
            before.push(store.count(kind).await?);
        }
        let mut served = crate::served::Served::start(self.serve_command(settings)).await?;
        let started = Instant::now();
        let published = self
            .publish(settings, files, self.rows_per_message, true, stages)
            .await?;
        let publish_seconds = started.elapsed().as_secs_f64();
        let expected = published["published"].as_u64().unwrap_or(0);
        served
            .wait_for_records(expected, std::time::Duration::from_secs(600))
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        let importer_rss = served.peak_rss_bytes();
        let metrics = served.metrics().await?;
        served.stop().await?;
        // The report `serve` would give, from its own counters; each
        // collection's seconds are the whole run's (they overlap).
        let mut collections = Vec::new();
        for (kind, count_before) in RecordKind::ALL.into_iter().zip(before) {
            let outcome = |o: &str| crate::served::records(&metrics, kind.collection(), o);
            let (inserted, updated, deleted, stale) = (
                outcome("written"),
                outcome("updated"),
                outcome("deleted"),
                outcome("stale"),
            );
            let rejected = outcome("dead_lettered");
            collections.push(ImportStats {
                collection: kind.collection().to_string(),
                processed: inserted + updated + deleted + stale + rejected,
                count_before,
                count_after: store.count(kind).await?,
                elapsed: std::time::Duration::from_secs_f64(seconds),
                inserted,
                updated,
                deleted,
                stale,
                rejected,
                messages_left: None,
            });
        }
        store.shutdown().await;
        let stored: u64 = collections.iter().map(|c| c.count_after - c.count_before).sum();
        if stored != expected {
            bail!("{AS_IT_RUNS}: published {expected} records but the store gained {stored}");
        }
        Ok(Run {
            times: RunTimes {
                publish_seconds: Some(publish_seconds),
                import_seconds: seconds,
                publish_overlaps: true,
                last_write_seconds: None,
            },
            collections,
            producer_rss: published["peak_rss_bytes"].as_u64(),
            importer_rss,
            producer_stages: serde_json::from_value(published["stages"].clone()).unwrap_or_default(),
            importer_stages: Vec::new(),
            cpu: Vec::new(),
        })
    }

    /// One of the pipeline's binaries, pointed at `settings`.
    /// `hpn-importer serve` on `settings` with the bench's tuning, on a port it picks.
    pub fn serve_command(&self, settings: &ConnectionSettings) -> Command {
        let mut importer = self.command("hpn-importer", settings, false);
        importer.args(["serve", "--listen", "127.0.0.1:0"]);
        self.tuning_args(&mut importer);
        importer
    }

    pub fn command(&self, bin: &str, settings: &ConnectionSettings, stages: bool) -> Command {
        let mut command = Command::new(self.bin_dir.join(bin));
        command
            .envs(settings.env_vars())
            .env(hpn_common::config::env::PROFILE_STAGES, if stages { "1" } else { "0" })
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        command
    }

    async fn publish(
        &self,
        settings: &ConnectionSettings,
        files: &[PathBuf],
        rows: usize,
        versions: bool,
        stages: bool,
    ) -> Result<Value> {
        let mut command = self.command("hpn-producer", settings, stages);
        command
            .arg("publish")
            .arg("--json")
            .arg("--rows-per-message")
            .arg(rows.to_string());
        if !versions {
            command.arg("--without-versions");
        }
        command.args(files);
        json_output(command).await
    }

    /// Publish `files` with the producer, then import them in parallel:
    /// one timed load of [`PARALLEL`] on a database that may hold records
    /// already (the re-import's loads, see [`crate::reimport`]).
    pub(crate) async fn publish_and_import(&self, settings: &ConnectionSettings, files: &[PathBuf]) -> Result<Run> {
        let published = self
            .publish(settings, files, self.rows_per_message, true, false)
            .await?;
        let (report, importer_rss) = self.import(settings, "parallel", Profile::default()).await?;
        let expected = published["published"].as_u64().unwrap_or(0);
        if report.processed() != expected {
            bail!(
                "published {expected} records but the import processed {}",
                report.processed()
            );
        }
        Ok(Run {
            times: RunTimes::in_turn(published["seconds"].as_f64(), report.total.as_secs_f64()),
            collections: report.collections,
            producer_rss: published["peak_rss_bytes"].as_u64(),
            importer_rss,
            producer_stages: Vec::new(),
            importer_stages: Vec::new(),
            cpu: Vec::new(),
        })
    }

    /// Run [`PARALLEL`] once with other queue settings and `rows` records
    /// per message; the bench's own settings are left as they were.
    pub async fn run_queue_variant(
        &mut self,
        files: &[PathBuf],
        queue_type: QueueType,
        scope: PrefetchScope,
        rows: usize,
        profile: Profile<'_>,
    ) -> Result<Run> {
        let saved = (
            self.connection.queue_type,
            self.tuning.prefetch_scope,
            self.rows_per_message,
        );
        self.connection.queue_type = queue_type;
        self.tuning.prefetch_scope = scope;
        self.rows_per_message = rows;
        let run = self.run(PARALLEL, files, profile).await;
        (
            self.connection.queue_type,
            self.tuning.prefetch_scope,
            self.rows_per_message,
        ) = saved;
        run
    }

    /// The bench's tuning, as `hpn-importer` flags.
    pub fn tuning_args(&self, command: &mut Command) {
        let t = &self.tuning;
        command.arg("--prefetch-scope").arg(t.prefetch_scope.as_str());
        for (flag, value) in [
            ("--batch-size", t.batch_size.to_string()),
            ("--flush-ms", t.flush_ms.to_string()),
            ("--prefetch", t.prefetch.to_string()),
            ("--prefetch-records", t.prefetch_records.to_string()),
            ("--consumers", t.consumers.to_string()),
            ("--writers", t.writers.to_string()),
            ("--idle-ms", t.idle_ms.to_string()),
            ("--memory-budget-mib", t.memory_budget_mib.to_string()),
        ] {
            command.arg(flag).arg(value);
        }
    }

    pub(crate) async fn import(
        &self,
        settings: &ConnectionSettings,
        mode: &str,
        profile: Profile<'_>,
    ) -> Result<(ImportReport, Option<u64>)> {
        let mut command = self.command("hpn-importer", settings, profile.stages);
        command.args(["run", "--json", "--mode", mode]);
        self.tuning_args(&mut command);
        if let Some(path) = profile.cpu {
            command.arg("--profile-cpu").arg(path);
        }
        let report: ImportReport = serde_json::from_value(json_output(command).await?)?;
        let rss = report.peak_rss_bytes;
        Ok((report, rss))
    }
}

/// What to record besides the timings.
#[derive(Clone, Copy, Default)]
pub struct Profile<'a> {
    /// Per-stage timings from the binaries.
    pub stages: bool,
    /// A CPU flamegraph of the importer, written here.
    pub cpu: Option<&'a Path>,
}

impl Run {
    fn in_process(times: RunTimes, collections: Vec<ImportStats>) -> Run {
        Run {
            times,
            collections,
            producer_rss: None,
            importer_rss: None,
            producer_stages: Vec::new(),
            importer_stages: Vec::new(),
            cpu: Vec::new(),
        }
    }
}

/// Connection string options for writes acknowledged before the journal.
const UNJOURNALED: &str = "w=1&journal=false";

/// A MongoDB connection string with `options` added to its query.
fn with_uri_options(uri: &str, options: &str) -> String {
    if uri.contains('?') {
        format!("{uri}&{options}")
    } else if uri.split_once("://").is_some_and(|(_, rest)| rest.contains('/')) {
        format!("{uri}?{options}")
    } else {
        format!("{uri}/?{options}")
    }
}

pub async fn json_output(mut command: Command) -> Result<Value> {
    let output = command.output().await.context("starting a pipeline binary")?;
    if !output.status.success() {
        bail!(
            "{:?} failed: {}",
            command.as_std(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("reading a pipeline binary's JSON")
}

/// What a mode's run needs in place before its clock starts: for the modes
/// through the queue, the queues, and for [`PARALLEL_KEY_INDEX`] the second
/// key index.
async fn prepare(settings: &ConnectionSettings, mode: &str) -> Result<()> {
    if mode == PARALLEL_KEY_INDEX {
        second_key_index(settings).await?;
    }
    if THROUGH_THE_QUEUE.contains(&mode) || mode == AS_IT_RUNS {
        declare_queues(settings).await?;
    }
    Ok(())
}

/// Declare the run's queues before the clock starts, as an operator's
/// queues exist before a load: creating a quorum queue starts its Raft
/// group, about 0.09 s per publish here, which is no part of a load's cost
/// and would weigh on the small sizes only.
pub(crate) async fn declare_queues(settings: &ConnectionSettings) -> Result<()> {
    let connection = broker::connect(&settings.amqp_url, "hpn-bench (declare)").await?;
    settings.topology().declare(&connection).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// A unique index on each collection's business key beside the `_id`, as
/// the store had before issue 14 (under another name than the old one, which
/// the importer refuses as the old shape; a fresh load of distinct keys never
/// trips it, so it costs what it cost then: its upkeep on every insert).
async fn second_key_index(settings: &ConnectionSettings) -> Result<()> {
    let store = Store::connect_to(settings).await?;
    for kind in RecordKind::ALL {
        let keys: mongodb::bson::Document = kind.key_fields().iter().map(|f| (f.to_string(), 1.into())).collect();
        let options = mongodb::options::IndexOptions::builder()
            .unique(true)
            .name("business_key_before_issue_14".to_string())
            .build();
        let model = mongodb::IndexModel::builder().keys(keys).options(options).build();
        store.collection(kind).create_index(model).await?;
    }
    store.shutdown().await;
    Ok(())
}

/// Every record in the files, for the raw limits: the customers file.
pub fn customer_records(file: &Path, at_most: usize) -> Result<Vec<hpn_common::Record>> {
    let source = CsvSource::open_as(file, RecordKind::Customer)?;
    Ok(source.filter_map(|r| r.ok()).take(at_most).map(|r| r.record).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_options_are_added_to_any_shape_of_connection_string() {
        let add = |uri| with_uri_options(uri, "w=1&journal=false");
        assert_eq!(add("mongodb://h:1"), "mongodb://h:1/?w=1&journal=false");
        assert_eq!(add("mongodb://h:1/db"), "mongodb://h:1/db?w=1&journal=false");
        assert_eq!(
            add("mongodb://h:1/?tls=true"),
            "mongodb://h:1/?tls=true&w=1&journal=false"
        );
        assert!(mode_named("parallel-unjournaled") == Some(PARALLEL_UNJOURNALED));
    }
}
