//! TLS for the server: its certificate and key, and optionally the CA whose
//! client certificates it requires (mutual TLS). rustls, through tonic.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::auth::ensure_private;

/// Where the TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The server's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA
    /// (PEM); connections without one are refused.
    pub client_ca: Option<PathBuf>,
}

impl TlsSettings {
    /// Reads the files into a server configuration. The key file must not
    /// be readable by others (see [`ensure_private`]).
    ///
    /// # Errors
    /// When a file cannot be read or is not PEM; the message names the
    /// file, never its contents.
    pub fn load(&self) -> anyhow::Result<ServerTlsConfig> {
        let cert = read_pem(&self.cert, "TLS certificate")?;
        ensure_private(&self.key, "TLS key")?;
        let key = read_pem(&self.key, "TLS key")?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_pem(ca, "client CA")?));
        }
        Ok(config)
    }

    /// `tls` or `mtls`, for the log.
    pub fn mode(&self) -> &'static str {
        if self.client_ca.is_some() {
            "mtls"
        } else {
            "tls"
        }
    }
}

/// The file's bytes, checked to hold at least one PEM block so that a
/// wrong path fails here with its name rather than at the first handshake.
fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    pem::parse_many(&bytes)
        .ok()
        .filter(|blocks| !blocks.is_empty())
        .with_context(|| format!("the {what} file {} holds no PEM block", path.display()))?;
    Ok(bytes)
}
