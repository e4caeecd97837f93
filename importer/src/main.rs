//! `hpn-importer`: see `hpn_importer::cli`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hpn_importer::cli::main().await
}
