//! Logging setup for the binaries: `tracing` to stderr, filtered by
//! `RUST_LOG` (default [`DEFAULT_FILTER`]: `info` for our crates, `warn` for libraries), so
//! stdout carries only the report and can be piped. With
//! `HPN_PROFILE_STAGES` set, stage spans are also collected for the
//! profile (see [`crate::profile`]).

use crate::profile::{self, StageLayer};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Our crates at info, libraries at warn, and lapin not at all: every
/// error of lapin's reaches our code as a result, which says it once with
/// where it came from; lapin's own lines repeated it as an ERROR even when
/// nothing was wrong (a producer refused a declaration it does without).
pub const DEFAULT_FILTER: &str = "warn,lapin=off,hpn_common=info,hpn_producer=info,hpn_importer=info";

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only for a person at a terminal, not in log files or journals.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let stages = profile::stages_requested()
        .then(|| StageLayer.with_filter(Targets::new().with_target(profile::TARGET, LevelFilter::DEBUG)));
    let _ = tracing_subscriber::registry().with(logs).with(stages).try_init();
}
