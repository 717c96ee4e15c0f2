//! Client authentication for the client API of `raft-kv serve`: bearer
//! tokens mapped to roles, read from a JSON file (`--auth-file`), re-read on
//! SIGHUP, and checked by an axum middleware in front of every route.
//!
//! ```json
//! {"tokens": [
//!   {"name": "ops",    "token": "a-long-random-string",   "role": "admin"},
//!   {"name": "ci",     "sha256": "<64 hex digits>",        "role": "write"},
//!   {"name": "grafana","token": "another-random-string", "role": "read"}
//! ]}
//! ```
//!
//! A token is either given as is (`token`) or as the hex SHA-256 of the
//! token (`sha256`, so the file need not hold the secret). Either way the
//! node keeps only the digest and compares the digest of what a client sends
//! against every entry in constant time.
//!
//! The check runs on the node the client talks to, before a follower
//! forwards anything to the leader: a forwarded request travels over the
//! raft port, authenticated by the cluster secret, which `serve` therefore
//! requires together with `--auth-file` (without it, `POST /raft/forward`
//! on the raft port would be a way around the tokens).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::server::error;

/// What a token may do. Each role includes the ones before it:
/// `admin` ⊇ `write` ⊇ `read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// Reads of keys, status, topology and metrics.
    Read,
    /// Also PUT and DELETE of keys.
    Write,
    /// Also membership changes and leadership transfer.
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        })
    }
}

/// The shortest plain token accepted, in bytes.
pub(crate) const TOKEN_BYTES_MIN: usize = 16;

/// Why an auth file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AuthFileError {
    /// The file could not be read.
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    /// Not JSON of the expected shape (serde says where).
    #[error("{0} (expected {{\"tokens\":[{{\"name\":\"ops\",\"token\":\"...\",\"role\":\"read|write|admin\"}},...]}})")]
    Json(#[from] serde_json::Error),
    /// `tokens` is empty: every request would be refused.
    #[error("it lists no tokens (every request would be refused)")]
    NoTokens,
    /// Entry number `.0` (from 1) has an empty name.
    #[error("token #{0} has an empty name")]
    EmptyName(usize),
    /// Two entries share a name (names identify tokens in the logs).
    #[error("the name {0:?} is used twice")]
    DuplicateName(String),
    /// An entry has both `token` and `sha256`, or neither.
    #[error("token {0:?} needs exactly one of \"token\" and \"sha256\"")]
    SecretCount(String),
    /// A plain token shorter than [`TOKEN_BYTES_MIN`].
    #[error("token {0:?} is shorter than {TOKEN_BYTES_MIN} characters")]
    TooShort(String),
    /// A plain token with characters that cannot travel in a header value.
    #[error("token {0:?} may hold only visible ASCII characters (no spaces)")]
    BadCharacters(String),
    /// A `sha256` that is not 64 hex digits.
    #[error("token {0:?}: \"sha256\" must be 64 hex digits")]
    BadDigest(String),
    /// Two entries hold the same secret, so a request could not be told apart.
    #[error("tokens {0:?} and {1:?} have the same secret")]
    DuplicateSecret(String, String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJson {
    tokens: Vec<TokenJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenJson {
    name: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    role: Role,
}

/// One token, as the node keeps it: the digest, never the token.
#[derive(Clone)]
struct Entry {
    name: String,
    role: Role,
    digest: [u8; 32],
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry").field("name", &self.name).field("role", &self.role).finish_non_exhaustive()
    }
}

/// A parsed auth file.
#[derive(Clone, Debug)]
pub(crate) struct Tokens {
    entries: Vec<Entry>,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn parse_hex_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Compares without an early exit, so the time taken says nothing about
/// where two digests differ.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// Parses and checks the text of an auth file.
    pub(crate) fn parse(text: &str) -> Result<Tokens, AuthFileError> {
        let file: FileJson = serde_json::from_str(text)?;
        if file.tokens.is_empty() {
            return Err(AuthFileError::NoTokens);
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(file.tokens.len());
        for (number, token) in file.tokens.into_iter().enumerate() {
            let name = token.name.trim().to_owned();
            if name.is_empty() {
                return Err(AuthFileError::EmptyName(number + 1));
            }
            if entries.iter().any(|e| e.name == name) {
                return Err(AuthFileError::DuplicateName(name));
            }
            let digest = match (token.token, token.sha256) {
                (Some(plain), None) => {
                    if plain.len() < TOKEN_BYTES_MIN {
                        return Err(AuthFileError::TooShort(name));
                    }
                    if !plain.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(AuthFileError::BadCharacters(name));
                    }
                    digest(plain.as_bytes())
                }
                (None, Some(hex)) => {
                    parse_hex_digest(&hex).ok_or_else(|| AuthFileError::BadDigest(name.clone()))?
                }
                _ => return Err(AuthFileError::SecretCount(name)),
            };
            if let Some(same) = entries.iter().find(|e| e.digest == digest) {
                return Err(AuthFileError::DuplicateSecret(same.name.clone(), name));
            }
            entries.push(Entry { name, role: token.role, digest });
        }
        Ok(Tokens { entries })
    }

    /// Reads and parses `path`.
    pub(crate) fn load(path: &Path) -> Result<Tokens, AuthFileError> {
        Tokens::parse(&std::fs::read_to_string(path)?)
    }

    /// The name and role of `token`, if it is one of ours. Every entry is
    /// compared, whichever matches.
    fn find(&self, token: &[u8]) -> Option<(&str, Role)> {
        let given = digest(token);
        let mut found = None;
        for entry in &self.entries {
            if digests_equal(&entry.digest, &given) {
                found = Some((entry.name.as_str(), entry.role));
            }
        }
        found
    }

    /// How many tokens, by role, for the logs.
    fn summary(&self) -> String {
        let count = |role| self.entries.iter().filter(|e| e.role == role).count();
        format!(
            "{} tokens ({} read, {} write, {} admin)",
            self.entries.len(),
            count(Role::Read),
            count(Role::Write),
            count(Role::Admin)
        )
    }
}

/// The role a request needs, or `None` for the open probes. The default is
/// `admin`: an endpoint added later stays closed until it is listed here.
pub(crate) fn required_role(method: &Method, path: &str) -> Option<Role> {
    let reading = *method == Method::GET || *method == Method::HEAD;
    match path {
        "/healthz" | "/readyz" => None,
        "/metrics" | "/v1/status" if reading => Some(Role::Read),
        "/v1/cluster" if reading => Some(Role::Read),
        _ if path.starts_with("/v1/kv/") => {
            if reading {
                Some(Role::Read)
            } else if *method == Method::PUT || *method == Method::DELETE {
                Some(Role::Write)
            } else {
                Some(Role::Admin)
            }
        }
        _ => Some(Role::Admin),
    }
}

/// The tokens in force, and the file they came from.
#[derive(Debug)]
pub(crate) struct Auth {
    path: PathBuf,
    tokens: RwLock<Arc<Tokens>>,
}

impl Auth {
    /// Loads `path`; the error names the file and what is wrong with it.
    pub(crate) fn load(path: &Path) -> Result<Arc<Auth>, String> {
        let tokens = Tokens::load(path).map_err(|e| format!("--auth-file {}: {e}", path.display()))?;
        tracing::info!(file = %path.display(), "client authentication on: {}", tokens.summary());
        Ok(Arc::new(Auth { path: path.to_owned(), tokens: RwLock::new(Arc::new(tokens)) }))
    }

    fn tokens(&self) -> Arc<Tokens> {
        self.tokens.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Re-reads the file; on any problem the tokens in force stay.
    pub(crate) fn reload(&self) -> Result<(), String> {
        match Tokens::load(&self.path) {
            Ok(tokens) => {
                tracing::info!(file = %self.path.display(), "auth file reloaded: {}", tokens.summary());
                *self.tokens.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(tokens);
                Ok(())
            }
            Err(e) => {
                let message = format!("{}: {e}", self.path.display());
                tracing::error!(
                    file = %self.path.display(),
                    "auth file reload failed, keeping the previous {}: {e}",
                    self.tokens().summary()
                );
                Err(message)
            }
        }
    }

    /// Reloads the file on every SIGHUP, for as long as the process runs.
    pub(crate) fn reload_on_sighup(self: &Arc<Self>) {
        let auth = self.clone();
        crate::server::on_sighup("the auth file will not be reloaded", move || {
            tracing::info!("SIGHUP: reloading the auth file");
            let _ = auth.reload();
        });
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
enum Denied {
    /// No usable `Authorization: Bearer` header.
    NoToken,
    /// A bearer token not in the file.
    UnknownToken,
    /// A known token whose role is too small.
    Forbidden { name: String, role: Role, needed: Role },
}

/// The bearer token of `headers`, if any (the scheme is case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Decides a request: `Ok(Some(name))` when a token let it through.
fn decide(
    tokens: &Tokens,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<String>, Denied> {
    let Some(needed) = required_role(method, path) else {
        return Ok(None);
    };
    let token = bearer(headers).ok_or(Denied::NoToken)?;
    let (name, role) = tokens.find(token).ok_or(Denied::UnknownToken)?;
    if role < needed {
        return Err(Denied::Forbidden { name: name.to_owned(), role, needed });
    }
    Ok(Some(name.to_owned()))
}

/// The axum middleware: lets a request through, or answers 401/403 in the
/// API's JSON error format and logs the refusal (never the token).
pub(crate) async fn check(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let tokens = auth.tokens();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let remote = request
        .extensions()
        .get::<ConnectInfo<raft_http::tls::Remote>>()
        .map_or_else(|| "unknown".to_owned(), |ConnectInfo(address)| address.to_string());
    match decide(&tokens, &method, &path, request.headers()) {
        Ok(_) => next.run(request).await,
        Err(Denied::Forbidden { name, role, needed }) => {
            tracing::warn!(%remote, %method, path, token = name, %role, %needed, "refused: role too small");
            error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("token {name:?} has role {role}; {method} {path} needs {needed}"),
            )
        }
        Err(denied) => {
            let (reason, message, challenge) = if denied == Denied::NoToken {
                ("no bearer token", "send Authorization: Bearer <token>", "Bearer realm=\"raft-kv\"")
            } else {
                ("unknown token", "unknown token", "Bearer realm=\"raft-kv\", error=\"invalid_token\"")
            };
            tracing::warn!(%remote, %method, path, reason, "refused: unauthenticated");
            let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            response
        }
    }
}

/// The text of the startup warning for a client API reachable beyond
/// loopback without authentication (or, once `serve` has TLS, without TLS).
pub(crate) fn exposure_warning(listen: SocketAddr, auth_enabled: bool, tls_enabled: bool) -> Option<String> {
    if listen.ip().is_loopback() {
        return None;
    }
    let rule = "*".repeat(78);
    if !auth_enabled {
        return Some(format!(
            "{rule}\n\
             * WARNING: the client API listens on {listen}, beyond loopback, with no --auth-file.\n\
             * Anyone who can reach it can read and write every key, change the membership\n\
             * (PUT /v1/cluster) and move the leader. Give it --auth-file FILE (see the\n\
             * raft-kv README, \"Authentication\"), or listen on 127.0.0.1.\n\
             {rule}"
        ));
    }
    if !tls_enabled {
        return Some(format!(
            "the client API listens on {listen} without TLS: bearer tokens cross the network in clear text \
             (give it --cert-file and --key-file)"
        ));
    }
    None
}

/// Prints [`exposure_warning`] to stderr and the log.
pub(crate) fn warn_if_exposed(listen: SocketAddr, auth_enabled: bool, tls_enabled: bool) {
    if let Some(warning) = exposure_warning(listen, auth_enabled, tls_enabled) {
        eprintln!("{warning}");
        tracing::warn!(%listen, auth_enabled, tls_enabled, "client API exposed beyond loopback");
    }
}

/// A fresh token: 128 bits from the OS's random source, as 32 hex digits.
pub(crate) fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot draw a random token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token the client commands send, set once by `main` (a CLI process
/// speaks for one identity).
static CLIENT_TOKEN: OnceLock<String> = OnceLock::new();

/// Resolves `--token` / `--token-file` (the file's surrounding whitespace
/// is ignored).
pub(crate) fn resolve_token(token: Option<&str>, file: Option<&Path>) -> Result<Option<String>, String> {
    let token = match (token, file) {
        (Some(token), _) => token.trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("--token-file {}: {e}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token is empty or holds characters other than visible ASCII".into());
    }
    Ok(Some(token))
}

/// Sets the token [`client_headers`] sends.
pub(crate) fn set_client_token(token: Option<String>) {
    if let Some(token) = token {
        let _ = CLIENT_TOKEN.set(token);
    }
}

/// Default headers for a client of the API: `Authorization: Bearer` with
/// `token` (or with the one [`set_client_token`] set), if any.
pub(crate) fn client_headers(token: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(token) = token.or(CLIENT_TOKEN.get().map(String::as_str)) {
        if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"tokens":[
        {"name":"reader","token":"read-token-0123456789","role":"read"},
        {"name":"writer","token":"write-token-0123456789","role":"write"},
        {"name":"ops","sha256":"SHA","role":"admin"}
    ]}"#;

    fn file() -> String {
        let hex: String = digest(b"admin-token-0123456789").iter().map(|b| format!("{b:02x}")).collect();
        FILE.replace("SHA", &hex)
    }

    fn headers(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(token).unwrap());
        headers
    }

    #[test]
    fn a_good_file_parses_and_finds_plain_and_hashed_tokens() {
        let tokens = Tokens::parse(&file()).unwrap();
        assert_eq!(tokens.find(b"read-token-0123456789"), Some(("reader", Role::Read)));
        assert_eq!(tokens.find(b"write-token-0123456789"), Some(("writer", Role::Write)));
        assert_eq!(tokens.find(b"admin-token-0123456789"), Some(("ops", Role::Admin)));
        assert_eq!(tokens.find(b"read-token-012345678"), None);
        assert_eq!(tokens.find(b""), None);
        assert!(!format!("{tokens:?}").contains("token-0123"), "Debug shows a secret");
    }

    #[test]
    fn a_sha256_entry_matches_what_sha256sum_prints() {
        // printf %s abc | sha256sum (upper case works too)
        let hex = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        let text = format!(r#"{{"tokens":[{{"name":"abc","sha256":"{hex}","role":"read"}}]}}"#);
        assert_eq!(Tokens::parse(&text).unwrap().find(b"abc"), Some(("abc", Role::Read)));
    }

    #[test]
    fn malformed_files_are_refused_with_the_reason() {
        let long = "t".repeat(TOKEN_BYTES_MIN);
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "EOF"),
            ("not json".into(), "expected"),
            ("[]".into(), "expected"),
            (r#"{"tokens":[]}"#.into(), "no tokens"),
            (r#"{"tokens":[{"name":"a","token":"x","role":"read"}],"extra":1}"#.into(), "unknown field"),
            (format!(r#"{{"tokens":[{{"name":"a","token":"{long}","role":"root"}}]}}"#), "unknown variant"),
            (format!(r#"{{"tokens":[{{"name":"a","token":"{long}"}}]}}"#), "missing field `role`"),
            (
                format!(r#"{{"tokens":[{{"name":" ","token":"{long}","role":"read"}}]}}"#),
                "#1 has an empty name",
            ),
            (
                format!(
                    r#"{{"tokens":[{{"name":"a","token":"{long}","role":"read"}},{{"name":"a","token":"{long}x","role":"read"}}]}}"#
                ),
                "used twice",
            ),
            (
                format!(
                    r#"{{"tokens":[{{"name":"a","token":"{long}","role":"read"}},{{"name":"b","token":"{long}","role":"admin"}}]}}"#
                ),
                "same secret",
            ),
            (r#"{"tokens":[{"name":"a","token":"short","role":"read"}]}"#.into(), "shorter than 16"),
            (
                r#"{"tokens":[{"name":"a","token":"has a space in it ok","role":"read"}]}"#.into(),
                "visible ASCII",
            ),
            (r#"{"tokens":[{"name":"a","role":"read"}]}"#.into(), "exactly one"),
            (
                format!(
                    r#"{{"tokens":[{{"name":"a","token":"{long}","sha256":"{}","role":"read"}}]}}"#,
                    "0".repeat(64)
                ),
                "exactly one",
            ),
            (r#"{"tokens":[{"name":"a","sha256":"abc","role":"read"}]}"#.into(), "64 hex digits"),
            (
                format!(r#"{{"tokens":[{{"name":"a","sha256":"{}","role":"read"}}]}}"#, "g".repeat(64)),
                "64 hex digits",
            ),
        ];
        for (text, expected) in cases {
            let error = Tokens::parse(&text).expect_err(&text).to_string();
            assert!(error.contains(expected), "{text:?} gave {error:?}, expected it to mention {expected:?}");
        }
    }

    #[test]
    fn loading_a_missing_file_names_it() {
        let error = Auth::load(Path::new("/nonexistent/auth.json")).unwrap_err();
        assert!(error.contains("/nonexistent/auth.json") && error.contains("cannot read"), "{error}");
    }

    #[test]
    fn the_role_table() {
        let cases = [
            (Method::GET, "/healthz", None),
            (Method::GET, "/readyz", None),
            (Method::GET, "/metrics", Some(Role::Read)),
            (Method::GET, "/v1/status", Some(Role::Read)),
            (Method::GET, "/v1/cluster", Some(Role::Read)),
            (Method::GET, "/v1/kv/a/b", Some(Role::Read)),
            (Method::HEAD, "/v1/kv/a", Some(Role::Read)),
            (Method::PUT, "/v1/kv/a", Some(Role::Write)),
            (Method::DELETE, "/v1/kv/a", Some(Role::Write)),
            (Method::POST, "/v1/kv/a", Some(Role::Admin)),
            (Method::PUT, "/v1/cluster", Some(Role::Admin)),
            (Method::POST, "/v1/cluster/transfer-leader", Some(Role::Admin)),
            (Method::PUT, "/v1/status", Some(Role::Admin)),
            (Method::GET, "/v1/backup", Some(Role::Admin)),
            (Method::GET, "/anything-else", Some(Role::Admin)),
        ];
        for (method, path, role) in cases {
            assert_eq!(required_role(&method, path), role, "{method} {path}");
        }
        assert!(Role::Admin > Role::Write && Role::Write > Role::Read);
    }

    #[test]
    fn decisions_follow_the_roles() {
        let tokens = Tokens::parse(&file()).unwrap();
        let put = |h: &HeaderMap| decide(&tokens, &Method::PUT, "/v1/kv/k", h);
        assert_eq!(put(&HeaderMap::new()), Err(Denied::NoToken));
        assert_eq!(put(&headers("Basic read-token-0123456789")), Err(Denied::NoToken));
        assert_eq!(put(&headers("Bearer ")), Err(Denied::NoToken));
        assert_eq!(put(&headers("Bearer nope-nope-nope-nope")), Err(Denied::UnknownToken));
        assert_eq!(
            put(&headers("Bearer read-token-0123456789")),
            Err(Denied::Forbidden { name: "reader".into(), role: Role::Read, needed: Role::Write })
        );
        assert_eq!(put(&headers("bearer write-token-0123456789")), Ok(Some("writer".into())));
        assert_eq!(put(&headers("Bearer admin-token-0123456789")), Ok(Some("ops".into())));
        let transfer = decide(
            &tokens,
            &Method::POST,
            "/v1/cluster/transfer-leader",
            &headers("Bearer write-token-0123456789"),
        );
        assert!(matches!(transfer, Err(Denied::Forbidden { needed: Role::Admin, .. })));
        assert_eq!(decide(&tokens, &Method::GET, "/healthz", &HeaderMap::new()), Ok(None));
    }

    #[test]
    fn exposure_warnings() {
        let public: SocketAddr = "0.0.0.0:8001".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        assert_eq!(exposure_warning(loopback, false, false), None);
        let loud = exposure_warning(public, false, false).unwrap();
        assert!(
            loud.contains("WARNING") && loud.contains("--auth-file") && loud.lines().count() > 3,
            "{loud}"
        );
        assert!(exposure_warning(public, true, false).unwrap().contains("without TLS"));
        assert_eq!(exposure_warning(public, true, true), None);
    }

    #[test]
    fn a_reload_takes_a_good_file_and_keeps_the_old_tokens_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::write(&path, file()).unwrap();
        let auth = Auth::load(&path).unwrap();
        let late = r#"{"tokens":[{"name":"late","token":"late-token-0123456789","role":"write"}]}"#;
        std::fs::write(&path, late).unwrap();
        auth.reload().unwrap();
        assert_eq!(auth.tokens().find(b"late-token-0123456789"), Some(("late", Role::Write)));
        assert_eq!(auth.tokens().find(b"read-token-0123456789"), None);
        std::fs::write(&path, "{").unwrap();
        assert!(auth.reload().unwrap_err().contains("auth.json"));
        assert_eq!(auth.tokens().find(b"late-token-0123456789"), Some(("late", Role::Write)));
    }

    #[test]
    fn random_tokens_are_long_and_differ() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.len() >= TOKEN_BYTES_MIN && a != b);
    }

    #[test]
    fn tokens_resolve_from_flag_or_file() {
        assert_eq!(resolve_token(None, None), Ok(None));
        assert_eq!(resolve_token(Some(" abc "), None), Ok(Some("abc".into())));
        assert!(resolve_token(Some("a b"), None).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        assert_eq!(resolve_token(None, Some(&path)), Ok(Some("from-file".into())));
        assert!(resolve_token(None, Some(&dir.path().join("missing"))).unwrap_err().contains("missing"));
    }
}
