//! The figures HP Norton asked for, per collection and per run: records
//! processed, count before, count after and seconds taken, plus how many
//! records were inserted, updated, deleted, stale (an equal or newer
//! version was already stored, so nothing changed) or rejected. Printed as
//! a table for people and as JSON for scripts.
//!
//! The counts before and after are of live documents: a deleted key's
//! tombstone is not counted (see `store::live`), so a delete lowers the
//! count and a record that brings a deleted key back raises it, though it
//! counts as updated (its key had a document, the tombstone).

use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, Table};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One collection's result of one import run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportStats {
    pub collection: String,
    /// Records taken from the queue and handled (inserted + updated +
    /// deleted + stale + rejected).
    pub processed: u64,
    pub count_before: u64,
    pub count_after: u64,
    /// Wall time from this collection's first read to its last write.
    #[serde(with = "hpn_common::seconds", rename = "seconds")]
    pub elapsed: Duration,
    pub inserted: u64,
    pub updated: u64,
    /// Deletes applied (the key's document is now a tombstone).
    #[serde(default)]
    pub deleted: u64,
    /// Records that changed nothing: the store held an equal or newer version.
    #[serde(default)]
    pub stale: u64,
    /// Records refused (invalid) and sent to the dead-letter queue.
    pub rejected: u64,
    /// Messages still ready in the collection's queue when the run ended,
    /// as the broker counted them after this run's consumers had stopped;
    /// `None` when the broker gave no sure count (see
    /// `source::drain`). Anything but `Some(0)` means the run is not done:
    /// the command exits with code 5.
    #[serde(default = "drained")]
    pub messages_left: Option<u64>,
}

/// What reports written before `messages_left` existed meant.
fn drained() -> Option<u64> {
    Some(0)
}

impl ImportStats {
    /// The four values of the brief: (processed, before, after, seconds).
    pub fn tuple(&self) -> (u64, u64, u64, f64) {
        (
            self.processed,
            self.count_before,
            self.count_after,
            self.elapsed.as_secs_f64(),
        )
    }

    /// Records handled per second (0 when nothing took measurable time).
    pub fn records_per_second(&self) -> f64 {
        rate(self.processed, self.elapsed)
    }
}

/// Records per second, 0 for an empty interval.
pub fn rate(records: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        records as f64 / secs
    } else {
        0.0
    }
}

/// Everything one import run reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    /// `linear` or `parallel`.
    pub mode: String,
    /// Customers, then products, then rentals.
    pub collections: Vec<ImportStats>,
    /// Wall time of the whole run (in parallel mode, less than the sum).
    #[serde(with = "hpn_common::seconds", rename = "total_seconds")]
    pub total: Duration,
    /// The process's peak resident memory, where the platform tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// Per-stage timings, when stage profiling was on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<hpn_common::profile::StageTime>,
}

impl ImportReport {
    pub fn processed(&self) -> u64 {
        self.collections.iter().map(|s| s.processed).sum()
    }

    /// Whether the broker said every queue of the run was empty at its end.
    pub fn drained(&self) -> bool {
        self.collections.iter().all(|s| s.messages_left == Some(0))
    }

    /// The queues not known to be empty, in words for an operator; `None`
    /// when every queue was drained.
    pub fn not_drained(&self) -> Option<String> {
        let left: Vec<String> = self
            .collections
            .iter()
            .filter_map(|s| match s.messages_left {
                Some(0) => None,
                Some(n) => Some(format!("{}: {n} messages still queued", s.collection)),
                None => Some(format!("{}: the broker gave no sure count of its queue", s.collection)),
            })
            .collect();
        (!left.is_empty()).then(|| {
            format!(
                "the run is not done ({}); the figures above count only what was imported. Run it again",
                left.join("; ")
            )
        })
    }

    /// A table for people.
    pub fn to_table(&self) -> String {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
            "collection",
            "processed",
            "count before",
            "count after",
            "seconds",
            "inserted",
            "updated",
            "deleted",
            "stale",
            "rejected",
            "records/s",
            "left in queue",
        ]);
        let row = |name: &str,
                   processed,
                   before: String,
                   after: String,
                   elapsed: Duration,
                   [ins, upd, del, stale, rej]: [u64; 5],
                   left: String| {
            vec![
                name.to_string(),
                format!("{processed}"),
                before,
                after,
                format!("{:.3}", elapsed.as_secs_f64()),
                format!("{ins}"),
                format!("{upd}"),
                format!("{del}"),
                format!("{stale}"),
                format!("{rej}"),
                format!("{:.0}", rate(processed, elapsed)),
                left,
            ]
        };
        let left = |messages: Option<u64>| messages.map_or_else(|| "unknown".to_string(), |n| n.to_string());
        for s in &self.collections {
            table.add_row(row(
                &s.collection,
                s.processed,
                s.count_before.to_string(),
                s.count_after.to_string(),
                s.elapsed,
                [s.inserted, s.updated, s.deleted, s.stale, s.rejected],
                left(s.messages_left),
            ));
        }
        let sum = |f: fn(&ImportStats) -> u64| self.collections.iter().map(f).sum::<u64>();
        table.add_row(row(
            "total (wall time)",
            self.processed(),
            sum(|s| s.count_before).to_string(),
            sum(|s| s.count_after).to_string(),
            self.total,
            [
                sum(|s| s.inserted),
                sum(|s| s.updated),
                sum(|s| s.deleted),
                sum(|s| s.stale),
                sum(|s| s.rejected),
            ],
            if self.drained() {
                "0".into()
            } else {
                "not drained".into()
            },
        ));
        for column in 1..12 {
            if let Some(c) = table.column_mut(column) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        match self.not_drained() {
            None => format!("{} import\n{table}", self.mode),
            Some(why) => format!("{} import\n{table}\nNOT DONE: {why}", self.mode),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ImportReport {
        ImportReport {
            mode: "parallel".into(),
            collections: vec![
                ImportStats {
                    collection: "customers".into(),
                    processed: 1000,
                    count_before: 0,
                    count_after: 998,
                    elapsed: Duration::from_millis(500),
                    inserted: 998,
                    updated: 0,
                    deleted: 0,
                    stale: 0,
                    rejected: 2,
                    messages_left: Some(0),
                },
                ImportStats {
                    collection: "products".into(),
                    processed: 12,
                    count_before: 10,
                    count_after: 8,
                    elapsed: Duration::from_millis(20),
                    inserted: 0,
                    updated: 7,
                    deleted: 2,
                    stale: 3,
                    rejected: 0,
                    messages_left: Some(0),
                },
            ],
            total: Duration::from_millis(510),
            peak_rss_bytes: None,
            stages: Vec::new(),
        }
    }

    #[test]
    fn tuple_holds_the_four_figures_of_the_brief() {
        assert_eq!(report().collections[0].tuple(), (1000, 0, 998, 0.5));
        assert_eq!(report().collections[0].records_per_second(), 2000.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
    }

    #[test]
    fn json_uses_seconds_and_round_trips() {
        let json = report().to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["collections"][0]["seconds"], 0.5);
        assert_eq!(value["total_seconds"], 0.51);
        assert_eq!(value["collections"][1]["count_before"], 10);
        assert_eq!(value["collections"][0]["messages_left"], 0);
        let back: ImportReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report());
    }

    #[test]
    fn a_queue_left_or_unknown_is_said_in_the_table_the_json_and_the_verdict() {
        let mut report = report();
        assert!(report.drained() && report.not_drained().is_none());
        report.collections[0].messages_left = Some(27_000);
        report.collections[1].messages_left = None;
        assert!(!report.drained());
        let why = report.not_drained().unwrap();
        assert!(why.contains("customers: 27000 messages still queued"), "{why}");
        assert!(why.contains("products: the broker gave no sure count"), "{why}");
        let table = report.to_table();
        assert!(
            table.contains("27000") && table.contains("unknown") && table.contains("NOT DONE"),
            "{table}"
        );
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(value["collections"][0]["messages_left"], 27_000);
        assert!(value["collections"][1]["messages_left"].is_null());
        let old = r#"{"collection":"c","processed":1,"count_before":0,"count_after":1,"seconds":0.1,
                     "inserted":1,"updated":0,"rejected":0}"#;
        let old: ImportStats = serde_json::from_str(old).unwrap();
        assert_eq!(
            old.messages_left,
            Some(0),
            "reports from before the field were drained runs"
        );
    }

    #[test]
    fn table_lists_every_collection_and_a_total() {
        let table = report().to_table();
        assert!(table.starts_with("parallel import"));
        for needle in [
            "customers",
            "products",
            "total (wall time)",
            "count before",
            "stale",
            "deleted",
            "1012",
            "0.510",
            "2000",
        ] {
            assert!(table.contains(needle), "missing {needle} in\n{table}");
        }
    }
}
