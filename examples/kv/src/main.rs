//! raft-kv: a replicated key-value store over HTTP, built on `raft-http`.
//!
//! ```text
//! raft-kv serve --id 1 --data-dir DIR --listen-raft 127.0.0.1:7001 --listen-client 127.0.0.1:8001 \
//!               --initial-cluster 1=http://127.0.0.1:7001,2=http://127.0.0.1:7002,3=http://127.0.0.1:7003
//! raft-kv local [--nodes 3] [--data-dir DIR] [--base-port 7000] [--auth] [--tls]
//! raft-kv certs --dir DIR [--nodes 3] [--hosts 127.0.0.1,localhost]
//! raft-kv bench --endpoints URL,... --clients 64 --duration 10s [--workload write|read|mixed|cas]
//! raft-kv get|put|delete|status|cluster ...
//! ```
#![forbid(unsafe_code)]

mod auth;
mod bench;
mod client;
mod echo;
mod local;
mod server;
mod store;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "raft-kv", version, about = "A replicated key-value store over HTTP, on Raft")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one node.
    Serve(Box<ServeArgs>),
    /// Run an N-node cluster on loopback as child processes (the demo).
    Local(LocalArgs),
    /// Closed-loop load generator with a latency report.
    Bench(BenchArgs),
    /// The client API's HTTP server with nothing behind it (no Raft, no
    /// disk): the ceiling `bench` can reach on this machine.
    Echo(EchoArgs),
    /// Write a throwaway CA and node certificates for TLS (reuses DIR's CA if
    /// there is one: run it again to rotate the node certificates).
    Certs(CertsArgs),
    /// Read a key (the value goes to stdout).
    Get {
        #[command(flatten)]
        endpoint: EndpointArg,
        key: String,
        /// linearizable | lease | stale
        #[arg(long, default_value = "linearizable")]
        consistency: String,
    },
    /// Write a key.
    Put {
        #[command(flatten)]
        endpoint: EndpointArg,
        key: String,
        value: String,
        /// Only if the key's modify index is N (0 = only if absent).
        #[arg(long)]
        cas: Option<u64>,
        /// Sent as the Idempotency-Key header: a retry applies at most once.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Delete a key.
    Delete {
        #[command(flatten)]
        endpoint: EndpointArg,
        key: String,
        /// Only if the key's modify index is N.
        #[arg(long)]
        cas: Option<u64>,
    },
    /// A node's view of the cluster (GET /v1/status).
    Status {
        #[command(flatten)]
        endpoint: EndpointArg,
    },
    /// Show or change the cluster's topology (GET/PUT /v1/cluster).
    Cluster {
        #[command(flatten)]
        endpoint: EndpointArg,
        #[command(subcommand)]
        action: Option<ClusterAction>,
    },
}

impl Cmd {
    /// The token and TLS flags of a client command.
    fn client_flags(&self) -> Option<(&TokenArg, &tls::ClientTlsArgs)> {
        match self {
            Cmd::Get { endpoint, .. }
            | Cmd::Put { endpoint, .. }
            | Cmd::Delete { endpoint, .. }
            | Cmd::Status { endpoint }
            | Cmd::Cluster { endpoint, .. } => Some((&endpoint.token, &endpoint.tls)),
            Cmd::Bench(args) => Some((&args.token, &args.tls)),
            Cmd::Serve(_) | Cmd::Local(_) | Cmd::Certs(_) | Cmd::Echo(_) => None,
        }
    }
}

/// A change to the cluster, applied as a complete topology.
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterAction {
    /// Show the topology (the default).
    Show,
    /// Add a node (started with `serve --join`) as a voter, or a learner.
    Add {
        id: u64,
        /// Its raft URL, e.g. http://127.0.0.1:7004.
        raft_url: String,
        /// Add it as a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node.
    Remove { id: u64 },
    /// Hand leadership to a voter.
    TransferLeader { to: u64 },
}

#[derive(Debug, Args)]
struct EndpointArg {
    /// A node's client URL.
    #[arg(long, short, env = "RAFT_KV_ENDPOINT", default_value = "http://127.0.0.1:8001")]
    endpoint: String,
    #[command(flatten)]
    token: TokenArg,
    #[command(flatten)]
    tls: tls::ClientTlsArgs,
}

/// The bearer token sent to a server started with `--auth-file`.
#[derive(Debug, Args)]
pub(crate) struct TokenArg {
    /// Bearer token (Authorization: Bearer TOKEN); wins over --token-file.
    #[arg(long, env = "RAFT_KV_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace ignored).
    #[arg(long, env = "RAFT_KV_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
}

impl TokenArg {
    fn resolve(&self) -> Result<Option<String>, String> {
        auth::resolve_token(self.token.as_deref(), self.token_file.as_deref())
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// This node's id (non-zero; must appear in --initial-cluster unless --join).
    #[arg(long, env = "RAFT_KV_ID")]
    pub(crate) id: u64,
    /// The node's data directory (created if missing; locked while running).
    #[arg(long, env = "RAFT_KV_DATA_DIR")]
    pub(crate) data_dir: PathBuf,
    /// Address for other nodes (Raft messages and forwarded writes).
    #[arg(long, env = "RAFT_KV_LISTEN_RAFT", default_value = "127.0.0.1:7001")]
    pub(crate) listen_raft: String,
    /// Address for clients (the /v1 API, /metrics, /healthz, /readyz).
    #[arg(long, env = "RAFT_KV_LISTEN_CLIENT", default_value = "127.0.0.1:8001")]
    pub(crate) listen_client: String,
    /// The initial voters: id=raft-url,... (used only when the data directory is empty).
    /// With --join: the current members, so the new node can answer the leader.
    #[arg(long, env = "RAFT_KV_INITIAL_CLUSTER", value_delimiter = ',', required_unless_present = "join")]
    pub(crate) initial_cluster: Vec<String>,
    /// Start empty, to be added to an existing cluster by PUT /v1/cluster on any member.
    #[arg(long, env = "RAFT_KV_JOIN")]
    pub(crate) join: bool,
    /// Length of one Raft tick, the clock of every timeout (the two below
    /// are rounded down to whole ticks).
    #[arg(long, env = "RAFT_KV_TICK_MS", default_value_t = 10)]
    pub(crate) tick_ms: u64,
    /// A follower that hears nothing from a leader for a random time between
    /// this and twice this starts an election; a leader that hears from no
    /// majority for this long steps down. Half a second rides out the
    /// fsync stalls of a busy shared disk (a leader's heartbeats wait for
    /// its own write) without taking long to replace a dead leader.
    #[arg(long, env = "RAFT_KV_ELECTION_TIMEOUT_MS", default_value_t = 500)]
    pub(crate) election_timeout_ms: u64,
    /// How often a leader sends heartbeats.
    #[arg(long, env = "RAFT_KV_HEARTBEAT_MS", default_value_t = 50)]
    pub(crate) heartbeat_ms: u64,
    /// Apply committed writes in a task on the runtime (the map's inserts
    /// are quick and never block) rather than on a thread of their own:
    /// one thread wake-up less per batch. Snapshots are taken on a blocking
    /// thread either way.
    #[arg(long, env = "RAFT_KV_APPLY_IN_TASK", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) apply_in_task: bool,
    /// Cluster id sent with every message between nodes; nodes of another cluster are refused.
    #[arg(long, env = "RAFT_KV_CLUSTER_ID", default_value = "raft-kv")]
    pub(crate) cluster_id: String,
    /// Shared secret between nodes (bearer token on every Raft request).
    #[arg(
        long,
        env = "RAFT_KV_CLUSTER_SECRET",
        hide_env_values = true,
        conflicts_with = "cluster_secret_file"
    )]
    pub(crate) cluster_secret: Option<String>,
    /// A file holding the cluster secret (surrounding whitespace ignored).
    #[arg(long, env = "RAFT_KV_CLUSTER_SECRET_FILE")]
    pub(crate) cluster_secret_file: Option<PathBuf>,
    /// Client bearer tokens and their roles (JSON; see the README). Re-read on SIGHUP.
    /// Needs a cluster secret. Without an auth file the client API is open to anyone who reaches it.
    #[arg(long, env = "RAFT_KV_AUTH_FILE")]
    pub(crate) auth_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) tls: tls::ServeTlsArgs,
    /// Largest value accepted, in bytes (at most 1 MiB minus 4 KiB: a command must fit one Raft message).
    #[arg(long, env = "RAFT_KV_MAX_VALUE_BYTES", default_value_t = 512 * 1024)]
    pub(crate) max_value_bytes: usize,
    /// Take a snapshot (and compact the log) every N applied entries.
    #[arg(long, env = "RAFT_KV_SNAPSHOT_ENTRIES", default_value_t = 100_000)]
    pub(crate) snapshot_entries: u64,
    /// Log format.
    #[arg(long, env = "RAFT_KV_LOG_FORMAT", value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,
    /// Log filter: a level (info, debug, ...) or tracing directives (raft_http=debug,info).
    #[arg(long, env = "RAFT_KV_LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,
    /// Stop when standard input closes (used by `raft-kv local`, so no child outlives it).
    #[arg(long, hide = true)]
    pub(crate) exit_with_parent: bool,
    /// Test-only (feature `jepsen-broken`): break the store on purpose.
    #[cfg(feature = "jepsen-broken")]
    #[arg(long, value_enum)]
    pub(crate) jepsen_broken: Option<Broken>,
}

/// Deliberate bugs, compiled in only with the `jepsen-broken` feature, so
/// that the fault harness can show it catches them.
#[cfg(feature = "jepsen-broken")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Broken {
    /// Every GET reads the local map without confirmation (stale reads).
    StaleReads,
    /// A PUT is acknowledged before it commits.
    EarlyAck,
}

#[derive(Debug, Args)]
pub(crate) struct LocalArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    pub(crate) nodes: u64,
    /// Keep the nodes' data here (default: a temporary directory, removed on exit).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Node i listens on base+i (raft) and base+1000+i (client); 0 picks free ports.
    #[arg(long, default_value_t = 7000)]
    pub(crate) base_port: u16,
    /// Tick length passed to every node.
    #[arg(long, default_value_t = 10)]
    pub(crate) tick_ms: u64,
    /// Log filter passed to every node (logs go to DIR/node-N.log).
    #[arg(long, default_value = "info")]
    pub(crate) log_level: String,
    /// Turn on client authentication: write DIR/auth.json with one token per
    /// role, start the nodes with it, and print the tokens.
    #[arg(long)]
    pub(crate) auth: bool,
    /// Turn on TLS: write a throwaway CA and node certificates into DIR/tls,
    /// start the nodes with mutual TLS between them and https for clients.
    #[arg(long)]
    pub(crate) tls: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EchoArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub(crate) listen: String,
}

#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    /// Where to write ca.pem, node-N.pem, node-N-key.pem, client.pem, client-key.pem.
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// How many node certificates.
    #[arg(long, default_value_t = 3)]
    pub(crate) nodes: u64,
    /// The names and addresses every node certificate is valid for.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost,::1")]
    pub(crate) hosts: Vec<String>,
}

/// What the bench does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Workload {
    /// PUT random keys.
    Write,
    /// Linearizable GET of random keys (prefilled first).
    Read,
    /// 50% reads, 50% writes.
    Mixed,
    /// GET then PUT ?cas=<index> (conflicts count as cas_mismatch).
    Cas,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Client URLs, comma-separated; clients are spread over them round-robin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) endpoints: Vec<String>,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 16)]
    pub(crate) clients: usize,
    /// How long to run: 10s, 500ms, 2m (plain numbers are seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// What to do.
    #[arg(long, value_enum, default_value = "write")]
    pub(crate) workload: Workload,
    /// Value size in bytes.
    #[arg(long, default_value_t = 128)]
    pub(crate) value_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000)]
    pub(crate) keys: u64,
    /// Read consistency for GETs.
    #[arg(long, default_value = "linearizable")]
    pub(crate) consistency: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// The API the endpoints speak: raft-kv's, or etcd v3's JSON gateway
    /// (to compare both with one load generator).
    #[arg(long, value_enum, default_value = "raft-kv")]
    pub(crate) api: bench::Api,
    #[command(flatten)]
    pub(crate) token: TokenArg,
    #[command(flatten)]
    pub(crate) tls: tls::ClientTlsArgs,
}

/// "10s", "250ms", "2m", "1h", or a plain number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("not a duration: {text:?} (try 10s or 500ms)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (ms, s, m, h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("not a duration: {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // The tokio worker threads (unset or empty: one per core).
    if let Some(text) = std::env::var("RAFT_KV_WORKER_THREADS").ok().filter(|t| !t.is_empty()) {
        match text.parse::<usize>() {
            Ok(n) if n > 0 => {
                builder.worker_threads(n);
            }
            _ => {
                eprintln!("error: RAFT_KV_WORKER_THREADS={text:?} is not a number of threads (1 or more)");
                return ExitCode::FAILURE;
            }
        }
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        if let Some((token, tls)) = cli.command.client_flags() {
            auth::set_client_token(token.resolve()?);
            tls::set_client_tls(tls.load()?);
        }
        match cli.command {
            Cmd::Serve(args) => server::serve(*args).await,
            Cmd::Local(args) => local::run(args).await,
            Cmd::Certs(args) => tls::write_certs(&args),
            Cmd::Bench(args) => bench::run(args).await,
            Cmd::Echo(args) => echo::run(args).await,
            Cmd::Get { endpoint, key, consistency } => {
                client::get(&endpoint.endpoint, &key, &consistency).await
            }
            Cmd::Put { endpoint, key, value, cas, idempotency_key } => {
                client::put(&endpoint.endpoint, &key, value, cas, idempotency_key).await
            }
            Cmd::Delete { endpoint, key, cas } => client::delete(&endpoint.endpoint, &key, cas).await,
            Cmd::Status { endpoint } => client::show(&endpoint.endpoint, "/v1/status").await,
            Cmd::Cluster { endpoint, action } => client::cluster(&endpoint.endpoint, action).await,
        }
    });
    // Do not wait for stray blocking tasks (stdin readers) at exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
