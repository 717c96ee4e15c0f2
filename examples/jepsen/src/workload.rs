//! Concurrent clients doing read / write / cas on a few keys through random
//! nodes, recording every operation with its outcome.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Read,
    Write,
    Cas,
}

/// How it ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    /// Completed (for a cas: matched or not, see `mismatch`).
    Ok,
    /// Definitely did not take effect (refused, never sent).
    Fail,
    /// May or may not have taken effect (timeout, broken connection, 504).
    Unknown,
}

/// One operation of the history. Times are microseconds since the start.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) client: u32,
    pub(crate) node: usize,
    pub(crate) key: u8,
    pub(crate) kind: Kind,
    pub(crate) call: u64,
    pub(crate) ret: u64,
    pub(crate) outcome: Outcome,
    /// Read: the value seen (0 = absent); write/cas: the value written.
    pub(crate) value: u64,
    /// Cas: the value expected (0 = absent).
    pub(crate) expect: u64,
    /// Cas: completed without matching (409).
    pub(crate) mismatch: bool,
    pub(crate) mod_index: Option<u64>,
    pub(crate) note: String,
}

/// Shared by the clients.
#[derive(Debug)]
pub(crate) struct Workload {
    pub(crate) endpoints: Vec<String>,
    pub(crate) keys: u8,
    pub(crate) start: Instant,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) history: Mutex<Vec<Record>>,
    pub(crate) timeout: Duration,
    /// The `raft-kv certs` directory, with `--tls`.
    pub(crate) tls: Option<std::path::PathBuf>,
}

impl Workload {
    pub(crate) fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// One client's loop, until `stop`.
    pub(crate) fn client(&self, client: u32, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (u64::from(client) << 32));
        let http = match crate::cluster::http_client(
            self.timeout,
            Duration::from_millis(300),
            self.tls.as_deref(),
        ) {
            Ok(http) => http,
            Err(e) => {
                eprintln!("client {client}: {e}");
                return;
            }
        };
        // What this client last saw of each key: (value, modify index).
        let mut known: Vec<Option<(u64, u64)>> = vec![None; self.keys as usize];
        let mut counter = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let node = rng.gen_range(0..self.endpoints.len());
            let key = rng.gen_range(0..self.keys);
            let roll = rng.gen_range(0..100);
            counter += 1;
            // Unique per write, never 0.
            let new_value = u64::from(client + 1) * 1_000_000_000 + counter;
            let url = format!("{}/v1/kv/k{key}", self.endpoints[node]);
            let mut record = Record {
                client,
                node,
                key,
                kind: Kind::Read,
                call: self.now(),
                ret: 0,
                outcome: Outcome::Fail,
                value: 0,
                expect: 0,
                mismatch: false,
                mod_index: None,
                note: String::new(),
            };
            if roll < 45 {
                let result = http.get(format!("{url}?consistency=linearizable")).send();
                match result {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let index = response
                            .headers()
                            .get("x-raft-index")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        let body = response.text().unwrap_or_default();
                        match status {
                            200 => match body.trim().parse::<u64>() {
                                Ok(value) => {
                                    record.outcome = Outcome::Ok;
                                    record.value = value;
                                    record.mod_index = index;
                                    if let Some(index) = index {
                                        known[key as usize] = Some((value, index));
                                    }
                                }
                                Err(_) => record.note = format!("unparsable value {body:?}"),
                            },
                            404 => {
                                record.outcome = Outcome::Ok;
                                record.value = 0;
                                known[key as usize] = Some((0, 0));
                            }
                            _ => record.note = format!("{status} {}", body.trim()),
                        }
                    }
                    Err(e) => {
                        record.outcome = if e.is_connect() { Outcome::Fail } else { Outcome::Unknown };
                        record.note = short_error(&e);
                    }
                }
            } else {
                let cas = roll >= 75;
                record.kind = if cas { Kind::Cas } else { Kind::Write };
                record.value = new_value;
                let mut target = url.clone();
                if cas {
                    let (expect, index) = known[key as usize].unwrap_or((0, 0));
                    record.expect = expect;
                    target.push_str(&format!("?cas={index}"));
                }
                let result = http.put(target).body(new_value.to_string()).send();
                match result {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body = response.text().unwrap_or_default();
                        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        match status {
                            200 => {
                                record.outcome = Outcome::Ok;
                                record.mod_index = json["index"].as_u64();
                                if let Some(index) = record.mod_index {
                                    known[key as usize] = Some((new_value, index));
                                }
                            }
                            409 if cas && json["error"] == "cas_mismatch" => {
                                record.outcome = Outcome::Ok;
                                record.mismatch = true;
                                known[key as usize] = None;
                            }
                            // Documented as "not applied".
                            400 | 404 | 409 | 413 | 422 | 503 => {
                                record.outcome = Outcome::Fail;
                                record.note = format!("{status} {}", json["error"].as_str().unwrap_or(""));
                            }
                            // 504 timeout and anything unexpected: unknown.
                            _ => {
                                record.outcome = Outcome::Unknown;
                                record.note = format!("{status} {}", json["error"].as_str().unwrap_or(""));
                            }
                        }
                    }
                    Err(e) => {
                        // Refused before anything was sent: not applied.
                        // Anything later (timeout, reset): unknown.
                        record.outcome = if e.is_connect() { Outcome::Fail } else { Outcome::Unknown };
                        record.note = short_error(&e);
                    }
                }
            }
            record.ret = self.now();
            let failed = record.outcome != Outcome::Ok;
            if let Ok(mut history) = self.history.lock() {
                history.push(record);
            }
            // Back off a little after an error, think a little otherwise.
            let pause = if failed { rng.gen_range(20..80) } else { rng.gen_range(2..12) };
            std::thread::sleep(Duration::from_millis(pause));
        }
    }
}

fn short_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connect error".to_owned()
    } else {
        let text = e.to_string();
        text.chars().take(80).collect()
    }
}
