//! Where the time goes: per-stage totals from `tracing` spans, and the
//! process's peak memory.
//!
//! The pipeline opens a span named after its stage around each unit of work
//! (`tracing::debug_span!(target: "stage", "decode")`). Those spans are off
//! unless [`StageLayer`] is installed (the binaries install it when
//! `HPN_PROFILE_STAGES` is set); then every closed span adds its wall time,
//! from creation to close, to its stage's total. Wall time rather than busy
//! time, so a stage that awaits a server (a write, a confirm) is charged for
//! the wait it causes. Stages in different tasks overlap in time, so their
//! totals add up to more than the run's wall time in parallel mode.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The `tracing` target of stage spans.
pub const TARGET: &str = "stage";

/// One stage's total over a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    pub calls: u64,
    pub seconds: f64,
}

fn totals() -> &'static Mutex<BTreeMap<&'static str, (u64, Duration)>> {
    static TOTALS: OnceLock<Mutex<BTreeMap<&'static str, (u64, Duration)>>> = OnceLock::new();
    TOTALS.get_or_init(Default::default)
}

/// Collects stage spans into the process-wide totals.
pub struct StageLayer;

struct Opened(Instant);

impl<S> Layer<S> for StageLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().target() == TARGET {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(Opened(Instant::now()));
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(opened) = span.extensions().get::<Opened>().map(|o| o.0) else {
            return;
        };
        let mut totals = totals().lock().expect("stage totals lock");
        let entry = totals.entry(span.metadata().name()).or_default();
        entry.0 += 1;
        entry.1 += opened.elapsed();
    }
}

/// The stage totals so far, in stage-name order.
pub fn stage_times() -> Vec<StageTime> {
    totals()
        .lock()
        .expect("stage totals lock")
        .iter()
        .map(|(stage, (calls, total))| StageTime {
            stage: stage.to_string(),
            calls: *calls,
            seconds: total.as_secs_f64(),
        })
        .collect()
}

/// Whether stage profiling was asked for (`HPN_PROFILE_STAGES` set and not `0`).
pub fn stages_requested() -> bool {
    std::env::var(crate::config::env::PROFILE_STAGES).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The most resident memory this process has used so far, in bytes
/// (Linux `VmHWM`; `None` elsewhere).
pub fn peak_rss_bytes() -> Option<u64> {
    peak_rss_bytes_of("self")
}

/// [`peak_rss_bytes`] of another process, by its pid (as `/proc` names it).
pub fn peak_rss_bytes_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn closed_stage_spans_add_up_and_other_spans_are_ignored() {
        let subscriber = tracing_subscriber::registry().with(StageLayer);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..3 {
                let _span = tracing::debug_span!(target: "stage", "unit_test_stage").entered();
                std::thread::sleep(Duration::from_millis(2));
            }
            let _other = tracing::debug_span!("not_a_stage").entered();
        });
        let times = stage_times();
        let stage = times.iter().find(|s| s.stage == "unit_test_stage").expect("recorded");
        assert_eq!(stage.calls, 3);
        assert!(stage.seconds >= 0.006, "{stage:?}");
        assert!(times.iter().all(|s| s.stage != "not_a_stage"));
    }

    #[test]
    fn peak_memory_is_read_on_linux() {
        let peak = peak_rss_bytes().expect("/proc/self/status has VmHWM");
        assert!(peak > 1 << 20, "{peak}");
    }
}
