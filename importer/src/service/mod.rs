//! The long-running importer: `serve` (reconnects, holds writes through
//! store faults, shuts down cleanly) and its HTTP listener for `/healthz`
//! and `/metrics` (`http`, with the small client `hpn-importer health`
//! uses). [`run`] wires them up, as the binary and a test would: the
//! listener given, the shutdown a future.

pub mod http;
pub mod serve;

use crate::config::Config;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long shutdown may take before the process leaves anyway (what it
/// still holds is unacknowledged and returns to the queues).
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(9);

/// Serve `config` until `shutdown` completes, with `/healthz` and
/// `/metrics` on `listener` if one is given; once shutdown has begun, leave
/// after [`SHUTDOWN_DEADLINE`] at the latest.
pub async fn run(
    config: &Config,
    listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> crate::Result<()> {
    let stop = CancellationToken::new();
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::default());
    if let Some(listener) = listener {
        tokio::spawn(http::serve(listener, health.clone(), metrics.clone(), stop.clone()));
    }
    let deadline = async {
        shutdown.await;
        stop.cancel();
        tokio::time::sleep(SHUTDOWN_DEADLINE).await;
    };
    tokio::select! {
        result = serve::serve(config, health, metrics, stop.clone()) => result,
        _ = deadline => {
            tracing::warn!("shutdown did not finish in {SHUTDOWN_DEADLINE:?}; what is unacknowledged returns to the queues");
            Ok(())
        }
    }
}
