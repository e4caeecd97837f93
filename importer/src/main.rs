//! `hpn-importer`: the command line is `hpn_importer::main` (in the library,
//! so the integration tests can run this very program as a child process).

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    hpn_importer::main().await
}
