//! The importer's settings: where the servers are and how hard to push
//! them. Every knob is a flag and an environment variable; the defaults are
//! written once, in [`Tuning::DEFAULT`].

use hpn_common::config::env;
use hpn_common::message::DEFAULT_MAX_MESSAGE_BYTES;
use hpn_common::topology::QUORUM_DELIVERY_LIMIT;
use hpn_common::{ConnectionSettings, QueueType};
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
    /// Connection settings from the environment (see
    /// [`ConnectionSettings::from_env`]), default tuning.
    pub fn from_env() -> crate::Result<Config> {
        Ok(Config {
            connection: ConnectionSettings::from_env()?,
            tuning: Tuning::default(),
            rentals_take_stock: false,
        })
    }

    /// Settings that cannot work together, or addresses no client can
    /// read, said before anything connects.
    pub fn check(&self) -> Result<(), String> {
        hpn_common::address::check_amqp_urls(&self.connection.amqp_url)?;
        crate::store::Store::check_uri(&self.connection.mongodb_uri)?;
        let tuning = &self.tuning;
        if tuning.hold_limit_ms == 0 || tuning.store_patience_ms >= tuning.hold_limit_ms {
            return Err(format!(
                "--hold-limit-ms {} must be above --store-patience-ms {}: a one-shot run holds a batch \
                 through a store outage for its patience, and nothing may be held past the hold limit \
                 (keep both under half the broker's consumer_timeout)",
                tuning.hold_limit_ms, tuning.store_patience_ms
            ));
        }
        if self.connection.queue_type == QueueType::Quorum {
            if self.tuning.prefetch_scope == PrefetchScope::Channel {
                return Err(
                    "quorum queues refuse a channel-wide prefetch (RabbitMQ closes the channel with \
                            540 NOT_IMPLEMENTED): use --prefetch-scope per-consumer"
                        .into(),
                );
            }
            if self.tuning.max_attempts > QUORUM_DELIVERY_LIMIT {
                return Err(format!(
                    "--max-attempts {} is above the quorum queues' delivery limit ({QUORUM_DELIVERY_LIMIT}), \
                     after which the broker dead-letters a message itself",
                    self.tuning.max_attempts
                ));
            }
        }
        Ok(())
    }
}

/// What the consumer's prefetch limits (see `source::prefetch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PrefetchScope {
    /// Each consumer's own limit (`basic.qos` with `global = false`). The
    /// consumer subscribes again when the limit it wants moves. Works with
    /// every queue type.
    PerConsumer,
    /// One limit for the channel (`global = true`), changed in place.
    /// Classic queues only; kept to measure against.
    Channel,
}

impl PrefetchScope {
    /// The flag's value for this scope.
    pub fn as_str(self) -> &'static str {
        match self {
            PrefetchScope::PerConsumer => "per-consumer",
            PrefetchScope::Channel => "channel",
        }
    }
}

/// How the importer batches, buffers and spreads its work. The defaults
/// are [`Tuning::DEFAULT`], which the flags declare too.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Records written to MongoDB in one round trip at most.
    #[arg(long, env = env::BATCH_SIZE, default_value_t = Tuning::DEFAULT.batch_size)]
    pub batch_size: usize,
    /// A batch that is not full is written after this many milliseconds.
    #[arg(long, env = env::FLUSH_MS, default_value_t = Tuning::DEFAULT.flush_ms)]
    pub flush_ms: u64,
    /// Unacknowledged messages the broker may send each consumer, at most.
    #[arg(long, env = env::PREFETCH, default_value_t = Tuning::DEFAULT.prefetch)]
    pub prefetch: u16,
    /// Records each consumer aims to have in hand: the message prefetch is
    /// set from it and the records per message seen so far, so memory stays
    /// flat whether messages carry one record or a hundred.
    #[arg(long, env = env::PREFETCH_RECORDS, default_value_t = Tuning::DEFAULT.prefetch_records)]
    pub prefetch_records: usize,
    /// What the prefetch limits: each consumer, or the whole channel
    /// (classic queues only).
    #[arg(long, env = env::PREFETCH_SCOPE, value_enum, default_value_t = Tuning::DEFAULT.prefetch_scope)]
    pub prefetch_scope: PrefetchScope,
    /// Parallel mode: consumers (channels) per queue.
    #[arg(long, env = env::CONSUMERS, default_value_t = Tuning::DEFAULT.consumers)]
    pub consumers: usize,
    /// Parallel mode: writers per collection (records are routed to them by key).
    #[arg(long, env = env::WRITERS, default_value_t = Tuning::DEFAULT.writers)]
    pub writers: usize,
    /// One-shot runs: how long a consumer waits without deliveries before
    /// checking whether its queue is empty (checking early is harmless).
    #[arg(long, env = env::IDLE_MS, default_value_t = Tuning::DEFAULT.idle_ms)]
    pub idle_ms: u64,
    /// One-shot runs: how long a consumer goes on asking, with nothing
    /// delivered, while the broker gives no sure count of its queue (a
    /// quorum queue whose leader does not answer). Then the run stops and
    /// reports the queue as not known to be drained (exit code 5); it never
    /// takes the silence for "empty".
    #[arg(long, env = env::DRAIN_PATIENCE_MS, default_value_t = Tuning::DEFAULT.drain_patience_ms)]
    pub drain_patience_ms: u64,
    /// One-shot runs: how long MongoDB may stay away or refuse writes as
    /// an outage (an election, a failover: `NotWritablePrimary` and the
    /// like) before the run stops, with the store's exit code (6). `serve`
    /// waits for as long as it takes.
    #[arg(long, env = env::STORE_PATIENCE_MS, default_value_t = Tuning::DEFAULT.store_patience_ms)]
    pub store_patience_ms: u64,
    /// One-shot runs: how long RabbitMQ may stay away once the run's
    /// connection is lost (a node stopped or cut off, a rolling restart)
    /// while the run tries every address it was given, in order, to go on
    /// draining; then the run stops with the broker's exit code (7) and
    /// prints its report. The same when connections are made but lost
    /// again and again with nothing imported for as long. `serve` waits for
    /// as long as it takes.
    #[arg(long, env = env::BROKER_PATIENCE_MS, default_value_t = Tuning::DEFAULT.broker_patience_ms)]
    pub broker_patience_ms: u64,
    /// One-shot runs on quorum queues: after a lost connection, how long
    /// from the loss the run goes on waiting for what that connection's
    /// consumers held to come back before it believes a queue is drained.
    /// A node cut off keeps what it was given until the rest of the cluster
    /// sees it gone, `net_ticktime` × 1.25 after the cut (75 s with
    /// RabbitMQ's default 60 s): keep it at least that.
    #[arg(long, env = env::LOSS_SETTLE_MS, default_value_t = Tuning::DEFAULT.loss_settle_ms)]
    pub loss_settle_ms: u64,
    /// `serve`: how long a delivery may stay in hand unwritten (MongoDB
    /// away or refusing) before a confirmed copy of it goes back to its
    /// queue and it is acknowledged, so that the broker's
    /// `consumer_timeout` (30 minutes by default) never closes the channel
    /// under it and counts a failed delivery (see `source::hand_back`).
    /// Keep it under half the broker's `consumer_timeout`: the broker checks
    /// once a minute. One-shot runs stop before: their store patience must
    /// be shorter.
    #[arg(long, env = env::HOLD_LIMIT_MS, default_value_t = Tuning::DEFAULT.hold_limit_ms)]
    pub hold_limit_ms: u64,
    /// The importer's memory budget in MiB: half of it for message bodies on
    /// their way or in hand, shared by the consumers of the process, each
    /// consumer's prefetch kept so that its bodies fit its share (see
    /// `source::prefetch`).
    #[arg(long, env = env::MEMORY_BUDGET_MIB, default_value_t = Tuning::DEFAULT.memory_budget_mib)]
    pub memory_budget_mib: usize,
    /// Messages larger than this go to the dead-letter queue (our producer
    /// keeps its messages under the same variable's value).
    #[arg(long, env = env::MAX_MESSAGE_BYTES, default_value_t = Tuning::DEFAULT.max_message_bytes)]
    pub max_message_bytes: usize,
    /// Deliveries of one message that may end without it being written (the
    /// importer stopped or lost its connection while holding it) before it
    /// goes to the dead-letter queue. Poison it can recognise goes at once.
    #[arg(long, env = env::MAX_ATTEMPTS, default_value_t = Tuning::DEFAULT.max_attempts)]
    pub max_attempts: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning::DEFAULT
    }
}

impl Tuning {
    /// What the benchmarks found best on a 2-core machine running both servers.
    pub const DEFAULT: Tuning = Tuning {
        // The careful loader's 1,000 asks the database for more work per
        // record: with the database on a core of its own, direct parallel
        // took 0.91 of the time at 2,000 (5 alternating runs, both medians
        // and fastest; the server's CPU 7.72 -> 7.11 s), and the pipeline as
        // it runs 0.93 of the careful loader's time against 0.90 at 1,000
        // and 0.89 at 4,000 (3 alternating runs each, 100,000 per file).
        batch_size: 2000,
        flush_ms: 20,
        prefetch: 2000,
        prefetch_records: 4000,
        prefetch_scope: PrefetchScope::PerConsumer,
        consumers: 2,
        // One writer per collection: parallel mode then keeps three writes
        // in flight, one per collection, and on 2 cores shared with the
        // database a fourth or a sixth only waits in the server (100,000 per
        // file, 6 alternating runs: 4.3-5.3 s with one, 4.5-5.7 s with two).
        // Raise it where the database has cores of its own.
        writers: 1,
        idle_ms: 10,
        drain_patience_ms: 30_000,
        // Twice what a replica set takes to elect a new primary after its
        // primary fails (about ten seconds with MongoDB's defaults), with
        // room for the driver to find it.
        store_patience_ms: 60_000,
        broker_patience_ms: 60_000,
        // RabbitMQ's default net_ticktime (60 s) × 1.25.
        loss_settle_ms: 75_000,
        // A third of RabbitMQ's default consumer_timeout (30 minutes),
        // which its channels check once a minute.
        hold_limit_ms: 600_000,
        memory_budget_mib: 256,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        // A message may fail ten deliveries (see `source::attempts`). Before
        // 4.3, RabbitMQ counts every delivery that ends unacknowledged, a
        // lost connection's included: at five, the partition nemesis
        // (tests/tests/partition.rs, 14 cuts in 300 s, two importers with
        // 2,000 messages in hand each) dead-lettered 11 good messages on
        // 3.10. Ten is half the quorum queues' backstop (20), and still
        // sets aside a message that kills the importer well before that.
        max_attempts: 10,
    };

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_ms)
    }

    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms.max(1))
    }

    /// Consumers a process runs per `--consumers`: one set per queue, for
    /// the three queues (`serve` and a parallel run; a linear run has fewer).
    pub const CONSUMERS_IN_PROCESS: usize = 3;

    /// The bytes of bodies each of `consumers` consumers of one process may
    /// hold or have on their way: half the memory budget, shared.
    pub fn body_share(&self, consumers: usize) -> usize {
        (self.memory_budget_mib << 20) / 2 / consumers.max(1)
    }

    pub fn drain_patience(&self) -> Duration {
        Duration::from_millis(self.drain_patience_ms)
    }

    pub fn store_patience(&self) -> Duration {
        Duration::from_millis(self.store_patience_ms)
    }

    pub fn broker_patience(&self) -> Duration {
        Duration::from_millis(self.broker_patience_ms)
    }

    pub fn loss_settle(&self) -> Duration {
        Duration::from_millis(self.loss_settle_ms)
    }

    pub fn hold_limit(&self) -> Duration {
        Duration::from_millis(self.hold_limit_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tuning: Tuning,
    }

    #[test]
    fn declared_defaults_are_the_library_defaults_and_flags_override_them() {
        // What clap declares, whatever HPN_* variables this test runs under.
        let command = Cli::command();
        let declared: Vec<(String, String)> = command
            .get_arguments()
            .map(|a| {
                (
                    a.get_id().to_string(),
                    a.get_default_values()[0].to_string_lossy().into_owned(),
                )
            })
            .collect();
        let d = Tuning::DEFAULT;
        let expected = [
            ("batch_size", d.batch_size.to_string()),
            ("flush_ms", d.flush_ms.to_string()),
            ("prefetch", d.prefetch.to_string()),
            ("prefetch_records", d.prefetch_records.to_string()),
            ("prefetch_scope", "per-consumer".to_string()),
            ("consumers", d.consumers.to_string()),
            ("writers", d.writers.to_string()),
            ("idle_ms", d.idle_ms.to_string()),
            ("drain_patience_ms", d.drain_patience_ms.to_string()),
            ("memory_budget_mib", d.memory_budget_mib.to_string()),
            ("max_message_bytes", d.max_message_bytes.to_string()),
            ("max_attempts", d.max_attempts.to_string()),
            ("hold_limit_ms", d.hold_limit_ms.to_string()),
            ("loss_settle_ms", d.loss_settle_ms.to_string()),
        ];
        for (id, value) in expected {
            assert!(
                declared.contains(&(id.to_string(), value.clone())),
                "{id} = {value}: {declared:?}"
            );
        }
        assert!(
            command.get_arguments().all(|a| a.get_env().is_some()),
            "every knob has a variable"
        );
        let custom = Cli::try_parse_from(["x", "--batch-size", "10", "--writers", "4"])
            .unwrap()
            .tuning;
        assert_eq!((custom.batch_size, custom.writers), (10, 4));
    }

    #[test]
    fn prefetch_scopes_are_named_as_their_flag_values() {
        for scope in [PrefetchScope::PerConsumer, PrefetchScope::Channel] {
            let value = clap::ValueEnum::to_possible_value(&scope).unwrap();
            assert_eq!(scope.as_str(), value.get_name());
        }
    }

    #[test]
    fn quorum_queues_refuse_what_the_broker_would_refuse() {
        let mut config = Config::default();
        config.connection.queue_type = QueueType::Quorum;
        assert_eq!(config.check(), Ok(()));
        config.tuning.prefetch_scope = PrefetchScope::Channel;
        assert!(config.check().unwrap_err().contains("per-consumer"));
        config.tuning.prefetch_scope = PrefetchScope::PerConsumer;
        config.tuning.max_attempts = QUORUM_DELIVERY_LIMIT + 1;
        assert!(config.check().unwrap_err().contains("delivery limit"));
        config.connection.queue_type = QueueType::Classic;
        config.tuning.prefetch_scope = PrefetchScope::Channel;
        assert_eq!(config.check(), Ok(()), "classic queues take both");
    }

    #[test]
    fn nothing_is_held_past_the_hold_limit_not_even_by_a_one_shot_runs_patience() {
        let mut config = Config::default();
        config.tuning.store_patience_ms = config.tuning.hold_limit_ms;
        assert!(config.check().unwrap_err().contains("--hold-limit-ms"));
        config.tuning.store_patience_ms = config.tuning.hold_limit_ms - 1;
        assert_eq!(config.check(), Ok(()));
        config.tuning.hold_limit_ms = 0;
        assert!(config.check().is_err());
    }
}
