//! The `hpn-importer` program, built inside this package so the fault tests
//! can start, signal and kill it as a child process (cargo exposes a
//! binary's path only to its own package's tests).

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    hpn_importer::main().await
}
