//! Tokens built to fool a validator. Every one must come back `valid=false`
//! with the expected reason: never `valid=true`, never an error, never a
//! crash.

use authd::grpc::pb::TokenInvalidReason::{self, *};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde_json::json;

use crate::helpers::{Backend, Forger, World, now, on_both_backends};

fn b64(text: &str) -> String {
    B64.encode(text)
}

/// Flips one bit of the character at `index` of a base64url text, keeping
/// it inside the alphabet.
fn flip(text: &str, index: usize) -> String {
    let mut bytes = text.as_bytes().to_vec();
    bytes[index] = match bytes[index] {
        b'A' => b'B',
        b'B' => b'A',
        c if c.is_ascii_lowercase() => c.to_ascii_uppercase(),
        c if c.is_ascii_uppercase() => c.to_ascii_lowercase(),
        b'0' => b'1',
        _ => b'0',
    };
    String::from_utf8(bytes).unwrap()
}

/// A token built to fool a validator, and the reasons it may be refused
/// with.
pub(crate) type Attack = (&'static str, String, &'static [TokenInvalidReason]);

/// The attacks on a token of `world`'s alice; and the real token.
pub(crate) async fn attacks(world: &mut World) -> (Vec<Attack>, String) {
    let login = world.alice_token().await;
    let real = login.access_token.clone();
    let forger = Forger::for_app(&world.app, &real);
    let kid = forger.kid().to_owned();
    let parts: Vec<&str> = real.split('.').collect();
    let (header, payload, signature) = (parts[0], parts[1], parts[2]);
    let claims = Forger::fresh_like(&real, json!({}));
    let claims_text = claims.to_string();
    let our_header = format!(r#"{{"typ":"at+jwt","alg":"EdDSA","kid":"{kid}"}}"#);
    let signed = |changes| forger.sign(&forger.header(), &Forger::fresh_like(&real, changes));
    let with_header = |header_json: &str| forger.sign_raw(header_json, &claims_text);
    let with_payload = |payload_json: &str| forger.sign_raw(&our_header, payload_json);

    // Our public key, as an attacker would fetch it, used as an HMAC secret.
    let public_key_b64 = {
        let pem = std::fs::read_to_string(&world.app.key_file).unwrap();
        let private = pem::parse(pem).unwrap();
        use aws_lc_rs::signature::KeyPair as _;
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(private.contents()).unwrap();
        pair.public_key().as_ref().to_vec()
    };
    let hmac_with = |secret: &[u8], alg| {
        let mut h = forger.header();
        h.alg = alg;
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap()
    };
    let foreign_alg = |alg: &str| {
        format!(
            "{}.{}.{}",
            b64(&format!(
                r#"{{"typ":"at+jwt","alg":"{alg}","kid":"{kid}"}}"#
            )),
            b64(&claims_text),
            signature
        )
    };
    let alg_none = |alg: &str, sig: &str| {
        format!(
            "{}.{}.{sig}",
            b64(&format!(
                r#"{{"typ":"at+jwt","alg":"{alg}","kid":"{kid}"}}"#
            )),
            b64(&claims_text)
        )
    };

    // Another Ed25519 key: signing with our kid, and with its own.
    let other_dir = tempfile::tempdir().unwrap();
    let other_path = other_dir.path().join("other.pem");
    let other_kid = authd::auth::SigningKey::load_or_generate(&other_path)
        .unwrap()
        .kid()
        .to_owned();
    let other_key =
        jsonwebtoken::EncodingKey::from_ed_pem(&std::fs::read(&other_path).unwrap()).unwrap();
    let mut other_header = forger.header();
    other_header.kid = Some(other_kid);
    let by_other_key_our_kid = jsonwebtoken::encode(&forger.header(), &claims, &other_key).unwrap();
    let by_other_key_its_kid = jsonwebtoken::encode(&other_header, &claims, &other_key).unwrap();

    let cases: Vec<Attack> = vec![
        ("one character", "x".to_owned(), &[Malformed]),
        ("three junk segments", "a.b.c".to_owned(), &[Malformed]),
        (
            "another key, our kid",
            by_other_key_our_kid,
            &[BadSignature],
        ),
        (
            "another key, its own kid",
            by_other_key_its_kid,
            &[BadSignature],
        ),
        // alg none, in every spelling, with an empty or missing signature.
        (
            "alg none, empty signature",
            alg_none("none", ""),
            &[Malformed],
        ),
        ("alg None", alg_none("None", ""), &[Malformed]),
        ("alg NONE", alg_none("NONE", ""), &[Malformed]),
        ("alg nOnE", alg_none("nOnE", ""), &[Malformed]),
        (
            "alg none, our signature",
            alg_none("none", signature),
            &[Malformed],
        ),
        (
            "alg none, no signature segment",
            format!(
                "{}.{}",
                b64(r#"{"alg":"none","typ":"at+jwt"}"#),
                b64(&claims_text)
            ),
            &[Malformed],
        ),
        ("alg empty", alg_none("", ""), &[Malformed]),
        // Algorithm confusion.
        (
            "HS256 keyed with our public key",
            hmac_with(&public_key_b64, jsonwebtoken::Algorithm::HS256),
            &[Malformed],
        ),
        (
            "HS512 keyed with our public key, base64",
            hmac_with(
                B64.encode(&public_key_b64).as_bytes(),
                jsonwebtoken::Algorithm::HS512,
            ),
            &[Malformed],
        ),
        ("RS256 header", foreign_alg("RS256"), &[Malformed]),
        ("ES256 header", foreign_alg("ES256"), &[Malformed]),
        ("PS256 header", foreign_alg("PS256"), &[Malformed]),
        ("Ed25519 spelled out", foreign_alg("Ed25519"), &[Malformed]),
        // Tampering.
        (
            "bit flipped in header",
            format!("{}.{payload}.{signature}", flip(header, 5)),
            &[Malformed, BadSignature],
        ),
        (
            "bit flipped in payload",
            format!("{header}.{}.{signature}", flip(payload, 10)),
            &[Malformed, BadSignature],
        ),
        (
            "bit flipped in signature",
            format!("{header}.{payload}.{}", flip(signature, 3)),
            &[BadSignature],
        ),
        (
            "signature truncated",
            format!("{header}.{payload}.{}", &signature[..40]),
            &[BadSignature],
        ),
        (
            "signature empty",
            format!("{header}.{payload}."),
            &[BadSignature],
        ),
        (
            "signature of another token",
            format!("{header}.{}.{signature}", b64(&claims_text)),
            &[BadSignature],
        ),
        // Key material and key ids in the header.
        (
            "embedded jwk",
            with_header(&format!(
                r#"{{"typ":"at+jwt","alg":"EdDSA","kid":"{kid}","jwk":{{"kty":"OKP","crv":"Ed25519","x":"AAAA"}}}}"#
            )),
            &[Malformed],
        ),
        (
            "jku",
            with_header(&format!(
                r#"{{"typ":"at+jwt","alg":"EdDSA","kid":"{kid}","jku":"http://evil/keys"}}"#
            )),
            &[Malformed],
        ),
        (
            "x5u",
            with_header(&format!(
                r#"{{"typ":"at+jwt","alg":"EdDSA","kid":"{kid}","x5u":"http://evil/cert"}}"#
            )),
            &[Malformed],
        ),
        (
            "x5c",
            with_header(&format!(
                r#"{{"typ":"at+jwt","alg":"EdDSA","kid":"{kid}","x5c":["MIIB"]}}"#
            )),
            &[Malformed],
        ),
        (
            "crit",
            with_header(&format!(
                r#"{{"typ":"at+jwt","alg":"EdDSA","kid":"{kid}","crit":["exp"]}}"#
            )),
            &[Malformed],
        ),
        (
            "kid as a path",
            with_header(r#"{"typ":"at+jwt","alg":"EdDSA","kid":"../../../../etc/passwd"}"#),
            &[BadSignature],
        ),
        (
            "kid as SQL",
            with_header(r#"{"typ":"at+jwt","alg":"EdDSA","kid":"x' OR '1'='1"}"#),
            &[BadSignature],
        ),
        (
            "kid unknown",
            with_header(r#"{"typ":"at+jwt","alg":"EdDSA","kid":"another-key"}"#),
            &[BadSignature],
        ),
        (
            "kid missing",
            with_header(r#"{"typ":"at+jwt","alg":"EdDSA"}"#),
            &[Malformed],
        ),
        (
            "kid a number",
            with_header(r#"{"typ":"at+jwt","alg":"EdDSA","kid":7}"#),
            &[Malformed],
        ),
        // typ.
        (
            "typ missing",
            with_header(&format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#)),
            &[Malformed],
        ),
        (
            "typ JWT",
            with_header(&format!(r#"{{"typ":"JWT","alg":"EdDSA","kid":"{kid}"}}"#)),
            &[Malformed],
        ),
        (
            "typ id_token",
            with_header(&format!(
                r#"{{"typ":"id+jwt","alg":"EdDSA","kid":"{kid}"}}"#
            )),
            &[Malformed],
        ),
        // Claim types (exp/nbf as strings: CVE-2026-25537).
        (
            "exp a string",
            signed(json!({"exp": (now() + 600).to_string()})),
            &[Malformed],
        ),
        (
            "nbf a string",
            signed(json!({"nbf": (now() + 600).to_string()})),
            &[Malformed],
        ),
        ("exp 1e300", signed(json!({"exp": 1e300})), &[Malformed]),
        ("exp negative", signed(json!({"exp": -1})), &[Malformed]),
        (
            "exp a float",
            signed(json!({"exp": (now() + 600) as f64 + 0.5})),
            &[Malformed],
        ),
        ("exp null", signed(json!({"exp": null})), &[Malformed]),
        (
            "iat a string",
            signed(json!({"iat": now().to_string()})),
            &[Malformed],
        ),
        ("iat missing", signed(json!({"iat": null})), &[Malformed]),
        ("iss missing", signed(json!({"iss": null})), &[Malformed]),
        ("aud missing", signed(json!({"aud": null})), &[Malformed]),
        ("sub missing", signed(json!({"sub": null})), &[Malformed]),
        (
            "sub not a UUID",
            signed(json!({"sub": "alice"})),
            &[Malformed],
        ),
        (
            "jti missing",
            forger.sign(
                &forger.header(),
                &Forger::claims_like(&real, json!({"jti": null})),
            ),
            &[Malformed],
        ),
        (
            "jti not a UUID",
            forger.sign(
                &forger.header(),
                &Forger::claims_like(&real, json!({"jti": "1"})),
            ),
            &[Malformed],
        ),
        (
            "roles not a list",
            signed(json!({"roles": "admin"})),
            &[Malformed],
        ),
        (
            "duplicate sub",
            with_payload(&claims_text.replacen(
                '{',
                &format!(r#"{{"sub":"{}","#, uuid::Uuid::new_v4()),
                1,
            )),
            &[Malformed],
        ),
        (
            "claims not an object",
            with_payload("[1,2,3]"),
            &[Malformed],
        ),
        // Issuer and audience.
        (
            "iss wrong",
            signed(json!({"iss": "https://evil"})),
            &[BadSignature],
        ),
        (
            "aud wrong",
            signed(json!({"aud": "another-service"})),
            &[BadSignature],
        ),
        (
            "aud a list",
            signed(json!({"aud": ["authd", "evil"]})),
            &[Malformed],
        ),
        // Time.
        (
            "expired",
            signed(json!({"iat": now() - 900, "exp": now() - 60})),
            &[Expired],
        ),
        (
            "iat in the future",
            signed(json!({"iat": now() + 120, "exp": now() + 1020})),
            &[NotYetValid],
        ),
        (
            "nbf in the future",
            signed(json!({"nbf": now() + 120})),
            &[NotYetValid],
        ),
        // Encodings.
        (
            "padding on the payload",
            format!("{header}.{payload}==.{signature}"),
            &[Malformed, BadSignature],
        ),
        (
            "padding on the signature",
            format!("{header}.{payload}.{signature}=="),
            &[Malformed, BadSignature],
        ),
        (
            "whitespace inside",
            format!("{header}. {payload}.{signature}"),
            &[Malformed, BadSignature],
        ),
        (
            "trailing newline",
            format!("{real}\n"),
            &[Malformed, BadSignature],
        ),
        (
            "standard base64 characters",
            format!(
                "{header}.{}.{signature}",
                payload.replace('_', "/").replace('-', "+") + "+/"
            ),
            &[Malformed, BadSignature],
        ),
        ("two segments", format!("{header}.{payload}"), &[Malformed]),
        ("four segments", format!("{real}.{signature}"), &[Malformed]),
        (
            "five segments",
            format!("{real}.{payload}.{signature}"),
            &[Malformed],
        ),
        (
            "header not JSON",
            format!("{}.{payload}.{signature}", b64("not json")),
            &[Malformed],
        ),
        (
            "header JSON but not an object",
            format!("{}.{payload}.{signature}", b64("[]")),
            &[Malformed],
        ),
        ("just dots", "..".to_owned(), &[Malformed]),
        ("binary junk", "\u{0}\u{1}\u{2}".to_owned(), &[Malformed]),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());
    (cases, real)
}

async fn attack_table(backend: Backend) {
    let mut world = World::new(backend).await;
    let (cases, real) = attacks(&mut world).await;
    for (name, token, expected) in &cases {
        let answer = world
            .app
            .try_validate(token)
            .await
            .unwrap_or_else(|s| panic!("{name}: {s:?}"));
        assert!(!answer.valid, "{name}: validated");
        assert!(
            answer.user_id.is_empty() && answer.jti.is_empty(),
            "{name}: claims leaked"
        );
        assert!(
            expected.contains(&answer.reason()),
            "{name}: {:?}, expected {expected:?}",
            answer.reason()
        );
    }
    // The real token is untouched by all of this.
    assert!(world.app.validate(&real).await.valid);
}

async fn copies_of_a_revoked_token_stay_revoked_however_encoded(backend: Backend) {
    let mut world = World::new(backend).await;
    let login = world.alice_token().await;
    let forger = Forger::for_app(&world.app, &login.access_token);
    world.app.logout(&login.access_token).await.unwrap();
    let claims = Forger::claims_like(&login.access_token, json!({}));
    let kid = forger.kid().to_owned();

    // The same jti under other bytes: key order, whitespace, extra fields.
    let reordered = forger.sign_raw(
        &format!(r#"{{"kid":"{kid}","alg":"EdDSA","typ":"at+jwt"}}"#),
        &claims.to_string(),
    );
    let spaced = forger.sign_raw(
        &format!(r#"{{ "typ": "at+jwt", "alg": "EdDSA", "kid": "{kid}" }}"#),
        &serde_json::to_string_pretty(&claims).unwrap(),
    );
    let extra = forger.sign(
        &forger.header(),
        &Forger::claims_like(&login.access_token, json!({"x": 1})),
    );

    for token in [reordered, spaced, extra] {
        assert_ne!(token, login.access_token);
        assert_eq!(world.app.validate(&token).await.reason(), Revoked);
    }
}

on_both_backends!(
    attack_table,
    copies_of_a_revoked_token_stay_revoked_however_encoded,
);
