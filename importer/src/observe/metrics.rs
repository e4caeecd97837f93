//! Prometheus metrics of a running importer, served on `/metrics`.
//!
//! Counters are cumulative for the life of the process. Batch write times
//! use buckets from 1 ms to about 33 s, doubling. End-to-end latency uses
//! finer buckets where its target lies (a p99 of at most 100 ms), so a
//! quantile taken from them (as Prometheus' `histogram_quantile` does, and
//! the benchmark too) is close, and whether it is under 100 ms is exact.

use hpn_common::RecordKind;
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectionLabels {
    pub collection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabels {
    pub collection: String,
    /// written (new), updated (the key had a document), deleted (a delete
    /// applied: the key's document is a tombstone), stale (an equal or newer
    /// version was stored: nothing changed), dead_lettered (refused, sent to the
    /// dead-letter queue)
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SenderLabels {
    pub collection: String,
    /// The message's AMQP `app_id` property ("none" when absent): who sent it.
    pub app_id: String,
}

/// Distinct `app_id` labels kept before the rest are counted as "other", so
/// a publisher that sets a new id per message cannot grow the metrics
/// without bound.
const MAX_APP_IDS: usize = 32;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    /// rabbitmq or mongodb
    pub server: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Upper bounds (seconds) of the end-to-end latency buckets.
pub const END_TO_END_BUCKETS: [f64; 24] = [
    0.002, 0.004, 0.006, 0.008, 0.010, 0.0125, 0.015, 0.0175, 0.020, 0.025, 0.030, 0.040, 0.050, 0.060, 0.080, 0.100,
    0.150, 0.250, 0.500, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn end_to_end_histogram() -> Histogram {
    Histogram::new(END_TO_END_BUCKETS)
}

/// Every metric the importer exports.
pub struct Metrics {
    registry: Registry,
    pub messages_consumed: Family<CollectionLabels, Counter>,
    /// Messages held too long unwritten, put back on their queue as copies
    /// (see `source::hand_back`).
    pub messages_handed_back: Family<CollectionLabels, Counter>,
    pub records: Family<RecordLabels, Counter>,
    pub unversioned_records: Family<SenderLabels, Counter>,
    app_ids: std::sync::Mutex<std::collections::HashSet<String>>,
    pub retries: Family<ServerLabels, Counter>,
    pub reconnects: Family<ServerLabels, Counter>,
    pub batch_write_seconds: Family<CollectionLabels, Histogram, fn() -> Histogram>,
    pub end_to_end_seconds: Family<CollectionLabels, Histogram, fn() -> Histogram>,
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// 1 while connected to the server, 0 while not (as `/healthz` says).
    pub connected: Family<ServerLabels, Gauge>,
    /// 1 while MongoDB answers but refuses a batch a writer holds.
    pub store_refusing_writes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hpn_importer");
        let messages_consumed = Family::<CollectionLabels, Counter>::default();
        let messages_handed_back = Family::<CollectionLabels, Counter>::default();
        let records = Family::<RecordLabels, Counter>::default();
        let unversioned_records = Family::<SenderLabels, Counter>::default();
        let retries = Family::<ServerLabels, Counter>::default();
        let reconnects = Family::<ServerLabels, Counter>::default();
        let batch_write_seconds = Family::<CollectionLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let end_to_end_seconds = Family::<CollectionLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            end_to_end_histogram as fn() -> Histogram,
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "messages_consumed",
            "Messages taken from the queues",
            messages_consumed.clone(),
        );
        registry.register(
            "messages_handed_back",
            "Messages held unwritten past the hold limit (MongoDB away), put back on their queue as copies",
            messages_handed_back.clone(),
        );
        registry.register("records", "Records handled, by collection and outcome", records.clone());
        registry.register(
            "unversioned_records",
            "Records that carried no version (applied in arrival order), by sender",
            unversioned_records.clone(),
        );
        registry.register(
            "retries",
            "Operations retried after a transient failure",
            retries.clone(),
        );
        registry.register(
            "reconnects",
            "Connections re-established after being lost",
            reconnects.clone(),
        );
        registry.register(
            "batch_write_seconds",
            "Time to write one batch to MongoDB, retries included",
            batch_write_seconds.clone(),
        );
        registry.register(
            "end_to_end_seconds",
            "Time from publish (x-published-ms) to written, per record",
            end_to_end_seconds.clone(),
        );
        registry.register("queue_depth", "Messages ready in each queue", queue_depth.clone());
        let connected = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "connected",
            "1 while connected to the server (rabbitmq, mongodb), 0 while not",
            connected.clone(),
        );
        let store_refusing_writes = Gauge::default();
        registry.register(
            "store_refusing_writes",
            "1 while MongoDB answers but refuses a batch a writer holds (see /healthz for why)",
            store_refusing_writes.clone(),
        );
        Metrics {
            registry,
            messages_consumed,
            messages_handed_back,
            records,
            unversioned_records,
            app_ids: Default::default(),
            retries,
            reconnects,
            batch_write_seconds,
            end_to_end_seconds,
            queue_depth,
            connected,
            store_refusing_writes,
        }
    }
}

impl Metrics {
    pub fn record(&self, kind: RecordKind, outcome: &str, n: u64) {
        if n > 0 {
            self.records
                .get_or_create(&RecordLabels {
                    collection: kind.collection().into(),
                    outcome: outcome.into(),
                })
                .inc_by(n);
        }
    }

    /// `n` records without a version arrived in a message from `app_id`.
    pub fn unversioned(&self, kind: RecordKind, app_id: Option<&str>, n: u64) {
        let app_id = app_id.unwrap_or("none");
        let label = {
            let mut seen = self.app_ids.lock().expect("not poisoned");
            if seen.contains(app_id) || (seen.len() < MAX_APP_IDS && seen.insert(app_id.to_string())) {
                app_id
            } else {
                "other"
            }
        };
        self.unversioned_records
            .get_or_create(&SenderLabels {
                collection: kind.collection().into(),
                app_id: label.into(),
            })
            .inc_by(n);
    }

    pub fn collection(kind: RecordKind) -> CollectionLabels {
        CollectionLabels {
            collection: kind.collection().into(),
        }
    }

    pub fn server(name: &str) -> ServerLabels {
        ServerLabels { server: name.into() }
    }

    /// Copy what `/healthz` says into the gauges, before a scrape.
    pub fn observe_health(&self, health: &crate::observe::health::Health) {
        use std::sync::atomic::Ordering;
        for (server, up) in [("rabbitmq", &health.broker), ("mongodb", &health.store)] {
            self.connected
                .get_or_create(&Self::server(server))
                .set(i64::from(up.load(Ordering::Relaxed)));
        }
        self.store_refusing_writes.set(i64::from(health.refusal().is_some()));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_prometheus_text_format() {
        let m = Metrics::default();
        m.record(RecordKind::Customer, "written", 3);
        m.messages_consumed
            .get_or_create(&Metrics::collection(RecordKind::Customer))
            .inc();
        m.batch_write_seconds
            .get_or_create(&Metrics::collection(RecordKind::Product))
            .observe(0.02);
        let text = m.render();
        assert!(
            text.contains(r#"hpn_importer_records_total{collection="customers",outcome="written"} 3"#),
            "{text}"
        );
        assert!(text.contains("hpn_importer_messages_consumed_total"), "{text}");
        assert!(
            text.contains(r#"hpn_importer_batch_write_seconds_count{collection="products"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// The alert rules the project ships name only metrics the importer
    /// exports: a renamed metric would silence an alert without a word.
    #[test]
    fn every_metric_the_alert_rules_use_is_exported() {
        let rules = include_str!("../../../deploy/prometheus/alerts.yml");
        let m = Metrics::default();
        m.record(RecordKind::Customer, "dead_lettered", 1);
        m.unversioned(RecordKind::Customer, None, 1);
        m.end_to_end_seconds
            .get_or_create(&Metrics::collection(RecordKind::Customer))
            .observe(0.01);
        m.queue_depth.get_or_create(&QueueLabels { queue: "q".into() }).set(1);
        m.batch_write_seconds
            .get_or_create(&Metrics::collection(RecordKind::Customer))
            .observe(0.01);
        m.observe_health(&crate::observe::health::Health::default());
        let text = m.render();
        let mut used: Vec<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("hpn_importer_"))
            .collect();
        used.sort();
        used.dedup();
        assert!(used.len() >= 6, "{used:?}");
        for name in used {
            // A series (`name{…} value`) or a family (`# TYPE name …`).
            let series = text
                .lines()
                .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']));
            let family = text.contains(&format!("# TYPE {name} "));
            assert!(series || family, "{name} is in alerts.yml but not exported:\n{text}");
        }
    }

    #[test]
    fn the_health_gauges_follow_what_healthz_says() {
        let m = Metrics::default();
        let health = crate::observe::health::Health::default();
        health.broker.store(true, std::sync::atomic::Ordering::Relaxed);
        health.store_refuses("customers writer", "not authorized".into());
        m.observe_health(&health);
        let text = m.render();
        assert!(
            text.contains(r#"hpn_importer_connected{server="rabbitmq"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"hpn_importer_connected{server="mongodb"} 0"#), "{text}");
        assert!(text.contains("hpn_importer_store_refusing_writes 1"), "{text}");
        health.store_writes("customers writer");
        m.observe_health(&health);
        assert!(m.render().contains("hpn_importer_store_refusing_writes 0"));
    }

    #[test]
    fn unversioned_records_are_counted_by_sender_with_bounded_labels() {
        let m = Metrics::default();
        m.unversioned(RecordKind::Rental, Some("billing"), 2);
        m.unversioned(RecordKind::Rental, None, 1);
        for i in 0..MAX_APP_IDS + 5 {
            m.unversioned(RecordKind::Rental, Some(&format!("app-{i}")), 1);
        }
        let text = m.render();
        assert!(
            text.contains(r#"hpn_importer_unversioned_records_total{collection="rentals",app_id="billing"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"hpn_importer_unversioned_records_total{collection="rentals",app_id="none"} 1"#),
            "{text}"
        );
        // 32 labels: billing, none and 30 app-N; the other 7 app-N share "other".
        assert!(
            text.contains(r#"hpn_importer_unversioned_records_total{collection="rentals",app_id="other"} 7"#),
            "{text}"
        );
    }
}
