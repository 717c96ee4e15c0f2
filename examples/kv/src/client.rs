//! `raft-kv get|put|delete|status|cluster`: a small client of the HTTP API.

use std::io::Write as _;

use serde_json::{json, Value};

use crate::ClusterAction;

/// A key as a URL path segment (percent-encoding everything but unreserved
/// characters and `/`).
pub(crate) fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A request that got no answer, with the causes reqwest keeps in its
/// sources (a refused certificate, a refused connection).
pub(crate) fn failed(endpoint: &str, error: &reqwest::Error) -> String {
    let mut text = format!("{endpoint}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        text.push_str(" (for https, pass --ca-file with the CA that signed the server's certificate)");
    }
    text
}

fn base(endpoint: &str) -> &str {
    endpoint.trim_end_matches('/')
}

async fn finish(response: reqwest::Response, print_body: bool) -> Result<(), String> {
    let status = response.status();
    let index = response.headers().get("x-raft-index").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response.bytes().await.map_err(|e| format!("reading the response: {e}"))?;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body).trim()));
    }
    if print_body {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&body);
        if !body.ends_with(b"\n") {
            let _ = stdout.write_all(b"\n");
        }
    }
    if let Some(index) = index {
        eprintln!("modify index: {index}");
    }
    Ok(())
}

fn client() -> Result<reqwest::Client, String> {
    crate::tls::client_builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

pub(crate) async fn get(endpoint: &str, key: &str, consistency: &str) -> Result<(), String> {
    let url = format!("{}/v1/kv/{}?consistency={consistency}", base(endpoint), encode_key(key));
    let response = client()?.get(url).send().await.map_err(|e| failed(endpoint, &e))?;
    finish(response, true).await
}

pub(crate) async fn put(
    endpoint: &str,
    key: &str,
    value: String,
    cas: Option<u64>,
    idempotency_key: Option<String>,
) -> Result<(), String> {
    let mut url = format!("{}/v1/kv/{}", base(endpoint), encode_key(key));
    if let Some(cas) = cas {
        url.push_str(&format!("?cas={cas}"));
    }
    let mut request = client()?.put(url).body(value);
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("idempotency-key", idempotency_key);
    }
    let response = request.send().await.map_err(|e| failed(endpoint, &e))?;
    finish(response, true).await
}

pub(crate) async fn delete(endpoint: &str, key: &str, cas: Option<u64>) -> Result<(), String> {
    let mut url = format!("{}/v1/kv/{}", base(endpoint), encode_key(key));
    if let Some(cas) = cas {
        url.push_str(&format!("?cas={cas}"));
    }
    let response = client()?.delete(url).send().await.map_err(|e| failed(endpoint, &e))?;
    finish(response, true).await
}

pub(crate) async fn show(endpoint: &str, path: &str) -> Result<(), String> {
    let response =
        client()?.get(format!("{}{path}", base(endpoint))).send().await.map_err(|e| failed(endpoint, &e))?;
    finish(response, true).await
}

/// `raft-kv cluster [show|add|remove|transfer-leader]`: changes read the
/// topology, edit it, and PUT it back whole.
pub(crate) async fn cluster(endpoint: &str, action: Option<ClusterAction>) -> Result<(), String> {
    let url = format!("{}/v1/cluster", base(endpoint));
    let client = client()?;
    let (id, address, learner) = match action {
        None | Some(ClusterAction::Show) => return show(endpoint, "/v1/cluster").await,
        Some(ClusterAction::TransferLeader { to }) => {
            let response = client
                .post(format!("{url}/transfer-leader"))
                .body(json!({ "to": to }).to_string())
                .send()
                .await
                .map_err(|e| failed(endpoint, &e))?;
            return finish(response, true).await;
        }
        Some(ClusterAction::Add { id, raft_url, learner }) => (id, Some(raft_url), learner),
        Some(ClusterAction::Remove { id }) => (id, None, false),
    };
    let response = client.get(&url).send().await.map_err(|e| failed(endpoint, &e))?;
    if !response.status().is_success() {
        return finish(response, true).await; // the error (401, 503, ...) as is
    }
    let body = response.bytes().await.map_err(|e| format!("reading the topology: {e}"))?;
    let mut topology: Value =
        serde_json::from_slice(&body).map_err(|e| format!("bad topology from {url}: {e}"))?;
    for list in ["voters", "learners"] {
        if let Some(members) = topology[list].as_array_mut() {
            members.retain(|m| m["id"] != id);
        }
    }
    if let Some(address) = address {
        let list = if learner { "learners" } else { "voters" };
        let members = topology[list].as_array_mut().ok_or_else(|| format!("bad topology from {url}"))?;
        members.push(json!({ "id": id, "address": address }));
    }
    let response =
        client.put(&url).body(topology.to_string()).send().await.map_err(|e| failed(endpoint, &e))?;
    finish(response, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(encode_key("a/b-c_d.e~f"), "a/b-c_d.e~f");
        assert_eq!(encode_key("a b?c#d%"), "a%20b%3Fc%23d%25");
        assert_eq!(encode_key("é"), "%C3%A9");
    }
}
