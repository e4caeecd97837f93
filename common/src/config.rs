//! Typed settings shared by both binaries: where the servers are and which
//! database and queue prefix to use. Every setting is a command-line flag and
//! an environment variable, with the local defaults the services script
//! provisions, so `--help` documents them all in one place.

use crate::topology::Topology;

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_MONGODB_URI: &str = "mongodb://127.0.0.1:27017";
pub const DEFAULT_DATABASE: &str = "hp_norton";
pub const DEFAULT_QUEUE_PREFIX: &str = "hp_norton";

/// Where the broker and the store are, and which names to use on them.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// RabbitMQ address (AMQP 0-9-1 URL).
    #[arg(long, env = "HPN_AMQP_URL", default_value = DEFAULT_AMQP_URL, global = true)]
    pub amqp_url: String,
    /// MongoDB connection string.
    #[arg(long, env = "HPN_MONGODB_URI", default_value = DEFAULT_MONGODB_URI, global = true)]
    pub mongodb_uri: String,
    /// MongoDB database name.
    #[arg(long, env = "HPN_DATABASE", default_value = DEFAULT_DATABASE, global = true)]
    pub database: String,
    /// Prefix of every exchange and queue name.
    #[arg(long, env = "HPN_QUEUE_PREFIX", default_value = DEFAULT_QUEUE_PREFIX, global = true)]
    pub queue_prefix: String,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            amqp_url: DEFAULT_AMQP_URL.into(),
            mongodb_uri: DEFAULT_MONGODB_URI.into(),
            database: DEFAULT_DATABASE.into(),
            queue_prefix: DEFAULT_QUEUE_PREFIX.into(),
        }
    }
}

impl ConnectionSettings {
    /// The defaults, overridden by whichever `HPN_*` variables are set
    /// (what the binaries do, for library users and tests).
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        ConnectionSettings {
            amqp_url: var("HPN_AMQP_URL", DEFAULT_AMQP_URL),
            mongodb_uri: var("HPN_MONGODB_URI", DEFAULT_MONGODB_URI),
            database: var("HPN_DATABASE", DEFAULT_DATABASE),
            queue_prefix: var("HPN_QUEUE_PREFIX", DEFAULT_QUEUE_PREFIX),
        }
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.queue_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        connection: ConnectionSettings,
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::parse_from(["x", "--database", "other", "--queue-prefix", "t1"]);
        assert_eq!(cli.connection.database, "other");
        assert_eq!(
            cli.connection.topology().queue(crate::RecordKind::Customer),
            "t1.customers"
        );
        let defaults = Cli::parse_from(["x"]).connection;
        // The environment may point elsewhere; the flags' defaults follow it.
        assert_eq!(defaults, ConnectionSettings::from_env());
    }
}
