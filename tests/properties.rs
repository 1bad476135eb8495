//! Property tests, bounded for CI (256 cases each unless PROPTEST_CASES
//! says otherwise), over what an attacker controls: the token text given to
//! validation, and the bytes of a request message before the handlers parse
//! it. Nothing here may panic, and no token but the one issued may verify.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use authd::{
    auth::{AccessTokens, KeyRing, SigningKey, TokenSettings},
    domain::{AccessToken, Password, Role, SessionId, UserId, Username},
    grpc::pb::{LoginRequest, LogoutRequest, ValidateTokenRequest},
};
use proptest::prelude::*;
use prost::Message as _;

/// A token service with a key of its own, and one token it issued.
static TOKENS: LazyLock<(AccessTokens, String)> = LazyLock::new(|| {
    let key = SigningKey::generate().unwrap();
    let ring = KeyRing::single(key, Duration::from_secs(905));
    let tokens = AccessTokens::new(Arc::new(ring), TokenSettings::default());
    let issued = tokens
        .issue(
            UserId::generate(),
            SessionId::generate(),
            "alice",
            &[Role::parse("reader").unwrap()],
            jsonwebtoken::get_current_timestamp(),
        )
        .unwrap();
    let text = secrecy::ExposeSecret::expose_secret(&issued.token).to_owned();
    (tokens, text)
});

/// Text shaped like a JWT: dot-separated base64url-ish segments.
/// Whether `message` survives encoding and decoding unchanged.
fn reencodes<M: prost::Message + Default + PartialEq>(message: &M) -> bool {
    M::decode(message.encode_to_vec().as_slice()).is_ok_and(|again| again == *message)
}

fn jwt_shaped() -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Za-z0-9_=+/-]{0,120}", 1..6).prop_map(|parts| parts.join("."))
}

proptest! {
    #[test]
    fn no_arbitrary_text_verifies(text in any::<String>()) {
        let (tokens, _) = &*TOKENS;
        prop_assert!(tokens.verify(&text).is_err());
    }

    #[test]
    fn no_jwt_shaped_text_verifies(text in jwt_shaped()) {
        let (tokens, _) = &*TOKENS;
        prop_assert!(tokens.verify(&text).is_err());
    }

    /// A real token with one character replaced, anywhere (header,
    /// payload, signature, the dots), never verifies.
    #[test]
    fn a_real_token_changed_anywhere_does_not_verify(
        at in any::<prop::sample::Index>(),
        with in prop::char::range('!', '~'),
    ) {
        let (tokens, real) = &*TOKENS;
        prop_assert!(tokens.verify(real).is_ok());
        let mut chars: Vec<char> = real.chars().collect();
        let at = at.index(chars.len());
        prop_assume!(chars[at] != with);
        chars[at] = with;
        let changed: String = chars.into_iter().collect();
        prop_assert!(tokens.verify(&changed).is_err(), "{changed}");
    }

    /// A real token cut short or lengthened never verifies.
    #[test]
    fn a_real_token_cut_or_extended_does_not_verify(
        cut in any::<prop::sample::Index>(),
        tail in "[A-Za-z0-9_.-]{1,8}",
    ) {
        let (tokens, real) = &*TOKENS;
        let cut = cut.index(real.len());
        prop_assert!(tokens.verify(&real[..cut]).is_err());
        let extended = format!("{real}{tail}");
        prop_assert!(tokens.verify(&extended).is_err());
    }

    /// What the handlers do with a request's bytes: decode the message,
    /// then parse its fields into domain values. Either step may refuse;
    /// neither may panic; what decodes re-encodes to an equal message.
    #[test]
    fn request_bytes_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(login) = LoginRequest::decode(bytes.as_slice()) {
            prop_assert!(reencodes(&login));
            let _ = Username::parse(login.username).map(|name| name.key());
            let _ = Password::parse(login.password);
        }
        if let Ok(logout) = LogoutRequest::decode(bytes.as_slice()) {
            prop_assert!(reencodes(&logout));
            let _ = AccessToken::parse(logout.access_token);
        }
        if let Ok(validate) = ValidateTokenRequest::decode(bytes.as_slice()) {
            prop_assert!(reencodes(&validate));
            let text = validate.access_token.clone();
            if AccessToken::parse(validate.access_token).is_ok() {
                prop_assert!(TOKENS.0.verify(&text).is_err());
            }
        }
    }

    /// Names and passwords of any text parse or are refused; the key of a
    /// name is its own key (matching by key is stable).
    #[test]
    fn any_name_or_password_parses_or_is_refused(text in any::<String>()) {
        if let Ok(name) = Username::parse(text.clone()) {
            let key = name.key();
            if let Ok(again) = Username::parse(key.clone()) {
                prop_assert_eq!(again.key(), key);
            }
        }
        let _ = Password::parse(text);
    }
}
