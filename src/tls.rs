//! TLS for the server: its certificate and key, and optionally the CA whose
//! client certificates it requires (mutual TLS). rustls, through tonic.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
};
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

    /// The same certificate and key for the HTTP listener, which asks for
    /// no client certificate: what it serves (public keys, probes) is
    /// public, and a load balancer's probe has none.
    ///
    /// # Errors
    /// When a file cannot be read or parsed.
    pub fn load_for_http(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        ensure_private(&self.key, "TLS key")?;
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .with_context(|| {
                format!(
                    "cannot read the TLS certificate file {}",
                    self.cert.display()
                )
            })?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("cannot read the TLS key file {}", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("no TLS protocol version is available")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the TLS certificate and key do not form a usable identity")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
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
