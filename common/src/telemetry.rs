//! Logging setup for the binaries: `tracing` to stderr, filtered by
//! `RUST_LOG` (default `info` for our crates, `warn` for libraries), so
//! stdout carries only the report and can be piped.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,hpn_common=info,hpn_producer=info,hpn_importer=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
