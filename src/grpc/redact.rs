//! `Debug` for the messages that carry passwords or tokens: every field but
//! the secret one is shown.

use std::fmt;

use super::{
    admin_pb::{CreateUserRequest, SetPasswordRequest},
    pb::{LoginRequest, LoginResponse, LogoutRequest, RefreshRequest, ValidateTokenRequest},
};

const REDACTED: &str = "[REDACTED]";

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginResponse")
            .field("access_token", &REDACTED)
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("expires_at", &self.expires_at)
            .field("user_id", &self.user_id)
            .field("refresh_token", &REDACTED)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("session_id", &self.session_id)
            .finish()
    }
}

impl fmt::Debug for LogoutRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogoutRequest")
            .field("access_token", &REDACTED)
            .field("scope", &self.scope())
            .finish()
    }
}

impl fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshRequest")
            .field("refresh_token", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for ValidateTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateTokenRequest")
            .field("access_token", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("username", &self.username)
            .field("password", &REDACTED)
            .field("roles", &self.roles)
            .finish()
    }
}

impl fmt::Debug for SetPasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetPasswordRequest")
            .field("user", &self.user)
            .field("password", &REDACTED)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let secret = "s3cr3t-value";
        let shown = [
            format!(
                "{:?}",
                LoginRequest {
                    username: "alice".to_owned(),
                    password: secret.to_owned(),
                }
            ),
            format!(
                "{:?}",
                LoginResponse {
                    access_token: secret.to_owned(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                LoginResponse {
                    refresh_token: secret.to_owned(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                LogoutRequest {
                    access_token: secret.to_owned(),
                    scope: 0,
                }
            ),
            format!(
                "{:?}",
                RefreshRequest {
                    refresh_token: secret.to_owned(),
                }
            ),
            format!(
                "{:?}",
                ValidateTokenRequest {
                    access_token: secret.to_owned(),
                }
            ),
            format!(
                "{:?}",
                CreateUserRequest {
                    username: "bob".to_owned(),
                    password: secret.to_owned(),
                    roles: vec!["reader".to_owned()],
                }
            ),
            format!(
                "{:?}",
                SetPasswordRequest {
                    user: None,
                    password: secret.to_owned(),
                }
            ),
        ];
        for text in &shown {
            assert!(!text.contains(secret), "{text}");
            assert!(text.contains(REDACTED), "{text}");
        }
        assert!(shown[0].contains("alice"));
    }
}
