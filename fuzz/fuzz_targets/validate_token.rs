//! Token verification over arbitrary text: never a panic, never a token
//! that verifies (the fuzzer cannot sign with a key made at start-up).

#![no_main]

use std::sync::LazyLock;

use authd::auth::{AccessTokens, SigningKey, TokenSettings};
use libfuzzer_sys::fuzz_target;

static TOKENS: LazyLock<AccessTokens> = LazyLock::new(|| {
    let path = std::env::temp_dir().join(format!("authd-fuzz-key-{}.pem", std::process::id()));
    let key = SigningKey::load_or_generate(&path).expect("a signing key");
    let _ = std::fs::remove_file(&path);
    AccessTokens::new(
        key,
        TokenSettings::default(),
    )
});

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(TOKENS.verify(text).is_err(), "a token verified: {text}");
    }
});
