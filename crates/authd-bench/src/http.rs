//! HTTP/1.1 load on authd's HTTP listener: GETs of the JWKS over keep-alive
//! connections, one request in flight on each, every answer compared with
//! the set the first GET returned.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use tokio::sync::Mutex;

use crate::drive::{Call, Measured, Outcome, closed_loop};

const JWKS: &str = "/.well-known/jwks.json";

/// `connections` closed loops of JWKS GETs for `duration`; returns what
/// they measured and the kids the set holds.
pub(crate) async fn jwks_load(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<(Measured, Vec<String>)> {
    let mut first = connect(addr).await?;
    let expected = get(&mut first, addr)
        .await
        .map_err(anyhow::Error::msg)
        .context("the first JWKS GET")?;
    let document: serde_json::Value = serde_json::from_slice(&expected)?;
    let kids = document["keys"]
        .as_array()
        .context("a JWKS without keys")?
        .iter()
        .filter_map(|key| key["kid"].as_str().map(str::to_owned))
        .collect();
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(Arc::new(Mutex::new(connect(addr).await?)));
    }
    let senders = Arc::new(senders);
    let expected = Bytes::from(expected);
    let call: Call = Arc::new(move |worker, _| {
        let sender = senders[worker % senders.len()].clone();
        let expected = expected.clone();
        Box::pin(async move {
            let mut sender = sender.lock().await;
            let body = get(&mut sender, addr).await?;
            if body != expected {
                return Err(format!(
                    "JWKS: another body: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            Ok(Outcome::Served)
        })
    });
    Ok((closed_loop(connections, duration, call).await, kids))
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One GET of the JWKS: its body, when the answer is 200.
async fn get(sender: &mut SendRequest<Empty<Bytes>>, addr: SocketAddr) -> Result<Vec<u8>, String> {
    let request = hyper::Request::get(JWKS)
        .header("host", addr.to_string())
        .body(Empty::new())
        .map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("JWKS: {err}"))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("JWKS: status {}", response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("JWKS body: {err}"))?;
    Ok(body.to_bytes().to_vec())
}

/// Fails unless `kids` holds `wanted` keys.
pub(crate) fn expect_keys(kids: &[String], wanted: usize) -> anyhow::Result<()> {
    if kids.len() != wanted {
        bail!("the JWKS holds {} keys, not {wanted}: {kids:?}", kids.len());
    }
    Ok(())
}
