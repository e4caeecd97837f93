//! A small HTTP GET, for the importer's health and metrics endpoints: what
//! the importer's `health` command, the test kit and the tests ask them.

/// GET `http://{address}{path}` with a 5 s timeout: the status and the
/// body, or `None` while nothing answers there.
pub async fn fetch(address: &str, path: &str) -> Option<(u16, String)> {
    let url = format!("http://{address}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(5)))
            .build()
            .into();
        let mut response = agent.get(&url).call().ok()?;
        let body = response.body_mut().read_to_string().ok()?;
        Some((response.status().as_u16(), body))
    })
    .await
    .ok()
    .flatten()
}
