//! The `raft-kv serve` processes and the firewall chain, each behind a guard
//! that undoes everything when dropped (normal exit, error, panic, signal).
//! The firewall holds both the partitions (DROP) and the flaky links
//! (random DROP), all in one chain that heal flushes.

use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// One node: its address, directory and process (if running).
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) id: u64,
    pub(crate) ip: Ipv4Addr,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    pub(crate) paused: bool,
}

/// The cluster under test. Dropping it kills every process it started.
#[derive(Debug)]
pub(crate) struct Cluster {
    exe: PathBuf,
    pub(crate) nodes: Vec<Node>,
    pub(crate) raft_port: u16,
    pub(crate) client_port: u16,
    secret: String,
    tick_ms: u64,
    broken: Option<String>,
    /// With `--tls`: the directory `raft-kv certs` wrote (ca.pem, node-N.pem, ...).
    pub(crate) tls: Option<PathBuf>,
    http: reqwest::blocking::Client,
}

/// What every node is started with, beyond its addresses.
#[derive(Debug)]
pub(crate) struct NodeFlags {
    /// `--tick-ms`.
    pub(crate) tick_ms: u64,
    /// `--jepsen-broken MODE`.
    pub(crate) broken: Option<String>,
    /// TLS on both ports, certificates from `raft-kv certs`.
    pub(crate) tls: bool,
}

/// A blocking HTTP client; with `tls` (a `raft-kv certs` directory), it
/// trusts that CA only.
pub(crate) fn http_client(
    timeout: Duration,
    connect_timeout: Duration,
    tls: Option<&Path>,
) -> Result<reqwest::blocking::Client, String> {
    let mut builder = reqwest::blocking::Client::builder().timeout(timeout).connect_timeout(connect_timeout);
    if let Some(dir) = tls {
        let path = dir.join("ca.pem");
        let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        builder = builder.tls_built_in_root_certs(false).add_root_certificate(ca);
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// Node `i`'s (0-based) address: 127.0.0.11, 127.0.0.12, ...
pub(crate) fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 11 + i as u8)
}

/// Runs `raft-kv certs` for `count` nodes on their addresses into
/// `work/tls`: the cluster's CA and certificates.
fn write_certs(exe: &Path, work: &Path, count: usize) -> Result<PathBuf, String> {
    let dir = work.join("tls");
    let hosts: Vec<String> = (0..count).map(|i| node_ip(i).to_string()).collect();
    let output = Command::new(exe)
        .arg("certs")
        .arg("--dir")
        .arg(&dir)
        .args(["--nodes", &count.to_string(), "--hosts", &hosts.join(",")])
        .output()
        .map_err(|e| format!("cannot run {} certs: {e}", exe.display()))?;
    if !output.status.success() {
        return Err(format!("{} certs failed: {}", exe.display(), String::from_utf8_lossy(&output.stderr)));
    }
    Ok(dir)
}

/// Node `i`'s (0-based) data directory under `work`.
pub(crate) fn node_dir(work: &Path, i: usize) -> PathBuf {
    work.join(format!("node-{}", i + 1))
}

impl Cluster {
    pub(crate) fn new(
        exe: &Path,
        work: &Path,
        count: usize,
        raft_port: u16,
        client_port: u16,
        flags: NodeFlags,
    ) -> Result<Self, String> {
        let NodeFlags { tick_ms, broken, tls } = flags;
        let nodes = (0..count)
            .map(|i| {
                let dir = node_dir(work, i);
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                Ok(Node {
                    id: i as u64 + 1,
                    ip: node_ip(i),
                    log: work.join(format!("node-{}.log", i + 1)),
                    dir,
                    child: None,
                    paused: false,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let tls = match tls {
            true => Some(write_certs(exe, work, count)?),
            false => None,
        };
        let http = http_client(Duration::from_secs(3), Duration::from_millis(500), tls.as_deref())?;
        let secret = format!("jepsen-{}", std::process::id());
        Ok(Cluster { exe: exe.to_owned(), nodes, raft_port, client_port, secret, tick_ms, broken, tls, http })
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub(crate) fn raft_url(&self, i: usize) -> String {
        format!("{}://{}:{}", self.scheme(), self.nodes[i].ip, self.raft_port)
    }

    pub(crate) fn client_url(&self, i: usize) -> String {
        format!("{}://{}:{}", self.scheme(), self.nodes[i].ip, self.client_port)
    }

    fn initial_cluster(&self) -> String {
        (0..self.nodes.len()).map(|i| format!("{}={}", i + 1, self.raft_url(i))).collect::<Vec<_>>().join(",")
    }

    /// Starts node `i` (it must not be running).
    pub(crate) fn start(&mut self, i: usize) -> Result<(), String> {
        let initial = self.initial_cluster();
        let node = &self.nodes[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| format!("{}: {e}", node.log.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(&self.exe);
        command
            .arg("serve")
            .arg("--id")
            .arg(node.id.to_string())
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--listen-raft")
            .arg(format!("{}:{}", node.ip, self.raft_port))
            .arg("--listen-client")
            .arg(format!("{}:{}", node.ip, self.client_port))
            .arg("--initial-cluster")
            .arg(initial)
            .arg("--cluster-secret")
            .arg(&self.secret)
            .arg("--tick-ms")
            .arg(self.tick_ms.to_string())
            .arg("--log-level")
            .arg("info")
            .arg("--exit-with-parent")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        if let Some(mode) = &self.broken {
            command.arg("--jepsen-broken").arg(mode);
        }
        if let Some(dir) = &self.tls {
            let (cert, key) =
                (dir.join(format!("node-{}.pem", node.id)), dir.join(format!("node-{}-key.pem", node.id)));
            command.arg("--peer-cert-file").arg(&cert).arg("--peer-key-file").arg(&key);
            command.arg("--peer-trusted-ca-file").arg(dir.join("ca.pem"));
            command.arg("--cert-file").arg(&cert).arg("--key-file").arg(&key);
        }
        let child = command.spawn().map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let node = &mut self.nodes[i];
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    pub(crate) fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        if let Some(child) = &self.nodes[i].child {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    pub(crate) fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].paused = self.running(i);
    }

    pub(crate) fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// Whether node `i`'s process runs but its Raft node has stopped (raft-kv
    /// keeps answering 503 on every route once a storage error stopped it;
    /// `/healthz` says so).
    pub(crate) fn stopped_inside(&self, i: usize) -> bool {
        if !self.running(i) || self.nodes[i].paused {
            return false;
        }
        match self.http.get(format!("{}/healthz", self.client_url(i))).send() {
            Ok(response) => response.status().as_u16() == 503,
            Err(_) => false,
        }
    }

    /// SIGTERM and wait up to `timeout` for the process to exit (then
    /// SIGKILL). Ok(exit status) if it exited by itself, Err if it had to be
    /// killed.
    pub(crate) fn terminate(&mut self, i: usize, timeout: Duration) -> Result<String, String> {
        self.signal(i, libc::SIGCONT);
        self.signal(i, libc::SIGTERM);
        let node = &mut self.nodes[i];
        node.paused = false;
        let Some(mut child) = node.child.take() else { return Err("not running".to_owned()) };
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(status.to_string());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("still running {timeout:?} after SIGTERM; killed"))
    }

    /// Node `i`'s exit status if its process has exited (it is then reaped).
    pub(crate) fn exit_status(&mut self, i: usize) -> Option<String> {
        let node = &mut self.nodes[i];
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        node.paused = false;
        Some(status.to_string())
    }

    /// Reports nodes that exited by themselves (a crash is a finding).
    pub(crate) fn reap_exited(&mut self) -> Vec<(u64, String)> {
        let mut exited = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push((node.id, status.to_string()));
                    node.child = None;
                }
            }
        }
        exited
    }

    pub(crate) fn status(&self, i: usize) -> Option<Value> {
        let response = self.http.get(format!("{}/v1/status", self.client_url(i))).send().ok()?;
        if !response.status().is_success() {
            return None;
        }
        serde_json::from_str(&response.text().ok()?).ok()
    }

    /// The leader most running nodes agree on (0-based index).
    pub(crate) fn leader(&self) -> Option<usize> {
        let mut votes = vec![0usize; self.nodes.len() + 1];
        for i in 0..self.nodes.len() {
            if !self.running(i) || self.nodes[i].paused {
                continue;
            }
            if let Some(leader) = self.status(i).and_then(|s| s["leader"].as_u64()) {
                if leader >= 1 && (leader as usize) <= self.nodes.len() {
                    votes[leader as usize] += 1;
                }
            }
        }
        let (best, count) = votes.iter().enumerate().max_by_key(|(_, c)| **c)?;
        (*count > 0).then(|| best - 1)
    }

    /// Waits until every node answers and all agree on the leader and their
    /// applied index equals the commit index. Returns the time it took.
    pub(crate) fn wait_converged(&self, timeout: Duration) -> Result<Duration, String> {
        let start = std::time::Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            let statuses: Vec<Option<Value>> = (0..self.nodes.len()).map(|i| self.status(i)).collect();
            let ok = statuses.iter().all(|s| s.is_some());
            if ok {
                let leaders: Vec<_> =
                    statuses.iter().map(|s| s.as_ref().unwrap()["leader"].as_u64()).collect();
                let commits: Vec<_> =
                    statuses.iter().map(|s| s.as_ref().unwrap()["commit"].as_u64()).collect();
                let applied: Vec<_> =
                    statuses.iter().map(|s| s.as_ref().unwrap()["applied"].as_u64()).collect();
                if leaders[0].is_some()
                    && leaders.iter().all(|l| *l == leaders[0])
                    && commits.iter().all(|c| *c == commits[0])
                    && applied == commits
                {
                    return Ok(start.elapsed());
                }
                last = format!("leaders {leaders:?}, commit {commits:?}, applied {applied:?}");
            } else {
                last = "not every node answers /v1/status".to_owned();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("no convergence after {timeout:?}: {last}"))
    }

    /// Reads the topology from node `via`.
    pub(crate) fn topology(&self, via: usize) -> Result<Value, String> {
        let response = self
            .http
            .get(format!("{}/v1/cluster", self.client_url(via)))
            .send()
            .map_err(|e| format!("GET /v1/cluster: {e}"))?;
        let text = response.text().map_err(|e| format!("GET /v1/cluster: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("GET /v1/cluster: {e}"))
    }

    /// Removes (`add == false`) or adds back node `target` through the client
    /// API on node `via`, as `raft-kv cluster remove|add` does.
    pub(crate) fn change_membership(&self, via: usize, target: usize, add: bool) -> Result<String, String> {
        let mut topology = self.topology(via)?;
        let id = self.nodes[target].id;
        for list in ["voters", "learners"] {
            if let Some(members) = topology[list].as_array_mut() {
                members.retain(|m| m["id"] != id);
            }
        }
        if add {
            let members = topology["voters"].as_array_mut().ok_or("bad topology")?;
            members.push(json!({ "id": id, "address": self.raft_url(target) }));
        }
        let body = json!({ "voters": topology["voters"], "learners": topology["learners"] });
        let response = self
            .http
            .put(format!("{}/v1/cluster", self.client_url(via)))
            .timeout(Duration::from_secs(8))
            .body(body.to_string())
            .send()
            .map_err(|e| format!("PUT /v1/cluster: {e}"))?;
        let status = response.status();
        let text = response.text().unwrap_or_default();
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("{status}: {}", text.trim()))
        }
    }

    /// Asks node `via` to hand leadership to node `target`, as `raft-kv
    /// cluster transfer-leader` does; Ok once `target` leads.
    pub(crate) fn transfer_leader(&self, via: usize, target: usize) -> Result<String, String> {
        let body = json!({ "to": self.nodes[target].id });
        let response = self
            .http
            .post(format!("{}/v1/cluster/transfer-leader", self.client_url(via)))
            .timeout(Duration::from_secs(5))
            .body(body.to_string())
            .send()
            .map_err(|e| format!("POST /v1/cluster/transfer-leader via n{}: {e}", via + 1))?;
        let status = response.status();
        let text = response.text().unwrap_or_default();
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("via n{}: {status}: {}", via + 1, text.trim()))
        }
    }

    /// Voter ids as node `via` sees them.
    pub(crate) fn voters(&self, via: usize) -> Option<Vec<u64>> {
        let topology = self.topology(via).ok()?;
        Some(topology["voters"].as_array()?.iter().filter_map(|m| m["id"].as_u64()).collect())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.resume(i);
            self.kill(i);
        }
    }
}

/// The `RAFT_JEPSEN` chain, jumped to first from INPUT. Dropping it removes
/// the jump and the chain.
#[derive(Debug)]
pub(crate) struct Firewall {
    iptables: String,
    port: u16,
    rules: usize,
}

pub(crate) const CHAIN: &str = "RAFT_JEPSEN";

impl Firewall {
    fn run(iptables: &str, args: &[&str]) -> Result<(), String> {
        let output = Command::new(iptables)
            .arg("-w")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {iptables}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("{iptables} {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
        }
    }

    /// Checks that iptables works and sets up an empty chain.
    pub(crate) fn new(iptables: &str, port: u16) -> Result<Self, String> {
        Self::run(iptables, &["-L", "INPUT", "-n"]).map_err(|e| {
            format!(
                "iptables is not usable ({e}); partitions need root and iptables \
                 (try --iptables iptables-legacy, or run with --no-partitions)"
            )
        })?;
        let firewall = Firewall { iptables: iptables.to_owned(), port, rules: 0 };
        firewall.remove_all();
        Self::run(iptables, &["-N", CHAIN])?;
        Self::run(iptables, &["-I", "INPUT", "1", "-j", CHAIN])?;
        Ok(firewall)
    }

    /// Drops raft traffic from `from` to `to` (one direction).
    pub(crate) fn block(&mut self, from: Ipv4Addr, to: Ipv4Addr) -> Result<(), String> {
        let (from, to, port) = (from.to_string(), to.to_string(), self.port.to_string());
        Self::run(
            &self.iptables,
            &["-A", CHAIN, "-s", &from, "-d", &to, "-p", "tcp", "--dport", &port, "-j", "DROP"],
        )?;
        self.rules += 1;
        Ok(())
    }

    /// Drops each raft packet from `from` to `to` with probability `p`:
    /// requests to `to`'s raft port and replies from `from`'s raft port, so
    /// that, called for both directions, every TCP segment of the link
    /// between the two nodes is lost with probability `p`.
    pub(crate) fn lossy(&mut self, from: Ipv4Addr, to: Ipv4Addr, p: f64) -> Result<(), String> {
        let (from, to, port) = (from.to_string(), to.to_string(), self.port.to_string());
        let p = format!("{p:.4}");
        for direction in ["--dport", "--sport"] {
            Self::run(
                &self.iptables,
                &[
                    "-A",
                    CHAIN,
                    "-s",
                    &from,
                    "-d",
                    &to,
                    "-p",
                    "tcp",
                    direction,
                    &port,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
            self.rules += 1;
        }
        Ok(())
    }

    /// Removes every partition and flaky link (flushes the chain).
    pub(crate) fn heal(&mut self) -> Result<(), String> {
        self.rules = 0;
        Self::run(&self.iptables, &["-F", CHAIN])
    }

    fn remove_all(&self) {
        for _ in 0..16 {
            if Self::run(&self.iptables, &["-D", "INPUT", "-j", CHAIN]).is_err() {
                break;
            }
        }
        let _ = Self::run(&self.iptables, &["-F", CHAIN]);
        let _ = Self::run(&self.iptables, &["-X", CHAIN]);
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// A log file that is kept for the report (the last lines of a node's log).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else { return String::new() };
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut file, &mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The last line, after byte `from`, of a log file that contains `needle`,
/// without terminal colour codes.
pub(crate) fn last_line_with(path: &Path, from: u64, needle: &str) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(bytes.get(from as usize..)?);
    text.lines().map(strip_colours).rfind(|line| line.contains(needle))
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Node {
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }
}
