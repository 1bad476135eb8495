//! HTTP/1.1 load on authd's HTTP listener over keep-alive connections, one
//! request in flight on each: GETs of the JWKS, every answer compared with
//! the set the first GET returned, and forward-auth GETs, every answer
//! checked against the token it carried.

use std::{collections::HashSet, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use tokio::sync::Mutex;

use crate::drive::{Call, Measured, Outcome, closed_loop};

const JWKS: &str = "/.well-known/jwks.json";
const FORWARD_AUTH: &str = "/auth/verify";

/// `connections` closed loops of JWKS GETs for `duration`; returns what
/// they measured and the kids the set holds.
pub(crate) async fn jwks_load(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<(Measured, Vec<String>)> {
    let mut first = connect(addr).await?;
    let expected = get(&mut first, addr, JWKS, None)
        .await
        .and_then(|(status, _, body)| ok(status, body))
        .map_err(anyhow::Error::msg)
        .context("the first JWKS GET")?;
    let document: serde_json::Value = serde_json::from_slice(&expected)?;
    let kids = document["keys"]
        .as_array()
        .context("a JWKS without keys")?
        .iter()
        .filter_map(|key| key["kid"].as_str().map(str::to_owned))
        .collect();
    let senders = connect_all(addr, connections).await?;
    let expected = Bytes::from(expected);
    let call: Call = Arc::new(move |worker, _| {
        let sender = senders[worker % senders.len()].clone();
        let expected = expected.clone();
        Box::pin(async move {
            let mut sender = sender.lock().await;
            let (status, _, body) = get(&mut sender, addr, JWKS, None).await?;
            let body = ok(status, body)?;
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

/// `connections` closed loops of forward-auth GETs for `duration`, each
/// with a bearer token of `tokens` in turn: the `revoked` ones must get
/// 401 with the reason REVOKED, the others 200 with `user_id` in
/// `X-Authd-User-Id`.
pub(crate) async fn forward_auth_load(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    tokens: &[String],
    revoked: &Arc<HashSet<usize>>,
    user_id: &str,
) -> anyhow::Result<Measured> {
    let senders = connect_all(addr, connections).await?;
    let bearers: Arc<Vec<String>> =
        Arc::new(tokens.iter().map(|t| format!("Bearer {t}")).collect());
    let (revoked, user_id) = (revoked.clone(), Arc::<str>::from(user_id));
    let call: Call = Arc::new(move |worker, iteration| {
        let sender = senders[worker % senders.len()].clone();
        let index = (worker + iteration as usize * (connections + 1)) % bearers.len();
        let (bearers, revoked, user_id) = (bearers.clone(), revoked.clone(), user_id.clone());
        Box::pin(async move {
            let mut sender = sender.lock().await;
            let (status, headers, body) =
                get(&mut sender, addr, FORWARD_AUTH, Some(&bearers[index])).await?;
            let vouched = headers.get("x-authd-user-id").map(|v| v.as_bytes());
            match (revoked.contains(&index), status.as_u16()) {
                (false, 200) if vouched == Some(user_id.as_bytes()) => Ok(Outcome::Served),
                (true, 401) if body.windows(9).any(|w| w == b"\"REVOKED\"") => Ok(Outcome::Served),
                (true, 200) => Err(format!("forward-auth: revoked token {index} let through")),
                (_, status) => Err(format!(
                    "forward-auth: token {index}: {status} {}",
                    String::from_utf8_lossy(&body)
                )),
            }
        })
    });
    Ok(closed_loop(connections, duration, call).await)
}

async fn connect_all(
    addr: SocketAddr,
    connections: usize,
) -> anyhow::Result<Arc<Vec<Arc<Mutex<SendRequest<Empty<Bytes>>>>>>> {
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(Arc::new(Mutex::new(connect(addr).await?)));
    }
    Ok(Arc::new(senders))
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One GET of `path`: the answer's status, headers and body.
async fn get(
    sender: &mut SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    authorization: Option<&str>,
) -> Result<(hyper::StatusCode, hyper::HeaderMap, Vec<u8>), String> {
    let mut request = hyper::Request::get(path).header("host", addr.to_string());
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let request = request.body(Empty::new()).map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("{path}: {err}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|err| format!("{path} body: {err}"))?;
    Ok((parts.status, parts.headers, body.to_bytes().to_vec()))
}

/// The body of a 200.
fn ok(status: hyper::StatusCode, body: Vec<u8>) -> Result<Vec<u8>, String> {
    if status == hyper::StatusCode::OK {
        Ok(body)
    } else {
        Err(format!("JWKS: status {status}"))
    }
}

/// Fails unless `kids` holds `wanted` keys.
pub(crate) fn expect_keys(kids: &[String], wanted: usize) -> anyhow::Result<()> {
    if kids.len() != wanted {
        bail!("the JWKS holds {} keys, not {wanted}: {kids:?}", kids.len());
    }
    Ok(())
}
