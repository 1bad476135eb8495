//! What the handlers do with a request's bytes before any use case runs:
//! decode the message, parse its fields into domain values. Either may
//! refuse; neither may panic.

#![no_main]

use authd::{
    domain::{AccessToken, Password, Username},
    grpc::pb::{LoginRequest, LogoutRequest, ValidateTokenRequest},
};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(login) = LoginRequest::decode(data) {
        if let Ok(name) = Username::parse(login.username) {
            let _ = name.key();
        }
        let _ = Password::parse(login.password);
    }
    if let Ok(logout) = LogoutRequest::decode(data) {
        let _ = AccessToken::parse(logout.access_token);
    }
    if let Ok(validate) = ValidateTokenRequest::decode(data) {
        let _ = AccessToken::parse(validate.access_token);
    }
});
