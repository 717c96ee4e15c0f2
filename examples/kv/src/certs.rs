//! Throwaway certificates for `raft-kv local --tls`, `raft-kv certs` and
//! the tests: a CA and certificates it signs, each valid as both a TLS
//! server and a TLS client (a node is both to its peers).
//!
//! For a real deployment, use your own PKI (cfssl, step-ca, Vault, ...):
//! the files here are PEM like theirs, so the same flags read them.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let ca = raft_kv::certs::Ca::new("example CA").unwrap();
//! let node = ca.issue("node-1", &["127.0.0.1".into(), "localhost".into()], raft_kv::certs::Validity::default()).unwrap();
//! node.write(&dir.path().join("node-1.pem"), &dir.path().join("node-1-key.pem")).unwrap();
//! assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
//! ```

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// When a certificate is valid: from `starts` ago (clock skew between
/// machines) to `lasts` from now. `expired()` makes one that ended an hour
/// ago, for tests.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    /// How long before now the certificate becomes valid.
    pub starts: Duration,
    /// How long after now it stays valid (ignored when `expired`).
    pub lasts: Duration,
    /// Already expired: valid from `starts` ago until an hour ago.
    pub expired: bool,
}

impl Default for Validity {
    /// From an hour ago, for a year.
    fn default() -> Self {
        Validity {
            starts: Duration::from_secs(3600),
            lasts: Duration::from_secs(365 * 86_400),
            expired: false,
        }
    }
}

impl Validity {
    /// Valid from two days ago until an hour ago.
    pub fn expired() -> Self {
        Validity { starts: Duration::from_secs(2 * 86_400), lasts: Duration::ZERO, expired: true }
    }

    fn apply(&self, params: &mut CertificateParams) {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - self.starts;
        params.not_after = if self.expired { now - Duration::from_secs(3600) } else { now + self.lasts };
    }
}

fn error(what: &str, e: impl std::fmt::Display) -> String {
    format!("cannot make {what}: {e}")
}

/// A certificate authority: its certificate and key.
pub struct Ca {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.certificate.params().distinguished_name)
            .finish_non_exhaustive()
    }
}

impl Ca {
    fn params(name: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, name);
        params.distinguished_name = subject;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // Fixed dates: re-creating the certificate from the saved key
        // (`load`) gives the same subject, key and validity.
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2125, 1, 1);
        params
    }

    /// A new CA with a fresh key (ECDSA P-256).
    pub fn new(name: &str) -> Result<Ca, String> {
        let key = KeyPair::generate().map_err(|e| error("a CA key", e))?;
        let certificate = Ca::params(name).self_signed(&key).map_err(|e| error("a CA certificate", e))?;
        Ok(Ca { certificate, key })
    }

    /// The CA written by [`write_cluster`] into `dir` (ca-key.pem and the
    /// name in ca-name.txt): certificates it issues now chain to the
    /// ca.pem written then. For rotations and new nodes.
    pub fn load(dir: &Path) -> Result<Ca, String> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        let key = KeyPair::from_pem(&read("ca-key.pem")?).map_err(|e| format!("ca-key.pem: {e}"))?;
        let name = read("ca-name.txt")?;
        let certificate =
            Ca::params(name.trim()).self_signed(&key).map_err(|e| error("a CA certificate", e))?;
        Ok(Ca { certificate, key })
    }

    /// The CA certificate, PEM: what every node and client trusts.
    pub fn cert_pem(&self) -> String {
        self.certificate.pem()
    }

    /// A certificate for `name`, valid for each of `hosts` (DNS names or
    /// IP addresses), for both server and client authentication.
    pub fn issue(&self, name: &str, hosts: &[String], validity: Validity) -> Result<Issued, String> {
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(|e| error("a certificate", e))?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, name);
        params.distinguished_name = subject;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        validity.apply(&mut params);
        let key = KeyPair::generate().map_err(|e| error("a key", e))?;
        let certificate =
            params.signed_by(&key, &self.certificate, &self.key).map_err(|e| error("a certificate", e))?;
        Ok(Issued { cert_pem: certificate.pem(), key_pem: key.serialize_pem() })
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl Issued {
    /// Writes both files (the key readable by the owner only), each
    /// atomically: a reader watching them never sees half a file.
    pub fn write(&self, cert: &Path, key: &Path) -> Result<(), String> {
        write_atomically(cert, self.cert_pem.as_bytes(), false)?;
        write_atomically(key, self.key_pem.as_bytes(), true)
    }
}

/// Writes `path` through a temporary file in the same directory, renamed
/// over it.
pub fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    #[cfg(unix)]
    if !private {
        use std::os::unix::fs::PermissionsExt as _;
        // NamedTempFile is 0600; a certificate is public.
        file.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(fail)?;
    }
    file.write_all(bytes).map_err(fail)?;
    file.as_file().sync_all().map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// The files [`write_cluster`] wrote.
#[derive(Clone, Debug)]
pub struct ClusterFiles {
    /// ca.pem: the trusted CA.
    pub ca: std::path::PathBuf,
    /// node-N.pem and node-N-key.pem, for N in 1..=nodes.
    pub nodes: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    /// client.pem and client-key.pem: a client certificate (for
    /// `--client-ca-file`).
    pub client: (std::path::PathBuf, std::path::PathBuf),
}

/// Writes a CA (unless `dir` already holds one, which is then reused, so
/// that running it again rotates the node certificates) and a certificate
/// per node valid for `hosts`, plus a client certificate, into `dir`.
pub fn write_cluster(dir: &Path, nodes: u64, hosts: &[String]) -> Result<ClusterFiles, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca_path = dir.join("ca.pem");
    let ca = if dir.join("ca-key.pem").exists() {
        Ca::load(dir)?
    } else {
        let name = "raft-kv throwaway CA";
        let ca = Ca::new(name)?;
        write_atomically(&dir.join("ca-key.pem"), ca.key.serialize_pem().as_bytes(), true)?;
        write_atomically(&dir.join("ca-name.txt"), name.as_bytes(), false)?;
        write_atomically(&ca_path, ca.cert_pem().as_bytes(), false)?;
        ca
    };
    let mut files = Vec::new();
    for id in 1..=nodes {
        let (cert, key) = (dir.join(format!("node-{id}.pem")), dir.join(format!("node-{id}-key.pem")));
        ca.issue(&format!("node-{id}"), hosts, Validity::default())?.write(&cert, &key)?;
        files.push((cert, key));
    }
    let client = (dir.join("client.pem"), dir.join("client-key.pem"));
    ca.issue("client", &["client".to_owned()], Validity::default())?.write(&client.0, &client.1)?;
    Ok(ClusterFiles { ca: ca_path, nodes: files, client })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_ca_signs_certificates_that_chain_to_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_cluster(dir.path(), 1, &["127.0.0.1".into()]).unwrap();
        let original_ca = std::fs::read_to_string(&first.ca).unwrap();
        let (old_cert, old_key) = (dir.path().join("old.pem"), dir.path().join("old-key.pem"));
        std::fs::copy(&first.nodes[0].0, &old_cert).unwrap();
        std::fs::copy(&first.nodes[0].1, &old_key).unwrap();
        let again = write_cluster(dir.path(), 1, &["127.0.0.1".into()]).unwrap();
        assert_eq!(std::fs::read_to_string(&again.ca).unwrap(), original_ca, "the CA certificate is stable");
        assert_ne!(std::fs::read(&old_cert).unwrap(), std::fs::read(&again.nodes[0].0).unwrap());
        // Both generations of node certificates verify against ca.pem.
        for (cert, key) in [(&old_cert, &old_key), (&again.nodes[0].0, &again.nodes[0].1)] {
            let tls = raft_http::tls::PeerTls::load(cert, key, &first.ca);
            assert!(tls.is_ok(), "{:?}", tls.err());
        }
        let other = Ca::new("other").unwrap();
        let stranger = other.issue("x", &["127.0.0.1".into()], Validity::default()).unwrap();
        stranger.write(&dir.path().join("x.pem"), &dir.path().join("x-key.pem")).unwrap();
        let refused = raft_http::tls::PeerTls::load(
            &dir.path().join("x.pem"),
            &dir.path().join("x-key.pem"),
            &first.ca,
        );
        assert!(refused.unwrap_err().to_string().contains("not a valid peer certificate"));
    }

    #[test]
    fn an_expired_certificate_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_cluster(dir.path(), 0, &[]).unwrap();
        let ca = Ca::load(dir.path()).unwrap();
        let old = ca.issue("old", &["127.0.0.1".into()], Validity::expired()).unwrap();
        old.write(&dir.path().join("old.pem"), &dir.path().join("old-key.pem")).unwrap();
        let error = raft_http::tls::PeerTls::load(
            &dir.path().join("old.pem"),
            &dir.path().join("old-key.pem"),
            &files.ca,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("Expired") || error.contains("expired"), "{error}");
    }
}
