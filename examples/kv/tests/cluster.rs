//! The real `raft-kv` binary, as real processes on loopback with OS-chosen
//! free ports and temporary data directories. Every wait polls under a
//! deadline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_raft-kv");
const DEADLINE: Duration = Duration::from_secs(20);

mod common;
use common::free_port;

struct Node {
    id: u64,
    raft_port: u16,
    client_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
    /// More `serve` flags.
    extra: Vec<String>,
}

impl Node {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self, initial_cluster: &str, logs: &Path) {
        self.spawn_with(initial_cluster, logs, false);
    }

    /// With `join`, `initial_cluster` names the current members.
    fn spawn_with(&mut self, initial_cluster: &str, logs: &Path, join: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("node-{}.log", self.id)))
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .args(["--id", &self.id.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-raft", &format!("127.0.0.1:{}", self.raft_port)])
            .args(["--listen-client", &format!("127.0.0.1:{}", self.client_port)])
            .args(["--initial-cluster", initial_cluster])
            .args(["--cluster-secret", "test-secret", "--log-level", "info", "--exit-with-parent"])
            .args(if join { &["--join"][..] } else { &[] })
            .args(&self.extra)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no chance to flush or say goodbye.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    initial_cluster: String,
    nodes: Vec<Node>,
    http: reqwest::Client,
    /// Bearer token for the helpers' own status polls (nodes with --auth-file).
    status_token: Option<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
    }
}

impl Cluster {
    async fn start(n: u64) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    async fn start_with(n: u64, extra: &[&str]) -> Cluster {
        Cluster::start_authed(n, extra, None).await
    }

    /// With `status_token`, the helpers poll /v1/status with that token.
    async fn start_authed(n: u64, extra: &[&str], status_token: Option<&str>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes: Vec<Node> = (1..=n)
            .map(|id| Node {
                id,
                raft_port: free_port(),
                client_port: free_port(),
                data_dir: dir.path().join(format!("node-{id}")),
                child: None,
                extra: extra.iter().map(|s| s.to_string()).collect(),
            })
            .collect();
        let initial_cluster: Vec<String> =
            nodes.iter().map(|n| format!("{}=http://127.0.0.1:{}", n.id, n.raft_port)).collect();
        let initial_cluster = initial_cluster.join(",");
        for node in &mut nodes {
            node.spawn(&initial_cluster, dir.path());
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let status_token = status_token.map(str::to_owned);
        let cluster = Cluster { dir, initial_cluster, nodes, http, status_token };
        cluster.leader().await;
        cluster
    }

    fn alive(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    async fn status(&self, node: &Node) -> Option<Value> {
        let mut request =
            self.http.get(format!("{}/v1/status", node.url())).timeout(Duration::from_millis(500));
        if let Some(token) = &self.status_token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await;
        serde_json::from_slice(&response.ok()?.bytes().await.ok()?).ok()
    }

    /// The position of the leader every running node agrees on.
    async fn leader(&self) -> usize {
        let start = Instant::now();
        loop {
            let mut statuses = Vec::new();
            for node in self.alive() {
                statuses.push((node.id, self.status(node).await));
            }
            let leader = statuses
                .iter()
                .find(|(_, s)| s.as_ref().is_some_and(|s| s["role"] == "leader"))
                .map(|(id, _)| *id);
            if let Some(leader) = leader {
                if statuses.iter().all(|(_, s)| s.as_ref().is_some_and(|s| s["leader"] == leader)) {
                    return self.nodes.iter().position(|n| n.id == leader).unwrap();
                }
            }
            if start.elapsed() > DEADLINE {
                let logs: Vec<String> = statuses
                    .iter()
                    .filter(|(_, s)| s.is_none())
                    .map(|(id, _)| {
                        let log = self.dir.path().join(format!("node-{id}.log"));
                        format!("node {id} does not answer; its log ends:\n{}", common::log_tail(&log, 5))
                    })
                    .collect();
                panic!("no agreed leader: {statuses:?}\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn put(&self, node: usize, key: &str, value: &str) -> (u16, Value) {
        let url = format!("{}/v1/kv/{key}", self.nodes[node].url());
        let response = self.http.put(url).body(value.to_owned()).send().await.unwrap();
        let status = response.status().as_u16();
        (status, serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Option<u64>, Vec<u8>) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let index = response.headers().get("x-raft-index").map(|v| v.to_str().unwrap().parse().unwrap());
        (status, index, response.bytes().await.unwrap().to_vec())
    }

    async fn get(&self, node: usize, key: &str) -> (u16, Option<u64>, Vec<u8>) {
        self.send(self.http.get(format!("{}/v1/kv/{key}", self.nodes[node].url()))).await
    }
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

/// Retries a write through leader changes (503) until it is acknowledged.
async fn put_acked(cluster: &Cluster, node: usize, key: &str, value: &str) -> u64 {
    let start = Instant::now();
    loop {
        let (status, body) = cluster.put(node, key, value).await;
        match status {
            200 => return body["index"].as_u64().unwrap(),
            503 | 504 if start.elapsed() < DEADLINE => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => panic!("PUT {key} on node {} answered {status} {body}", node + 1),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_api_answers_on_every_node() {
    let cluster = Cluster::start(3).await;
    let http = &cluster.http;
    let url = |node: usize, path: &str| format!("{}{path}", cluster.nodes[node].url());

    // Writes through every node (followers forward), reads from every node.
    for writer in 0..3 {
        let key = format!("key-{writer}");
        let index = put_acked(&cluster, writer, &key, &format!("value-{writer}")).await;
        for reader in 0..3 {
            let (status, modify, body) = cluster.get(reader, &key).await;
            assert_eq!(status, 200);
            assert_eq!(body, format!("value-{writer}").as_bytes());
            assert_eq!(modify, Some(index), "X-Raft-Index on node {}", reader + 1);
        }
    }
    for consistency in ["lease", "stale", "linearizable"] {
        let (status, _, body) =
            cluster.send(http.get(url(1, &format!("/v1/kv/key-0?consistency={consistency}")))).await;
        assert_eq!((status, body.as_slice()), (200, b"value-0".as_slice()), "{consistency}");
    }

    // Compare-and-set: 0 = only if absent; a mismatch is 409 with the current index.
    let (status, created, _) = cluster.send(http.put(url(0, "/v1/kv/c?cas=0")).body("one")).await;
    assert_eq!(status, 200);
    let (_, body) = cluster.put(0, "c", "x").await;
    let current = body["index"].as_u64().unwrap();
    assert!(current > created.unwrap_or(0));
    let (status, _, body) = cluster.send(http.put(url(1, "/v1/kv/c?cas=0")).body("two")).await;
    assert_eq!(status, 409);
    let body = json(&body);
    assert_eq!(body["error"], "cas_mismatch");
    assert_eq!(body["index"], current);
    let (status, _, body) =
        cluster.send(http.put(url(2, &format!("/v1/kv/c?cas={current}"))).body("three")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let current = json(&body)["index"].as_u64().unwrap();
    let (status, _, body) = cluster.send(http.delete(url(1, &format!("/v1/kv/c?cas={}", current - 1)))).await;
    assert_eq!((status, json(&body)["index"].as_u64()), (409, Some(current)));
    let (status, _, _) = cluster.send(http.delete(url(2, &format!("/v1/kv/c?cas={current}")))).await;
    assert_eq!(status, 200);
    for node in 0..3 {
        let (status, _, body) = cluster.get(node, "c").await;
        assert_eq!(status, 404);
        assert_eq!(json(&body)["error"], "not_found");
    }
    let (status, _, _) = cluster.send(http.delete(url(0, "/v1/kv/never"))).await;
    assert_eq!(status, 404);

    // 400 and 413, as JSON errors.
    for (request, expected) in [
        (http.put(url(0, "/v1/kv/x?cas=abc")).body("v"), 400),
        (http.get(url(0, "/v1/kv/x?consistency=sometimes")), 400),
        (http.put(url(0, "/v1/kv/x?bogus=1")).body("v"), 400),
        (http.put(url(0, "/v1/kv/")).body("v"), 400),
        (http.put(url(1, "/v1/kv/big")).body(vec![0u8; 512 * 1024 + 1]), 413),
        (http.put(url(1, &format!("/v1/kv/{}", "k".repeat(1025)))).body("v"), 413),
    ] {
        let (status, _, body) = cluster.send(request).await;
        assert_eq!(status, expected, "{}", String::from_utf8_lossy(&body));
        let body = json(&body);
        let code = if expected == 400 { "bad_request" } else { "payload_too_large" };
        assert_eq!(body["error"], code);
        assert!(body["message"].is_string());
    }
    let (status, _, _) = cluster.send(http.put(url(2, "/v1/kv/fits")).body(vec![7u8; 512 * 1024])).await;
    assert_eq!(status, 200);

    // Idempotency-Key: a retry (through another node) applies at most once.
    let keyed = |node: usize, value: &'static str| {
        http.put(url(node, "/v1/kv/idem")).header("Idempotency-Key", "req-42").body(value)
    };
    let (status, _, first) = cluster.send(keyed(1, "v1")).await;
    assert_eq!(status, 200);
    let first = json(&first)["index"].as_u64().unwrap();
    put_acked(&cluster, 0, "idem", "v2").await;
    let (status, _, retry) = cluster.send(keyed(2, "v1")).await;
    assert_eq!(status, 200);
    assert_eq!(json(&retry)["index"].as_u64(), Some(first), "the retry got a different answer");
    let (_, _, value) = cluster.get(1, "idem").await;
    assert_eq!(value, b"v2", "the retry applied again");
    let (status, _, body) = cluster.send(keyed(0, "something else")).await;
    assert_eq!((status, json(&body)["error"].as_str()), (422, Some("idempotency_key_reused")));

    // Operations endpoints.
    let (status, _, body) = cluster.send(http.get(url(1, "/v1/status"))).await;
    let body = json(&body);
    assert_eq!(status, 200);
    assert_eq!(body["id"], 2);
    for field in ["role", "term", "leader", "commit", "applied", "last_index", "snapshot_index"] {
        assert!(!body[field].is_null(), "status lacks {field}: {body}");
    }
    let (status, _, body) = cluster.send(http.get(url(2, "/v1/cluster"))).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["voters"].as_array().unwrap().len(), 3);
    for (body, what) in [
        (r#"{}"#, "no voters field"),
        (r#"{"voters":[]}"#, "no voters"),
        (r#"{"voters":[{"id":1,"address":"a"},{"id":1,"address":"b"}]}"#, "a duplicate"),
        (r#"{"voters":[{"id":1,"address":"a"}],"learners":[{"id":1,"address":"a"}]}"#, "both"),
    ] {
        let (status, _, reply) = cluster.send(http.put(url(0, "/v1/cluster")).body(body)).await;
        assert_eq!((status, json(&reply)["error"].as_str()), (400, Some("bad_request")), "{what}");
    }
    let (status, _, body) =
        cluster.send(http.post(url(0, "/v1/cluster/transfer-leader")).body(r#"{"to":9}"#)).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    for node in 0..3 {
        let (status, _, _) = cluster.send(http.get(url(node, "/healthz"))).await;
        assert_eq!(status, 200);
        let start = Instant::now();
        while cluster.send(http.get(url(node, "/readyz"))).await.0 != 200 {
            assert!(start.elapsed() < DEADLINE, "node {} never ready", node + 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (status, _, metrics) = cluster.send(http.get(url(0, "/metrics"))).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert_eq!(status, 200);
    for name in
        ["raft_term ", "raft_is_leader ", "raft_commit_index ", "raft_applied_index ", "kv_proposals_total{"]
    {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_without_losing_writes_and_catches_up_on_restart() {
    let mut cluster = Cluster::start(3).await;
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        let key = format!("k{i}");
        put_acked(&cluster, i % 3, &key, &format!("v{i}")).await;
        acknowledged.push(key);
    }

    let old = cluster.leader().await;
    cluster.nodes[old].kill9();
    let killed_at = Instant::now();
    let new = cluster.leader().await;
    let failover = killed_at.elapsed();
    assert_ne!(new, old);
    assert!(failover < Duration::from_secs(3), "new leader after {failover:?}");

    // Every acknowledged write survives, read linearizably from both survivors.
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &node in &survivors {
        for (i, key) in acknowledged.iter().enumerate() {
            let (status, _, body) = cluster.get(node, key).await;
            assert_eq!((status, body), (200, format!("v{i}").into_bytes()), "{key} on node {}", node + 1);
        }
    }
    for i in 30..40 {
        let key = format!("k{i}");
        put_acked(&cluster, survivors[i % 2], &key, &format!("v{i}")).await;
        acknowledged.push(key);
    }

    // Restart the killed node on its data directory: it recovers and catches up.
    let initial_cluster = cluster.initial_cluster.clone();
    let logs = cluster.dir.path().to_owned();
    cluster.nodes[old].spawn(&initial_cluster, &logs);
    let start = Instant::now();
    loop {
        let url = format!("{}/v1/kv/k39?consistency=stale", cluster.nodes[old].url());
        if let Ok(response) = cluster.http.get(url).send().await {
            if response.status() == 200 {
                break;
            }
        }
        assert!(start.elapsed() < DEADLINE, "the restarted node never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, key) in acknowledged.iter().enumerate() {
        let (status, _, body) = cluster.get(old, key).await;
        assert_eq!((status, body), (200, format!("v{i}").into_bytes()), "{key} on the restarted node");
    }
    cluster.leader().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_is_added_takes_the_lead_and_an_old_one_is_removed() {
    let mut cluster = Cluster::start(3).await;
    put_acked(&cluster, 0, "early", "bird").await;
    let http = cluster.http.clone();

    let leader = cluster.leader().await;
    // Node 4 starts empty, knowing the members' addresses.
    let dir = cluster.dir.path().to_owned();
    let mut joiner = Node {
        id: 4,
        raft_port: free_port(),
        client_port: free_port(),
        data_dir: dir.join("node-4"),
        child: None,
        extra: Vec::new(),
    };
    let members = cluster.initial_cluster.clone();
    joiner.spawn_with(&members, &dir, true);
    let joiner_raft = format!("http://127.0.0.1:{}", joiner.raft_port);
    cluster.nodes.push(joiner);

    // Add it through a follower, as the complete topology (GET, edit, PUT).
    let follower = (leader + 1) % 3;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| format!("{}/v1/cluster", n.url())).collect();
    let cluster_url = |node: usize| urls[node].clone();
    let (_, _, current) = cluster.send(http.get(cluster_url(follower))).await;
    let mut topology = json(&current);
    topology["voters"].as_array_mut().unwrap().push(serde_json::json!({ "id": 4, "address": joiner_raft }));
    let (status, _, body) = cluster.send(http.put(cluster_url(follower)).body(topology.to_string())).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["voters"].as_array().unwrap().len(), 4);

    // It caught up: a stale read there sees the early write.
    let start = Instant::now();
    while cluster.get(3, "early?consistency=stale").await.2 != b"bird" {
        assert!(start.elapsed() < DEADLINE, "node 4 never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Hand it the leadership, asked on the other follower.
    let other = (leader + 2) % 3;
    let transfer = format!("{}/v1/cluster/transfer-leader", cluster.nodes[other].url());
    let (status, _, body) = cluster.send(http.post(transfer).body(r#"{"to":4}"#)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(cluster.nodes[cluster.leader().await].id, 4);

    // Remove node 1 with the client command (asked on node 4, the leader
    // now), then stop it.
    let endpoint = cluster.nodes[3].url();
    let removed = tokio::task::spawn_blocking(move || {
        Command::new(BIN).args(["cluster", "--endpoint", &endpoint, "remove", "1"]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    assert_eq!(json(&removed.stdout)["voters"].as_array().unwrap().len(), 3);
    cluster.nodes[0].kill9();
    let index = put_acked(&cluster, 1, "late", "write").await;
    let (status, modify, _) = cluster.get(3, "late").await;
    assert_eq!((status, modify), (200, Some(index)));
    let (_, _, view) = cluster.send(http.get(cluster_url(2))).await;
    let voters = json(&view)["voters"].as_array().unwrap().clone();
    let ids: Vec<u64> = voters.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_far_behind_catches_up_from_a_snapshot_with_its_sessions() {
    let mut cluster = Cluster::start_with(3, &["--snapshot-entries", "20"]).await;
    let http = cluster.http.clone();
    let leader = cluster.leader().await;
    let behind = (leader + 1) % 3;
    let keyed = |node: &Node| {
        http.put(format!("{}/v1/kv/once", node.url())).header("Idempotency-Key", "op-1").body("first")
    };
    let (status, _, first) = cluster.send(keyed(&cluster.nodes[leader])).await;
    assert_eq!(status, 200);
    let first = json(&first)["index"].as_u64().unwrap();
    cluster.nodes[behind].kill9();

    // Far more entries than the snapshot interval while it is down: the
    // others compact their logs past everything it has.
    let writer = (leader + 2) % 3;
    for i in 0..120 {
        put_acked(&cluster, if i % 2 == 0 { leader } else { writer }, &format!("s{i}"), &format!("v{i}"))
            .await;
    }
    put_acked(&cluster, leader, "once", "overwritten").await;
    // The leader's log no longer holds what the stopped node lacks, so only
    // a snapshot can bring it up.
    let start = Instant::now();
    loop {
        let status = cluster.status(&cluster.nodes[leader]).await.unwrap();
        if status["first_index"].as_u64().unwrap() > first + 1 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "the leader never compacted: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let initial_cluster = cluster.initial_cluster.clone();
    let logs = cluster.dir.path().to_owned();
    cluster.nodes[behind].spawn(&initial_cluster, &logs);
    let start = Instant::now();
    let probe = format!("{}/v1/kv/s119?consistency=stale", cluster.nodes[behind].url());
    while !http.get(&probe).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(start.elapsed() < DEADLINE, "the node never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in (0..120).step_by(7) {
        let (status, _, body) = cluster.get(behind, &format!("s{i}?consistency=stale")).await;
        assert_eq!((status, body), (200, format!("v{i}").into_bytes()));
    }
    // The session came with the snapshot: a retry through it applies nothing.
    let (status, _, retry) = cluster.send(keyed(&cluster.nodes[behind])).await;
    assert_eq!((status, json(&retry)["index"].as_u64()), (200, Some(first)));
    let (_, _, value) = cluster.get(behind, "once").await;
    assert_eq!(value, b"overwritten");
}

fn process_exists(pid: u32) -> bool {
    Command::new("kill").args(["-0", &pid.to_string()]).stderr(Stdio::null()).status().unwrap().success()
}

/// `raft-kv local --nodes 3 --base-port 0` plus `extra`, and its standard
/// output line by line.
fn spawn_local(extra: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut local = Command::new(BIN)
        .args(["local", "--nodes", "3", "--base-port", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its errors, in this test's output should it fail.
    let stderr = local.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("raft-kv local: {line}");
        }
    });
    let stdout = local.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    (local, lines_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_serves_benches_and_stops_on_sigint() {
    let (mut local, lines_rx) = spawn_local(&[]);
    // The table: ID ROLE CLIENT-URL RAFT-URL PID, then "leader: node N".
    let mut rows = Vec::new();
    let start = Instant::now();
    loop {
        let line =
            lines_rx.recv_timeout(DEADLINE.saturating_sub(start.elapsed())).expect("local printed no leader");
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() == 5 && fields[0].parse::<u64>().is_ok() {
            rows.push((fields[2].to_owned(), fields[4].parse::<u32>().unwrap()));
        }
        if line.starts_with("leader: node") {
            break;
        }
    }
    assert_eq!(rows.len(), 3);
    let urls: Vec<String> = rows.iter().map(|(url, _)| url.clone()).collect();

    let http = reqwest::Client::new();
    let put = http.put(format!("{}/v1/kv/hello", urls[0])).body("world").send().await.unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let get = http.get(format!("{}/v1/kv/hello", urls[2])).send().await.unwrap();
    assert_eq!(get.bytes().await.unwrap(), "world");

    let bench = tokio::task::spawn_blocking({
        let endpoints = urls.join(",");
        move || {
            Command::new(BIN)
                .args(["bench", "--endpoints", &endpoints, "--clients", "4", "--duration", "2s", "--json"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(bench.status.success(), "bench failed: {}", String::from_utf8_lossy(&bench.stderr));
    let report = json(&bench.stdout);
    assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
    assert!(report["ops_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{report}");
    // The nodes report their term before and after; nothing failed here.
    assert!(report["term_before"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["term_changes"].as_u64(), Some(0), "{report}");

    let sent = Command::new("kill").args(["-INT", &local.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = local.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < DEADLINE, "local did not stop on SIGINT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "local exited with {status}");
    for (_, pid) in rows {
        let start = Instant::now();
        while process_exists(pid) {
            assert!(start.elapsed() < Duration::from_secs(5), "child {pid} outlived local");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[test]
fn local_names_a_taken_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // Node 1's raft port is base + 1.
    let output = Command::new(BIN)
        .args(["local", "--nodes", "1", "--base-port", &(port - 1).to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("port {port}")) && stderr.contains("in use"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_survivor_answers_no_leader_with_retry_after() {
    let mut cluster = Cluster::start(3).await;
    put_acked(&cluster, 0, "before", "v").await;
    let leader = cluster.leader().await;
    let survivor = (leader + 1) % 3;
    for i in 0..3 {
        if i != survivor {
            cluster.nodes[i].kill9();
        }
    }
    // Once it notices the leader is gone, it refuses at once.
    let start = Instant::now();
    while !cluster.status(&cluster.nodes[survivor]).await.is_some_and(|s| s["leader"].is_null()) {
        assert!(start.elapsed() < DEADLINE, "the survivor never lost its leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("{}/v1/kv/after", cluster.nodes[survivor].url());
    for request in [cluster.http.put(&url).body("v"), cluster.http.get(&url)] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers().get("retry-after").unwrap(), "1");
        let body = json(&response.bytes().await.unwrap());
        assert_eq!(body["error"], "no_leader", "{body}");
    }
    // A stale read still answers from the local copy.
    let (status, _, body) = cluster
        .send(cluster.http.get(format!("{}/v1/kv/before?consistency=stale", cluster.nodes[survivor].url())))
        .await;
    assert_eq!((status, body.as_slice()), (200, b"v".as_slice()));
}

// Client authentication (--auth-file): tokens with roles read < write < admin.

const READ_TOKEN: &str = "reader-token-0123456789";
const WRITE_TOKEN: &str = "writer-token-0123456789";
const ADMIN_TOKEN: &str = "admin-token-0123456789";
const LATE_TOKEN: &str = "late-token-0123456789";

/// Writes an auth file with a token per role, plus `more` entries.
fn write_auth_file(path: &Path, more: &[serde_json::Value]) {
    let mut tokens = vec![
        serde_json::json!({ "name": "reader", "token": READ_TOKEN, "role": "read" }),
        serde_json::json!({ "name": "writer", "token": WRITE_TOKEN, "role": "write" }),
        serde_json::json!({ "name": "ops", "token": ADMIN_TOKEN, "role": "admin" }),
    ];
    tokens.extend(more.iter().cloned());
    std::fs::write(path, serde_json::json!({ "tokens": tokens }).to_string()).unwrap();
}

/// A cluster whose nodes check tokens from `file`.
async fn authed_cluster(n: u64, file: &Path) -> Cluster {
    let file = file.to_str().unwrap();
    Cluster::start_authed(n, &["--auth-file", file], Some(READ_TOKEN)).await
}

/// The status and the API error code of a response.
async fn refusal(request: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, challenge, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refuses_missing_tokens_and_small_roles_on_every_node_while_a_writer_commits() {
    let auth_dir = tempfile::tempdir().unwrap();
    let file = auth_dir.path().join("auth.json");
    write_auth_file(&file, &[]);
    let cluster = authed_cluster(3, &file).await;
    let http = cluster.http.clone();
    let urls: Vec<String> = cluster.nodes.iter().map(Node::url).collect();

    // An authorized writer keeps writing through every node meanwhile; it is
    // never refused, and its writes keep committing.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (http, urls, stop) = (http.clone(), urls.clone(), stop.clone());
        async move {
            let mut acked = Vec::new();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("w{i}");
                let url = format!("{}/v1/kv/{key}", urls[i % urls.len()]);
                let response = http.put(url).bearer_auth(WRITE_TOKEN).body(format!("v{i}")).send().await;
                if let Ok(response) = response {
                    let status = response.status().as_u16();
                    assert!(status != 401 && status != 403, "the writer was refused: {status}");
                    if status == 200 {
                        acked.push(key);
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        }
    });

    let topology = {
        let (_, _, body) =
            cluster.send(http.get(format!("{}/v1/cluster", urls[0])).bearer_auth(READ_TOKEN)).await;
        let mut topology = json(&body);
        topology.as_object_mut().unwrap().retain(|k, _| k == "voters" || k == "learners");
        topology.to_string()
    };
    let leader = cluster.leader().await;
    // Every node refuses alike: the leader, and the followers that would
    // forward to it.
    for (node, url) in urls.iter().enumerate() {
        let at = |path: &str| format!("{url}{path}");
        let transfer = r#"{"to":1}"#;
        for (request, expected, what) in [
            (http.get(at("/v1/kv/secret")), 401, "GET without a token"),
            (http.put(at("/v1/kv/secret")).body("x"), 401, "PUT without a token"),
            (http.get(at("/v1/kv/secret")).bearer_auth("not-a-token-0123456789"), 401, "an unknown token"),
            (
                http.get(at("/v1/kv/secret")).header("authorization", format!("Basic {READ_TOKEN}")),
                401,
                "not Bearer",
            ),
            (http.get(at("/v1/status")), 401, "status without a token"),
            (http.get(at("/metrics")), 401, "metrics without a token"),
            (http.put(at("/v1/kv/secret")).bearer_auth(READ_TOKEN).body("x"), 403, "a reader's PUT"),
            (http.delete(at("/v1/kv/w0")).bearer_auth(READ_TOKEN), 403, "a reader's DELETE"),
            (
                http.put(at("/v1/cluster")).bearer_auth(READ_TOKEN).body(topology.clone()),
                403,
                "a reader's PUT /v1/cluster",
            ),
            (
                http.put(at("/v1/cluster")).bearer_auth(WRITE_TOKEN).body(topology.clone()),
                403,
                "a writer's PUT /v1/cluster",
            ),
            (
                http.post(at("/v1/cluster/transfer-leader")).bearer_auth(WRITE_TOKEN).body(transfer),
                403,
                "a writer's transfer",
            ),
        ] {
            let (status, challenge, body) = refusal(request).await;
            let role = if node == leader { "leader" } else { "follower" };
            assert_eq!(status, expected, "{what} on node {} ({role}): {body}", node + 1);
            let code = if expected == 401 { "unauthorized" } else { "forbidden" };
            assert_eq!(body["error"], code, "{what}: {body}");
            assert!(body["message"].is_string(), "{what}: {body}");
            if expected == 401 {
                assert!(
                    challenge.is_some_and(|c| c.starts_with("Bearer")),
                    "{what}: no WWW-Authenticate: Bearer"
                );
            }
        }
        // Open probes, and what a reader may do.
        assert_eq!(cluster.send(http.get(at("/healthz"))).await.0, 200);
        assert_ne!(cluster.send(http.get(at("/readyz"))).await.0, 401);
        for path in ["/v1/status", "/v1/cluster", "/metrics"] {
            assert_eq!(cluster.send(http.get(at(path)).bearer_auth(READ_TOKEN)).await.0, 200, "{path}");
        }
        // The refused writes never applied.
        let (status, _, _) = cluster.send(http.get(at("/v1/kv/secret")).bearer_auth(READ_TOKEN)).await;
        assert_eq!(status, 404, "a refused write applied on node {}", node + 1);
    }
    let (status, _, _) =
        cluster.send(http.get(format!("{}/v1/kv/w0", urls[0])).bearer_auth(READ_TOKEN)).await;
    assert_eq!(status, 200, "the reader's DELETE applied");

    // The raft port's forward path takes the cluster secret, not a client
    // token: an admin token there is refused.
    let raft = format!("http://127.0.0.1:{}/raft/forward", cluster.nodes[leader].raft_port);
    let forwarded =
        http.post(raft).header("x-raft-cluster", "raft-kv").bearer_auth(ADMIN_TOKEN).body(vec![0u8; 8]);
    assert_eq!(forwarded.send().await.unwrap().status().as_u16(), 401);

    // An admin may change the membership (here: PUT back the same topology)
    // and move the leader, asked on followers.
    let follower = (leader + 1) % 3;
    let (status, _, body) = cluster
        .send(http.put(format!("{}/v1/cluster", urls[follower])).bearer_auth(ADMIN_TOKEN).body(topology))
        .await;
    assert_eq!(status, 200, "admin PUT /v1/cluster: {}", String::from_utf8_lossy(&body));
    let target = cluster.nodes[(leader + 2) % 3].id;
    let (status, _, body) = cluster
        .send(
            http.post(format!("{}/v1/cluster/transfer-leader", urls[follower]))
                .bearer_auth(ADMIN_TOKEN)
                .body(format!(r#"{{"to":{target}}}"#)),
        )
        .await;
    assert_eq!(status, 200, "admin transfer-leader: {}", String::from_utf8_lossy(&body));
    assert_eq!(cluster.nodes[cluster.leader().await].id, target);

    // The CLI and the bench send --token / --token-file / RAFT_KV_TOKEN.
    let token_file = auth_dir.path().join("writer.token");
    std::fs::write(&token_file, format!("{WRITE_TOKEN}\n")).unwrap();
    let endpoint = urls[follower].clone();
    let endpoints = urls.join(",");
    let (refused, put, from_file, from_env, bench) = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str], env: Option<&str>| {
            let mut command = Command::new(BIN);
            command.args(args).env_remove("RAFT_KV_TOKEN").env_remove("RAFT_KV_TOKEN_FILE");
            if let Some(token) = env {
                command.env("RAFT_KV_TOKEN", token);
            }
            command.output().unwrap()
        };
        let token_file = token_file.to_str().unwrap();
        (
            run(&["put", "--endpoint", &endpoint, "cli", "no"], None),
            run(&["put", "--endpoint", &endpoint, "--token", WRITE_TOKEN, "cli", "one"], None),
            run(&["put", "--endpoint", &endpoint, "--token-file", token_file, "cli", "two"], None),
            run(&["get", "--endpoint", &endpoint, "cli"], Some(READ_TOKEN)),
            run(
                &[
                    "bench",
                    "--endpoints",
                    &endpoints,
                    "--token",
                    WRITE_TOKEN,
                    "--clients",
                    "2",
                    "--duration",
                    "1s",
                    "--json",
                ],
                None,
            ),
        )
    })
    .await
    .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    for output in [&put, &from_file, &from_env, &bench] {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    assert_eq!(String::from_utf8_lossy(&from_env.stdout).trim(), "two");
    let report = json(&bench.stdout);
    assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
    assert!(report["errors"].as_object().is_none_or(|e| !e.contains_key("unauthorized")), "{report}");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(acked.len() >= 20, "only {} writes committed meanwhile", acked.len());
    for key in acked.iter().step_by(5) {
        let (status, _, _) =
            cluster.send(http.get(format!("{}/v1/kv/{key}", urls[2])).bearer_auth(READ_TOKEN)).await;
        assert_eq!(status, 200, "acknowledged {key} is missing");
    }

    // Each refusal is logged with the remote address, the path and the
    // token's name, never the token.
    for node in &cluster.nodes {
        let log = std::fs::read_to_string(cluster.dir.path().join(format!("node-{}.log", node.id))).unwrap();
        assert!(log.contains("refused: unauthenticated") && log.contains("refused: role too small"));
        assert!(
            log.contains("reader")
                && log.contains("/v1/cluster/transfer-leader")
                && log.contains("127.0.0.1:")
        );
        for token in [READ_TOKEN, WRITE_TOKEN, ADMIN_TOKEN] {
            assert!(!log.contains(token), "node {} logged a token", node.id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_sighup_adds_a_token_without_restart_and_a_bad_file_keeps_the_old_tokens() {
    let auth_dir = tempfile::tempdir().unwrap();
    let file = auth_dir.path().join("auth.json");
    write_auth_file(&file, &[]);
    let cluster = authed_cluster(1, &file).await;
    let url = format!("{}/v1/kv/late", cluster.nodes[0].url());
    let late_put = || cluster.http.put(&url).bearer_auth(LATE_TOKEN).body("v");
    assert_eq!(refusal(late_put()).await.0, 401);

    let hangup = || {
        let pid = cluster.nodes[0].child.as_ref().unwrap().id();
        assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    };
    write_auth_file(&file, &[serde_json::json!({ "name": "late", "token": LATE_TOKEN, "role": "write" })]);
    hangup();
    let start = Instant::now();
    while refusal(late_put()).await.0 != 200 {
        assert!(start.elapsed() < DEADLINE, "the reloaded token never worked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A broken file is refused (and logged); the tokens in force stay.
    std::fs::write(&file, "{\"tokens\": [").unwrap();
    hangup();
    let log_path = cluster.dir.path().join("node-1.log");
    let start = Instant::now();
    while !std::fs::read_to_string(&log_path).unwrap().contains("auth file reload failed") {
        assert!(start.elapsed() < DEADLINE, "no reload failure logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refusal(late_put()).await.0, 200);
    assert_eq!(refusal(cluster.http.get(&url).bearer_auth(READ_TOKEN)).await.0, 200);
    assert_eq!(refusal(cluster.http.get(&url)).await.0, 401);
    assert!(
        cluster.nodes[0].child.is_some() && cluster.status(&cluster.nodes[0]).await.is_some(),
        "the node stopped"
    );
}

/// `serve` with arguments that fail (or stop) before it serves anything.
fn serve_output(dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("serve")
        .args(["--id", "1", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-raft", "127.0.0.1:0", "--initial-cluster", "1=http://127.0.0.1:1"])
        .args(["--exit-with-parent"])
        .args(extra)
        .env_remove("RAFT_KV_AUTH_FILE")
        .env_remove("RAFT_KV_CLUSTER_SECRET")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn auth_startup_names_a_bad_file_needs_a_secret_and_warns_when_exposed() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad-auth.json");
    std::fs::write(&bad, r#"{"tokens":[{"name":"a","token":"short","role":"read"}]}"#).unwrap();
    let output = serve_output(
        dir.path(),
        &["--listen-client", "127.0.0.1:0", "--cluster-secret", "s", "--auth-file", bad.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("bad-auth.json") && stderr.contains("shorter than 16"), "{stderr}");

    let good = dir.path().join("auth.json");
    write_auth_file(&good, &[]);
    let output =
        serve_output(dir.path(), &["--listen-client", "127.0.0.1:0", "--auth-file", good.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--auth-file needs a non-empty --cluster-secret"), "{stderr}");

    // Beyond loopback without an auth file: a loud warning (the node then
    // stops by itself, its standard input being closed).
    let output = serve_output(dir.path(), &["--listen-client", "0.0.0.0:0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WARNING") && stderr.contains("no --auth-file"), "{stderr}");
    let output = serve_output(dir.path(), &["--listen-client", "127.0.0.1:0"]);
    assert!(!String::from_utf8_lossy(&output.stderr).contains("WARNING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_auth_prints_working_tokens_per_role_and_closes_the_api() {
    let (mut local, lines_rx) = spawn_local(&["--auth"]);
    let (mut urls, mut tokens, mut curl_headers) = (Vec::new(), Vec::new(), 0);
    let start = Instant::now();
    loop {
        let line =
            lines_rx.recv_timeout(DEADLINE.saturating_sub(start.elapsed())).expect("local printed no leader");
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() == 5 && fields[0].parse::<u64>().is_ok() {
            urls.push(fields[2].to_owned());
        }
        if let ["read" | "write" | "admin", "token:", token] = fields[..] {
            tokens.push((fields[0].to_owned(), token.to_owned()));
        }
        curl_headers += usize::from(line.contains("curl") && line.contains("-H \"Authorization: Bearer "));
        if line.starts_with("leader: node") {
            break;
        }
    }
    assert_eq!(urls.len(), 3);
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    assert!(curl_headers >= 3, "the curl examples lack the Authorization header");
    let token = |role: &str| tokens.iter().find(|(r, _)| r == role).unwrap().1.clone();

    let http = reqwest::Client::new();
    let put = |token: Option<String>| {
        let request = http.put(format!("{}/v1/kv/hello", urls[1])).body("world");
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    assert_eq!(put(None).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(put(Some(token("read"))).send().await.unwrap().status().as_u16(), 403);
    assert_eq!(put(Some(token("write"))).send().await.unwrap().status().as_u16(), 200);
    let get = http.get(format!("{}/v1/kv/hello", urls[2])).bearer_auth(token("read")).send().await.unwrap();
    assert_eq!(get.bytes().await.unwrap(), "world");
    let transfer = http
        .post(format!("{}/v1/cluster/transfer-leader", urls[0]))
        .bearer_auth(token("write"))
        .body(r#"{"to":1}"#);
    assert_eq!(transfer.send().await.unwrap().status().as_u16(), 403);

    assert!(Command::new("kill").args(["-INT", &local.id().to_string()]).status().unwrap().success());
    let start = Instant::now();
    while local.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < DEADLINE, "local did not stop on SIGINT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `raft-kv echo` answers the bench like a node (the HTTP ceiling), and
/// reports no Raft term.
#[test]
fn bench_drives_the_echo_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("127.0.0.1:{port}");
    let mut echo = Command::new(BIN).args(["echo", "--listen", &address]).spawn().unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(start.elapsed() < DEADLINE, "echo did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    let endpoint = format!("http://{address}");
    let output = Command::new(BIN)
        .args(["bench", "--endpoints", &endpoint, "--clients", "2", "--duration", "500ms", "--json"])
        .output()
        .unwrap();
    let _ = echo.kill();
    let _ = echo.wait();
    assert!(output.status.success(), "bench failed: {}", String::from_utf8_lossy(&output.stderr));
    let report = json(&output.stdout);
    assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors_total"].as_u64(), Some(0), "{report}");
    assert!(report["term_changes"].is_null(), "{report}");
}

/// `bench --api etcd` speaks etcd's JSON gateway: a stand-in gateway checks
/// the base64 key and value of every put, and its term is read from the
/// header of `/v3/maintenance/status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_speaks_the_etcd_gateway() {
    use axum::routing::post;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let puts = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let term = Arc::new(AtomicU64::new(7));
    let app = axum::Router::new()
        .route(
            "/v3/kv/put",
            post({
                let (puts, bad) = (puts.clone(), bad.clone());
                move |body: axum::body::Bytes| async move {
                    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    // base64 of "k" + 7 digits is 12 characters starting
                    // "azAw" ("k00"); 16 'x's are "eHh4" x5 + "eA==".
                    let key_ok = json["key"].as_str().is_some_and(|k| k.len() == 12 && k.starts_with("azAw"));
                    let value_ok = json["value"].as_str() == Some("eHh4eHh4eHh4eHh4eHh4eA==");
                    if key_ok && value_ok {
                        puts.fetch_add(1, Ordering::Relaxed);
                    } else {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    r#"{"header":{"revision":"2"}}"#
                }
            }),
        )
        .route(
            "/v3/maintenance/status",
            post({
                let term = term.clone();
                move || async move {
                    let t = term.fetch_add(2, Ordering::Relaxed);
                    format!(r#"{{"header":{{"raft_term":"{t}"}},"leader":"1"}}"#)
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let output = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["bench", "--api", "etcd", "--endpoints", &endpoint, "--clients", "2"])
            .args(["--duration", "500ms", "--value-size", "16", "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "bench failed: {}", String::from_utf8_lossy(&output.stderr));
    let report = json(&output.stdout);
    assert_eq!(bad.load(Ordering::Relaxed), 0, "malformed puts: {report}");
    assert_eq!(report["ops"].as_u64(), Some(puts.load(Ordering::Relaxed)), "{report}");
    assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
    assert_eq!((report["term_before"].as_u64(), report["term_changes"].as_u64()), (Some(7), Some(2)));
}
