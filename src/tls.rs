//! TLS for the server: its certificate and key, and optionally the CA whose
//! client certificates it requires (mutual TLS). rustls; the certificate
//! and key are read again on SIGHUP and when their files change, and each
//! new connection gets the pair current at its handshake.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use anyhow::Context as _;
use futures_util::{Stream, StreamExt as _};
use tokio::{net::TcpStream, sync::Semaphore};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore,
        crypto::CryptoProvider,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
        server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
        sign::CertifiedKey,
    },
    server::TlsStream,
};
use tokio_util::sync::CancellationToken;

use crate::auth::ensure_private;

/// Where the TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The server's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA
    /// (PEM); connections without one are refused. Read at start.
    pub client_ca: Option<PathBuf>,
    /// How often the certificate and key files are checked for a change;
    /// `None`: only on SIGHUP.
    pub watch_interval: Option<Duration>,
}

impl TlsSettings {
    /// How often the files are checked unless told otherwise.
    pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);

    /// `tls` or `mtls`, for the log.
    pub fn mode(&self) -> &'static str {
        if self.client_ca.is_some() {
            "mtls"
        } else {
            "tls"
        }
    }
}

/// The server's TLS configurations, gRPC's and the HTTP listener's, which
/// share one certificate and key that [`ServerTls::reload`] replaces.
#[derive(Debug)]
pub struct ServerTls {
    settings: TlsSettings,
    current: Arc<CurrentPair>,
    grpc: Arc<rustls::ServerConfig>,
    http: Arc<rustls::ServerConfig>,
}

/// The certificate and key handshakes use now.
#[derive(Debug)]
struct CurrentPair(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentPair {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl ServerTls {
    /// Reads the files into the server's configurations. The key file must
    /// not be readable by others (see [`ensure_private`]).
    ///
    /// # Errors
    /// When a file cannot be read, is not PEM, or the key is not the
    /// certificate's; the message names the file, never its contents.
    pub fn load(settings: &TlsSettings) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let current = Arc::new(CurrentPair(RwLock::new(Arc::new(read_pair(
            settings, &provider,
        )?))));
        let builder = || {
            rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .context("no TLS protocol version is available")
        };
        let mut grpc = match &settings.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca, "client CA")? {
                    roots.add(cert).with_context(|| {
                        format!("the client CA file {} is unusable", ca.display())
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .context("cannot verify client certificates with the client CA")?;
                builder()?.with_client_cert_verifier(verifier)
            }
            None => builder()?.with_no_client_auth(),
        }
        .with_cert_resolver(current.clone());
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        // The HTTP listener asks for no client certificate: what it serves
        // (public keys, probes) is public, and a load balancer's probe has
        // none.
        let mut http = builder()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            settings: settings.clone(),
            current,
            grpc: Arc::new(grpc),
            http: Arc::new(http),
        })
    }

    /// Reads the certificate and key again; new connections get them from
    /// now on, open ones keep theirs.
    ///
    /// # Errors
    /// When the new pair cannot be read or does not match: the pair in use
    /// stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let provider = self.grpc.crypto_provider().clone();
        let pair = Arc::new(read_pair(&self.settings, &provider)?);
        *self
            .current
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = pair;
        Ok(())
    }

    /// What the files look like now: changes when either is replaced.
    pub fn files_stamp(&self) -> FilesStamp {
        FilesStamp([&self.settings.cert, &self.settings.key].map(|path| {
            std::fs::metadata(path).ok().map(|meta| {
                (
                    meta.dev(),
                    meta.ino(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    meta.len(),
                )
            })
        }))
    }

    /// How often the files are checked for a change, if at all.
    pub fn watch_interval(&self) -> Option<Duration> {
        self.settings.watch_interval
    }

    /// The HTTP listener's configuration.
    pub fn http_config(&self) -> Arc<rustls::ServerConfig> {
        self.http.clone()
    }

    /// The gRPC listener's connections: each accepted on `listener` and
    /// handshaken within `timeout`, several at once, until `stop`; then the
    /// listener closes. Failed handshakes are dropped, not yielded.
    pub fn accept(
        &self,
        listener: tonic::transport::server::TcpIncoming,
        timeout: Duration,
        stop: CancellationToken,
    ) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static {
        let acceptor = TlsAcceptor::from(self.grpc.clone());
        let (ready, connections) = tokio::sync::mpsc::channel(MAX_HANDSHAKES);
        tokio::spawn(async move {
            let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
            let mut listener = std::pin::pin!(listener);
            loop {
                let permit = tokio::select! {
                    () = stop.cancelled() => break,
                    permit = handshakes.clone().acquire_owned() => permit,
                };
                let Ok(permit) = permit else { break };
                let accepted = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = listener.next() => accepted,
                };
                let stream = match accepted {
                    Some(Ok(stream)) => stream,
                    Some(Err(err)) => {
                        // Out of file descriptors, say: wait rather than spin.
                        tracing::warn!(error = %err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    None => break,
                };
                let (acceptor, ready) = (acceptor.clone(), ready.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send(Ok(tls)).await;
                        }
                        Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(connections)
    }
}

/// Handshakes in progress at most on the gRPC listener; more connections
/// wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

/// The identity of the certificate and key files, to tell a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesStamp([Option<FileStamp>; 2]);

/// One file's device, inode, modification time (seconds, nanoseconds)
/// and length: a file replaced, renamed over or written to differs in one.
type FileStamp = (u64, u64, i64, i64, u64);

/// The certificate chain and key of `settings`, checked to match.
fn read_pair(settings: &TlsSettings, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let certs = read_certs(&settings.cert, "TLS certificate")?;
    ensure_private(&settings.key, "TLS key")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .with_context(|| format!("cannot read the TLS key file {}", settings.key.display()))?;
    CertifiedKey::from_der(certs, key, provider).with_context(|| {
        format!(
            "the TLS key {} is not the key of the certificate {}",
            settings.key.display(),
            settings.cert.display()
        )
    })
}

/// The certificates of a PEM file, at least one, so that a wrong path fails
/// here with its name rather than at the first handshake.
fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the {what} file {} holds no certificate",
        path.display()
    );
    Ok(certs)
}
