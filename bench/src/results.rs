//! The results file: every figure of one benchmark run, written as JSON to
//! `bench/results/<date>-<host>.json`, and read back to write `findings.md`.

use crate::layout::{Layout, Pinning};
use hpn_common::profile::StageTime;
use hpn_importer::contention::ScenarioRow;
use hpn_importer::ImportStats;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// UTC date and time the run started (RFC 3339).
    pub started: String,
    pub host: String,
    /// The commit measured (`git rev-parse HEAD`), when run from a checkout.
    pub commit: Option<String>,
    pub machine: Machine,
    pub servers: Servers,
    pub settings: Settings,
    pub limits: Limits,
    pub sizes: Vec<SizeResults>,
    /// Per-stage timings from one extra, profiled run per mode.
    pub profiles: Vec<StageProfile>,
    /// Peak memory of each process, per size and mode.
    pub memory: Vec<Memory>,
    /// Parallel imports by queue type, prefetch scope and records per
    /// message (absent from results recorded before queue types existed).
    #[serde(default)]
    pub queues: Vec<QueueResult>,
    /// The memory budget under a flood of maximum-size messages and its
    /// cost at one record per message (absent in older files).
    #[serde(default)]
    pub budget: Option<BudgetResult>,
    pub targets: Vec<Target>,
    pub contention: Vec<ScenarioRow>,
    /// `hpn-importer serve` at steady publish rates (absent in older files).
    #[serde(default)]
    pub latency: Option<Latency>,
    /// How the cores were shared while everything above was measured.
    #[serde(default)]
    pub shared: Option<Pinning>,
    /// The comparison modes and the A/B candidates with the database on a
    /// core of its own (absent in older files).
    #[serde(default)]
    pub own_core: Option<LayoutResults>,
    /// File names (beside the results file) of the chart and the flamegraph.
    pub chart: String,
    pub flamegraph: Option<String>,
    /// The importer's flamegraph from one-record messages on quorum queues.
    #[serde(default)]
    pub one_record_flamegraph: Option<String>,
    /// The daily re-import against the careful upsert loader (see
    /// [`crate::reimport`]); absent from runs before it was measured.
    #[serde(default)]
    pub reimport: Option<ReimportResults>,
    /// What `--sync-on-commit` costs the pipeline (see
    /// [`crate::durability`]); absent from runs before it was measured.
    #[serde(default)]
    pub durability: Option<DurabilityResults>,
    /// The nemesis's long runs on the partition cluster (see
    /// [`crate::partitions`]); absent from runs before they were recorded.
    #[serde(default)]
    pub partitions: Option<PartitionResults>,
}

/// Modes measured in one layout of the processes on the cores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayoutResults {
    pub pinning: Pinning,
    pub records_per_file: usize,
    pub repeats: usize,
    pub modes: Vec<ModeResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Servers {
    pub rabbitmq: String,
    pub mongodb: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub repeats: usize,
    /// The producer's default rows per message, used by the linear and parallel modes.
    pub rows_per_message: usize,
    pub consumers: usize,
    pub writers: usize,
    pub batch_size: usize,
    pub prefetch: u16,
    /// The queue type and prefetch scope of every mode but the queue comparison.
    #[serde(default)]
    pub queue_type: String,
    #[serde(default)]
    pub prefetch_scope: String,
}

/// What the servers take, measured in this run with the same client libraries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Limits {
    /// Documents in the `insert_many` measurement.
    pub documents: usize,
    /// (concurrent batches, documents/s), batches of 1,000.
    pub insert_many: Vec<(usize, f64)>,
    /// The median of [`Limits::insert_many_rounds`] (older files: the best
    /// of [`Limits::insert_many`]).
    pub insert_many_per_s: f64,
    /// Rounds at the best concurrency of [`Limits::insert_many`], in the
    /// order run: the figure two targets divide by, so its spread is shown.
    #[serde(default)]
    pub insert_many_rounds: Vec<f64>,
    #[serde(default)]
    pub insert_many_concurrency: usize,
    /// Whole-machine CPU seconds per document of those rounds (median).
    #[serde(default)]
    pub insert_many_cpu_s_per_doc: Option<f64>,
    /// The same documents as keyed upserts (`Store::upsert`, 2 batches at a
    /// time): why the importer inserts first and upserts only existing keys.
    pub upsert_per_s: f64,
    /// Confirmed persistent publishes of one record per message, best of the tried settings.
    pub publish_one_row_per_s: f64,
    /// Consumed (and acknowledged) messages of one record each.
    pub consume_one_row_per_s: f64,
    /// Records/s published and consumed in messages of 100 records.
    pub publish_hundred_rows_records_per_s: f64,
    pub consume_hundred_rows_records_per_s: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SizeResults {
    /// Records per file (three files).
    pub records_per_file: usize,
    pub modes: Vec<ModeResult>,
}

/// One mode at one size, over the repeats.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModeResult {
    pub mode: String,
    /// Records moved per run (all files).
    pub records: u64,
    pub runs: Vec<RunTimes>,
    /// Medians over the runs, in seconds.
    pub publish_seconds: Option<f64>,
    pub import_seconds: f64,
    pub total_seconds: f64,
    /// Fastest and slowest total, in seconds.
    pub min_seconds: f64,
    pub max_seconds: f64,
    /// Records per second, end to end (by the median total) and for the import phase alone.
    pub records_per_s: f64,
    pub import_records_per_s: f64,
    /// HP Norton's figures per collection, from the median run.
    pub collections: Vec<ImportStats>,
    /// Median CPU seconds per process over the runs (absent in older files).
    #[serde(default)]
    pub cpu_seconds: Vec<crate::cpu::CpuTime>,
    /// Median time to the last record written, where a run goes on after
    /// it (see [`RunTimes::last_write_seconds`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write_seconds: Option<f64>,
}

impl ModeResult {
    /// Records per second up to the last record written: what the
    /// pipeline as it runs is timed by, which stops its clock there.
    pub fn written_records_per_s(&self) -> f64 {
        self.records as f64 / self.last_write_seconds.unwrap_or(self.total_seconds).max(1e-9)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunTimes {
    pub publish_seconds: Option<f64>,
    /// After the publish; or, where the publish overlaps the import, from
    /// the start of the publish to the last record written.
    pub import_seconds: f64,
    /// The import ran while the publish did (see `measure::AS_IT_RUNS`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish_overlaps: bool,
    /// From the start to the last record written, where the run goes on
    /// after it: the careful loader counts its collections after writing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write_seconds: Option<f64>,
}

impl RunTimes {
    /// A publish, then an import, or neither (`publish: None`).
    pub fn in_turn(publish_seconds: Option<f64>, import_seconds: f64) -> RunTimes {
        RunTimes {
            publish_seconds,
            import_seconds,
            publish_overlaps: false,
            last_write_seconds: None,
        }
    }

    pub fn total(&self) -> f64 {
        if self.publish_overlaps {
            self.import_seconds
        } else {
            self.publish_seconds.unwrap_or(0.0) + self.import_seconds
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageProfile {
    pub mode: String,
    pub records_per_file: usize,
    pub producer: Vec<StageTime>,
    pub importer: Vec<StageTime>,
}

/// One cell of the queue comparison: a parallel import (publish first, then
/// import) with these queue settings, and the broker's raw consume rate for
/// the same queue type and message size, measured in the same run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueResult {
    pub queue_type: String,
    pub prefetch_scope: String,
    pub rows_per_message: usize,
    pub records: u64,
    /// Medians over the runs.
    pub import_records_per_s: f64,
    pub records_per_s: f64,
    pub importer_peak_rss_bytes: Option<u64>,
    /// Records/s a bare consumer takes from this queue type in messages of this size.
    pub raw_consume_records_per_s: f64,
    /// Import / min(raw consume, raw insert_many).
    pub ratio: f64,
    /// The most an import can reach on this machine's cores, from the CPU
    /// the raw consume and the raw insert_many cost per record (see
    /// `cpu_ceiling` in main.rs); `None` in older files.
    #[serde(default)]
    pub cpu_ceiling_records_per_s: Option<f64>,
}

impl QueueResult {
    /// The CPU ceiling over the same denominator as [`QueueResult::ratio`]:
    /// below a target's bar, no importer can meet the bar on these cores.
    pub fn ceiling_ratio(&self, insert_many_per_s: f64) -> Option<f64> {
        self.cpu_ceiling_records_per_s
            .map(|ceiling| ceiling / self.raw_consume_records_per_s.min(insert_many_per_s))
    }
}

/// The memory budget's hold and cost (see `crate::budget`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BudgetResult {
    pub budget_mib: usize,
    /// One-record messages of `flood_body_bytes`, each an invalid record,
    /// then `flood_good_records` good ones, imported by a one-shot parallel run.
    pub flood_messages: usize,
    pub flood_body_bytes: usize,
    pub flood_good_records: usize,
    pub flood_peak_rss_bytes: Option<u64>,
    /// The same flood without a budget (the importer before the budget).
    pub flood_unbounded_peak_rss_bytes: Option<u64>,
    pub flood_seconds: f64,
    /// One-record messages, parallel import, records/s, medians of
    /// alternating runs with the budget and without.
    pub one_record_queue_type: String,
    pub one_record_records: u64,
    pub one_record_import_per_s: f64,
    pub one_record_unbounded_import_per_s: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Memory {
    pub records_per_file: usize,
    pub mode: String,
    pub producer_peak_rss_bytes: Option<u64>,
    pub importer_peak_rss_bytes: Option<u64>,
}

/// One of issue 4's bars, with the figure measured against it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub description: String,
    /// The measured value: a ratio, or MiB for memory targets.
    pub measured: Option<f64>,
    pub bar: String,
    pub met: Option<bool>,
}

impl Target {
    /// A target met when `measured` is at least `bar`.
    pub fn at_least(name: &str, description: &str, measured: Option<f64>, bar: f64) -> Target {
        Target {
            name: name.into(),
            description: description.into(),
            measured,
            bar: format!("≥ {bar}"),
            met: measured.map(|m| m >= bar),
        }
    }
}

/// The median of some numbers (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if !n.is_multiple_of(2) => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The rate the latency target is set at (messages/s).
pub const TARGET_RATE: u32 = 5_000;

/// One rate held for one step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencyStep {
    /// Messages/s asked of the publisher.
    pub target_rate: u32,
    /// Messages/s it reached.
    pub achieved_rate: f64,
    pub messages: u64,
    /// From the last publish until every record was written.
    pub drain_seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The upper bound of the histogram bucket holding the p99: the p99 is
    /// certainly no more than this.
    pub p99_bucket_ms: f64,
    /// One batch write to MongoDB (`batch_write_seconds`): where the time goes.
    #[serde(default)]
    pub write_p50_ms: f64,
    #[serde(default)]
    pub write_p99_ms: f64,
    #[serde(default)]
    pub batches: u64,
    /// Cores each process used while publishing and writing.
    #[serde(default)]
    pub cpu: Vec<crate::cpu::CpuUse>,
    pub sustained: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Latency {
    /// One record per message; settings as in the rest of the run.
    pub steps: Vec<LatencyStep>,
}

impl Latency {
    pub fn at_target_rate(&self) -> Option<&LatencyStep> {
        self.steps.iter().find(|s| s.target_rate == TARGET_RATE)
    }

    /// The highest rate sustained.
    pub fn max_sustained(&self) -> Option<&LatencyStep> {
        self.steps.iter().filter(|s| s.sustained).max_by_key(|s| s.target_rate)
    }
}

/// `n` rounded, its thousands grouped with commas (1,234,567).
pub fn thousands(n: f64) -> String {
    let n = n.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The re-import's modes and scenarios, as recorded (see [`crate::reimport`]).
pub const CAREFUL_UPSERT: &str =
    "careful upsert loader: ReplaceOne upserts by _id, ordered batches of 1,000, a task per file (mongoimport --mode upsert)";
pub const OURS: &str = "parallel (queue, end to end)";

pub const FIRST_LOAD: &str = "first load into an empty store";
pub const REPLAY: &str = "unchanged replay (same versions: all stale)";
pub const DELTA: &str = "daily delta (full export, one row in ten changed)";
pub const CHANGED: &str = "changed export (every row changed)";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReimportResults {
    /// When this measurement started, and at which commit.
    pub started: String,
    pub commit: Option<String>,
    pub records_per_file: usize,
    pub repeats: usize,
    pub layouts: Vec<ReimportLayout>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReimportLayout {
    pub layout: String,
    pub scenarios: Vec<ReimportScenario>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReimportScenario {
    pub scenario: String,
    /// [`CAREFUL_UPSERT`] first, then [`OURS`].
    pub modes: Vec<ModeResult>,
}

impl ReimportScenario {
    /// Ours against the careful upsert loader, by records per second end to end.
    pub fn ratio(&self) -> Option<f64> {
        let careful = self.modes.iter().find(|m| m.mode == CAREFUL_UPSERT)?;
        let ours = self.modes.iter().find(|m| m.mode == OURS)?;
        Some(ours.records_per_s / careful.records_per_s)
    }
}

impl ReimportResults {
    pub fn scenario(&self, layout: Layout, scenario: &str) -> Option<&ReimportScenario> {
        self.layouts
            .iter()
            .find(|l| l.layout == layout.as_str())?
            .scenarios
            .iter()
            .find(|s| s.scenario == scenario)
    }
}

/// The durability measurement's servers, as recorded (see [`crate::durability`]).
pub const UNSYNCED: &str = "without --sync-on-commit (j:true before the disk)";
pub const SYNCED: &str = "with --sync-on-commit (as scripts/services starts it)";
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DurabilityResults {
    /// When this measurement started, and at which commit.
    pub started: String,
    pub commit: Option<String>,
    pub records_per_file: usize,
    pub repeats: usize,
    pub scenarios: Vec<DurabilityScenario>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DurabilityScenario {
    pub scenario: String,
    /// [`UNSYNCED`] first, then [`SYNCED`].
    pub servers: Vec<ModeResult>,
}

impl DurabilityScenario {
    /// The synced server's speed as a share of the other's (records per second).
    pub fn ratio(&self) -> Option<f64> {
        Some(self.server(SYNCED)?.records_per_s / self.server(UNSYNCED)?.records_per_s)
    }

    pub fn server(&self, name: &str) -> Option<&ModeResult> {
        self.servers.iter().find(|s| s.mode == name)
    }
}

impl DurabilityResults {
    pub fn scenario(&self, name: &str) -> Option<&DurabilityScenario> {
        self.scenarios.iter().find(|s| s.scenario == name)
    }
}

/// The nemesis's runs on the partition cluster, as `scripts/nemesis`
/// recorded them (see [`crate::partitions`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartitionResults {
    /// When they were recorded here, and at which commit.
    pub recorded: String,
    pub commit: Option<String>,
    pub runs: Vec<NemesisRun>,
}

/// One run of `tests/tests/partition.rs`'s nemesis: two `serve` importers
/// racing on the same keys while the producer publishes the same export
/// again and again, through random cuts and a SIGKILL of one importer. A
/// run that failed records only that it did (its test's message is in the
/// script's log).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NemesisRun {
    pub broker: String,
    pub passed: bool,
    /// How long the nemesis cut, and the seed that replays its cuts.
    pub seconds: u64,
    pub seed: u64,
    pub cuts: u64,
    /// Nodes `scripts/services partition recover` restarted after a heal,
    /// as an operator would (see `scripts/lib/services/partition`).
    pub node_restarts: u64,
    pub publishes: u64,
    pub records_per_publish: u64,
    /// Publishes that lost their connection and went on after the last
    /// confirmed row.
    pub resumed: u64,
    pub importers_killed: u64,
    pub keys: u64,
    /// Keys not at the newest version published once the store settled
    /// (`None` for a run that failed before it could tell).
    pub lost: Option<u64>,
    /// Messages in the dead-letter queue at the end.
    pub dead_lettered: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn a_mode_timed_to_its_last_write_is_rated_by_it_and_older_files_by_their_total() {
        let json = r#"{"mode":"m","records":300,"runs":[],"publish_seconds":null,"import_seconds":4.0,
            "total_seconds":4.0,"min_seconds":4.0,"max_seconds":4.0,"records_per_s":75.0,
            "import_records_per_s":75.0,"collections":[]}"#;
        let mut mode: ModeResult = serde_json::from_str(json).unwrap();
        assert_eq!(mode.written_records_per_s(), 75.0, "no last write recorded: the total");
        mode.last_write_seconds = Some(3.0);
        assert_eq!(mode.written_records_per_s(), 100.0);
        assert_eq!(mode.records_per_s, 75.0, "the end-to-end rate is unchanged");
    }
}
