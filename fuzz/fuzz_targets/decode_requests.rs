//! What the handlers do with a request's bytes before any use case runs:
//! decode the message, parse its fields into domain values. Either may
//! refuse; neither may panic. What decodes re-encodes to an equal message,
//! so no field is read differently from what a client meant.

#![no_main]

use authd::{
    domain::{AccessToken, Password, Username},
    grpc::pb::{LoginRequest, LogoutRequest, ValidateTokenRequest},
};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

/// Whether `message` survives encoding and decoding unchanged.
fn reencodes<M: prost::Message + Default + PartialEq>(message: &M) -> bool {
    M::decode(message.encode_to_vec().as_slice()).is_ok_and(|again| again == *message)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(login) = LoginRequest::decode(data) {
        assert!(reencodes(&login), "a LoginRequest changed when re-encoded");
        if let Ok(name) = Username::parse(login.username) {
            let _ = name.key();
        }
        let _ = Password::parse(login.password);
    }
    if let Ok(logout) = LogoutRequest::decode(data) {
        assert!(reencodes(&logout), "a LogoutRequest changed when re-encoded");
        let _ = AccessToken::parse(logout.access_token);
    }
    if let Ok(validate) = ValidateTokenRequest::decode(data) {
        assert!(
            reencodes(&validate),
            "a ValidateTokenRequest changed when re-encoded"
        );
        let _ = AccessToken::parse(validate.access_token);
    }
});
