//! The HTTP listener: the JWKS with its cache headers, the server metadata,
//! the probes, and what it refuses.

use std::time::Duration;

use crate::helpers::{Backend, DbProxy, World, on_both_backends};

async fn the_jwks_has_cache_headers_and_answers_304_while_unchanged(backend: Backend) {
    let mut world = World::new(backend).await;

    let first = world.app.http("GET", "/.well-known/jwks.json", &[]).await;

    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), "application/jwk-set+json");
    assert_eq!(first.header("cache-control"), "public, max-age=300");
    let etag = first.header("etag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "a strong tag: {etag}"
    );
    let served: Vec<(String, String)> = first.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| {
            assert_eq!(key["kty"], "OKP");
            assert_eq!(key["crv"], "Ed25519");
            assert_eq!(key["use"], "sig");
            assert_eq!(key["alg"], "EdDSA");
            (
                key["kid"].as_str().unwrap().to_owned(),
                key["x"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let by_grpc: Vec<(String, String)> = world
        .app
        .jwks()
        .await
        .into_iter()
        .map(|k| (k.kid, k.x))
        .collect();
    assert_eq!(served, by_grpc);

    let unchanged = world
        .app
        .http("GET", "/.well-known/jwks.json", &[("if-none-match", &etag)])
        .await;
    assert_eq!(unchanged.status, 304);
    assert!(unchanged.body.is_empty());
    assert_eq!(unchanged.header("etag"), etag);
    assert_eq!(unchanged.header("cache-control"), "public, max-age=300");

    world
        .app
        .keys
        .rotate(Duration::from_secs(600))
        .await
        .unwrap();
    let changed = world
        .app
        .http("GET", "/.well-known/jwks.json", &[("if-none-match", &etag)])
        .await;
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), etag);
    assert_eq!(changed.json()["keys"].as_array().unwrap().len(), 2);
}

async fn the_metadata_names_the_issuer_and_where_the_keys_are(backend: Backend) {
    let world = World::new(backend).await;
    let addr = world.app.http_addr.unwrap();

    let metadata = world
        .app
        .http("GET", "/.well-known/oauth-authorization-server", &[])
        .await;

    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.header("content-type"), "application/json");
    let doc = metadata.json();
    assert_eq!(doc["issuer"], "authd");
    let jwks_uri = format!("http://{addr}/.well-known/jwks.json");
    assert_eq!(doc["jwks_uri"], jwks_uri.as_str());
    assert_eq!(doc["grpc_token_method"], "auth.v1.AuthService/Login");
    assert_eq!(doc["grpc_revocation_method"], "auth.v1.AuthService/Logout");
    assert_eq!(
        doc["grpc_introspection_method"],
        "auth.v1.AuthService/ValidateToken"
    );
    let path = jwks_uri.trim_start_matches(&format!("http://{addr}"));
    assert_eq!(world.app.http("GET", path, &[]).await.status, 200);
}

async fn the_public_url_is_the_base_of_the_jwks_uri(backend: Backend) {
    let world = World::with(backend, |s| {
        s.http.public_url = Some("https://auth.example.com".into());
    })
    .await;
    let doc = world
        .app
        .http("GET", "/.well-known/oauth-authorization-server", &[])
        .await
        .json();
    assert_eq!(
        doc["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );
}

async fn probes_answer_and_anything_else_is_refused(backend: Backend) {
    let world = World::new(backend).await;
    let app = &world.app;

    let healthz = app.http("GET", "/healthz", &[]).await;
    assert_eq!(
        (healthz.status, healthz.body.as_slice()),
        (200, &b"ok\n"[..])
    );
    assert_eq!(app.http("GET", "/readyz", &[]).await.status, 200);
    let head = app.http("HEAD", "/.well-known/jwks.json", &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    assert_eq!(app.http("GET", "/", &[]).await.status, 404);
    assert_eq!(app.http("GET", "/.well-known/jwks", &[]).await.status, 404);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let refused = app.http(method, "/.well-known/jwks.json", &[]).await;
        assert_eq!(refused.status, 405, "{method}");
        assert!(refused.header("allow").contains("GET"), "{method}");
    }
    let huge = "x".repeat(20 * 1024);
    let too_big = app.http("GET", "/healthz", &[("x-filler", &huge)]).await;
    assert_eq!(too_big.status, 431);
}

/// `/readyz` follows the gRPC health: 503 while the database is out of
/// reach, 200 again once it is back; `/healthz` stays 200 throughout.
#[tokio::test]
async fn readyz_is_503_while_the_database_is_cut_off() {
    let proxy = DbProxy::start().await;
    let world = World::behind(&proxy).await;
    let app = &world.app;
    assert_eq!(app.http("GET", "/readyz", &[]).await.status, 200);

    proxy.cut();
    wait_for_status(&world, "/readyz", 503).await;
    assert_eq!(app.http("GET", "/healthz", &[]).await.status, 200);

    proxy.restore();
    wait_for_status(&world, "/readyz", 200).await;
}

async fn wait_for_status(world: &World, path: &str, wanted: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = world.app.http("GET", path, &[]).await;
        if answer.status == wanted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} still answers {} after 15 s",
            answer.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on_both_backends!(
    the_jwks_has_cache_headers_and_answers_304_while_unchanged,
    the_metadata_names_the_issuer_and_where_the_keys_are,
    the_public_url_is_the_base_of_the_jwks_uri,
    probes_answer_and_anything_else_is_refused,
);
