//! `hpn-importer serve` as a child process of the bench: started on a
//! loopback port it picks, waited for until `/healthz` says it consumes,
//! read through `/metrics`, and stopped with SIGTERM (a clean exit is part
//! of what is measured). The latency steps and the as-it-runs mode share it.

use anyhow::{bail, ensure, Context, Result};
use hpn_importer::fetch;
use std::time::{Duration, Instant};
use tokio::io::BufReader;
use tokio::process::{Child, ChildStdout};

pub struct Served {
    child: Child,
    /// host:port of its HTTP listener.
    pub listen: String,
    /// The child's stdout, held open until it is gone (it writes there).
    _stdout: BufReader<ChildStdout>,
}

/// The outcomes `hpn_importer_records_total` counts a record under once
/// the importer is done with it.
const DONE: [&str; 5] = ["written", "updated", "deleted", "stale", "dead_lettered"];

impl Served {
    /// Start `importer` (an `hpn-importer serve` command, see
    /// `Bench::serve_command`); back once it is healthy.
    pub async fn start(mut importer: tokio::process::Command) -> Result<Served> {
        importer.stdout(std::process::Stdio::piped());
        let mut child = importer.spawn().context("starting hpn-importer serve")?;
        // It picks a free port and says which on its first line.
        let mut stdout = BufReader::new(child.stdout.take().context("piped stdout")?);
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line).await?;
        let listen = line
            .trim()
            .strip_prefix("listening on http://")
            .with_context(|| format!("hpn-importer serve did not say where it listens: {line:?}"))?
            .to_string();
        let waited = Instant::now();
        while fetch(&listen, "/healthz").await.map(|(status, _)| status) != Some(200) {
            if let Some(status) = child.try_wait()? {
                bail!("hpn-importer serve exited early: {status}");
            }
            ensure!(
                waited.elapsed() < Duration::from_secs(30),
                "hpn-importer serve not healthy within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Served {
            child,
            listen,
            _stdout: stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    pub async fn metrics(&self) -> Result<String> {
        let (_, metrics) = fetch(&self.listen, "/metrics").await.context("reading /metrics")?;
        Ok(metrics)
    }

    /// Back once the importer has finished with `expected` records (over
    /// every collection), polling `/metrics` every 20 ms; an error after
    /// `patience`, or if it exits.
    pub async fn wait_for_records(&mut self, expected: u64, patience: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if records_done(&self.metrics().await?) >= expected {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("hpn-importer serve exited before it had written {expected} records: {status}");
            }
            ensure!(
                started.elapsed() < patience,
                "hpn-importer serve had not written {expected} records after {} s",
                patience.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its peak RSS so far (`VmHWM`), while it runs.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        hpn_common::profile::peak_rss_bytes_of(&self.pid().to_string())
    }

    /// SIGTERM, then a clean exit within 10 s.
    pub async fn stop(mut self) -> Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-s", "TERM", &self.pid().to_string()])
            .status();
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .context("hpn-importer serve did not exit within 10 s of SIGTERM")??;
        ensure!(
            status.success(),
            "hpn-importer serve exited with {status} after SIGTERM"
        );
        Ok(())
    }
}

/// Records the importer is done with, over every collection, from a
/// Prometheus text exposition.
fn records_done(metrics: &str) -> u64 {
    DONE.iter().map(|outcome| records_of(metrics, None, outcome)).sum()
}

/// Records of `collection` counted under `outcome`, from a Prometheus text
/// exposition (0 when the series is absent: nothing had that outcome).
pub fn records(metrics: &str, collection: &str, outcome: &str) -> u64 {
    records_of(metrics, Some(collection), outcome)
}

/// Records counted under `outcome`, of one collection or of every one.
fn records_of(metrics: &str, collection: Option<&str>, outcome: &str) -> u64 {
    let collection = collection.map(|c| format!("collection=\"{c}\""));
    let outcome = format!("outcome=\"{outcome}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("hpn_importer_records_total{") && l.contains(&outcome))
        .filter(|l| collection.as_ref().is_none_or(|c| l.contains(c.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_done_sums_the_finished_outcomes_of_every_collection() {
        let text = "# TYPE hpn_importer_records_total counter\n\
            hpn_importer_records_total{collection=\"customers\",outcome=\"written\"} 10\n\
            hpn_importer_records_total{collection=\"products\",outcome=\"written\"} 5\n\
            hpn_importer_records_total{collection=\"products\",outcome=\"stale\"} 2\n\
            hpn_importer_records_total{collection=\"rentals\",outcome=\"dead_lettered\"} 1\n\
            hpn_importer_records_total{collection=\"rentals\",outcome=\"received\"} 100\n\
            hpn_importer_messages_consumed_total{collection=\"rentals\"} 7\n";
        assert_eq!(records_done(text), 18);
        assert_eq!(records_done(""), 0);
        assert_eq!(records(text, "products", "written"), 5);
        assert_eq!(records(text, "products", "stale"), 2);
        assert_eq!(records(text, "customers", "stale"), 0);
    }
}
