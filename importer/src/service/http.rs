//! The importer's HTTP listener: `/healthz` for orchestrators, `/metrics`
//! for Prometheus, served by `serve` (on by default, `--listen off` for none).
//! Also the client side, [`fetch`] (from `hpn_common::http`), for
//! `hpn-importer health` (a container healthcheck needs no curl in the
//! image), the benchmark and the tests.

use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use hpn_common::http::fetch;

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.health.report();
    let status = if state.health.healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.observe_health(&state.health);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Serve `/healthz` and `/metrics` on an already bound listener until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(self::metrics))
        .with_state(AppState { health, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Bind the listener (so a bad address fails at start, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
