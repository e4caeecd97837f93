//! Sampling CPU profiles of a one-shot run (`run --profile-cpu FILE`), when
//! the binary is built with the `profiling` feature; without it, asking for
//! one is an error that says how to get it.

#[cfg(feature = "profiling")]
mod sampled {
    use anyhow::{Context, Result};
    use std::path::Path;

    pub type Profiler = Option<pprof::ProfilerGuard<'static>>;

    pub fn start(path: Option<&Path>) -> Result<Profiler> {
        path.map(|_| {
            pprof::ProfilerGuardBuilder::default()
                .frequency(499)
                .build()
                .context("starting the CPU profiler")
        })
        .transpose()
    }

    pub fn finish(profiler: Profiler, path: Option<&Path>) -> Result<()> {
        let (Some(guard), Some(path)) = (profiler, path) else {
            return Ok(());
        };
        let report = guard.report().build().context("building the CPU profile")?;
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        report.flamegraph(file).context("writing the flamegraph")?;
        Ok(())
    }
}

#[cfg(not(feature = "profiling"))]
mod sampled {
    use anyhow::Result;
    use std::path::Path;

    /// Nothing to hold: this build has no profiler.
    pub struct Profiler;

    pub fn start(path: Option<&Path>) -> Result<Profiler> {
        anyhow::ensure!(
            path.is_none(),
            "this hpn-importer was built without CPU profiling: build with --features profiling"
        );
        Ok(Profiler)
    }

    pub fn finish(_: Profiler, _: Option<&Path>) -> Result<()> {
        Ok(())
    }
}

pub use sampled::{finish, start};
