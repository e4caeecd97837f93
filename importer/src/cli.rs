//! The `hpn-importer` command line: drain the queues into MongoDB (linear
//! or parallel), serve continuously, run the business queries, demonstrate
//! contention, migrate a store of the old shape, or reset a database and
//! its queues. It lives in the library so that the integration tests can
//! run exactly this program as a child process (see `tests/src/bin`).

use crate::observe::progress::Progress;
use crate::oneshot::run::import_with_progress;
use crate::store::Store;
use crate::tools::{admin, query};
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

#[derive(Subcommand)]
enum DeadLetterAction {
    /// Dead letters per collection, grouped by reason (numbers and quoted
    /// values folded), with counts and when the first and last arrived.
    List,
    /// A few whole dead letters, headers and body.
    Show {
        /// Only those whose reason contains this text (any case).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value_t = 5)]
        limit: usize,
    },
    /// Put dead letters back on their queue (the records exchange, their
    /// routing key, their properties and version; the reason kept as
    /// x-hpn-last-error). Each is removed only once its copy is confirmed.
    Replay {
        /// Only those whose reason contains this text (any case).
        #[arg(long)]
        reason: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
        /// Only count what would be replayed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Drop dead letters (asks for --yes).
    Purge {
        /// Only those whose reason contains this text (any case).
        #[arg(long)]
        reason: Option<String>,
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

#[derive(Subcommand)]
enum Query {
    /// Every product with quantity_available > 0.
    AvailableProducts,
    /// Every customer who rented a product.
    Rentals { product_id: String },
    /// Rentals whose customer or product is not in the store, or deleted.
    Orphans,
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
            let store = Store::connect(&store.mongodb_uri, &store.database).await?;
            match query {
                Query::AvailableProducts => {
                    let products = store.available_products().await?;
                    if json {
                        println!("{:#}", query::products_json(&products));
                    } else {
                        println!(
                            "{}\n{}",
                            query::products_table(&products),
                            query::products_summary(&products)
                        );
                    }
                }
                Query::Rentals { product_id } => {
                    let customers = store.customers_renting(&product_id).await?;
                    if json {
                        println!("{:#}", query::customers_json(&customers));
                    } else {
                        println!(
                            "{}\n{}",
                            query::customers_table(&customers),
                            query::renters_summary(&customers, &product_id)
                        );
                    }
                }
                Query::Orphans => {
                    let found = store.orphan_rentals().await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&found)?);
                    } else {
                        println!("{}\n{}", query::orphans_table(&found), query::orphans_summary(&found));
                    }
                }
            }
        }
        Command::Contention { servers, options, json } => {
            let rows = crate::tools::contention::run(&servers.settings()?, &options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{}", crate::tools::contention::table(&rows));
            }
        }
        Command::Migrate { store, json } => {
            let done = admin::migrate(&store_settings(store)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!("{}", query::migrated_table(&done));
            }
        }
        Command::DeadLetters {
            action,
            broker,
            collections,
            json,
        } => {
            use crate::tools::dead_letters;
            let broker = broker.resolve()?;
            let kinds: Vec<hpn_common::RecordKind> = collections.into_iter().map(Into::into).collect();
            let print = |value: serde_json::Value, table: String| {
                if json {
                    println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
                } else {
                    println!("{table}");
                }
            };
            match action {
                DeadLetterAction::List => {
                    let groups = dead_letters::list(&broker, &kinds).await?;
                    print(serde_json::to_value(&groups)?, dead_letters::groups_table(&groups));
                }
                DeadLetterAction::Show { reason, limit } => {
                    let shown = dead_letters::show(&broker, &kinds, reason.as_deref(), limit).await?;
                    let text = shown
                        .iter()
                        .map(|s| serde_json::to_string_pretty(s).expect("JSON"))
                        .collect::<Vec<_>>()
                        .join("\n");
                    print(
                        serde_json::to_value(&shown)?,
                        if shown.is_empty() {
                            "no dead letters".into()
                        } else {
                            text
                        },
                    );
                }
                DeadLetterAction::Replay { reason, limit, dry_run } => {
                    let moved = dead_letters::replay(&broker, &kinds, reason.as_deref(), limit, dry_run).await?;
                    print(
                        serde_json::to_value(&moved)?,
                        dead_letters::moved_table(&moved, dry_run),
                    );
                }
                DeadLetterAction::Purge { reason, yes } => {
                    anyhow::ensure!(
                        yes,
                        "purge drops the {} dead letters{}: add --yes",
                        broker.queue_prefix,
                        reason
                            .as_deref()
                            .map(|r| format!(" whose reason contains {r:?}"))
                            .unwrap_or_default()
                    );
                    let moved = dead_letters::purge(&broker, &kinds, reason.as_deref()).await?;
                    print(serde_json::to_value(&moved)?, dead_letters::moved_table(&moved, false));
                }
            }
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
            let removed = admin::compact(&store_settings(store)?, &kinds, older_than).await?;
            if json {
                let by_collection: serde_json::Map<String, serde_json::Value> = removed
                    .iter()
                    .map(|(kind, n)| (kind.collection().to_string(), (*n).into()))
                    .collect();
                println!("{}", serde_json::Value::Object(by_collection));
            } else {
                for (kind, n) in removed {
                    println!(
                        "{}: removed {n} tombstones older than {}",
                        kind.collection(),
                        humantime::format_duration(older_than)
                    );
                }
            }
        }
        Command::Reset { servers, yes } => {
            let settings = servers.settings()?;
            anyhow::ensure!(
                yes,
                "reset drops the {} collections and empties the {} queues: add --yes",
                settings.database,
                settings.queue_prefix
            );
            let (deleted, topology) = admin::reset(&settings).await?;
            println!(
                "dropped the collections of {}; deleted {deleted} queued messages and declared the {} queues \
                 anew ({})",
                settings.database,
                settings.queue_prefix,
                topology.queue_type()
            );
        }
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
