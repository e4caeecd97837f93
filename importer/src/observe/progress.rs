//! The live line `hpn-importer run` draws per collection on a terminal:
//! records written so far, the rate, and how many messages are still
//! waiting in the queue. A 200,000-record run otherwise prints nothing
//! until its report.
//!
//! The line reads the same [`Counters`] the report is made from, four times
//! a second, and asks the broker for the queue's depth once a second (a
//! passive declare, on a channel of its own, so it never disturbs the
//! consumers). When stderr is not a terminal nothing is drawn and no task
//! runs: a log file or a pipe gets only the report.

use crate::observe::counters::Counters;
use crate::report::ImportStats;
use hpn_common::RecordKind;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lapin::{Channel, Connection};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How often a line is redrawn from the counters.
const REDRAW: Duration = Duration::from_millis(250);
/// How often the queue's depth is asked for.
const DEPTH_EVERY: u32 = 4;

/// The lines of one run: one per collection, in report order.
#[derive(Clone)]
pub struct Progress {
    /// `None`: nothing is drawn (stderr is not a terminal, or not asked).
    bars: Option<(MultiProgress, Vec<(RecordKind, ProgressBar)>)>,
}

impl Progress {
    /// Lines on stderr when it is a terminal; otherwise none.
    pub fn on_terminal() -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix:>10} {spinner} {msg}").expect("a valid template");
        let bars = RecordKind::ALL
            .into_iter()
            .map(|kind| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                bar.set_prefix(kind.collection());
                bar.set_message("waiting");
                (kind, bar)
            })
            .collect();
        Progress {
            bars: Some((multi, bars)),
        }
    }

    /// No lines at all (the library's default, and every test's).
    pub fn hidden() -> Progress {
        Progress { bars: None }
    }

    /// Start drawing `kind`'s line from `counters`, with its queue's depth
    /// from `queue` on `connection`, until [`Line::finish`].
    pub async fn track(
        &self,
        kind: RecordKind,
        counters: Arc<Counters>,
        connection: &Connection,
        queue: String,
    ) -> Line {
        let Some(bar) = self.bar(kind) else {
            return Line { drawing: None };
        };
        // No channel, no depth: the line still shows what was written.
        let channel = connection.create_channel().await.ok();
        let started = Instant::now();
        let drawing = tokio::spawn({
            let bar = bar.clone();
            async move {
                let mut depth = None;
                let mut tick = tokio::time::interval(REDRAW);
                for round in 0u32.. {
                    tick.tick().await;
                    if round.is_multiple_of(DEPTH_EVERY) {
                        if let Some(channel) = &channel {
                            depth = queue_depth(channel, &queue).await.or(depth);
                        }
                    }
                    bar.set_message(running_line(counters.processed(), started.elapsed(), depth));
                    bar.tick();
                }
            }
        });
        Line {
            drawing: Some((bar, drawing)),
        }
    }

    fn bar(&self, kind: RecordKind) -> Option<ProgressBar> {
        let (_, bars) = self.bars.as_ref()?;
        bars.iter().find(|(k, _)| *k == kind).map(|(_, bar)| bar.clone())
    }
}

/// One collection's line while it imports.
pub struct Line {
    drawing: Option<(ProgressBar, JoinHandle<()>)>,
}

impl Line {
    /// Stop redrawing and leave the collection's figures on its line.
    pub fn finish(self, stats: Option<&ImportStats>) {
        let Some((bar, drawing)) = self.drawing else {
            return;
        };
        drawing.abort();
        match stats {
            Some(stats) => bar.finish_with_message(finished_line(stats)),
            None => bar.abandon_with_message("stopped"),
        }
    }
}

/// The ready messages in `queue`, if the broker says.
async fn queue_depth(channel: &Channel, queue: &str) -> Option<u32> {
    hpn_common::topology::queue_counts(channel, queue)
        .await
        .ok()?
        .known_ready()
}

fn running_line(processed: u64, elapsed: Duration, depth: Option<u32>) -> String {
    let rate = processed as f64 / elapsed.as_secs_f64().max(1e-3);
    let left = match depth {
        Some(messages) => format!("{messages} messages left in the queue"),
        None => "queue depth unknown".to_string(),
    };
    format!("{processed} records written, {rate:.0}/s, {left}")
}

fn finished_line(stats: &ImportStats) -> String {
    format!(
        "{} records in {:.2}s: {} inserted, {} updated, {} rejected; {} documents now",
        stats.processed,
        stats.elapsed.as_secs_f64(),
        stats.inserted,
        stats.updated,
        stats.rejected,
        stats.count_after
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_line_gives_written_rate_and_depth() {
        assert_eq!(
            running_line(5000, Duration::from_secs(2), Some(120)),
            "5000 records written, 2500/s, 120 messages left in the queue"
        );
        assert!(running_line(0, Duration::ZERO, None).ends_with("queue depth unknown"));
    }

    #[test]
    fn hidden_progress_draws_nothing_and_needs_no_task() {
        let progress = Progress::hidden();
        assert!(progress.bar(RecordKind::Customer).is_none());
    }
}
