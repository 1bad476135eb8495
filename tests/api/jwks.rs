//! GetJwks: the public key set that verifies the service's tokens, usable
//! by a JWT library that knows nothing of authd.

use authd::grpc::pb::JsonWebKey;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};

use crate::helpers::{Backend, World, on_both_backends};

/// The key as the JSON a JWKS document holds.
fn as_jwk(key: &JsonWebKey) -> Jwk {
    serde_json::from_value(serde_json::json!({
        "kty": key.kty, "crv": key.crv, "x": key.x,
        "kid": key.kid, "use": key.r#use, "alg": key.alg,
    }))
    .expect("a JWK jsonwebtoken reads")
}

async fn the_published_key_verifies_the_tokens_it_names(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;

    let keys = world.app.jwks().await;

    let [key] = keys.as_slice() else {
        panic!("one signing key, one published key: {keys:?}");
    };
    assert_eq!(
        (
            key.kty.as_str(),
            key.crv.as_str(),
            key.r#use.as_str(),
            key.alg.as_str()
        ),
        ("OKP", "Ed25519", "sig", "EdDSA")
    );
    assert_eq!(URL_SAFE_NO_PAD.decode(&key.x).unwrap().len(), 32);
    let header = jsonwebtoken::decode_header(&login.access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));

    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["authd"]);
    validation.set_audience(&["authd"]);
    let decoding = DecodingKey::from_jwk(&as_jwk(key)).unwrap();
    let claims =
        jsonwebtoken::decode::<serde_json::Value>(&login.access_token, &decoding, &validation)
            .expect("the token verifies with the published key");
    assert_eq!(claims.claims["sub"], login.user_id);
}

async fn the_key_set_stays_the_same_across_a_restart(backend: Backend) {
    let mut world = World::new(backend).await;
    let before = world.app.jwks().await;
    let settings = world.app.settings.clone();
    let app = std::mem::replace(
        &mut world.app,
        crate::helpers::TestApp::spawn(settings).await,
    );
    app.stop().await;

    let after = world.app.jwks().await;
    assert_eq!(before, after);
}

on_both_backends!(
    the_published_key_verifies_the_tokens_it_names,
    the_key_set_stays_the_same_across_a_restart,
);
