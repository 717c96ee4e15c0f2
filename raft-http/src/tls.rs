//! TLS for both ends of a connection: certificates, keys and trusted CAs
//! read from PEM files, mutual authentication between peers, and reloading
//! without a restart.
//!
//! Three shapes, one per use:
//! - [`PeerTls`]: the raft port. Mutual: each node presents its certificate
//!   and accepts only peers whose certificate chains to the trusted CA, in
//!   both directions (a peer without one is refused at the handshake).
//!   Give it to [`HttpOptions::tls`](crate::HttpOptions::tls) for the
//!   egress and serve the [`Transport`](crate::Transport) through a
//!   [`Listener`] with [`PeerTls::server_config`].
//! - [`ServerTls`]: an application's own port (a client API): a
//!   certificate, and optionally a CA whose client certificates are then
//!   required.
//! - [`ClientTls`]: a client of such a port: the CA to trust and optionally
//!   a certificate to present.
//!
//! The rustls configurations are built once; their certificate resolvers and
//! verifiers read the files' current contents, so that
//! [`reload`](PeerTls::reload) (or [`watch`](PeerTls::watch), which reloads
//! when a file changes) applies to every connection opened afterwards,
//! including those of a `reqwest::Client` built earlier. A reload that
//! fails (a missing or half-written file, a key that does not match the
//! certificate, a peer certificate the CA did not sign or that has expired)
//! keeps the previous material and says why.
//!
//! ```no_run
//! use raft_http::tls::{Listener, PeerTls};
//! use raft_http::HttpOptions;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = PeerTls::load("node1.pem".as_ref(), "node1-key.pem".as_ref(), "ca.pem".as_ref())?;
//! let options = HttpOptions::new("cluster-a").tls(tls.clone());
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:7001").await?;
//! let listener = Listener::tls(tcp, tls.server_config())?;
//! let _reloads = tls.watch(std::time::Duration::from_secs(5));
//! # let _ = (options, listener); Ok(()) }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the expected kind, or a broken one.
    #[error("{path}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The material is readable but unusable: a key that does not match its
    /// certificate, a certificate the CA did not sign or that has expired.
    #[error("{0}")]
    Invalid(String),
}

fn pem_error(path: &Path, detail: impl fmt::Display) -> TlsError {
    TlsError::Pem { path: path.to_owned(), detail: detail.to_string() }
}

fn provider() -> Arc<CryptoProvider> {
    // ring builds with nothing beyond a C compiler (aws-lc-rs wants a long
    // C build); rustls 0.23.48 deprecates it only for lacking post-quantum
    // key exchange.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("not a PEM certificate file: {e}")))?;
    if certificates.is_empty() {
        return Err(pem_error(path, "holds no certificate (expected -----BEGIN CERTIFICATE-----)"));
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| pem_error(path, format!("holds no usable private key: {e}")))
}

fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots.add(certificate).map_err(|e| pem_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

fn certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certificates(cert)?;
    let key_der = read_key(key)?;
    CertifiedKey::from_der(chain, key_der, provider).map(Arc::new).map_err(|e| {
        TlsError::Invalid(format!("{} and {} do not make a usable pair: {e}", cert.display(), key.display()))
    })
}

/// What a [`Reloadable`] re-reads: paths and what to build from them.
#[derive(Clone, Debug)]
struct Files {
    /// Certificate chain and private key to present, if any.
    identity: Option<(PathBuf, PathBuf)>,
    /// CA certificates: whom to trust (servers, or clients when serving).
    ca: Option<PathBuf>,
    /// The identity must chain to `ca` as a client (peers: both roles).
    identity_signed_by_ca: bool,
}

impl Files {
    fn paths(&self) -> Vec<&Path> {
        let mut paths: Vec<&Path> = Vec::new();
        if let Some((cert, key)) = &self.identity {
            paths.extend([cert.as_path(), key.as_path()]);
        }
        paths.extend(self.ca.as_deref());
        paths
    }

    /// Modification time and length of every file: a change means reload.
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.paths()
            .into_iter()
            .map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
            .collect()
    }

    fn load(&self, provider: &Arc<CryptoProvider>) -> Result<Material, TlsError> {
        let stamp = self.stamp();
        let key = match &self.identity {
            Some((cert, key)) => Some(certified_key(cert, key, provider)?),
            None => None,
        };
        let (server_verifier, client_verifier) = match &self.ca {
            Some(ca) => {
                let roots = read_roots(ca)?;
                let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Invalid(format!("{}: {e}", ca.display())))?;
                let client = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| TlsError::Invalid(format!("{}: {e}", ca.display())))?;
                (Some(server as Arc<dyn ServerCertVerifier>), Some(client))
            }
            None => (None, None),
        };
        if let (true, Some(key), Some(verifier), Some(ca)) =
            (self.identity_signed_by_ca, &key, &client_verifier, &self.ca)
        {
            let (end_entity, intermediates) =
                key.cert.split_first().expect("from_der refuses an empty chain");
            verifier.verify_client_cert(end_entity, intermediates, UnixTime::now()).map_err(|e| {
                let cert =
                    self.identity.as_ref().map(|(cert, _)| cert.display().to_string()).unwrap_or_default();
                TlsError::Invalid(format!(
                    "{cert} is not a valid peer certificate for the CA in {}: {e} (peers would refuse it)",
                    ca.display()
                ))
            })?;
        }
        Ok(Material { key, server_verifier, client_verifier, stamp })
    }
}

/// One consistent set of loaded material.
struct Material {
    key: Option<Arc<CertifiedKey>>,
    server_verifier: Option<Arc<dyn ServerCertVerifier>>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    stamp: Vec<Option<(SystemTime, u64)>>,
}

/// Files and the material last loaded from them, shared by the resolvers
/// and verifiers of the rustls configurations.
struct Reloadable {
    files: Files,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Material>>,
}

impl Reloadable {
    fn load(files: Files) -> Result<Arc<Reloadable>, TlsError> {
        let provider = provider();
        let material = files.load(&provider)?;
        Ok(Arc::new(Reloadable { files, provider, current: RwLock::new(Arc::new(material)) }))
    }

    fn current(&self) -> Arc<Material> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn reload(&self) -> Result<(), TlsError> {
        let material = self.files.load(&self.provider)?;
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(material);
        Ok(())
    }

    fn describe(&self) -> String {
        self.files.paths().iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions");
        let builder = if self.current().client_verifier.is_some() {
            builder.with_client_cert_verifier(Arc::new(Resolver(self.clone())))
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn client_config(self: &Arc<Self>) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .dangerous() // Not dangerous: Resolver delegates to webpki's verifier for the CA.
            .with_custom_certificate_verifier(Arc::new(Resolver(self.clone())));
        let config = if self.current().key.is_some() {
            builder.with_client_cert_resolver(Arc::new(Resolver(self.clone())))
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(config)
    }

    /// Reloads on SIGHUP-like demand or when a file changes, checking every
    /// `every`; logs each outcome.
    fn watch(self: &Arc<Self>, what: &'static str, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_failed = None;
            loop {
                ticks.tick().await;
                let stamp = this.files.stamp();
                if stamp == this.current().stamp || last_failed.as_ref() == Some(&stamp) {
                    continue;
                }
                match this.reload() {
                    Ok(()) => {
                        last_failed = None;
                        tracing::info!(what, files = %this.describe(), "TLS files changed: reloaded");
                    }
                    Err(e) => {
                        // Try again only after another change: the files may
                        // be half-written now.
                        last_failed = Some(stamp);
                        tracing::error!(
                            what,
                            "TLS files changed but cannot be used, keeping the previous ones: {e}"
                        );
                    }
                }
            }
        })
    }
}

/// The resolvers and verifiers the rustls configurations call: each reads
/// the current material.
struct Resolver(Arc<Reloadable>);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").field("files", &self.0.files).finish()
    }
}

fn no_verifier() -> rustls::Error {
    rustls::Error::General("no trusted CA configured".into())
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().key.clone()
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current().key.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.current().key.is_some()
    }
}

impl ServerCertVerifier for Resolver {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let current = self.0.current();
        let verifier = current.server_verifier.as_ref().ok_or_else(no_verifier)?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.provider.signature_verification_algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Resolver {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints (they would borrow from reloadable material): a client
        // then sends the certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let current = self.0.current();
        let verifier = current.client_verifier.as_ref().ok_or_else(no_verifier)?;
        verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ServerCertVerifier::supported_verify_schemes(self)
    }
}

macro_rules! reloading {
    ($name:ident, $what:literal) => {
        impl $name {
            /// Re-reads the files now. On an error the previous material
            /// stays in use.
            pub fn reload(&self) -> Result<(), TlsError> {
                self.inner.reload()
            }

            /// Reloads whenever a file's modification time or length
            /// changes, checking every `every`; successes and failures are
            /// logged. A failed reload is retried after the next change.
            /// Must be called inside a tokio runtime; abort the handle to
            /// stop.
            pub fn watch(&self, every: Duration) -> tokio::task::JoinHandle<()> {
                self.inner.watch($what, every)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("files", &self.inner.files).finish_non_exhaustive()
            }
        }
    };
}

/// Mutual TLS between the nodes of a cluster (see the [module](self) docs).
#[derive(Clone)]
pub struct PeerTls {
    inner: Arc<Reloadable>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

reloading!(PeerTls, "peer");

impl PeerTls {
    /// Loads this node's certificate chain and key and the CA that signs
    /// every node's certificate. Fails if the certificate does not chain to
    /// the CA as a client certificate (it would be refused by the peers),
    /// has expired, or does not match the key.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<PeerTls, TlsError> {
        let files = Files {
            identity: Some((cert.to_owned(), key.to_owned())),
            ca: Some(ca.to_owned()),
            identity_signed_by_ca: true,
        };
        let inner = Reloadable::load(files)?;
        Ok(PeerTls { server: inner.server_config(), client: inner.client_config(), inner })
    }

    /// For the raft port's [`Listener`]: requires a client certificate from
    /// the CA.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// For connections to peers: checks their certificate against the CA
    /// and the address's host, and presents this node's.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }
}

/// TLS for an application's own listener (see the [module](self) docs).
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Reloadable>,
    server: Arc<ServerConfig>,
}

reloading!(ServerTls, "client API");

impl ServerTls {
    /// Loads the server's certificate chain and key; with `client_ca`,
    /// clients must present a certificate that CA signed.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTls, TlsError> {
        let files = Files {
            identity: Some((cert.to_owned(), key.to_owned())),
            ca: client_ca.map(Path::to_owned),
            identity_signed_by_ca: false,
        };
        let inner = Reloadable::load(files)?;
        Ok(ServerTls { server: inner.server_config(), inner })
    }

    /// For a [`Listener`].
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }
}

/// TLS for a client of a [`ServerTls`] listener (see the [module](self) docs).
#[derive(Clone)]
pub struct ClientTls {
    inner: Arc<Reloadable>,
    client: Arc<ClientConfig>,
}

reloading!(ClientTls, "client");

impl ClientTls {
    /// Trusts servers whose certificate `ca` signed; with `identity`
    /// (certificate chain, key), presents it.
    pub fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        let files = Files {
            identity: identity.map(|(cert, key)| (cert.to_owned(), key.to_owned())),
            ca: Some(ca.to_owned()),
            identity_signed_by_ca: false,
        };
        let inner = Reloadable::load(files)?;
        Ok(ClientTls { client: inner.client_config(), inner })
    }

    /// For `reqwest::ClientBuilder::use_preconfigured_tls` (pass a clone
    /// of the inner value) or `tokio_rustls::TlsConnector`.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }
}

/// How long a connection may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener for `axum::serve`: plain TCP, or TLS with handshakes done off
/// the accept loop (a slow or hostile client holds up no one). A refused
/// handshake (no certificate, one from another CA, an expired one, not TLS
/// at all) is logged with the remote address and the connection closed.
/// Handlers get the remote address as `ConnectInfo<`[`Remote`]`>` with
/// `into_make_service_with_connect_info::<Remote>()`.
#[derive(Debug)]
pub struct Listener {
    local: SocketAddr,
    inner: ListenerInner,
}

#[derive(Debug)]
enum ListenerInner {
    Plain(TcpListener),
    Tls { accepted: mpsc::Receiver<(Stream, SocketAddr)>, acceptor: tokio::task::JoinHandle<()> },
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let ListenerInner::Tls { acceptor, .. } = &self.inner {
            acceptor.abort();
        }
    }
}

impl Listener {
    /// Serves plain TCP.
    pub fn plain(tcp: TcpListener) -> std::io::Result<Listener> {
        Ok(Listener { local: tcp.local_addr()?, inner: ListenerInner::Plain(tcp) })
    }

    /// Serves TLS with `config`. Must be called inside a tokio runtime.
    pub fn tls(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Listener> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_tls(tcp, tokio_rustls::TlsAcceptor::from(config), tx));
        Ok(Listener { local, inner: ListenerInner::Tls { accepted, acceptor } })
    }

    /// Serves TLS if `config` is given, plain TCP otherwise.
    pub fn new(tcp: TcpListener, config: Option<Arc<ServerConfig>>) -> std::io::Result<Listener> {
        match config {
            Some(config) => Listener::tls(tcp, config),
            None => Listener::plain(tcp),
        }
    }
}

async fn accept_tls(
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<(Stream, SocketAddr)>,
) {
    loop {
        let (stream, remote) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((Stream::Tls(Box::new(tls)), remote)).await;
                }
                Ok(Err(e)) => tracing::warn!(%remote, "refused a TLS connection: {e}"),
                Err(_) => tracing::warn!(%remote, "refused a TLS connection: handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stream, SocketAddr) {
        match &mut self.inner {
            ListenerInner::Plain(tcp) => loop {
                match TcpListener::accept(tcp).await {
                    Ok((stream, remote)) => {
                        let _ = stream.set_nodelay(true);
                        return (Stream::Plain(stream), remote);
                    }
                    Err(e) => {
                        tracing::error!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            },
            ListenerInner::Tls { accepted, .. } => match accepted.recv().await {
                Some(accepted) => accepted,
                // The acceptor task never ends on its own.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The remote address of a connection accepted by a [`Listener`], for
/// `ConnectInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote(pub SocketAddr);

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for Remote {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Remote {
        Remote(*stream.remote_addr())
    }
}

/// A connection accepted by a [`Listener`], or opened by a peer: plain TCP
/// or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, server side.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS, client side.
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

macro_rules! each_stream {
    ($self:ident, $s:ident => $body:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => $body,
            Stream::Tls($s) => $body,
            Stream::TlsClient($s) => $body,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each_stream!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        each_stream!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each_stream!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::TlsClient(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_stream!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_stream!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Opens TLS over `tcp` to `host` (a DNS name or an IP address: the
/// certificate must name it).
pub(crate) async fn connect(config: Arc<ClientConfig>, host: &str, tcp: TcpStream) -> Result<Stream, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name =
        ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: not a TLS server name: {e}"))?;
    let tls =
        tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    Ok(Stream::TlsClient(Box::new(tls)))
}
