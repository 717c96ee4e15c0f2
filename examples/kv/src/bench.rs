//! `raft-kv bench`: closed-loop load against the client API. Each client
//! sends one request, waits for its answer, and sends the next; clients are
//! spread over the endpoints round-robin. Latency of successful operations
//! goes into an HDR histogram (microseconds); failures are counted by their
//! API error code.

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
async fn error_code(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("http_{}", status.as_u16()))
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

struct Target {
    client: reqwest::Client,
    endpoint: String,
    value: Bytes,
    consistency: String,
}

impl Target {
    fn url(&self, key: u64) -> String {
        format!("{}/v1/kv/bench-{key}", self.endpoint)
    }

    async fn put(&self, key: u64, cas: Option<u64>) -> Result<(), String> {
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
        let target = Target {
            client: client.clone(),
            endpoint: args.endpoints[w as usize % args.endpoints.len()].clone(),
            value: value.clone(),
            consistency: args.consistency.clone(),
        };
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

    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop = started + args.duration;
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let target = Target {
            client: client.clone(),
            endpoint: args.endpoints[i % args.endpoints.len()].clone(),
            value: value.clone(),
            consistency: args.consistency.clone(),
        };
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

    let ops = latency.len();
    let error_count: u64 = errors.values().sum();
    let throughput = ops as f64 / elapsed;
    let q = |quantile: f64| if ops == 0 { 0 } else { latency.value_at_quantile(quantile) };
    if args.json {
        let report = json!({
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
    }
    Ok(())
}
