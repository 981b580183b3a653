//! Mutual TLS on WAN links (rustls through tonic's `tls-ring`).
//!
//! Every region of a deployment holds a certificate and key signed by one
//! certificate authority the regions share. A node with [`SyncTls`] serves
//! its sync port over TLS and refuses any peer that does not present a
//! certificate from that authority; its links dial `https://` endpoints,
//! verify the peer's certificate against the same authority (by the
//! endpoint's host, or by [`TlsFiles::domain`] when set) and present their
//! own. Without it the links are plain HTTP/2, for loopback and trusted
//! networks. See `docs/ARCHITECTURE.md`, D81.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// Longest a TLS handshake on the sync port may take: a peer that connects
/// and stays silent is dropped after it.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files of a node's WAN TLS setup, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain (PEM), used as server and as client.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The authority peer certificates must chain to (PEM).
    pub ca: PathBuf,
    /// The name peer certificates are checked against instead of the host
    /// of the endpoint dialled (when peers are dialled by an address their
    /// certificates do not name).
    pub domain: Option<String>,
}

/// A node's WAN TLS settings, loaded and checked.
#[derive(Clone, Debug)]
pub struct SyncTls {
    identity: Identity,
    ca: Certificate,
    domain: Option<String>,
}

impl SyncTls {
    /// Reads and checks the files: each must exist and parse, and the key
    /// must match the certificate. Every error names the file at fault.
    pub fn load(files: &TlsFiles) -> Result<SyncTls, String> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|e| format!("cannot read the sync TLS {what} {}: {e}", path.display()))
        };
        let cert = read("certificate", &files.cert)?;
        let key = read("key", &files.key)?;
        let ca = read("CA certificate", &files.ca)?;
        for (what, path, pem, marker) in [
            ("certificate", &files.cert, &cert, "CERTIFICATE-----"),
            ("key", &files.key, &key, "PRIVATE KEY-----"),
            ("CA certificate", &files.ca, &ca, "CERTIFICATE-----"),
        ] {
            if !String::from_utf8_lossy(pem).contains(marker) {
                return Err(format!("the sync TLS {what} {} holds no PEM {marker}", path.display()));
            }
        }
        let tls = SyncTls {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
            domain: files.domain.clone(),
        };
        // Both sides parse their material here, so a bad file stops the
        // node at start and not its first link.
        Server::builder()
            .tls_config(tls.server_config())
            .map_err(|e| format!("the sync TLS certificate, key or CA is unusable: {}", source_chain(&e)))?;
        Endpoint::from_static("https://localhost")
            .tls_config(tls.client_config())
            .map_err(|e| format!("the sync TLS certificate, key or CA is unusable: {}", source_chain(&e)))?;
        Ok(tls)
    }

    /// The sync port's side: this node's identity, client certificates
    /// required and checked against the authority.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// A link's side: the peer checked against the authority, this node's
    /// identity presented.
    pub fn client_config(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(self.ca.clone()).identity(self.identity.clone());
        match &self.domain {
            Some(domain) => config.domain_name(domain.clone()),
            None => config,
        }
    }

    /// The URL a link dials for a peer's sync endpoint `host:port`.
    pub fn url(tls: Option<&SyncTls>, endpoint: &str) -> String {
        match tls {
            Some(_) => format!("https://{endpoint}"),
            None => format!("http://{endpoint}"),
        }
    }
}

/// An error with its sources, one line (rustls's reason is in a source).
pub(crate) fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tls").join(name)
    }

    fn files() -> TlsFiles {
        TlsFiles { cert: fixture("node.pem"), key: fixture("node.key"), ca: fixture("ca.pem"), domain: None }
    }

    #[test]
    fn loads_a_good_set() {
        let tls = SyncTls::load(&files()).expect("the fixtures load");
        assert_eq!(SyncTls::url(Some(&tls), "10.0.0.1:9445"), "https://10.0.0.1:9445");
        assert_eq!(SyncTls::url(None, "10.0.0.1:9445"), "http://10.0.0.1:9445");
    }

    #[test]
    fn names_the_file_at_fault() {
        let missing = TlsFiles { key: fixture("absent.key"), ..files() };
        let error = SyncTls::load(&missing).unwrap_err();
        assert!(error.contains("key") && error.contains("absent.key"), "{error}");
        let swapped = TlsFiles { key: fixture("node.pem"), ..files() };
        let error = SyncTls::load(&swapped).unwrap_err();
        assert!(error.contains("PRIVATE KEY"), "{error}");
        let not_a_ca = TlsFiles { ca: fixture("node.key"), ..files() };
        let error = SyncTls::load(&not_a_ca).unwrap_err();
        assert!(error.contains("CA certificate"), "{error}");
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let mismatched = TlsFiles { key: fixture("rogue.key"), ..files() };
        let error = SyncTls::load(&mismatched).unwrap_err();
        assert!(error.contains("unusable"), "{error}");
    }
}
