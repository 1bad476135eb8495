//! The proxies' questions: Envoy's ext_authz `Check` on the gRPC listener
//! and forward-auth on the HTTP listener, which must agree with
//! ValidateToken and never let a client's own identity headers through.

use std::collections::HashMap;

use authd::grpc::pb::LogoutScope;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use envoy_types::pb::envoy::{
    config::core::v3::{HeaderMap, HeaderValue, header_value_option::HeaderAppendAction},
    service::auth::v3::{
        AttributeContext, CheckRequest, attribute_context,
        authorization_client::AuthorizationClient, check_response::HttpResponse,
    },
};
use tonic::Code;

use crate::helpers::{Backend, DbProxy, Forger, HttpAnswer, TestApp, World, now, on_both_backends};

const IDENTITY_HEADERS: [&str; 5] = [
    "x-authd-user-id",
    "x-authd-username",
    "x-authd-roles",
    "x-authd-session-id",
    "x-authd-token-id",
];

/// What a `Check` answered, flattened.
#[derive(Debug)]
struct Checked {
    code: Code,
    /// 200 when allowed; the denied response's status otherwise.
    http_status: i32,
    headers: HashMap<String, String>,
    /// Whether every header overwrites the client's.
    overwrites: bool,
    remove: Vec<String>,
    body: serde_json::Value,
}

fn request(headers: &[(&str, &str)], raw: bool, extensions: &[(&str, &str)]) -> CheckRequest {
    let http = if raw {
        attribute_context::HttpRequest {
            header_map: Some(HeaderMap {
                headers: headers
                    .iter()
                    .map(|(key, value)| HeaderValue {
                        key: (*key).to_owned(),
                        value: String::new(),
                        raw_value: value.as_bytes().to_vec(),
                    })
                    .collect(),
            }),
            ..Default::default()
        }
    } else {
        attribute_context::HttpRequest {
            headers: headers
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            ..Default::default()
        }
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(http),
                ..Default::default()
            }),
            context_extensions: extensions
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            ..Default::default()
        }),
    }
}

async fn check_request(app: &TestApp, request: CheckRequest) -> Checked {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let response = AuthorizationClient::new(channel)
        .check(request)
        .await
        .expect("Check answers with a CheckResponse, whatever it decides")
        .into_inner();
    let code = Code::from(response.status.unwrap().code);
    let (http_status, options, remove, body) = match response.http_response.unwrap() {
        HttpResponse::OkResponse(ok) => (200, ok.headers, ok.headers_to_remove, String::new()),
        HttpResponse::DeniedResponse(denied) => (
            denied.status.unwrap().code,
            denied.headers,
            Vec::new(),
            denied.body,
        ),
        // Envoy lets `failure_mode_allow` turn an error response into an
        // allow: authd must never send one.
        HttpResponse::ErrorResponse(error) => panic!("an error response: {error:?}"),
    };
    let overwrites = options
        .iter()
        .all(|o| o.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32);
    let headers = options
        .into_iter()
        .map(|o| o.header.unwrap())
        .map(|h| (h.key, h.value))
        .collect();
    Checked {
        code,
        http_status,
        headers,
        overwrites,
        remove,
        body: if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&body).expect("a JSON body")
        },
    }
}

async fn check(app: &TestApp, headers: &[(&str, &str)], extensions: &[(&str, &str)]) -> Checked {
    check_request(app, request(headers, false, extensions)).await
}

async fn forward_auth(app: &TestApp, method: &str, path: &str, token: Option<&str>) -> HttpAnswer {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("x-authd-user-id", "spoofed")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    app.http(method, path, &headers).await
}

async fn check_allows_a_valid_token_and_vouches_for_its_identity(backend: Backend) {
    let mut world = World::new(backend).await;
    world
        .add_user("Élodie", "correct horse battery", &["reader", "a,b"])
        .await;
    let login = world
        .app
        .login("Élodie", "correct horse battery")
        .await
        .unwrap();
    let claims = world.app.validate(&login.access_token).await;
    let bearer = format!("Bearer {}", login.access_token);

    for raw in [false, true] {
        let checked = check_request(
            &world.app,
            request(
                &[
                    ("authorization", &bearer),
                    ("x-authd-user-id", "spoofed"),
                    ("x-authd-roles", "admin"),
                ],
                raw,
                &[],
            ),
        )
        .await;

        assert_eq!(checked.code, Code::Ok, "{checked:?}");
        assert_eq!(checked.http_status, 200);
        assert!(checked.overwrites, "{checked:?}");
        assert!(checked.remove.is_empty(), "{checked:?}");
        let expected: HashMap<String, String> = [
            ("x-authd-user-id", login.user_id.clone()),
            ("x-authd-username", "%C3%89lodie".to_owned()),
            ("x-authd-roles", "reader,a%2Cb".to_owned()),
            ("x-authd-session-id", login.session_id.clone()),
            ("x-authd-token-id", claims.jti.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(checked.headers, expected);
    }

    let lower = format!("bearer {}", login.access_token);
    assert_eq!(
        check(&world.app, &[("authorization", &lower)], &[])
            .await
            .code,
        Code::Ok
    );

    // Envoy sends every header (up to 60 KiB by default) and, where
    // configured, the body: a large request is answered all the same.
    let cookie = "c".repeat(60 * 1024);
    let mut large = request(
        &[("authorization", &bearer), ("cookie", &cookie)],
        false,
        &[],
    );
    if let Some(http) = large
        .attributes
        .as_mut()
        .and_then(|attributes| attributes.request.as_mut())
        .and_then(|request| request.http.as_mut())
    {
        http.body = "b".repeat(64 * 1024);
    }
    let checked = check_request(&world.app, large).await;
    assert_eq!(checked.code, Code::Ok, "{checked:?}");
    assert_eq!(checked.headers["x-authd-user-id"], login.user_id);
}

async fn check_denies_what_validate_token_refuses(backend: Backend) {
    let mut world = World::new(backend).await;
    let (login, logged_out) = world.alice_token_and_a_logged_out_one().await;

    for headers in [vec![], vec![("authorization", "Basic YWxpY2U6cHc=")]] {
        let checked = check(&world.app, &headers, &[]).await;
        assert_eq!(checked.code, Code::Unauthenticated, "{checked:?}");
        assert_eq!(checked.http_status, 401);
        assert_eq!(checked.headers["www-authenticate"], "Bearer");
        assert_eq!(checked.headers["content-type"], "application/json");
        assert_eq!(checked.body, serde_json::json!({"error": "missing_token"}));
    }

    let forger = Forger::for_app(&world.app, &login.access_token);
    let expired = forger.sign(
        &forger.header(),
        &Forger::fresh_like(
            &login.access_token,
            serde_json::json!({"iat": now() - 7200, "exp": now() - 3600}),
        ),
    );
    // The payload raised to admin under the real signature.
    let parts: Vec<&str> = login.access_token.split('.').collect();
    let elevated =
        Forger::claims_like(&login.access_token, serde_json::json!({"roles": ["admin"]}));
    let elevated = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(elevated.to_string()),
        parts[2]
    );
    let cases = [
        (logged_out.access_token.clone(), "REVOKED"),
        ("not-a-token".to_owned(), "MALFORMED"),
        (elevated, "BAD_SIGNATURE"),
        (expired, "EXPIRED"),
    ];
    for (token, reason) in &cases {
        let header = format!("Bearer {token}");
        let checked = check(
            &world.app,
            &[("authorization", &header)],
            &[("authd_required_role", "admin")],
        )
        .await;
        assert_eq!(checked.code, Code::Unauthenticated, "{reason}: {checked:?}");
        assert_eq!(checked.body["reason"], *reason);
        let answer = forward_auth(&world.app, "GET", "/auth/verify?role=admin", Some(token)).await;
        assert_eq!(answer.status, 401, "{reason}: {answer:?}");
        assert_eq!(answer.json()["reason"], *reason);
    }
    for (token, reason) in &cases {
        let header = format!("Bearer {token}");
        let header = header.as_str();
        let checked = check(&world.app, &[("authorization", header)], &[]).await;
        assert_eq!(checked.code, Code::Unauthenticated, "{reason}: {checked:?}");
        assert_eq!(checked.http_status, 401);
        assert_eq!(
            checked.headers["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        assert_eq!(
            checked.body,
            serde_json::json!({"error": "invalid_token", "reason": reason})
        );
        assert!(!checked.headers.contains_key("x-authd-user-id"));
    }

    // Two Authorization headers (Envoy's raw mode keeps them apart) are
    // ambiguous: which one the service would read is not ours to guess.
    let live = format!("Bearer {}", login.access_token);
    let twice = check_request(
        &world.app,
        request(
            &[("authorization", &live), ("authorization", &live)],
            true,
            &[],
        ),
    )
    .await;
    assert_eq!(twice.code, Code::Unauthenticated, "{twice:?}");
    assert_eq!(twice.body["reason"], "MALFORMED");

    // Logging out of every session reaches Check too.
    world
        .app
        .client
        .logout(authd::grpc::pb::LogoutRequest {
            access_token: login.access_token.clone(),
            scope: LogoutScope::User.into(),
        })
        .await
        .unwrap();
    let after = check(&world.app, &[("authorization", &live)], &[]).await;
    assert_eq!(after.body["reason"], "REVOKED", "{after:?}");
}

async fn check_requires_the_routes_role(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    let bearer = format!("Bearer {}", login.access_token);
    let auth = [("authorization", bearer.as_str())];

    let held = check(&world.app, &auth, &[("authd_required_role", "reader")]).await;
    assert_eq!(held.code, Code::Ok, "{held:?}");

    let lacking = check(&world.app, &auth, &[("authd_required_role", "admin")]).await;
    assert_eq!(lacking.code, Code::PermissionDenied, "{lacking:?}");
    assert_eq!(lacking.http_status, 403);
    assert_eq!(
        lacking.headers["www-authenticate"],
        r#"Bearer error="insufficient_scope""#
    );
    assert_eq!(lacking.body["error"], "insufficient_scope");
    assert!(!lacking.headers.contains_key("x-authd-user-id"));

    // A route whose configuration cannot be right is refused, never let
    // through as if it required nothing.
    for extensions in [
        [("authd_required_role", "two words")],
        [("authd_required_roles", "admin")],
    ] {
        let misconfigured = check(&world.app, &auth, &extensions).await;
        assert_eq!(
            misconfigured.code,
            Code::InvalidArgument,
            "{misconfigured:?}"
        );
        assert_eq!(misconfigured.http_status, 500);
    }
    let other = check(&world.app, &auth, &[("virtual_host", "api")]).await;
    assert_eq!(other.code, Code::Ok, "{other:?}");
}

async fn forward_auth_answers_as_check_does(backend: Backend) {
    let mut world = World::new(backend).await;
    let (login, logged_out) = world.alice_token_and_a_logged_out_one().await;
    let claims = world.app.validate(&login.access_token).await;

    for method in ["GET", "HEAD", "POST", "DELETE"] {
        let allowed = forward_auth(
            &world.app,
            method,
            "/auth/verify",
            Some(&login.access_token),
        )
        .await;
        assert_eq!(allowed.status, 200, "{method}: {allowed:?}");
        assert_eq!(allowed.header("x-authd-user-id"), login.user_id);
        assert_eq!(allowed.header("x-authd-username"), "alice");
        assert_eq!(allowed.header("x-authd-roles"), "reader");
        assert_eq!(allowed.header("x-authd-session-id"), login.session_id);
        assert_eq!(allowed.header("x-authd-token-id"), claims.jti);
        assert_eq!(allowed.header("cache-control"), "no-store");
    }

    let missing = forward_auth(&world.app, "GET", "/auth/verify", None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), "Bearer");
    assert_eq!(
        missing.json(),
        serde_json::json!({"error": "missing_token"})
    );

    let revoked = forward_auth(
        &world.app,
        "GET",
        "/auth/verify",
        Some(&logged_out.access_token),
    )
    .await;
    assert_eq!(revoked.status, 401);
    assert_eq!(
        revoked.header("www-authenticate"),
        r#"Bearer error="invalid_token""#
    );
    assert_eq!(
        revoked.json(),
        serde_json::json!({"error": "invalid_token", "reason": "REVOKED"})
    );
    for denied in [&missing, &revoked] {
        for name in IDENTITY_HEADERS {
            assert!(!denied.headers.contains_key(name), "{name} on {denied:?}");
        }
    }

    let token = Some(login.access_token.as_str());
    for (path, status) in [
        ("/auth/verify?role=reader", 200),
        ("/auth/verify?page=2&role=reader", 200),
        ("/auth/verify?role=admin", 403),
        ("/auth/verify?role=reader&role=admin", 403),
        ("/auth/verify?role=", 500),
        ("/auth/verify?role=two%20words", 500),
    ] {
        let answer = forward_auth(&world.app, "GET", path, token).await;
        assert_eq!(answer.status, status, "{path}: {answer:?}");
        if status == 403 {
            assert_eq!(
                answer.header("www-authenticate"),
                r#"Bearer error="insufficient_scope""#
            );
            assert!(!answer.headers.contains_key("x-authd-user-id"));
        }
    }
}

async fn a_full_server_refuses_checks_with_503(backend: Backend) {
    let mut world = World::with(backend, |s| s.max_calls_in_flight = 0).await;
    world
        .add_user("alice", "correct horse battery", &["reader"])
        .await;
    let checked = check(&world.app, &[("authorization", "Bearer x")], &[]).await;
    assert_eq!(checked.code, Code::ResourceExhausted, "{checked:?}");
    assert_eq!(checked.http_status, 503);
    assert_eq!(checked.headers["retry-after"], "1");
    assert!(
        world
            .app
            .login("alice", "correct horse battery")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn without_its_database_no_proxy_is_told_a_token_is_valid() {
    let proxy = DbProxy::start().await;
    let mut world = World::behind(&proxy).await;
    let login = world.alice_token().await;
    let bearer = format!("Bearer {}", login.access_token);
    assert_eq!(
        check(&world.app, &[("authorization", &bearer)], &[])
            .await
            .code,
        Code::Ok
    );

    proxy.cut();

    // The state goes stale on the revocation sync's clock; until then the
    // answers are those of a current state.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let checked = loop {
        let checked = check(&world.app, &[("authorization", &bearer)], &[]).await;
        if checked.code != Code::Ok {
            break checked;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Check still allows 10 s after the database went away"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(checked.code, Code::Unavailable, "{checked:?}");
    assert_eq!(checked.http_status, 503);
    assert_eq!(checked.headers["retry-after"], "1");
    assert!(!checked.headers.contains_key("x-authd-user-id"));

    let answer = forward_auth(&world.app, "GET", "/auth/verify", Some(&login.access_token)).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.header("retry-after"), "1");
    assert!(!answer.headers.contains_key("x-authd-user-id"));

    proxy.restore();
    world.app.eventually_valid(&login.access_token).await;
    assert_eq!(
        check(&world.app, &[("authorization", &bearer)], &[])
            .await
            .code,
        Code::Ok
    );
}

on_both_backends!(
    check_allows_a_valid_token_and_vouches_for_its_identity,
    check_denies_what_validate_token_refuses,
    check_requires_the_routes_role,
    forward_auth_answers_as_check_does,
    a_full_server_refuses_checks_with_503,
);
