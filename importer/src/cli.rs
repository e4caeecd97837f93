//! The `hpn-importer` command line: drain the queues into MongoDB (linear
//! or parallel), serve continuously, run the business queries, demonstrate
//! contention, migrate a store of the old shape, or reset a database and
//! its queues. It lives in the library so that the integration tests can
//! run exactly this program as a child process (see `tests/src/bin`).

use crate::observe::progress::Progress;
use crate::oneshot::run::import_with_progress;
use crate::store::Store;
use crate::tools::admin;
use crate::tools::dead_letters::{self, DeadLetterAction};
use crate::tools::query::{self, Query};
use crate::{Config, Mode, Tuning};
use anyhow::Result;
use clap::{Parser, Subcommand};
use hpn_common::config::env;
use hpn_common::{BrokerSettings, ConnectionSettings, StoreSettings};
use std::process::ExitCode;

/// Import HP Norton records from RabbitMQ into MongoDB.
#[derive(Parser)]
#[command(name = "hpn-importer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Both servers, for the commands that use both.
#[derive(clap::Args)]
struct Servers {
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    store: StoreSettings,
}

impl Servers {
    /// The settings, with the addresses read from their `_FILE` secrets
    /// and checked.
    fn settings(self) -> crate::Result<ConnectionSettings> {
        Ok(ConnectionSettings::new(
            self.broker.resolve()?,
            store_settings(self.store)?,
        ))
    }
}

/// The store's settings, the connection string read from its `_FILE`
/// secret and checked: a malformed one is refused here, once, as a
/// settings error with its password hidden.
fn store_settings(store: StoreSettings) -> crate::Result<StoreSettings> {
    let store = store.resolve()?;
    Store::check_uri(&store.mongodb_uri).map_err(crate::Error::Settings)?;
    Ok(store)
}

#[derive(Subcommand)]
enum Command {
    /// Drain the queues into MongoDB, print the report and exit.
    Run {
        /// linear: one queue at a time, one consumer; parallel: all queues at once.
        #[arg(long, value_enum, default_value_t = Mode::Parallel)]
        mode: Mode,
        #[command(flatten)]
        servers: Servers,
        #[command(flatten)]
        tuning: Tuning,
        /// Each rental takes one unit of its product's stock (once, however
        /// often it is delivered); rentals with no stock are dead-lettered.
        #[arg(long, env = env::RENTALS_TAKE_STOCK)]
        rentals_take_stock: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Sample the CPU during the run and write a flamegraph SVG here
        /// (needs a build with `--features profiling`).
        #[arg(long)]
        profile_cpu: Option<std::path::PathBuf>,
    },
    /// Consume every queue until SIGINT/SIGTERM, through broker restarts and
    /// database outages, with /healthz and /metrics.
    Serve {
        #[command(flatten)]
        servers: Servers,
        #[command(flatten)]
        tuning: Tuning,
        /// Each rental takes one unit of its product's stock (see `run`).
        #[arg(long, env = env::RENTALS_TAKE_STOCK)]
        rentals_take_stock: bool,
        /// Address of the /healthz and /metrics listener ("off" for none).
        #[arg(long, env = env::LISTEN, default_value = DEFAULT_LISTEN)]
        listen: String,
    },
    /// Ask a running `serve` whether it is healthy, for container
    /// healthchecks: prints its /healthz and exits 0 only on 200.
    Health {
        /// Where that importer listens.
        #[arg(long, env = env::LISTEN, default_value = DEFAULT_LISTEN)]
        listen: String,
    },
    /// Run one of the brief's business queries, or list orphan rentals.
    Query {
        #[command(subcommand)]
        query: Query,
        #[command(flatten)]
        store: StoreSettings,
        /// Print JSON (the business queries keyed by product_id / user_id).
        #[arg(long, global = true)]
        json: bool,
    },
    /// Show racing consumers breaking naive writes, and the safe strategies
    /// (on a scratch database and scratch queues).
    Contention {
        #[command(flatten)]
        servers: Servers,
        #[command(flatten)]
        options: crate::tools::contention::ContentionOptions,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite a store of the old shape (ObjectId `_id`s and a unique index
    /// on the business key) so that the business key is the `_id`. Stop
    /// every importer first; safe to run again after an interruption.
    Migrate {
        #[command(flatten)]
        store: StoreSettings,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The dead-letter queues: why messages were set aside (list, show),
    /// put them back once the cause is fixed (replay), or drop them (purge).
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
        #[command(flatten)]
        broker: BrokerSettings,
        /// Only this collection's dead letters (repeat for several; default all three).
        #[arg(long = "collection", value_enum, global = true)]
        collections: Vec<CollectionName>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Remove the tombstones deletes left, once they are older than any
    /// message may still be waiting: after that, a record older than the
    /// delete brings its key back (docs/message-format.md, "Deletes").
    Compact {
        #[command(flatten)]
        store: StoreSettings,
        /// Tombstones written longer ago than this ("30days", "12h", "90s").
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Only this collection (repeat for several; default all three).
        #[arg(long = "collection", value_enum)]
        collections: Vec<CollectionName>,
        /// Print what was removed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop the three collections and delete the queues, then declare them
    /// again, empty and of the configured type (asks for --yes).
    Reset {
        #[command(flatten)]
        servers: Servers,
        #[arg(long)]
        yes: bool,
    },
}

/// A collection, by its name.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CollectionName {
    Customers,
    Products,
    Rentals,
}

impl From<CollectionName> for hpn_common::RecordKind {
    fn from(name: CollectionName) -> Self {
        match name {
            CollectionName::Customers => hpn_common::RecordKind::Customer,
            CollectionName::Products => hpn_common::RecordKind::Product,
            CollectionName::Rentals => hpn_common::RecordKind::Rental,
        }
    }
}

/// A run's report on stdout: JSON for scripts, else a table.
fn print_report(report: &crate::report::ImportReport, json: bool) {
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_table());
    }
}

/// The exit code of a one-shot run that is not done: records are left in a
/// queue, or the broker could not say whether any are (README, "Exit codes").
pub const EXIT_NOT_DRAINED: u8 = 5;

/// Parse the command line and run it; the exit code says whether a one-shot
/// run is done.
pub async fn main() -> Result<ExitCode> {
    hpn_common::telemetry::init();
    match run(Cli::parse()).await {
        Ok(code) => Ok(code),
        Err(e) => Ok(hpn_common::error::exit_with(&e, crate::error::origin_of(&e))),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run {
            mode,
            servers,
            tuning,
            rentals_take_stock,
            json,
            profile_cpu,
        } => {
            let profiler = crate::observe::cpu_profile::start(profile_cpu.as_deref())?;
            let config = Config {
                connection: servers.settings()?,
                tuning,
                rentals_take_stock,
            };
            // The live lines go to stderr, and only to a terminal.
            let progress = Progress::on_terminal();
            let mut report = match import_with_progress(&config, mode, &progress).await {
                Ok(report) => report,
                // Stopped part-way: what it did, then why it stopped.
                Err(crate::Error::Unfinished { cause, report }) => {
                    print_report(&report, json);
                    return Err((*cause).into());
                }
                Err(e) => return Err(e.into()),
            };
            report.peak_rss_bytes = hpn_common::profile::peak_rss_bytes();
            report.stages = hpn_common::profile::stage_times();
            crate::observe::cpu_profile::finish(profiler, profile_cpu.as_deref())?;
            print_report(&report, json);
            if let Some(why) = report.not_drained() {
                eprintln!("hpn-importer: {why}");
                return Ok(ExitCode::from(EXIT_NOT_DRAINED));
            }
        }
        Command::Serve {
            servers,
            tuning,
            rentals_take_stock,
            listen,
        } => {
            let config = Config {
                connection: servers.settings()?,
                tuning,
                rentals_take_stock,
            };
            serve(config, &listen).await?;
        }
        Command::Health { listen } => match crate::service::http::fetch(&listen, "/healthz").await {
            Some((200, body)) => print!("{body}"),
            Some((status, body)) => {
                print!("{body}");
                anyhow::bail!("http://{listen}/healthz answered {status}");
            }
            None => anyhow::bail!("nothing answers on http://{listen}/healthz"),
        },
        Command::Query { query, store, json } => {
            let store = store_settings(store)?;
            query::answer(&Store::connect_to(&store).await?, query, json).await?;
        }
        Command::Contention { servers, options, json } => {
            let rows = crate::tools::contention::run(&servers.settings()?, &options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{}", crate::tools::contention::table(&rows));
            }
        }
        Command::Migrate { store, json } => admin::migrate_and_say(&store_settings(store)?, json).await?,
        Command::DeadLetters {
            action,
            broker,
            collections,
            json,
        } => {
            let kinds: Vec<hpn_common::RecordKind> = collections.into_iter().map(Into::into).collect();
            dead_letters::apply(action, &broker.resolve()?, &kinds, json).await?;
        }
        Command::Compact {
            store,
            older_than,
            collections,
            json,
        } => {
            let kinds: Vec<hpn_common::RecordKind> = match collections.is_empty() {
                true => hpn_common::RecordKind::ALL.to_vec(),
                false => collections.into_iter().map(Into::into).collect(),
            };
            admin::compact_and_say(&store_settings(store)?, &kinds, older_than, json).await?;
        }
        Command::Reset { servers, yes } => admin::reset_and_say(&servers.settings()?, yes).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `serve` listens for /healthz and /metrics unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// `hpn-importer serve`: the listener bound (its address on stdout, for
/// whoever started us with port 0), then the service until SIGINT or SIGTERM.
async fn serve(config: Config, listen: &str) -> Result<()> {
    let listener = match listen {
        "off" => None,
        _ => {
            let addr: std::net::SocketAddr = listen.parse().map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
            let listener = crate::service::http::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
            let bound = listener.local_addr()?;
            println!("listening on http://{bound}");
            tracing::info!("health and metrics on http://{bound}/healthz and /metrics");
            Some(listener)
        }
    };
    let signals = async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing what is in hand"),
            _ = terminate.recv() => tracing::info!("SIGTERM: finishing what is in hand"),
        }
    };
    Ok(crate::service::run(&config, listener, signals).await?)
}
