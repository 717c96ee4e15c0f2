//! `raft-kv bench`: closed-loop load against the client API. Each client
//! sends one request, waits for its answer, and sends the next; clients are
//! spread over the endpoints round-robin. Latency of successful operations
//! goes into an HDR histogram (microseconds); failures are counted by their
//! API error code.
//!
//! `--api etcd` drives an etcd v3 cluster through its JSON gateway instead
//! (`POST /v3/kv/put` and `/v3/kv/range` with base64 keys and values), so
//! that one load generator, with the same keys, values and connection
//! handling, measures both (see `bench/compare`). Before and after the run
//! it asks every endpoint for its Raft term and reports how many terms
//! passed: a stable leader under load keeps it at 0.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::{BenchArgs, Workload};

struct Tally {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// xorshift64*: cheap per-client randomness for key choice.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The API error code of a failed response, or a transport failure's kind.
/// etcd's gateway answers `{"error": "etcdserver: no leader", "code": 14}`:
/// its messages map onto raft-kv's codes where they mean the same.
async fn error_code(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned));
    match message {
        Some(m) if m.contains("no leader") || m.contains("leader changed") => "no_leader".into(),
        Some(m) if m.contains("timed out") => "timeout".into(),
        Some(m) if m.starts_with("etcdserver: ") => m["etcdserver: ".len()..].replace(' ', "_"),
        Some(code) => code,
        None => format!("http_{}", status.as_u16()),
    }
}

/// Key number `key` as an 8-byte key (`k0000042`; longer past ten million).
fn key_name(key: u64) -> String {
    format!("k{key:07}")
}

/// Standard base64 with padding (etcd's JSON gateway encodes bytes so).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The highest Raft term any endpoint reports (`None` if none answers).
async fn highest_term(client: &reqwest::Client, api: Api, endpoints: &[String]) -> Option<u64> {
    let mut highest = None;
    for endpoint in endpoints {
        let request = match api {
            Api::RaftKv => client.get(format!("{endpoint}/v1/status")),
            Api::Etcd => client.post(format!("{endpoint}/v3/maintenance/status")).body("{}"),
        };
        let Ok(response) = request.timeout(Duration::from_secs(2)).send().await else { continue };
        let Ok(body) = response.bytes().await else { continue };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else { continue };
        let term = match api {
            Api::RaftKv => json["term"].as_u64(),
            // The gateway writes 64-bit integers as strings.
            Api::Etcd => json["header"]["raft_term"].as_str().and_then(|t| t.parse().ok()),
        };
        highest = highest.max(term);
    }
    highest
}

fn transport_code(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "client_timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// Which client API the endpoints speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Api {
    /// raft-kv's `/v1/kv/{key}` (also `raft-kv echo`).
    RaftKv,
    /// etcd v3's JSON gateway (`/v3/kv/put`, `/v3/kv/range`).
    Etcd,
}

struct Target {
    client: reqwest::Client,
    api: Api,
    endpoint: String,
    value: Bytes,
    /// The value in base64, for etcd.
    value_base64: String,
    consistency: String,
}

impl Target {
    fn new(client: &reqwest::Client, args: &BenchArgs, endpoint: &str, value: &Bytes) -> Target {
        Target {
            client: client.clone(),
            api: args.api,
            endpoint: endpoint.to_owned(),
            value: value.clone(),
            value_base64: base64(value),
            consistency: args.consistency.clone(),
        }
    }

    fn url(&self, key: u64) -> String {
        format!("{}/v1/kv/{}", self.endpoint, key_name(key))
    }

    /// POSTs a JSON body to etcd's gateway; the response body on success.
    async fn etcd(&self, path: &str, body: String) -> Result<Bytes, String> {
        let url = format!("{}{path}", self.endpoint);
        match self.client.post(url).header("content-type", "application/json").body(body).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.map_err(|e| transport_code(&e)),
            Ok(r) => Err(error_code(r).await),
            Err(e) => Err(transport_code(&e)),
        }
    }

    async fn put(&self, key: u64, cas: Option<u64>) -> Result<(), String> {
        if self.api == Api::Etcd {
            let body = format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                base64(key_name(key).as_bytes()),
                self.value_base64
            );
            return self.etcd("/v3/kv/put", body).await.map(drop);
        }
        let mut url = self.url(key);
        if let Some(cas) = cas {
            url.push_str(&format!("?cas={cas}"));
        }
        match self.client.put(url).body(self.value.clone()).send().await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                Ok(())
            }
            Ok(r) => Err(error_code(r).await),
            Err(e) => Err(transport_code(&e)),
        }
    }

    /// The key's modify index (0 if absent).
    async fn get(&self, key: u64) -> Result<u64, String> {
        if self.api == Api::Etcd {
            let serializable = self.consistency == "stale";
            let body =
                format!(r#"{{"key":"{}","serializable":{serializable}}}"#, base64(key_name(key).as_bytes()));
            let body = self.etcd("/v3/kv/range", body).await?;
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| "bad_response".to_owned())?;
            return Ok(json["kvs"][0]["mod_revision"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0));
        }
        let url = format!("{}?consistency={}", self.url(key), self.consistency);
        match self.client.get(url).send().await {
            Ok(r) if r.status().is_success() => {
                let index = r
                    .headers()
                    .get("x-raft-index")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let _ = r.bytes().await;
                Ok(index)
            }
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                let _ = r.bytes().await;
                Ok(0)
            }
            Ok(r) => Err(error_code(r).await),
            Err(e) => Err(transport_code(&e)),
        }
    }
}

async fn client_loop(
    target: Target,
    workload: Workload,
    keys: u64,
    seed: u64,
    stop: Instant,
    done: Arc<AtomicU64>,
) -> Tally {
    let mut tally = Tally { latency: histogram(), errors: BTreeMap::new() };
    let mut rng = Rng(seed | 1);
    while Instant::now() < stop {
        let key = rng.next() % keys;
        let started = Instant::now();
        let outcome = match workload {
            Workload::Write => target.put(key, None).await,
            Workload::Read => target.get(key).await.map(drop),
            Workload::Mixed if rng.next().is_multiple_of(2) => target.put(key, None).await,
            Workload::Mixed => target.get(key).await.map(drop),
            Workload::Cas => match target.get(key).await {
                Ok(index) => target.put(key, Some(index)).await,
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(()) => {
                tally.latency.saturating_record(started.elapsed().as_micros() as u64);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(code) => {
                // Back off a little where retrying at once cannot help.
                if matches!(code.as_str(), "no_leader" | "connect" | "unavailable" | "overloaded") {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                *tally.errors.entry(code).or_default() += 1;
            }
        }
    }
    tally
}

async fn prefill(client: &reqwest::Client, args: &BenchArgs, value: &Bytes) -> Result<(), String> {
    let keys = args.keys;
    let workers = args.clients.clamp(1, 32) as u64;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let target = Target::new(client, args, &args.endpoints[w as usize % args.endpoints.len()], value);
        tasks.push(tokio::spawn(async move {
            let mut key = w;
            while key < keys {
                let mut tries = 0;
                while let Err(code) = target.put(key, None).await {
                    tries += 1;
                    if tries > 50 {
                        return Err(format!("prefill of key {key} failed: {code}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                key += workers;
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| format!("prefill task failed: {e}"))??;
    }
    Ok(())
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), String> {
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if args.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if !["linearizable", "lease", "stale"].contains(&args.consistency.as_str()) {
        return Err(format!("--consistency {:?}: linearizable, lease or stale", args.consistency));
    }
    let endpoints: Vec<String> = args
        .endpoints
        .iter()
        .map(|e| e.trim().trim_end_matches('/').to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err("--endpoints is empty".into());
    }
    let client = crate::tls::client_builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(args.clients)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let value = Bytes::from(vec![b'x'; args.value_size]);
    let args = BenchArgs { endpoints, ..args };
    if args.workload != Workload::Write {
        if !args.json {
            eprintln!("prefilling {} keys...", args.keys);
        }
        prefill(&client, &args, &value).await?;
    }

    if args.api == Api::Etcd && args.workload == Workload::Cas {
        return Err("--workload cas is raft-kv only (etcd needs a transaction for it)".into());
    }
    let term_before = highest_term(&client, args.api, &args.endpoints).await;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop = started + args.duration;
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let target = Target::new(&client, &args, &args.endpoints[i % args.endpoints.len()], &value);
        let seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1);
        tasks.push(tokio::spawn(client_loop(target, args.workload, args.keys, seed, stop, done.clone())));
    }

    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(args.duration.as_millis() as u64), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ticker = {
        let bar = bar.clone();
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                let elapsed = started.elapsed();
                bar.set_position(elapsed.as_millis() as u64);
                let ops = done.load(Ordering::Relaxed);
                bar.set_message(format!(
                    "{ops} ops, {:.0} ops/s",
                    ops as f64 / elapsed.as_secs_f64().max(1e-3)
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut latency = histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let tally = task.await.map_err(|e| format!("a client task failed: {e}"))?;
        latency.add(&tally.latency).map_err(|e| format!("merging histograms: {e}"))?;
        for (code, count) in tally.errors {
            *errors.entry(code).or_default() += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    ticker.abort();
    bar.finish_and_clear();
    let term_after = highest_term(&client, args.api, &args.endpoints).await;
    let term_changes = match (term_before, term_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };

    let ops = latency.len();
    let error_count: u64 = errors.values().sum();
    let throughput = ops as f64 / elapsed;
    let q = |quantile: f64| if ops == 0 { 0 } else { latency.value_at_quantile(quantile) };
    if args.json {
        let report = json!({
            "api": format!("{:?}", args.api).to_lowercase(),
            "workload": format!("{:?}", args.workload).to_lowercase(),
            "clients": args.clients,
            "endpoints": args.endpoints,
            "duration_s": elapsed,
            "value_size": args.value_size,
            "keys": args.keys,
            "consistency": args.consistency,
            "ops": ops,
            "errors_total": error_count,
            "errors": errors,
            "ops_per_sec": throughput,
            "term_before": term_before,
            "term_after": term_after,
            "term_changes": term_changes,
            "latency_ms": {
                "mean": if ops == 0 { 0.0 } else { latency.mean() / 1000.0 },
                "p50": ms(q(0.5)),
                "p90": ms(q(0.9)),
                "p99": ms(q(0.99)),
                "p99.9": ms(q(0.999)),
                "max": ms(if ops == 0 { 0 } else { latency.max() }),
            },
        });
        println!("{report}");
    } else {
        println!(
            "workload {:?}, {} clients over {} endpoints, {:.2} s, {} B values, {} keys",
            args.workload,
            args.clients,
            args.endpoints.len(),
            elapsed,
            args.value_size,
            args.keys
        );
        println!("ops         {ops} ok, {error_count} failed");
        println!("throughput  {throughput:.0} ops/s");
        println!(
            "latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            ms(q(0.5)),
            ms(q(0.9)),
            ms(q(0.99)),
            ms(q(0.999)),
            ms(if ops == 0 { 0 } else { latency.max() })
        );
        for (code, count) in &errors {
            println!("error       {code}: {count}");
        }
        match (term_before, term_after) {
            (Some(before), Some(after)) => {
                println!("raft term   {before} -> {after} ({} term changes)", after.saturating_sub(before))
            }
            _ => println!("raft term   unknown (the endpoints did not report it)"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn keys_are_eight_bytes() {
        assert_eq!(key_name(42), "k0000042");
        assert_eq!(key_name(9_999_999).len(), 8);
    }
}
