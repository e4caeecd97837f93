//! The broker side of a one-shot run, which outlives any one connection.
//!
//! A nightly run meets rolling restarts and partitions: the node it is
//! connected to stops, or falls into a minority and pauses, or closes a
//! channel with `nodedown`. With two healthy nodes in its address list the
//! run should not fail for that. So a run holds one [`Session`] (a
//! connection, the topology declared on it, a dead-letter channel) at a
//! time; when a consumer loses it, the collection asks [`Broker::reconnect`]
//! for the next one, which walks the address list again (the first that
//! answers wins, see `hpn_common::broker::connect`) with backoff, for at
//! most the run's patience (`--broker-patience-ms`, from the loss). Several
//! collections losing the same connection get the same new one: each
//! session has a generation, and only the first to report a generation's
//! loss reconnects.
//!
//! A refusal no retry mends (a login, a certificate) stops the run at once,
//! as at the start; so does a connect that fails before the run has begun:
//! then nothing has been consumed, and the operator is told at once.

use crate::config::Config;
use crate::error::Result;
use crate::route::dead_letter::DeadLetters;
use hpn_common::retry::RetryPolicy;
use hpn_common::{broker, Topology};
use lapin::Connection;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

/// One connection's worth of what the run's tasks share.
pub(crate) struct Session {
    /// Counts the connections of the run: 0 for the first.
    pub generation: u64,
    pub connection: Connection,
    pub dead_letters: DeadLetters,
}

impl Session {
    async fn open(config: &Config, name: &str, generation: u64) -> Result<Session> {
        let settings = &config.connection;
        let connection = broker::connect(&settings.amqp_url, name).await?;
        let opened = async {
            let topology = settings.topology();
            topology.declare(&connection).await?;
            DeadLetters::open(&connection, topology).await
        };
        match opened.await {
            Ok(dead_letters) => Ok(Session {
                generation,
                connection,
                dead_letters,
            }),
            Err(e) => {
                broker::close(&connection, "failed").await;
                Err(e)
            }
        }
    }

    /// Close the dead-letter channel, then the connection: anything still
    /// unacknowledged goes back to its queue. Bounded: the session closed is
    /// most often one that was lost.
    pub async fn close(&self) {
        let _ = tokio::time::timeout(broker::CLOSE_TIMEOUT, self.dead_letters.close()).await;
        broker::close(&self.connection, "done").await;
    }
}

/// The run's current session, and a new one when it is lost.
pub(crate) struct Broker {
    name: String,
    patience: Duration,
    pub topology: Topology,
    current: Mutex<Arc<Session>>,
    config: Config,
}

impl Broker {
    /// The run's first connection: a failure here is the run's at once.
    pub async fn connect(config: &Config, name: &str) -> Result<Broker> {
        let session = Session::open(config, name, 0).await?;
        Ok(Broker {
            name: name.to_string(),
            patience: config.tuning.broker_patience(),
            topology: config.connection.topology(),
            current: Mutex::new(Arc::new(session)),
            config: config.clone(),
        })
    }

    /// The session in use now.
    pub async fn session(&self) -> Arc<Session> {
        self.current.lock().await.clone()
    }

    /// `lost` failed with `cause` (a broker error): a session of a later
    /// generation, connecting one if nobody has yet. Tries every address
    /// with backoff for the run's patience; past it, or on a refusal no
    /// retry mends, the last error.
    pub async fn reconnect(&self, lost: &Session, cause: &crate::Error) -> Result<Arc<Session>> {
        let mut current = self.current.lock().await;
        if current.generation > lost.generation {
            return Ok(current.clone());
        }
        warn!(
            "{cause}; connecting again (every address, for up to {:?}) to go on draining",
            self.patience
        );
        current.close().await;
        let since = Instant::now();
        let mut attempt = 0;
        loop {
            match Session::open(&self.config, &self.name, lost.generation + 1).await {
                Ok(session) => {
                    info!(after = ?since.elapsed(), "connected again; draining goes on");
                    *current = Arc::new(session);
                    return Ok(current.clone());
                }
                Err(e) if e.broker_refused_for_good() || since.elapsed() >= self.patience => return Err(e),
                Err(e) => {
                    let wait = RetryPolicy::RECONNECT
                        .backoff(attempt)
                        .min(self.patience.saturating_sub(since.elapsed()));
                    tracing::debug!(attempt, "no broker address answers yet ({e}); next try in {wait:?}");
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Close the session in use.
    pub async fn close(&self) {
        self.current.lock().await.close().await;
    }
}
