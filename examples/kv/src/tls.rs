//! The TLS flags of `raft-kv serve` (both ports) and of the client
//! commands, and their reloading.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use clap::Args;
use raft_http::tls::{ClientTls, PeerTls, ServerTls};

/// How often the certificate files are checked for changes (SIGHUP reloads
/// at once).
const WATCH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub(crate) struct ServeTlsArgs {
    /// This node's certificate (PEM chain) on the raft port. With
    /// --peer-key-file and --peer-trusted-ca-file: mutual TLS between nodes,
    /// a peer without a certificate from that CA is refused at the handshake.
    /// Re-read on SIGHUP and when the file changes.
    #[arg(long, env = "RAFT_KV_PEER_CERT_FILE", requires_all = ["peer_key_file", "peer_trusted_ca_file"])]
    pub(crate) peer_cert_file: Option<PathBuf>,
    /// The private key of --peer-cert-file (PEM).
    #[arg(long, env = "RAFT_KV_PEER_KEY_FILE", requires = "peer_cert_file")]
    pub(crate) peer_key_file: Option<PathBuf>,
    /// The CA (PEM) that signs every node's --peer-cert-file.
    #[arg(long, env = "RAFT_KV_PEER_TRUSTED_CA_FILE", requires = "peer_cert_file")]
    pub(crate) peer_trusted_ca_file: Option<PathBuf>,
    /// Certificate (PEM chain) of the client port: clients then speak https.
    /// Re-read on SIGHUP and when the file changes.
    #[arg(long, env = "RAFT_KV_CERT_FILE", requires = "key_file")]
    pub(crate) cert_file: Option<PathBuf>,
    /// The private key of --cert-file (PEM).
    #[arg(long, env = "RAFT_KV_KEY_FILE", requires = "cert_file")]
    pub(crate) key_file: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM) on the client port.
    #[arg(long, env = "RAFT_KV_CLIENT_CA_FILE", requires = "cert_file")]
    pub(crate) client_ca_file: Option<PathBuf>,
}

/// The loaded TLS material of `serve`.
#[derive(Clone, Debug, Default)]
pub(crate) struct ServeTls {
    pub(crate) peer: Option<PeerTls>,
    pub(crate) client: Option<ServerTls>,
}

impl ServeTlsArgs {
    pub(crate) fn load(&self) -> Result<ServeTls, String> {
        let peer = match (&self.peer_cert_file, &self.peer_key_file, &self.peer_trusted_ca_file) {
            (Some(cert), Some(key), Some(ca)) => {
                Some(PeerTls::load(cert, key, ca).map_err(|e| format!("peer TLS: {e}"))?)
            }
            (None, None, None) => None,
            _ => {
                return Err("--peer-cert-file, --peer-key-file and --peer-trusted-ca-file go together".into())
            }
        };
        let client = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(
                ServerTls::load(cert, key, self.client_ca_file.as_deref())
                    .map_err(|e| format!("client TLS: {e}"))?,
            ),
            (None, None) => None,
            _ => return Err("--cert-file and --key-file go together".into()),
        };
        Ok(ServeTls { peer, client })
    }
}

impl ServeTls {
    /// Reloads the certificates when their files change and on SIGHUP; a
    /// failed reload keeps the previous ones (and is logged).
    pub(crate) fn reload_on_change(&self) {
        if self.peer.is_none() && self.client.is_none() {
            return;
        }
        if let Some(peer) = &self.peer {
            peer.watch(WATCH_EVERY);
        }
        if let Some(client) = &self.client {
            client.watch(WATCH_EVERY);
        }
        let tls = self.clone();
        crate::server::on_sighup("certificates reload on file changes only", move || tls.reload());
    }

    fn reload(&self) {
        let outcomes = [
            ("peer", self.peer.as_ref().map(PeerTls::reload)),
            ("client API", self.client.as_ref().map(ServerTls::reload)),
        ];
        for (what, outcome) in outcomes {
            match outcome {
                Some(Ok(())) => tracing::info!(what, "SIGHUP: TLS certificates reloaded"),
                Some(Err(e)) => {
                    tracing::error!(
                        what,
                        "SIGHUP: cannot reload the TLS certificates, keeping the previous ones: {e}"
                    )
                }
                None => {}
            }
        }
    }
}

/// The TLS flags of the client commands and of `bench`.
#[derive(Debug, Args)]
pub(crate) struct ClientTlsArgs {
    /// Trust servers whose certificate this CA (PEM) signed (for https:// endpoints).
    #[arg(long, env = "RAFT_KV_CA_FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Present this client certificate (PEM), for a server with --client-ca-file.
    #[arg(long, env = "RAFT_KV_CLIENT_CERT_FILE", requires_all = ["ca_file", "key_file"])]
    pub(crate) cert_file: Option<PathBuf>,
    /// The private key of --cert-file (PEM).
    #[arg(long, env = "RAFT_KV_CLIENT_KEY_FILE", requires = "cert_file")]
    pub(crate) key_file: Option<PathBuf>,
}

impl ClientTlsArgs {
    pub(crate) fn load(&self) -> Result<Option<ClientTls>, String> {
        let Some(ca) = &self.ca_file else {
            return Ok(None);
        };
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        ClientTls::load(ca, identity).map(Some).map_err(|e| format!("TLS: {e}"))
    }
}

/// The TLS the client commands use, set once by `main`.
static CLIENT_TLS: OnceLock<ClientTls> = OnceLock::new();

pub(crate) fn set_client_tls(tls: Option<ClientTls>) {
    if let Some(tls) = tls {
        let _ = CLIENT_TLS.set(tls);
    }
}

/// `builder` speaking `tls` for https:// URLs (without it, only the
/// server certificates reqwest trusts by itself: none, in this build).
pub(crate) fn with_tls(builder: reqwest::ClientBuilder, tls: Option<&ClientTls>) -> reqwest::ClientBuilder {
    match tls {
        Some(tls) => builder.use_preconfigured_tls(rustls::ClientConfig::clone(&tls.client_config())),
        None => builder,
    }
}

/// A client builder with the command's token and TLS.
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder().default_headers(crate::auth::client_headers(None));
    with_tls(builder, CLIENT_TLS.get())
}

/// `raft-kv certs`.
pub(crate) fn write_certs(args: &crate::CertsArgs) -> Result<(), String> {
    let reused = args.dir.join("ca-key.pem").exists();
    let files = raft_kv::certs::write_cluster(&args.dir, args.nodes, &args.hosts)?;
    let verb = if reused { "reused" } else { "created" };
    println!("CA ({verb}): {}  (its key: ca-key.pem, keep it private)", files.ca.display());
    for (id, (cert, key)) in (1..).zip(&files.nodes) {
        println!("node {id}: {}  {}", cert.display(), key.display());
    }
    println!("client: {}  {}", files.client.0.display(), files.client.1.display());
    println!("valid for: {}; for a year", args.hosts.join(", "));
    if let Some((cert, key)) = files.nodes.first() {
        let (cert, key, ca) = (cert.display(), key.display(), files.ca.display());
        println!();
        println!("raft-kv serve --id 1 ... --peer-cert-file {cert} --peer-key-file {key} --peer-trusted-ca-file {ca} \\");
        println!("    --cert-file {cert} --key-file {key}");
        println!("raft-kv status --endpoint https://127.0.0.1:8001 --ca-file {ca}");
    }
    Ok(())
}
