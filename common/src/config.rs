//! Typed settings, per server: where the broker is and which queue prefix
//! to use ([`BrokerSettings`]), where the store is and which database to use
//! ([`StoreSettings`]). Each command flattens only the groups it reads, so
//! its `--help` lists only those; every one is a flag and an environment
//! variable ([`mod@env`] names them all), with the local defaults the services
//! script provisions.

use crate::topology::{QueueType, Topology};

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_MONGODB_URI: &str = "mongodb://127.0.0.1:27017";
pub const DEFAULT_DATABASE: &str = "hp_norton";
pub const DEFAULT_QUEUE_PREFIX: &str = "hp_norton";

/// Every environment variable the binaries and scripts read, in one place.
pub mod env {
    pub const AMQP_URL: &str = "HPN_AMQP_URL";
    /// A file holding the AMQP URL (a Docker or Kubernetes secret).
    pub const AMQP_URL_FILE: &str = "HPN_AMQP_URL_FILE";
    pub const QUEUE_PREFIX: &str = "HPN_QUEUE_PREFIX";
    pub const QUEUE_TYPE: &str = "HPN_QUEUE_TYPE";
    pub const MONGODB_URI: &str = "HPN_MONGODB_URI";
    /// A file holding the MongoDB connection string.
    pub const MONGODB_URI_FILE: &str = "HPN_MONGODB_URI_FILE";
    pub const DATABASE: &str = "HPN_DATABASE";
    pub const ROWS_PER_MESSAGE: &str = "HPN_ROWS_PER_MESSAGE";
    pub const CONFIRM_WINDOW: &str = "HPN_CONFIRM_WINDOW";
    pub const VERSION_CLOCK: &str = "HPN_VERSION_CLOCK";
    pub const BATCH_SIZE: &str = "HPN_BATCH_SIZE";
    pub const FLUSH_MS: &str = "HPN_FLUSH_MS";
    pub const PREFETCH: &str = "HPN_PREFETCH";
    pub const PREFETCH_RECORDS: &str = "HPN_PREFETCH_RECORDS";
    pub const PREFETCH_SCOPE: &str = "HPN_PREFETCH_SCOPE";
    pub const CONSUMERS: &str = "HPN_CONSUMERS";
    pub const WRITERS: &str = "HPN_WRITERS";
    pub const IDLE_MS: &str = "HPN_IDLE_MS";
    pub const DRAIN_PATIENCE_MS: &str = "HPN_DRAIN_PATIENCE_MS";
    pub const STORE_PATIENCE_MS: &str = "HPN_STORE_PATIENCE_MS";
    pub const BROKER_PATIENCE_MS: &str = "HPN_BROKER_PATIENCE_MS";
    pub const HOLD_LIMIT_MS: &str = "HPN_HOLD_LIMIT_MS";
    pub const LOSS_SETTLE_MS: &str = "HPN_LOSS_SETTLE_MS";
    pub const MEMORY_BUDGET_MIB: &str = "HPN_MEMORY_BUDGET_MIB";
    pub const MAX_MESSAGE_BYTES: &str = "HPN_MAX_MESSAGE_BYTES";
    pub const MAX_ATTEMPTS: &str = "HPN_MAX_ATTEMPTS";
    pub const LISTEN: &str = "HPN_LISTEN";
    pub const RENTALS_TAKE_STOCK: &str = "HPN_RENTALS_TAKE_STOCK";
    pub const PROFILE_STAGES: &str = "HPN_PROFILE_STAGES";
    /// The cluster's addresses, for the cluster tests and benchmarks
    /// (default: what `scripts/services cluster urls` prints).
    pub const CLUSTER_AMQP_URL: &str = "HPN_CLUSTER_AMQP_URL";
}

/// Where RabbitMQ is, and the names and type of our exchanges and queues on it.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct BrokerSettings {
    /// RabbitMQ address (AMQP 0-9-1 URL), or several separated by commas
    /// (the nodes of a cluster): the first that answers is used, and the
    /// next ones when it is lost. TLS: `amqps://` with `cacertfile`,
    /// `certfile` and `keyfile` in the query (docs/security.md). The value
    /// of the variable is never shown here: it may hold a password.
    #[arg(long, env = env::AMQP_URL, default_value = DEFAULT_AMQP_URL, hide_env_values = true)]
    pub amqp_url: String,
    /// A file whose content is the RabbitMQ address (a Docker or Kubernetes
    /// secret); when given, it is used instead of --amqp-url.
    #[arg(long, env = env::AMQP_URL_FILE, value_name = "PATH")]
    pub amqp_url_file: Option<std::path::PathBuf>,
    /// Prefix of every exchange and queue name.
    #[arg(long, env = env::QUEUE_PREFIX, default_value = DEFAULT_QUEUE_PREFIX)]
    pub queue_prefix: String,
    /// Type of the queues: classic (one broker) or quorum (replicated
    /// across a cluster). Producer, importer and upstream publishers must
    /// agree: a queue keeps the type it was first declared with.
    #[arg(long, env = env::QUEUE_TYPE, value_enum, default_value_t = QueueType::default())]
    pub queue_type: QueueType,
}

/// Where MongoDB is, and the database to use on it.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// MongoDB connection string (TLS: `tls=true&tlsCAFile=…`, see
    /// docs/security.md). The value of the variable is never shown here.
    #[arg(long, env = env::MONGODB_URI, default_value = DEFAULT_MONGODB_URI, hide_env_values = true)]
    pub mongodb_uri: String,
    /// A file whose content is the MongoDB connection string; when given,
    /// it is used instead of --mongodb-uri.
    #[arg(long, env = env::MONGODB_URI_FILE, value_name = "PATH")]
    pub mongodb_uri_file: Option<std::path::PathBuf>,
    /// MongoDB database name.
    #[arg(long, env = env::DATABASE, default_value = DEFAULT_DATABASE)]
    pub database: String,
}

impl BrokerSettings {
    pub fn topology(&self) -> Topology {
        Topology::new(&self.queue_prefix, self.queue_type)
    }

    /// Take the address from `--amqp-url-file` when one is given, and
    /// check it: a malformed address is a settings error, its password
    /// hidden ([`crate::address`]).
    pub fn resolve(mut self) -> crate::Result<Self> {
        if let Some(path) = self.amqp_url_file.take() {
            self.amqp_url = read_secret(&path, "RabbitMQ address")?;
        }
        crate::address::check_amqp_urls(&self.amqp_url).map_err(crate::Error::Settings)?;
        Ok(self)
    }
}

impl StoreSettings {
    /// Take the connection string from `--mongodb-uri-file` when one is
    /// given. (The importer, which links the MongoDB driver, checks it.)
    pub fn resolve(mut self) -> crate::Result<Self> {
        if let Some(path) = self.mongodb_uri_file.take() {
            self.mongodb_uri = read_secret(&path, "MongoDB connection string")?;
        }
        Ok(self)
    }
}

/// The content of a secret file, without the line end an editor leaves;
/// an error names the file and what it should hold, never the content.
fn read_secret(path: &std::path::Path, what: &str) -> crate::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::Error::Settings(format!("reading the {what} from {}: {e}", path.display())))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(crate::Error::Settings(format!(
            "{} is empty: it should hold the {what}",
            path.display()
        )));
    }
    Ok(value.to_string())
}

/// Settings that say where a store is: a MongoDB connection string and a
/// database on it (the importer's `Store::connect_to` takes any of them).
pub trait StoreAddress {
    fn mongodb_uri(&self) -> &str;
    fn database(&self) -> &str;
}

impl StoreAddress for StoreSettings {
    fn mongodb_uri(&self) -> &str {
        &self.mongodb_uri
    }
    fn database(&self) -> &str {
        &self.database
    }
}

impl StoreAddress for ConnectionSettings {
    fn mongodb_uri(&self) -> &str {
        &self.mongodb_uri
    }
    fn database(&self) -> &str {
        &self.database
    }
}

/// Both servers, for what uses both (the importer, the tests, the bench).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionSettings {
    pub amqp_url: String,
    pub mongodb_uri: String,
    pub database: String,
    pub queue_prefix: String,
    pub queue_type: QueueType,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            amqp_url: DEFAULT_AMQP_URL.into(),
            mongodb_uri: DEFAULT_MONGODB_URI.into(),
            database: DEFAULT_DATABASE.into(),
            queue_prefix: DEFAULT_QUEUE_PREFIX.into(),
            queue_type: QueueType::default(),
        }
    }
}

impl ConnectionSettings {
    /// From parsed settings; call [`BrokerSettings::resolve`] and
    /// [`StoreSettings::resolve`] first where the `_FILE` variants may be set.
    pub fn new(broker: BrokerSettings, store: StoreSettings) -> Self {
        ConnectionSettings {
            amqp_url: broker.amqp_url,
            queue_prefix: broker.queue_prefix,
            queue_type: broker.queue_type,
            mongodb_uri: store.mongodb_uri,
            database: store.database,
        }
    }

    /// The defaults, overridden by whichever `HPN_*` variables are set,
    /// the `_FILE` secrets read and the addresses checked as the binaries
    /// do ([`BrokerSettings::resolve`], [`StoreSettings::resolve`]): for
    /// library users and tests, the same path as the command line.
    pub fn from_env() -> crate::Result<Self> {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        let file = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from)
        };
        let broker = BrokerSettings {
            amqp_url: var(env::AMQP_URL, DEFAULT_AMQP_URL),
            amqp_url_file: file(env::AMQP_URL_FILE),
            queue_prefix: var(env::QUEUE_PREFIX, DEFAULT_QUEUE_PREFIX),
            queue_type: std::env::var(env::QUEUE_TYPE)
                .ok()
                .and_then(|t| <QueueType as clap::ValueEnum>::from_str(&t, true).ok())
                .unwrap_or_default(),
        };
        let store = StoreSettings {
            mongodb_uri: var(env::MONGODB_URI, DEFAULT_MONGODB_URI),
            mongodb_uri_file: file(env::MONGODB_URI_FILE),
            database: var(env::DATABASE, DEFAULT_DATABASE),
        };
        Ok(ConnectionSettings::new(broker.resolve()?, store.resolve()?))
    }

    /// The variables that point a child process (our own binaries) at
    /// these servers and names.
    pub fn env_vars(&self) -> [(&'static str, &str); 5] {
        [
            (env::AMQP_URL, &self.amqp_url),
            (env::MONGODB_URI, &self.mongodb_uri),
            (env::DATABASE, &self.database),
            (env::QUEUE_PREFIX, &self.queue_prefix),
            (env::QUEUE_TYPE, self.queue_type.as_str()),
        ]
    }

    pub fn broker(&self) -> BrokerSettings {
        BrokerSettings {
            amqp_url: self.amqp_url.clone(),
            amqp_url_file: None,
            queue_prefix: self.queue_prefix.clone(),
            queue_type: self.queue_type,
        }
    }

    pub fn store(&self) -> StoreSettings {
        StoreSettings {
            mongodb_uri: self.mongodb_uri.clone(),
            mongodb_uri_file: None,
            database: self.database.clone(),
        }
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.queue_prefix, self.queue_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        broker: BrokerSettings,
        #[command(flatten)]
        store: StoreSettings,
    }

    #[test]
    fn flags_override_and_declared_defaults_are_the_library_defaults() {
        let cli = Cli::parse_from([
            "x",
            "--database",
            "other",
            "--queue-prefix",
            "t1",
            "--queue-type",
            "quorum",
        ]);
        let settings = ConnectionSettings::new(cli.broker, cli.store);
        assert_eq!(settings.database, "other");
        assert_eq!(settings.topology().queue_type(), QueueType::Quorum);
        assert_eq!(settings.topology().queue(crate::RecordKind::Customer), "t1.customers");
        assert_eq!(ConnectionSettings::new(settings.broker(), settings.store()), settings);
        // What clap declares, whatever the environment of this test says.
        let command = Cli::command();
        let declared = |id: &str| {
            let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            (
                arg.get_default_values()[0].to_string_lossy().into_owned(),
                arg.get_env().unwrap().to_string_lossy().into_owned(),
            )
        };
        let defaults = ConnectionSettings::default();
        assert_eq!(declared("amqp_url"), (defaults.amqp_url, env::AMQP_URL.to_string()));
        assert_eq!(
            declared("mongodb_uri"),
            (defaults.mongodb_uri, env::MONGODB_URI.to_string())
        );
        assert_eq!(declared("database"), (defaults.database, env::DATABASE.to_string()));
        assert_eq!(
            declared("queue_prefix"),
            (defaults.queue_prefix, env::QUEUE_PREFIX.to_string())
        );
        assert_eq!(
            declared("queue_type"),
            (defaults.queue_type.to_string(), env::QUEUE_TYPE.to_string())
        );
    }
}
