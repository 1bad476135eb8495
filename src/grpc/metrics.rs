//! The gRPC server metrics, as one tower layer in front of every service
//! served: a call is counted as started when its request arrives, and as
//! handled, with its status code and time, when its status is known (in
//! the response headers of a trailers-only answer, else in the trailers).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http_body::{Body, Frame, SizeHint};
use tonic::codegen::http::{self, HeaderMap};

use crate::telemetry::metrics::{GrpcCall, GrpcMetrics, UNKNOWN};

/// Counts the calls of the services it wraps; counts nothing when made
/// without metrics.
#[derive(Debug, Clone, Default)]
pub struct MetricsLayer(Option<Arc<GrpcMetrics>>);

impl MetricsLayer {
    /// Counts into `metrics`, when there are metrics.
    pub fn new(metrics: Option<Arc<GrpcMetrics>>) -> Self {
        Self(metrics)
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A service whose calls are counted.
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Option<Arc<GrpcMetrics>>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Unpin,
{
    type Response = http::Response<MeteredBody<R>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self
            .metrics
            .as_ref()
            .and_then(|metrics| metrics.begin(request.uri().path()));
        MeteredFuture {
            inner: self.inner.call(request),
            call,
        }
    }
}

/// The response of a counted call, on its way.
#[derive(Debug)]
pub struct MeteredFuture<F> {
    inner: F,
    call: Option<GrpcCall>,
}

impl<F, R, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>> + Unpin,
{
    type Output = Result<http::Response<MeteredBody<R>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let response = ready!(Pin::new(&mut this.inner).poll(cx));
        // An error of the service itself (never, with tonic's routes) drops
        // the call, which counts it as cancelled: the client got no status.
        let mut call = this.call.take();
        Poll::Ready(response.map(|response| {
            // A trailers-only answer (every error of ours) has its status
            // here already.
            if let Some(code) = status_in(response.headers())
                && let Some(call) = call.take()
            {
                call.finish(code);
            }
            response.map(|inner| MeteredBody { inner, call })
        }))
    }
}

/// A response body that counts its call when the trailers pass.
#[derive(Debug)]
pub struct MeteredBody<B> {
    inner: B,
    call: Option<GrpcCall>,
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if this.call.is_some() {
            let code = match &frame {
                Some(Ok(frame)) => frame
                    .trailers_ref()
                    .map(|t| status_in(t).unwrap_or(UNKNOWN)),
                // The stream failed, or ended with no status: the client
                // sees an error it cannot read.
                Some(Err(_)) | None => Some(UNKNOWN),
            };
            if let Some(code) = code
                && let Some(call) = this.call.take()
            {
                call.finish(code);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `grpc-status` of `headers`, when they carry one.
fn status_in(headers: &HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(UNKNOWN),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_read_from_its_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_in(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("16"));
        assert_eq!(status_in(&headers), Some(16));
        headers.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(status_in(&headers), Some(UNKNOWN));
    }
}
