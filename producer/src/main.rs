//! `hpn-producer`: the command line is `hpn_producer::main` (in the library,
//! so the integration tests can run this very program as a child process).

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    hpn_producer::main().await
}
