use authd::grpc::pb::TokenInvalidReason::{self, *};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::json;
use tonic::Code;

use crate::helpers::{Forger, World, now};

async fn reason_of(world: &mut World, token: &str) -> TokenInvalidReason {
    let answer = world.app.validate(token).await;
    assert!(!answer.valid, "{token:.40} validated");
    assert!(answer.user_id.is_empty() && answer.roles.is_empty() && answer.issued_at.is_none());
    answer.reason()
}

#[tokio::test]
async fn empty_or_oversized_tokens_are_invalid_arguments() {
    let mut world = World::new().await;
    for token in [String::new(), "a".repeat(8 * 1024 + 1)] {
        let status = world.app.try_validate(&token).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}

#[tokio::test]
async fn strings_that_are_not_our_jwts_are_malformed() {
    let mut world = World::new().await;
    let login = world.alice_token().await;
    let forger = Forger::for_app(&world.app, &login.access_token);
    let claims = Forger::fresh_like(&login.access_token, json!({}));
    let mut parts = login.access_token.split('.');
    let (header, payload) = (parts.next().unwrap(), parts.next().unwrap());

    let mut hs256 = forger.header();
    hs256.alg = jsonwebtoken::Algorithm::HS256;
    let hs256 = jsonwebtoken::encode(
        &hs256,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    let mut no_typ = forger.header();
    no_typ.typ = None;
    let mut jwt_typ = forger.header();
    jwt_typ.typ = Some("JWT".to_owned());
    let mut no_kid = forger.header();
    no_kid.kid = None;
    let alg_none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#)
    );

    let cases = [
        "x".to_owned(),
        "a.b.c".to_owned(),
        format!("{header}.{payload}"),
        alg_none,
        hs256,
        forger.sign(&no_typ, &claims),
        forger.sign(&jwt_typ, &claims),
        forger.sign(&no_kid, &claims),
        forger.sign(
            &forger.header(),
            &Forger::fresh_like(&login.access_token, json!({"exp": "9999999999"})),
        ),
        forger.sign(
            &forger.header(),
            &Forger::fresh_like(&login.access_token, json!({"exp": null})),
        ),
        forger.sign(
            &forger.header(),
            &Forger::fresh_like(&login.access_token, json!({"sub": null})),
        ),
        forger.sign(
            &forger.header(),
            &Forger::fresh_like(&login.access_token, json!({"sub": "alice"})),
        ),
        forger.sign(
            &forger.header(),
            &Forger::claims_like(&login.access_token, json!({"jti": null})),
        ),
        forger.sign(
            &forger.header(),
            &Forger::claims_like(&login.access_token, json!({"jti": "not-a-uuid"})),
        ),
        forger.sign(
            &forger.header(),
            &Forger::fresh_like(&login.access_token, json!({"iat": null})),
        ),
        forger.sign(
            &forger.header(),
            &Forger::fresh_like(&login.access_token, json!({"roles": "admin"})),
        ),
        forger.sign(
            &forger.header(),
            &Forger::fresh_like(&login.access_token, json!({"aud": ["authd"]})),
        ),
    ];
    for (i, token) in cases.iter().enumerate() {
        assert_eq!(reason_of(&mut world, token).await, Malformed, "case {i}");
    }
}

#[tokio::test]
async fn foreign_keys_issuers_and_audiences_are_bad_signatures() {
    let mut world = World::new().await;
    let login = world.alice_token().await;
    let forger = Forger::for_app(&world.app, &login.access_token);

    let other_dir = tempfile::tempdir().unwrap();
    let other_key =
        authd::auth::SigningKey::load_or_generate(&other_dir.path().join("k.pem")).unwrap();
    let other_pem = std::fs::read(other_dir.path().join("k.pem")).unwrap();
    let claims = Forger::fresh_like(&login.access_token, json!({}));
    // Another key, claiming our kid; another key with its own kid.
    let with_our_kid = jsonwebtoken::encode(
        &forger.header(),
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(&other_pem).unwrap(),
    )
    .unwrap();
    let mut their_header = forger.header();
    their_header.kid = Some(other_key.kid().to_owned());
    let with_their_kid = jsonwebtoken::encode(
        &their_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(&other_pem).unwrap(),
    )
    .unwrap();
    let mut tampered: Vec<&str> = login.access_token.split('.').collect();
    let other_payload = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&Forger::claims_like(
            &login.access_token,
            json!({"roles": ["admin"]}),
        ))
        .unwrap(),
    );
    tampered[1] = &other_payload;
    let tampered = tampered.join(".");

    for (i, token) in [
        with_our_kid,
        with_their_kid,
        tampered,
        forger.sign(
            &forger.header(),
            &Forger::fresh_like(&login.access_token, json!({"iss": "evil"})),
        ),
        forger.sign(
            &forger.header(),
            &Forger::fresh_like(&login.access_token, json!({"aud": "other"})),
        ),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(reason_of(&mut world, token).await, BadSignature, "case {i}");
    }
}

#[tokio::test]
async fn expiry_and_issue_time_are_checked_with_the_leeway() {
    let mut world = World::new().await;
    let login = world.alice_token().await;
    let forger = Forger::for_app(&world.app, &login.access_token);
    let sign = |changes| {
        forger.sign(
            &forger.header(),
            &Forger::fresh_like(&login.access_token, changes),
        )
    };

    let expired = sign(json!({"iat": now() - 100, "exp": now() - 30}));
    let just_expired_within_leeway = sign(json!({"iat": now() - 100, "exp": now() - 2}));
    let issued_in_the_future = sign(json!({"iat": now() + 60, "exp": now() + 960}));
    let issued_a_little_ahead = sign(json!({"iat": now() + 2, "exp": now() + 900}));
    let not_before_later = sign(json!({"nbf": now() + 60}));
    let huge_exp = sign(json!({"exp": 1e300}));

    assert_eq!(reason_of(&mut world, &expired).await, Expired);
    assert!(world.app.validate(&just_expired_within_leeway).await.valid);
    assert_eq!(
        reason_of(&mut world, &issued_in_the_future).await,
        NotYetValid
    );
    assert!(world.app.validate(&issued_a_little_ahead).await.valid);
    assert_eq!(reason_of(&mut world, &not_before_later).await, NotYetValid);
    assert_eq!(reason_of(&mut world, &huge_exp).await, Malformed);
}

#[tokio::test]
async fn a_reencoded_copy_of_a_revoked_token_is_still_revoked() {
    let mut world = World::new().await;
    let login = world.alice_token().await;
    let forger = Forger::for_app(&world.app, &login.access_token);
    world.app.logout(&login.access_token).await.unwrap();
    // Same claims, same jti, signed again: different bytes, same token.
    let copy = forger.sign(
        &forger.header(),
        &Forger::claims_like(&login.access_token, json!({})),
    );
    assert_ne!(copy, login.access_token);

    assert_eq!(reason_of(&mut world, &copy).await, Revoked);
}

#[tokio::test]
async fn a_message_over_16_kib_is_refused_before_decoding() {
    let mut world = World::new().await;

    let status = world
        .app
        .try_validate(&"a".repeat(17 * 1024))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
}
