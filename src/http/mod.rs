//! The HTTP face, for the tools that do not speak gRPC: the JWKS and the
//! server metadata for JWT libraries and gateways, forward-auth for
//! proxies, the liveness and readiness probes for load balancers, and the
//! metrics for Prometheus. Plaintext, or HTTPS with the gRPC listener's certificate.

mod routes;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use routes::{FORWARD_AUTH_PATH, JWKS_PATH, METADATA_PATH, METRICS_PATH, Metadata};

use crate::{auth::Authenticator, jobs::database_health::Readiness, telemetry::metrics::Metrics};

/// The largest block of request headers read; a request with more gets
/// 431 (HTTP/1.1) or a stream reset (HTTP/2).
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long a client has to send a request's headers (and to finish the TLS
/// handshake): a slow one is cut off.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections held at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;

/// How the HTTP listener is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Where to listen; `None`: no HTTP listener.
    pub listen: Option<SocketAddr>,
    /// The URL clients reach the listener at, the base of `jwks_uri`;
    /// `None`: `http://` (or `https://`) and the bound address.
    pub public_url: Option<String>,
    /// How long clients may cache the JWKS.
    pub jwks_max_age: Duration,
}

impl HttpSettings {
    /// The default address: loopback only.
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        8080,
    ));
    /// The default `Cache-Control: max-age` of the JWKS.
    pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(300);
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: Some(Self::DEFAULT_LISTEN),
            public_url: None,
            jwks_max_age: Self::DEFAULT_JWKS_MAX_AGE,
        }
    }
}

/// A bound HTTP listener, ready to serve.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    public_url: String,
    jwks_max_age: Duration,
}

impl HttpServer {
    /// Binds `addr`; serves HTTPS with `tls` when given.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(
        addr: SocketAddr,
        settings: &HttpSettings,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
        let bound = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{bound}"));
        Ok(Self {
            listener,
            tls,
            public_url: public_url.trim_end_matches('/').to_owned(),
            jwks_max_age: settings.jwks_max_age,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// When the socket cannot tell, which does not happen on a bound socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves (`/metrics` too, given `metrics`) until `stop` is cancelled,
    /// then lets requests in flight finish for up to `grace`.
    pub async fn serve(
        self,
        auth: Arc<Authenticator>,
        readiness: Readiness,
        metadata: Metadata,
        metrics: Option<Metrics>,
        stop: CancellationToken,
        grace: Duration,
    ) {
        let router = routes::router(routes::HttpState {
            auth,
            readiness,
            metadata: Arc::new(metadata.with_base(&self.public_url)),
            jwks_max_age: self.jwks_max_age,
            metrics,
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
            .max_concurrent_streams(64)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        let builder = Arc::new(builder);
        let acceptor = self.tls.map(TlsAcceptor::from);
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let tracker = TaskTracker::new();
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => break,
                permit = connections.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %err, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            let (builder, acceptor, stop) = (builder.clone(), acceptor.clone(), stop.clone());
            tracker.spawn(async move {
                let _permit = permit;
                match acceptor {
                    None => serve_connection(&builder, TokioIo::new(stream), service, stop).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                serve_connection(&builder, TokioIo::new(tls), service, stop).await;
                            }
                            Ok(Err(err)) => tracing::debug!(error = %err, "HTTPS handshake failed"),
                            Err(_) => tracing::debug!("HTTPS handshake timed out"),
                        }
                    }
                }
            });
        }
        drop(self.listener);
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("HTTP requests still in flight after the grace period; dropping them");
        }
        tracing::debug!("HTTP listener stopped");
    }
}

/// Serves one connection until it ends; when `stop` fires, lets the request
/// in flight finish and closes it.
async fn serve_connection<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    stop: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "HTTP connection ended with an error");
            }
            return;
        }
        () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}
