//! A lean gRPC client for the hot scenarios (health, ValidateToken): one
//! HTTP/2 connection per [`Lane`], each call one stream with the request
//! framed by hand and the answer read only as far as the check needs.
//! The load generator shares the machine's cores with the server, so what
//! it spends per call is taken from the server; tonic's client stack costs
//! about as much per call as the server's whole ValidateToken.

use std::net::SocketAddr;

use bytes::{BufMut as _, Bytes, BytesMut};
use tokio::net::TcpStream;
use tonic::codegen::http::{self, Request, Uri};

/// One HTTP/2 connection to the server.
#[derive(Clone)]
pub struct Lane {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
}

impl Lane {
    /// Opens a connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, connection) = h2::client::handshake(tcp).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            send,
            authority: addr.to_string(),
        })
    }

    /// The URI of `path` on this lane's server.
    pub fn uri(&self, path: &str) -> anyhow::Result<Uri> {
        Ok(format!("http://{}{path}", self.authority).parse()?)
    }

    /// Sends one unary call with the protobuf `message` and returns the
    /// answer's protobuf bytes; `Err` for anything but gRPC status 0.
    pub async fn unary(&self, uri: Uri, message: &[u8]) -> Result<Bytes, String> {
        let mut body = BytesMut::with_capacity(5 + message.len());
        body.put_u8(0);
        body.put_u32(u32::try_from(message.len()).map_err(|_| "message too long")?);
        body.put_slice(message);

        let request = Request::builder()
            .method(http::Method::POST)
            .uri(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| e.to_string())?;
        let mut send = self.send.clone().ready().await.map_err(|e| e.to_string())?;
        let (response, mut stream) = send
            .send_request(request, false)
            .map_err(|e| e.to_string())?;
        stream
            .send_data(body.freeze(), true)
            .map_err(|e| e.to_string())?;
        let response = response.await.map_err(|e| e.to_string())?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("HTTP status {}", response.status()));
        }
        // A call that fails at once answers with its status in the headers.
        if let Some(status) = response.headers().get("grpc-status") {
            return Err(format!("gRPC status {status:?}"));
        }
        let mut body = response.into_body();
        let mut answer = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = body.flow_control().release_capacity(chunk.len());
            answer.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(|e| e.to_string())?;
        match trailers.as_ref().and_then(|t| t.get("grpc-status")) {
            Some(status) if status == "0" => {}
            other => return Err(format!("gRPC status {other:?}")),
        }
        if answer.len() < 5 || answer[0] != 0 {
            return Err("a malformed gRPC answer".into());
        }
        Ok(answer.freeze().slice(5..))
    }
}
