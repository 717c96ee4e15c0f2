//! TLS on both ports of real `raft-kv serve` processes on loopback: mutual
//! TLS between nodes (a peer without a certificate from the cluster's CA is
//! refused at the handshake), https for clients with tokens, and
//! certificates rotated while writes run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_http::tls::ClientTls;
use raft_kv::certs::{Ca, ClusterFiles, Validity};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_raft-kv");
const DEADLINE: Duration = Duration::from_secs(20);
const SECRET: &str = "test-secret-0123456789";
const WRITE_TOKEN: &str = "writer-token-0123456789";
const READ_TOKEN: &str = "reader-token-0123456789";

mod common;
use common::free_port;

struct Node {
    raft_port: u16,
    client_port: u16,
    log: PathBuf,
    child: Child,
}

impl Node {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.client_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn hangup(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    }
}

/// A TLS cluster: certificates from `write_cluster` in `dir/tls`, each node
/// with its own on both ports, plus `extra` serve flags.
struct Cluster {
    dir: tempfile::TempDir,
    files: ClusterFiles,
    nodes: Vec<Node>,
    http: reqwest::Client,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

fn hosts() -> Vec<String> {
    vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
}

impl Cluster {
    async fn start(n: u64, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let files = raft_kv::certs::write_cluster(&dir.path().join("tls"), n, &hosts()).unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (raft, _))| format!("{}=https://127.0.0.1:{raft}", i + 1))
            .collect();
        let initial = initial.join(",");
        let mut nodes = Vec::new();
        for (i, (raft_port, client_port)) in ports.into_iter().enumerate() {
            let (cert, key) = &files.nodes[i];
            let log = dir.path().join(format!("node-{}.log", i + 1));
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new(BIN)
                .arg("serve")
                .args(["--id", &(i + 1).to_string()])
                .arg("--data-dir")
                .arg(dir.path().join(format!("node-{}", i + 1)))
                .args(["--listen-raft", &format!("127.0.0.1:{raft_port}")])
                .args(["--listen-client", &format!("127.0.0.1:{client_port}")])
                .args(["--initial-cluster", &initial, "--cluster-secret", SECRET, "--exit-with-parent"])
                .arg("--peer-cert-file")
                .arg(cert)
                .arg("--peer-key-file")
                .arg(key)
                .arg("--peer-trusted-ca-file")
                .arg(&files.ca)
                .arg("--cert-file")
                .arg(cert)
                .arg("--key-file")
                .arg(key)
                .args(extra)
                .stdin(Stdio::piped())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap();
            nodes.push(Node { raft_port, client_port, log, child });
        }
        let tls = ClientTls::load(&files.ca, None).unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .use_preconfigured_tls(rustls::ClientConfig::clone(&tls.client_config()))
            .build()
            .unwrap();
        let cluster = Cluster { dir, files, nodes, http };
        cluster.wait_for_leader().await;
        cluster
    }

    async fn wait_for_leader(&self) {
        let start = Instant::now();
        loop {
            let mut leaders = Vec::new();
            for node in &self.nodes {
                let status =
                    self.http.get(format!("{}/v1/status", node.url())).bearer_auth(READ_TOKEN).send().await;
                let body = match status {
                    Ok(response) => response.bytes().await.unwrap_or_default(),
                    Err(_) => Default::default(),
                };
                let status: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                leaders.push(status["leader"].as_u64());
            }
            if leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]) {
                return;
            }
            let logs: Vec<String> = self.nodes.iter().map(Node::log).collect();
            assert!(
                start.elapsed() < DEADLINE,
                "no agreed leader: {leaders:?}; logs:\n{}",
                logs.join("\n---\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A writer PUTting through every node in turn until `stop`; counts
    /// acknowledged writes and keeps every failure.
    fn writer(&self, token: Option<&str>, stop: Arc<AtomicBool>) -> Writer {
        let acked = Arc::new(AtomicU64::new(0));
        let (http, urls) = (self.http.clone(), self.nodes.iter().map(Node::url).collect::<Vec<_>>());
        let token = token.map(str::to_owned);
        let task = tokio::spawn({
            let acked = acked.clone();
            async move {
                let mut failures = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let mut request =
                        http.put(format!("{}/v1/kv/w{i}", urls[i % urls.len()])).body(format!("v{i}"));
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    match request.send().await {
                        Ok(response) if response.status() == 200 => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => {
                            let status = response.status();
                            let body = response.text().await.unwrap_or_default();
                            failures.push(format!("w{i}: {status} {body}"));
                        }
                        Err(e) => failures.push(format!("w{i}: {e:?}")),
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                failures
            }
        });
        Writer { acked, task }
    }
}

struct Writer {
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Writer {
    /// Waits until `more` writes beyond the current count are acknowledged.
    async fn commits(&self, more: u64) {
        let target = self.acked.load(Ordering::Relaxed) + more;
        let start = Instant::now();
        while self.acked.load(Ordering::Relaxed) < target {
            assert!(
                start.elapsed() < DEADLINE,
                "writes stopped committing at {}",
                self.acked.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Speaks to `port` like a peer would: TLS with `tls` (plain TCP without),
/// then a POST of an empty body to /raft/messages with the right cluster id
/// and secret. The response's first line, or why there was none.
async fn raw_post(port: u16, tls: Option<&ClientTls>) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let request = format!(
        "POST /raft/messages HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-raft-cluster: raft-kv\r\n\
         authorization: Bearer {SECRET}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let mut response = Vec::new();
    let read = async {
        match tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let connector = tokio_rustls::TlsConnector::from(tls.client_config());
                let mut stream = connector.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
                stream.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
                stream.read_to_end(&mut response).await.map_err(|e| format!("read: {e}"))
            }
            None => {
                let mut stream = tcp;
                stream.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
                stream.read_to_end(&mut response).await.map_err(|e| format!("read: {e}"))
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.map_err(|_| "timed out".to_owned())??;
    let text = String::from_utf8_lossy(&response);
    match text.lines().next() {
        Some(line) if line.starts_with("HTTP/") => Ok(line.to_owned()),
        _ => Err(format!("no HTTP response ({} bytes)", response.len())),
    }
}

/// `cert` and `key` written under `dir` as `name.pem`, `name-key.pem`.
fn write_identity(dir: &Path, name: &str, issued: &raft_kv::certs::Issued) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
    issued.write(&cert, &key).unwrap();
    (cert, key)
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_peers_without_a_ca_certificate_and_clients_without_a_role_while_a_writer_commits() {
    let auth_dir = tempfile::tempdir().unwrap();
    let auth = auth_dir.path().join("auth.json");
    let tokens = serde_json::json!({ "tokens": [
        { "name": "writer", "token": WRITE_TOKEN, "role": "write" },
        { "name": "reader", "token": READ_TOKEN, "role": "read" },
    ]});
    std::fs::write(&auth, tokens.to_string()).unwrap();
    let cluster = Cluster::start(3, &["--auth-file", auth.to_str().unwrap()]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = cluster.writer(Some(WRITE_TOKEN), stop.clone());
    writer.commits(10).await;

    // Identities: a node's own (the control: it gets an HTTP answer), one
    // from another CA, an expired one from the right CA, none.
    let dir = cluster.dir.path();
    let ca = &cluster.files.ca;
    let own = ClientTls::load(ca, Some((&cluster.files.nodes[1].0, &cluster.files.nodes[1].1))).unwrap();
    let stranger = write_identity(
        dir,
        "stranger",
        &Ca::new("another CA").unwrap().issue("n", &hosts(), Validity::default()).unwrap(),
    );
    let stranger = ClientTls::load(ca, Some((&stranger.0, &stranger.1))).unwrap();
    let expired = Ca::load(&dir.join("tls")).unwrap().issue("old", &hosts(), Validity::expired()).unwrap();
    let expired = write_identity(dir, "expired", &expired);
    let expired = ClientTls::load(ca, Some((&expired.0, &expired.1))).unwrap();
    let anonymous = ClientTls::load(ca, None).unwrap();

    let target = &cluster.nodes[0];
    let before = count(&target.log(), "refused a TLS connection");
    let answered = raw_post(target.raft_port, Some(&own)).await;
    assert!(answered.as_deref().is_ok_and(|line| line.contains(" 400 ")), "the control got {answered:?}");
    for (what, tls) in [
        ("another CA", Some(&stranger)),
        ("expired", Some(&expired)),
        ("no certificate", Some(&anonymous)),
        ("plain HTTP", None),
    ] {
        let refused = raw_post(target.raft_port, tls).await;
        assert!(refused.is_err(), "a peer with {what} got an HTTP answer: {refused:?}");
    }
    // Each refusal is logged with its reason.
    let start = Instant::now();
    loop {
        let log = target.log();
        if count(&log, "refused a TLS connection") >= before + 4 {
            assert!(log.contains("UnknownIssuer") || log.contains("unknown issuer"), "{log}");
            assert!(log.contains("Expired") || log.contains("expired"), "{log}");
            break;
        }
        assert!(start.elapsed() < DEADLINE, "refusals not logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The client port: https only, then tokens and roles.
    let plain = raw_post(target.client_port, None).await;
    assert!(plain.is_err(), "plain HTTP on the client port got {plain:?}");
    let url = format!("{}/v1/kv/refused", target.url());
    let status =
        |request: reqwest::RequestBuilder| async move { request.send().await.unwrap().status().as_u16() };
    assert_eq!(status(cluster.http.put(&url).body("x")).await, 401);
    assert_eq!(status(cluster.http.put(&url).bearer_auth(READ_TOKEN).body("x")).await, 403);
    let topology = format!("{}/v1/cluster", target.url());
    assert_eq!(status(cluster.http.put(&topology).bearer_auth(WRITE_TOKEN).body("{}")).await, 403);
    assert_eq!(
        status(cluster.http.get(format!("{}/v1/kv/w0", target.url())).bearer_auth(READ_TOKEN)).await,
        200
    );
    // A client that does not trust the cluster's CA cannot even connect.
    let untrusting = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    assert!(untrusting.get(format!("{}/v1/status", target.url())).send().await.is_err());

    writer.commits(10).await;
    stop.store(true, Ordering::Relaxed);
    let failures = writer.task.await.unwrap();
    assert!(failures.is_empty(), "the writer saw errors: {failures:?}");
}

/// The certificate a node serves on `port`, DER.
async fn served_certificate(port: u16, tls: &ClientTls) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.client_config()).connect(name, tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_file(path).unwrap().to_vec()
}

/// Polls until every node serves the certificate now in its file, on both
/// ports.
async fn wait_until_served(cluster: &Cluster, tls: &ClientTls, within: Duration) {
    let start = Instant::now();
    for (node, (cert, _)) in cluster.nodes.iter().zip(&cluster.files.nodes) {
        let expected = pem_der(cert);
        for port in [node.raft_port, node.client_port] {
            while served_certificate(port, tls).await != expected {
                assert!(start.elapsed() < within, "port {port} still serves the old certificate");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_rotate_while_writes_run_without_an_error() {
    let cluster = Cluster::start(3, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = cluster.writer(None, stop.clone());
    writer.commits(10).await;
    let tls_dir = cluster.dir.path().join("tls");
    let probe =
        ClientTls::load(&cluster.files.ca, Some((&cluster.files.client.0, &cluster.files.client.1))).unwrap();
    let first = served_certificate(cluster.nodes[0].raft_port, &probe).await;
    assert_eq!(first, pem_der(&cluster.files.nodes[0].0));

    // A broken key file: SIGHUP keeps the old certificate, says why.
    let (cert0, key0) = &cluster.files.nodes[0];
    let good_key = std::fs::read(key0).unwrap();
    raft_kv::certs::write_atomically(key0, b"not a key", true).unwrap();
    cluster.nodes[0].hangup();
    let start = Instant::now();
    while !cluster.nodes[0].log().contains("cannot reload the TLS certificates") {
        assert!(start.elapsed() < DEADLINE, "the failed reload was not logged:\n{}", cluster.nodes[0].log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served_certificate(cluster.nodes[0].raft_port, &probe).await, first);
    raft_kv::certs::write_atomically(key0, &good_key, true).unwrap();
    writer.commits(10).await;

    // Rotation 1: new certificates from the same CA, then SIGHUP.
    raft_kv::certs::write_cluster(&tls_dir, 3, &hosts()).unwrap();
    assert_ne!(pem_der(cert0), first, "rotation wrote the same certificate");
    for node in &cluster.nodes {
        node.hangup();
    }
    wait_until_served(&cluster, &probe, DEADLINE).await;
    writer.commits(10).await;

    // Rotation 2: no signal; the nodes notice the files changed (every 5 s).
    let second = pem_der(cert0);
    raft_kv::certs::write_cluster(&tls_dir, 3, &hosts()).unwrap();
    assert_ne!(pem_der(cert0), second);
    wait_until_served(&cluster, &probe, Duration::from_secs(30)).await;
    writer.commits(10).await;

    stop.store(true, Ordering::Relaxed);
    let failures = writer.task.await.unwrap();
    assert!(failures.is_empty(), "the writer saw errors during rotations: {failures:?}");
    for node in &cluster.nodes {
        assert!(
            node.log().contains("TLS certificates reloaded")
                || node.log().contains("TLS files changed: reloaded")
        );
    }
}

/// `serve` with TLS flags that must fail before it serves anything.
fn serve_fails(dir: &Path, tls: &[&Path], flags: &[&str]) -> String {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .args(["--id", "1", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-raft", "127.0.0.1:0", "--listen-client", "127.0.0.1:0"])
        .args(["--initial-cluster", "1=https://127.0.0.1:1", "--exit-with-parent"]);
    for (flag, path) in flags.iter().zip(tls) {
        command.arg(flag).arg(path);
    }
    let output = command.stdin(Stdio::null()).output().unwrap();
    assert!(!output.status.success(), "serve started with {flags:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn tls_startup_refuses_certificates_the_peers_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let files = raft_kv::certs::write_cluster(&dir.path().join("tls"), 1, &hosts()).unwrap();
    let peer = ["--peer-cert-file", "--peer-key-file", "--peer-trusted-ca-file"];
    let stranger = write_identity(
        dir.path(),
        "stranger",
        &Ca::new("other").unwrap().issue("x", &hosts(), Validity::default()).unwrap(),
    );
    let stderr = serve_fails(dir.path(), &[&stranger.0, &stranger.1, &files.ca], &peer);
    assert!(stderr.contains("stranger.pem is not a valid peer certificate"), "{stderr}");
    let old = Ca::load(&dir.path().join("tls")).unwrap().issue("old", &hosts(), Validity::expired()).unwrap();
    let old = write_identity(dir.path(), "old", &old);
    let stderr = serve_fails(dir.path(), &[&old.0, &old.1, &files.ca], &peer);
    assert!(
        stderr.contains("old.pem is not a valid peer certificate") && stderr.contains("xpired"),
        "{stderr}"
    );
    // A key that is not the certificate's.
    let stderr = serve_fails(dir.path(), &[&files.nodes[0].0, &stranger.1, &files.ca], &peer);
    assert!(stderr.contains("do not make a usable pair"), "{stderr}");
    let stderr = serve_fails(dir.path(), &[&files.ca, &files.nodes[0].0], &["--cert-file", "--key-file"]);
    assert!(stderr.contains("holds no usable private key"), "{stderr}");
    // The three peer flags go together.
    let stderr = serve_fails(dir.path(), &[&files.nodes[0].0], &peer[..1]);
    assert!(stderr.contains("--peer-key-file") && stderr.contains("required"), "{stderr}");
}

#[test]
fn local_tls_serves_https_that_the_cli_and_bench_speak_with_the_ca() {
    use std::io::{BufRead as _, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut local = Command::new(BIN)
        .args(["local", "--nodes", "3", "--base-port", "0", "--tls", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut urls = Vec::new();
    for line in BufReader::new(local.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() == 5 && fields[0].parse::<u64>().is_ok() {
            assert!(fields[2].starts_with("https://") && fields[3].starts_with("https://"), "{line}");
            urls.push(fields[2].to_owned());
        }
        if line.starts_with("leader: node") {
            break;
        }
    }
    assert_eq!(urls.len(), 3);
    let ca = dir.path().join("tls/ca.pem");
    let cli = |args: &[&str]| Command::new(BIN).args(args).env_remove("RAFT_KV_CA_FILE").output().unwrap();
    let put = cli(&["put", "--endpoint", &urls[1], "--ca-file", ca.to_str().unwrap(), "hello", "world"]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let get = cli(&["get", "--endpoint", &urls[2], "--ca-file", ca.to_str().unwrap(), "hello"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "world");
    let untrusting = cli(&["get", "--endpoint", &urls[2], "hello"]);
    assert!(!untrusting.status.success());
    assert!(String::from_utf8_lossy(&untrusting.stderr).contains("--ca-file"), "no hint: {untrusting:?}");
    let endpoints = urls.join(",");
    let bench = cli(&[
        "bench",
        "--endpoints",
        &endpoints,
        "--ca-file",
        ca.to_str().unwrap(),
        "--clients",
        "2",
        "--duration",
        "1s",
        "--json",
    ]);
    assert!(bench.status.success(), "{}", String::from_utf8_lossy(&bench.stderr));
    let report: Value = serde_json::from_slice(&bench.stdout).unwrap();
    assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
    assert!(Command::new("kill").args(["-INT", &local.id().to_string()]).status().unwrap().success());
    let start = Instant::now();
    while local.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < DEADLINE, "local did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
}
