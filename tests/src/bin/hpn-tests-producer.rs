//! The `hpn-producer` program, built inside this package so the tests can
//! run it as a child process and read its exit code (cargo exposes a
//! binary's path only to its own package's tests).

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    hpn_producer::main().await
}
