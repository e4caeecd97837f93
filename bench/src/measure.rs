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
use crate::results::{median, Memory, ModeResult, RunTimes, StageProfile};
use anyhow::{bail, Context, Result};
use hpn_common::csv_source::CsvSource;
use hpn_common::profile::StageTime;
use hpn_common::{broker, ConnectionSettings, QueueType, RecordKind};
use hpn_importer::{Config, Mode, PrefetchScope, Tuning};
use hpn_importer::{ImportReport, ImportStats, Store};
use mongodb::bson::RawDocumentBuf;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::process::Command;

/// The modes, in the order they run and are reported.
pub const BASELINE: &str = "baseline: insert_one per row, no queue";
pub const LINEAR: &str = "linear (queue, end to end)";
pub const PARALLEL: &str = "parallel (queue, end to end)";
/// The same as [`PARALLEL`] on collections that also have a unique index on
/// the business key: the store's shape before the key became the `_id`
/// (issue 14), so the pair measures what the second index cost.
pub const PARALLEL_KEY_INDEX: &str = "parallel, plus a unique index on the business key (the store before issue 14)";
/// The same as [`PARALLEL`] with records published without versions: what
/// the importer wrote before the version guard, so the pair measures it.
pub const PARALLEL_UNVERSIONED: &str = "parallel, records without versions";
pub const PARALLEL_ONE_ROW: &str = "parallel, 1 record per message";
/// The same as [`PARALLEL`] with the importer's writes acknowledged before
/// they reach the journal (`w: 1, journal: false` in its connection string):
/// what it wrote before the durable write concern (issue 22), so the pair
/// measures what "acknowledged means journaled" costs.
pub const PARALLEL_UNJOURNALED: &str = "parallel, writes not waiting for the journal (w: 1, journal=false)";
/// The pipeline as it runs: `hpn-importer serve` already consuming when
/// the producer starts, timed from the producer's start (its first row
/// read) until the importer has written every record it published, as its
/// `/metrics` counts them. [`PARALLEL`] publishes everything first and
/// imports after, which is not how the pipeline runs.
pub const AS_IT_RUNS: &str = "as it runs (serve consuming while the producer publishes)";
pub const DIRECT_LINEAR: &str = "direct linear (no queue)";
pub const DIRECT_PARALLEL: &str = "direct parallel (no queue)";
/// What a careful script would do instead of the queue: `insert_many` of
/// 1,000 rows, one task per file, no unique index on the business key.
pub const CAREFUL: &str = "careful loader: insert_many of 1,000, a task per file, no queue, no key index";
// One change each from the careful loader towards what our write path
// sends the database, and from our write path back: the A/B candidates for
// the database's extra work, measured where its core is the limit.
/// [`CAREFUL`] with the business key as a string `_id` instead of an ObjectId.
pub const CAREFUL_KEY_ID: &str = "careful loader, the business key as _id (a string, not an ObjectId)";
/// [`CAREFUL_KEY_ID`] with a version in `_v`, as our documents have.
pub const CAREFUL_KEY_ID_VERSION: &str = "careful loader, the key as _id and a version in _v";
/// [`CAREFUL_KEY_ID_VERSION`] sent unordered, as our insert path sends.
pub const CAREFUL_UNORDERED: &str = "careful loader, key _id, _v, unordered";
/// [`CAREFUL_UNORDERED`] journaled (`j: true`): our insert path's shape,
/// but for what the importer does around it.
pub const CAREFUL_AS_OURS: &str = "careful loader, key _id, _v, unordered and journaled (our insert's shape)";
/// [`DIRECT_PARALLEL`] with two writers per collection instead of one.
pub const DIRECT_PARALLEL_TWO_WRITERS: &str = "direct parallel, 2 writers per collection";
/// [`DIRECT_PARALLEL`] with the careful loader's batches of 1,000 records
/// instead of the importer's 2,000.
pub const DIRECT_PARALLEL_BATCH_1000: &str = "direct parallel, batches of 1,000";
/// [`DIRECT_PARALLEL`] with batches of 4,000 records instead of 2,000.
pub const DIRECT_PARALLEL_BATCH_4000: &str = "direct parallel, batches of 4,000";
/// [`DIRECT_PARALLEL`] with writes acknowledged before the journal.
pub const DIRECT_PARALLEL_UNJOURNALED: &str = "direct parallel, writes not waiting for the journal";
pub const MODES: [&str; 11] = [
    BASELINE,
    CAREFUL,
    LINEAR,
    PARALLEL,
    AS_IT_RUNS,
    PARALLEL_KEY_INDEX,
    PARALLEL_UNVERSIONED,
    PARALLEL_UNJOURNALED,
    PARALLEL_ONE_ROW,
    DIRECT_LINEAR,
    DIRECT_PARALLEL,
];

/// The modes measured with the database on its own core: the comparison
/// modes, then the A/B candidates for the database's extra work.
pub const PINNED_MODES: [&str; 13] = [
    CAREFUL,
    DIRECT_PARALLEL,
    PARALLEL,
    AS_IT_RUNS,
    PARALLEL_ONE_ROW,
    CAREFUL_KEY_ID,
    CAREFUL_KEY_ID_VERSION,
    CAREFUL_UNORDERED,
    CAREFUL_AS_OURS,
    DIRECT_PARALLEL_TWO_WRITERS,
    DIRECT_PARALLEL_BATCH_1000,
    DIRECT_PARALLEL_BATCH_4000,
    DIRECT_PARALLEL_UNJOURNALED,
];

/// The modes that publish, then import through RabbitMQ.
const THROUGH_THE_QUEUE: [&str; 6] = [
    LINEAR,
    PARALLEL,
    PARALLEL_KEY_INDEX,
    PARALLEL_UNVERSIONED,
    PARALLEL_UNJOURNALED,
    PARALLEL_ONE_ROW,
];

/// The modes by the short names `hpn-bench compare` takes.
pub const SHORT_NAMES: [(&str, &str); 19] = [
    ("baseline", BASELINE),
    ("careful", CAREFUL),
    ("careful-key-id", CAREFUL_KEY_ID),
    ("careful-key-id-version", CAREFUL_KEY_ID_VERSION),
    ("careful-unordered", CAREFUL_UNORDERED),
    ("careful-as-ours", CAREFUL_AS_OURS),
    ("linear", LINEAR),
    ("parallel", PARALLEL),
    ("as-it-runs", AS_IT_RUNS),
    ("parallel-key-index", PARALLEL_KEY_INDEX),
    ("parallel-unversioned", PARALLEL_UNVERSIONED),
    ("parallel-unjournaled", PARALLEL_UNJOURNALED),
    ("parallel-one-row", PARALLEL_ONE_ROW),
    ("direct-linear", DIRECT_LINEAR),
    ("direct-parallel", DIRECT_PARALLEL),
    ("direct-parallel-two-writers", DIRECT_PARALLEL_TWO_WRITERS),
    ("direct-parallel-batch-1000", DIRECT_PARALLEL_BATCH_1000),
    ("direct-parallel-batch-4000", DIRECT_PARALLEL_BATCH_4000),
    ("direct-parallel-unjournaled", DIRECT_PARALLEL_UNJOURNALED),
];

/// A mode by its short name (see [`SHORT_NAMES`]).
pub fn mode_named(name: &str) -> Option<&'static str> {
    SHORT_NAMES
        .iter()
        .find(|(short, _)| *short == name)
        .map(|(_, mode)| *mode)
}

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
        let store = Store::connect(&settings.mongodb_uri, &settings.database).await?;
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
        let store = Store::connect(&settings.mongodb_uri, &settings.database).await?;
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
    let store = Store::connect(&settings.mongodb_uri, &settings.database).await?;
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

/// The old loaders, rebuilt faithfully: read each CSV file and `insert_one`
/// every row, one file after the other, no queue and no batching (and, as
/// in the old store, no unique indexes to maintain).
async fn baseline(settings: &ConnectionSettings, files: &[PathBuf]) -> Result<Vec<ImportStats>> {
    let store = Store::connect(&settings.mongodb_uri, &settings.database).await?;
    let mut stats = Vec::new();
    for file in files {
        let source = CsvSource::open(file)?;
        let kind = source.kind();
        let collection = store.collection(kind);
        let count_before = store.count(kind).await?;
        let started = Instant::now();
        let (mut inserted, mut rejected) = (0, 0);
        for row in source {
            match row {
                Ok(row) => {
                    collection
                        .insert_one(hpn_importer::store::to_document(&row.record))
                        .await?;
                    inserted += 1;
                }
                Err(_) => rejected += 1,
            }
        }
        let elapsed = started.elapsed();
        stats.push(ImportStats {
            collection: kind.collection().to_string(),
            processed: inserted + rejected,
            count_before,
            count_after: store.count(kind).await?,
            elapsed,
            inserted,
            updated: 0,
            deleted: 0,
            stale: 0,
            rejected,
            messages_left: Some(0),
        });
    }
    Ok(stats)
}

/// Rows per `insert_many` of the careful loader.
const CAREFUL_BATCH: usize = 1000;

/// The careful loader a Python programmer would write with pymongo, as the
/// bar the queue must clear: each file read by its own task and written
/// with `insert_many` of [`CAREFUL_BATCH`] rows (ordered, the driver's
/// default), into collections with only MongoDB's own `_id` index: no
/// unique key, so no versions, no idempotence, no dead letters. Its
/// documents are built the importer's way (straight into BSON bytes), so
/// the bar is not lowered by a slower client.
///
/// Its variants ([`Careful`]) each change one thing towards the documents
/// and the writes our insert path sends.
///
/// Returns the figures and the seconds from `run_started` to the last record
/// written (the count after each collection comes later).
async fn careful(
    settings: &ConnectionSettings,
    files: &[PathBuf],
    shape: Careful,
    run_started: Instant,
) -> Result<(Vec<ImportStats>, f64)> {
    let store = Store::connect(&settings.mongodb_uri, &settings.database).await?;
    let tasks = files.iter().map(|file| {
        let store = store.clone();
        let file = file.clone();
        tokio::spawn(async move {
            let source = CsvSource::open(&file)?;
            let kind = source.kind();
            let mut options = mongodb::options::CollectionOptions::default();
            if shape.journaled {
                options.write_concern = Some(mongodb::options::WriteConcern::builder().journal(true).build());
            }
            let collection = store
                .database()
                .collection_with_options::<RawDocumentBuf>(kind.collection(), options);
            let count_before = store.count(kind).await?;
            let started = Instant::now();
            let (mut inserted, mut rejected) = (0u64, 0u64);
            let mut batch = Vec::with_capacity(CAREFUL_BATCH);
            let mut rows = source.into_iter();
            loop {
                let row = rows.next();
                match row {
                    Some(Ok(ref row)) => batch.push(shape.document(&row.record, inserted + batch.len() as u64)),
                    Some(Err(_)) => rejected += 1,
                    None => {}
                }
                if batch.len() == CAREFUL_BATCH || (row.is_none() && !batch.is_empty()) {
                    inserted += batch.len() as u64;
                    collection
                        .insert_many(std::mem::take(&mut batch))
                        .ordered(!shape.unordered)
                        .await?;
                }
                if row.is_none() {
                    break;
                }
            }
            let written = run_started.elapsed().as_secs_f64();
            let stats = ImportStats {
                collection: kind.collection().to_string(),
                processed: inserted + rejected,
                count_before,
                count_after: store.count(kind).await?,
                elapsed: started.elapsed(),
                inserted,
                updated: 0,
                deleted: 0,
                stale: 0,
                rejected,
                messages_left: Some(0),
            };
            anyhow::Ok((stats, written))
        })
    });
    let (mut stats, mut last_write) = (Vec::new(), 0.0f64);
    for done in futures::future::join_all(tasks).await {
        let (collection, written) = done.context("a careful loader task")??;
        stats.push(collection);
        last_write = last_write.max(written);
    }
    Ok((stats, last_write))
}

/// What a careful loader's variant sends (see [`CAREFUL`] and the modes after it).
#[derive(Clone, Copy, Default)]
struct Careful {
    /// The business key as `_id` (else the driver's ObjectId).
    key_id: bool,
    /// A version in `_v`.
    version: bool,
    /// `insert_many` unordered (else ordered, the driver's default).
    unordered: bool,
    /// Write concern `j: true` (else the server's default, `w: 1`).
    journaled: bool,
}

impl Careful {
    fn of(mode: &str) -> Careful {
        let key_id = mode != CAREFUL;
        let version = key_id && mode != CAREFUL_KEY_ID;
        let unordered = mode == CAREFUL_UNORDERED || mode == CAREFUL_AS_OURS;
        Careful {
            key_id,
            version,
            unordered,
            journaled: mode == CAREFUL_AS_OURS,
        }
    }

    /// The document for `record`, the `n`th of its file.
    fn document(self, record: &hpn_common::Record, n: u64) -> RawDocumentBuf {
        match (self.key_id, self.version) {
            (false, _) => hpn_importer::store::fields_raw(record),
            (true, false) => hpn_importer::store::stored_raw(record),
            (true, true) => hpn_importer::store::stored_raw(&record.clone().with_version(n as i64 + 1)),
        }
    }
}

/// Summarise the repeats of one mode: medians, spread, the median run's tuples.
pub fn summarise(mode: &str, records: u64, runs: &[Run]) -> ModeResult {
    let totals: Vec<f64> = runs.iter().map(|r| r.times.total()).collect();
    let total_seconds = median(&totals);
    let import_seconds = median(&runs.iter().map(|r| r.times.import_seconds).collect::<Vec<_>>());
    let publishes: Vec<f64> = runs.iter().filter_map(|r| r.times.publish_seconds).collect();
    let median_run = runs
        .iter()
        .min_by(|a, b| {
            (a.times.total() - total_seconds)
                .abs()
                .total_cmp(&(b.times.total() - total_seconds).abs())
        })
        .expect("at least one run");
    ModeResult {
        mode: mode.to_string(),
        records,
        runs: runs.iter().map(|r| r.times.clone()).collect(),
        publish_seconds: (!publishes.is_empty()).then(|| median(&publishes)),
        import_seconds,
        total_seconds,
        min_seconds: totals.iter().copied().fold(f64::INFINITY, f64::min),
        max_seconds: totals.iter().copied().fold(0.0, f64::max),
        records_per_s: records as f64 / total_seconds.max(1e-9),
        import_records_per_s: records as f64 / import_seconds.max(1e-9),
        collections: median_run.collections.clone(),
        cpu_seconds: median_cpu(runs),
        last_write_seconds: runs
            .iter()
            .map(|r| r.times.last_write_seconds)
            .collect::<Option<Vec<f64>>>()
            .map(|last| median(&last)),
    }
}

/// The median CPU seconds of each process over the runs.
fn median_cpu(runs: &[Run]) -> Vec<CpuTime> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .cpu
        .iter()
        .map(|t| CpuTime {
            process: t.process.clone(),
            seconds: median(
                &runs
                    .iter()
                    .filter_map(|r| r.cpu.iter().find(|c| c.process == t.process).map(|c| c.seconds))
                    .collect::<Vec<_>>(),
            ),
        })
        .collect()
}

/// The largest peak memory over the runs of a mode, if the mode ran child processes.
pub fn memory(records_per_file: usize, mode: &str, runs: &[Run]) -> Option<Memory> {
    let producer = runs.iter().filter_map(|r| r.producer_rss).max();
    let importer = runs.iter().filter_map(|r| r.importer_rss).max();
    (producer.is_some() || importer.is_some()).then(|| Memory {
        records_per_file,
        mode: mode.to_string(),
        producer_peak_rss_bytes: producer,
        importer_peak_rss_bytes: importer,
    })
}

pub fn stage_profile(mode: &str, records_per_file: usize, run: &Run) -> StageProfile {
    StageProfile {
        mode: mode.to_string(),
        records_per_file,
        producer: run.producer_stages.clone(),
        importer: run.importer_stages.clone(),
    }
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
