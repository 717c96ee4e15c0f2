//! `raft-kv local`: an N-node cluster of `raft-kv serve` child processes on
//! loopback, for trying things out.
//!
//! Each child runs with `--exit-with-parent` and a pipe as standard input:
//! when this process stops, however it stops, the pipe closes and every
//! child shuts down by itself. On SIGINT/SIGTERM this process closes the
//! pipes, waits for the children (killing any that take over 5 s) and
//! removes the temporary data directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_http::tls::ClientTls;
use raft_kv::certs::ClusterFiles;

use crate::LocalArgs;

/// The TLS settings of `serve` that must not leak from this process's
/// environment into the nodes (`--tls` passes its own).
const TLS_VARS: [&str; 6] = [
    "RAFT_KV_PEER_CERT_FILE",
    "RAFT_KV_PEER_KEY_FILE",
    "RAFT_KV_PEER_TRUSTED_CA_FILE",
    "RAFT_KV_CERT_FILE",
    "RAFT_KV_KEY_FILE",
    "RAFT_KV_CLIENT_CA_FILE",
];

struct Node {
    id: u64,
    raft_url: String,
    client_url: String,
    log: PathBuf,
    child: Child,
    /// Closing it tells the child to stop.
    stdin: Option<ChildStdin>,
    exited: bool,
}

/// `count` distinct free ports on 127.0.0.1, chosen by the OS. Every
/// listener is held until all are chosen, so no two are the same; another
/// process can still take one before a node binds it (see `supervise`).
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let error = |e: std::io::Error| format!("cannot find a free port: {e}");
    let listeners =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").map_err(error)).collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).map_err(error)).collect()
}

fn check_port(port: u32, what: &str) -> Result<u16, String> {
    let port = u16::try_from(port).map_err(|_| format!("{what} would be port {port}, above 65535"))?;
    match TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(port),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "port {port} ({what}) is already in use; pick another --base-port, or 0 for free ports"
        )),
        Err(e) => Err(format!("cannot listen on port {port} ({what}): {e}")),
    }
}

/// The tokens of `local --auth`, one per role.
#[derive(Debug)]
struct LocalTokens {
    read: String,
    write: String,
    admin: String,
}

/// Writes `DIR/auth.json` with a fresh token per role (readable by the
/// owner only).
fn write_auth_file(dir: &Path) -> Result<(PathBuf, LocalTokens), String> {
    let random = crate::auth::random_token;
    let tokens = LocalTokens { read: random()?, write: random()?, admin: random()? };
    let json = serde_json::json!({ "tokens": [
        { "name": "local-read", "token": tokens.read, "role": "read" },
        { "name": "local-write", "token": tokens.write, "role": "write" },
        { "name": "local-admin", "token": tokens.admin, "role": "admin" },
    ]});
    let path = dir.join("auth.json");
    raft_kv::certs::write_atomically(&path, format!("{json:#}\n").as_bytes(), true)?;
    Ok((path, tokens))
}

fn spawn_nodes(
    args: &LocalArgs,
    dir: &Path,
    auth_file: Option<&Path>,
    tls: Option<&ClusterFiles>,
) -> Result<Vec<Node>, String> {
    if args.nodes == 0 || args.nodes > 99 {
        return Err(format!("--nodes {} must be between 1 and 99", args.nodes));
    }
    let mut ports = Vec::new();
    let free = if args.base_port == 0 { free_ports(2 * args.nodes as usize)? } else { Vec::new() };
    for id in 1..=args.nodes {
        let (raft, client) = if args.base_port == 0 {
            let i = 2 * (id as usize - 1);
            (free[i], free[i + 1])
        } else {
            let base = u32::from(args.base_port) + id as u32;
            (
                check_port(base, &format!("raft port of node {id}"))?,
                check_port(base + 1000, &format!("client port of node {id}"))?,
            )
        };
        ports.push((id, raft, client));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let initial_cluster: Vec<String> =
        ports.iter().map(|(id, raft, _)| format!("{id}={scheme}://127.0.0.1:{raft}")).collect();
    let initial_cluster = initial_cluster.join(",");
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    // The cluster secret: 128 bits from the OS, like the tokens.
    let secret = crate::auth::random_token()?;
    let mut nodes = Vec::new();
    for (id, raft, client) in ports {
        let log = dir.join(format!("node-{id}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let log_err = log_file.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = Command::new(&exe);
        command.arg("serve");
        for var in TLS_VARS {
            command.env_remove(var);
        }
        if let Some(files) = tls {
            let (cert, key) = &files.nodes[id as usize - 1];
            command.arg("--peer-cert-file").arg(cert).arg("--peer-key-file").arg(key);
            command.arg("--peer-trusted-ca-file").arg(&files.ca);
            command.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
        }
        let spawned = command
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(dir.join(format!("node-{id}")))
            .args(["--listen-raft", &format!("127.0.0.1:{raft}")])
            .args(["--listen-client", &format!("127.0.0.1:{client}")])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--tick-ms", &args.tick_ms.to_string()])
            .args(["--log-level", &args.log_level])
            .arg("--exit-with-parent")
            .env("RAFT_KV_CLUSTER_SECRET", &secret)
            .env_remove("RAFT_KV_CLUSTER_SECRET_FILE")
            .env_remove("RAFT_KV_JOIN")
            .env_remove("RAFT_KV_AUTH_FILE")
            .args(auth_file.map(|path| ["--auth-file".as_ref(), path.as_os_str()]).into_iter().flatten())
            .stdin(Stdio::piped())
            .stdout(log_file)
            .stderr(log_err)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                stop_nodes(&mut nodes, false);
                return Err(format!("cannot start node {id}: {e}"));
            }
        };
        let stdin = child.stdin.take();
        nodes.push(Node {
            id,
            raft_url: format!("{scheme}://127.0.0.1:{raft}"),
            client_url: format!("{scheme}://127.0.0.1:{client}"),
            log,
            child,
            stdin,
            exited: false,
        });
    }
    Ok(nodes)
}

/// Closes every child's stdin, waits up to 5 s, then kills what is left.
fn stop_nodes(nodes: &mut [Node], verbose: bool) {
    for node in nodes.iter_mut() {
        node.stdin = None;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for node in nodes.iter_mut() {
        loop {
            match node.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    if verbose {
                        println!("node {} did not stop within 5 s: killing it", node.id);
                    }
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    break;
                }
            }
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

#[derive(Clone, Debug, PartialEq)]
struct View {
    role: String,
    term: u64,
    leader: Option<u64>,
}

async fn view(client: &reqwest::Client, url: &str) -> Option<View> {
    let response = client.get(format!("{url}/v1/status")).send().await.ok()?;
    let status: serde_json::Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
    Some(View {
        role: status["role"].as_str()?.to_owned(),
        term: status["term"].as_u64()?,
        leader: status["leader"].as_u64(),
    })
}

/// Checks for children that exited; returns an error naming one during
/// startup.
fn reap(nodes: &Mutex<Vec<Node>>, starting: bool) -> Result<(), String> {
    let mut nodes = nodes.lock().map_err(|_| "lock poisoned".to_owned())?;
    for node in nodes.iter_mut().filter(|n| !n.exited) {
        if let Ok(Some(status)) = node.child.try_wait() {
            node.exited = true;
            let message = format!(
                "node {} exited ({status}); last log lines of {}:\n{}",
                node.id,
                node.log.display(),
                tail(&node.log)
            );
            if starting {
                return Err(message);
            }
            println!("{message}");
        }
    }
    Ok(())
}

/// Client URLs of the nodes, by id.
fn client_urls(nodes: &Mutex<Vec<Node>>) -> Result<Vec<(u64, String)>, String> {
    let nodes = nodes.lock().map_err(|_| "lock poisoned".to_owned())?;
    Ok(nodes.iter().map(|n| (n.id, n.client_url.clone())).collect())
}

/// Waits until every node names the same leader; the views then.
async fn wait_for_leader(
    nodes: &Mutex<Vec<Node>>,
    client: &reqwest::Client,
    dir: &Path,
) -> Result<Vec<Option<View>>, String> {
    let urls = client_urls(nodes)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        reap(nodes, true)?;
        let mut views = Vec::new();
        for (_, url) in &urls {
            views.push(view(client, url).await);
        }
        let leader = views.iter().flatten().find(|v| v.role == "leader").and_then(|v| v.leader);
        if leader.is_some() && views.iter().all(|v| v.as_ref().is_some_and(|v| v.leader == leader)) {
            return Ok(views);
        }
        if Instant::now() > deadline {
            return Err(format!("no leader elected within 20 s; node logs are in {}", dir.display()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many times a cluster on free ports is started afresh when another
/// process took one of its ports between choosing and binding.
const START_ATTEMPTS: u32 = 3;

/// Waits for the cluster to elect a leader, prints how to use it, then
/// reports leader changes. With `respawn` (free ports in a temporary
/// directory), a node that could not bind its port because another process
/// took it meanwhile restarts the whole cluster on fresh ports.
async fn supervise(
    nodes: Arc<Mutex<Vec<Node>>>,
    dir: PathBuf,
    tokens: Option<LocalTokens>,
    tls: Option<&ClusterFiles>,
    respawn: Option<&dyn Fn() -> Result<Vec<Node>, String>>,
) -> Result<(), String> {
    let client_tls = match tls {
        Some(files) => Some(ClientTls::load(&files.ca, None).map_err(|e| format!("TLS: {e}"))?),
        None => None,
    };
    let builder = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .default_headers(crate::auth::client_headers(tokens.as_ref().map(|t| t.read.as_str())));
    let client = crate::tls::with_tls(builder, client_tls.as_ref())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut attempt = 1;
    let views = loop {
        let error = match wait_for_leader(&nodes, &client, &dir).await {
            Ok(views) => break views,
            Err(error) => error,
        };
        let Some(respawn) = respawn.filter(|_| error.contains(crate::server::PORT_TAKEN)) else {
            return Err(error);
        };
        if attempt == START_ATTEMPTS {
            return Err(error);
        }
        attempt += 1;
        println!("{error}\nstarting afresh on other ports (attempt {attempt} of {START_ATTEMPTS})");
        let mut nodes = nodes.lock().map_err(|_| "lock poisoned".to_owned())?;
        tokio::task::block_in_place(|| stop_nodes(&mut nodes, false));
        for node in nodes.iter() {
            let data = dir.join(format!("node-{}", node.id));
            if data.exists() {
                std::fs::remove_dir_all(&data)
                    .map_err(|e| format!("cannot remove {}: {e}", data.display()))?;
            }
        }
        *nodes = respawn()?;
    };
    let urls = client_urls(&nodes)?;

    let leader = views.iter().flatten().find_map(|v| v.leader.map(|l| (l, v.term)));
    {
        let nodes = nodes.lock().map_err(|_| "lock poisoned".to_owned())?;
        println!("raft-kv local: {} nodes, data and logs (node-N.log) in {}", nodes.len(), dir.display());
        println!();
        println!("{:<4} {:<10} {:<24} {:<24} {:>8}", "ID", "ROLE", "CLIENT URL", "RAFT URL", "PID");
        for (node, view) in nodes.iter().zip(&views) {
            let role = view.as_ref().map_or("?", |v| v.role.as_str());
            println!(
                "{:<4} {:<10} {:<24} {:<24} {:>8}",
                node.id,
                role,
                node.client_url,
                node.raft_url,
                node.child.id()
            );
        }
        let first = &nodes[0].client_url;
        let other = &nodes[nodes.len().min(2) - 1].client_url;
        let all: Vec<&str> = nodes.iter().map(|n| n.client_url.as_str()).collect();
        println!();
        if let Some(files) = tls {
            print_tls_help(files);
        }
        if let Some(tokens) = &tokens {
            print_auth_help(&dir, tokens, first, other, &all);
        } else {
            print_help(first, other, &all);
        }
        if let Some((id, term)) = leader {
            println!("leader: node {id} (term {term}); watching for leader changes, Ctrl-C to stop");
        }
    }
    watch(&nodes, &urls, &client, leader).await
}

fn print_help(first: &str, other: &str, all: &[&str]) {
    println!("Try (any node answers any request):");
    println!("  curl -X PUT --data-binary 'world' {first}/v1/kv/hello");
    println!("  curl -i {other}/v1/kv/hello                      # X-Raft-Index: the modify index");
    println!("  curl -X PUT --data-binary 'again' '{other}/v1/kv/hello?cas=<index>'");
    println!("  curl -X DELETE {first}/v1/kv/hello");
    println!("  curl {first}/v1/status");
    println!("  curl {first}/metrics");
    println!("  raft-kv cluster --endpoint {first} transfer-leader 2");
    println!("  raft-kv bench --endpoints {} --clients 16 --duration 5s", all.join(","));
    println!();
}

/// With `local --tls`: where the certificates are and how clients use them.
fn print_tls_help(files: &ClusterFiles) {
    let ca = files.ca.display();
    println!("TLS is on: mutual TLS between the nodes, https for clients (throwaway CA: {ca}).");
    println!("Every example below needs the CA: curl --cacert {ca} ..., raft-kv ... --ca-file {ca}");
    println!("(or export RAFT_KV_CA_FILE={ca}).");
    println!();
}

/// The `local --auth` variant of the help: the tokens, and the examples
/// with the token each one needs.
fn print_auth_help(dir: &Path, tokens: &LocalTokens, first: &str, other: &str, all: &[&str]) {
    let header = |token: &str| format!("-H \"Authorization: Bearer {token}\"");
    let (read, write, admin) = (header(&tokens.read), header(&tokens.write), header(&tokens.admin));
    println!("Client authentication is on ({}):", dir.join("auth.json").display());
    println!("  read token:  {}", tokens.read);
    println!("  write token: {}", tokens.write);
    println!("  admin token: {}", tokens.admin);
    println!();
    println!("Try (any node answers any request; no token: 401, too small a role: 403):");
    println!("  curl -X PUT {write} --data-binary 'world' {first}/v1/kv/hello");
    println!("  curl -i {read} {other}/v1/kv/hello");
    println!("  curl -i -X PUT {read} --data-binary 'no' {first}/v1/kv/hello   # 403 forbidden");
    println!("  curl -i {first}/v1/kv/hello                             # 401 unauthorized");
    println!("  curl {read} {first}/v1/status");
    println!("  curl {read} {first}/metrics");
    println!("  curl {read} {first}/v1/cluster");
    println!("  curl -X POST {admin} --data '{{\"to\":2}}' {first}/v1/cluster/transfer-leader");
    println!("  raft-kv cluster --endpoint {first} --token {} transfer-leader 1", tokens.admin);
    println!(
        "  raft-kv bench --endpoints {} --token {} --clients 16 --duration 5s",
        all.join(","),
        tokens.write
    );
    println!();
}

/// Reports leader changes until a child exits unexpectedly.
async fn watch(
    nodes: &Mutex<Vec<Node>>,
    urls: &[(u64, String)],
    client: &reqwest::Client,
    mut leader: Option<(u64, u64)>,
) -> Result<(), String> {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        reap(nodes, false)?;
        let mut seen = None;
        for (_, url) in urls {
            if let Some(view) = view(client, url).await {
                if view.role == "leader" {
                    seen = Some((view.leader.unwrap_or_default(), view.term));
                    break;
                }
            }
        }
        if let Some(now) = seen {
            if leader.is_none_or(|l| l.0 != now.0) {
                println!("leader: node {} (term {})", now.0, now.1);
                leader = Some(now);
            }
        }
    }
}

/// Waits for SIGINT or SIGTERM and names it.
pub(crate) async fn signal() -> &'static str {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate => "SIGTERM",
    }
}

pub(crate) async fn run(args: LocalArgs) -> Result<(), String> {
    let (temp, dir) = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            (None, dir.clone())
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("raft-kv-local-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            let path = temp.path().to_owned();
            (Some(temp), path)
        }
    };
    let (auth_file, tokens) = match args.auth {
        true => write_auth_file(&dir).map(|(path, tokens)| (Some(path), Some(tokens)))?,
        false => (None, None),
    };
    let tls = match args.tls {
        true => Some(raft_kv::certs::write_cluster(
            &dir.join("tls"),
            args.nodes,
            &["127.0.0.1".to_owned(), "localhost".to_owned()],
        )?),
        false => None,
    };
    let spawn = || spawn_nodes(&args, &dir, auth_file.as_deref(), tls.as_ref());
    let nodes = Arc::new(Mutex::new(spawn()?));
    // Starting afresh wipes the nodes' data: only in a directory of our own.
    let respawn = (args.base_port == 0 && temp.is_some()).then_some(&spawn as &dyn Fn() -> _);
    let result = tokio::select! {
        result = supervise(nodes.clone(), dir.clone(), tokens, tls.as_ref(), respawn) => result,
        signal = signal() => {
            println!("\n{signal}: stopping the nodes");
            Ok(())
        }
    };
    let count = {
        let mut nodes = nodes.lock().map_err(|_| "lock poisoned".to_owned())?;
        let verbose = result.is_ok();
        tokio::task::block_in_place(|| stop_nodes(&mut nodes, verbose));
        nodes.len()
    };
    if result.is_ok() {
        println!("stopped {count} nodes");
    }
    match temp {
        Some(temp) => drop(temp),
        None => println!("data kept in {}", dir.display()),
    }
    result
}
