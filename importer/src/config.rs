//! The importer's settings: where the servers are (shared with the
//! producer) and how hard to push them. Every knob is a flag and an
//! environment variable; the defaults are what the benchmarks found best on
//! a 2-core machine running both servers.

use crate::attempts::DEFAULT_MAX_ATTEMPTS;
use hpn_common::message::DEFAULT_MAX_MESSAGE_BYTES;
use hpn_common::ConnectionSettings;
use std::time::Duration;

/// Everything an import run needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub connection: ConnectionSettings,
    pub tuning: Tuning,
    /// Each imported rental takes one unit of its product's stock, once per
    /// rental however often it is delivered (see `Store::take_stock`). Off by
    /// default: the brief's store keeps stock as the products file says.
    pub rentals_take_stock: bool,
}

impl Config {
    /// Connection settings from the environment, default tuning.
    pub fn from_env() -> Config {
        Config {
            connection: ConnectionSettings::from_env(),
            tuning: Tuning::default(),
            rentals_take_stock: false,
        }
    }
}

/// How the importer batches, buffers and spreads its work.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Records written to MongoDB in one round trip at most.
    #[arg(long, env = "HPN_BATCH_SIZE", default_value_t = 1000)]
    pub batch_size: usize,
    /// A batch that is not full is written after this many milliseconds.
    #[arg(long, env = "HPN_FLUSH_MS", default_value_t = 20)]
    pub flush_ms: u64,
    /// Unacknowledged messages the broker may send each consumer, at most.
    #[arg(long, env = "HPN_PREFETCH", default_value_t = 2000)]
    pub prefetch: u16,
    /// Records each consumer aims to have in hand: the message prefetch is
    /// set from it and the records per message seen so far, so memory stays
    /// flat whether messages carry one record or a hundred.
    #[arg(long, env = "HPN_PREFETCH_RECORDS", default_value_t = 4000)]
    pub prefetch_records: usize,
    /// Parallel mode: consumers (channels) per queue.
    #[arg(long, env = "HPN_CONSUMERS", default_value_t = 2)]
    pub consumers: usize,
    /// Parallel mode: writers per collection (records are routed to them by key).
    #[arg(long, env = "HPN_WRITERS", default_value_t = 2)]
    pub writers: usize,
    /// One-shot runs: how long a consumer waits without deliveries before
    /// checking whether its queue is empty (checking early is harmless).
    #[arg(long, env = "HPN_IDLE_MS", default_value_t = 10)]
    pub idle_ms: u64,
    /// Messages larger than this go to the dead-letter queue.
    #[arg(long, env = "HPN_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Deliveries of one message that may end without it being written (the
    /// importer stopped or lost its connection while holding it) before it
    /// goes to the dead-letter queue. Poison it can recognise goes at once.
    #[arg(long, env = "HPN_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            batch_size: 1000,
            flush_ms: 20,
            prefetch: 2000,
            prefetch_records: 4000,
            consumers: 2,
            writers: 2,
            idle_ms: 10,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

impl Tuning {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_ms)
    }

    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tuning: Tuning,
    }

    #[test]
    fn cli_defaults_match_the_library_defaults() {
        // Ignore the environment: it may set HPN_* for a run.
        let parsed = Cli::try_parse_from(["x"]).unwrap().tuning;
        if std::env::vars().all(|(k, _)| !k.starts_with("HPN_")) {
            assert_eq!(parsed, Tuning::default());
        }
        let custom = Cli::try_parse_from(["x", "--batch-size", "10", "--writers", "4"])
            .unwrap()
            .tuning;
        assert_eq!((custom.batch_size, custom.writers), (10, 4));
    }
}
