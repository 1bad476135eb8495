//! The code generated from `auth.v1`, for calls this crate does not wrap.
//! The messages that carry passwords or tokens print them redacted.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

use std::fmt;

tonic::include_proto!("auth.v1");

/// `Debug` for a message, showing the fields named and redacting the rest.
macro_rules! redacted_debug {
    ($message:ident { $($shown:ident),* } hiding { $($hidden:ident),* }) => {
        impl fmt::Debug for $message {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($message))
                    $(.field(stringify!($shown), &self.$shown))*
                    $(.field(stringify!($hidden), &"[REDACTED]"))*
                    .finish()
            }
        }
    };
}

redacted_debug!(LoginRequest { username } hiding { password });
redacted_debug!(LoginResponse {
    token_type, expires_in, expires_at, user_id, refresh_expires_at, session_id
} hiding { access_token, refresh_token });
redacted_debug!(LogoutRequest { scope } hiding { access_token });
redacted_debug!(RefreshRequest {} hiding { refresh_token });
redacted_debug!(ValidateTokenRequest {} hiding { access_token });
