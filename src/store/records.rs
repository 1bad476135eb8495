//! What the store hands out and takes in, whichever backend runs: domain
//! types, parsed again when read back, so the use cases never convert.

use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;
use crate::domain::{Role, SessionId, UserId, Username};

/// A user as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user's id, the `sub` of its tokens.
    pub id: UserId,
    /// The name as spelled when the user was added.
    pub username: Username,
    /// The argon2 PHC string.
    pub password_hash: String,
    /// Roles copied into every token.
    pub roles: Vec<Role>,
    /// Set while the user is disabled.
    pub disabled_at: Option<OffsetDateTime>,
    /// Tokens issued before this instant are revoked.
    pub tokens_valid_after: Option<OffsetDateTime>,
    /// When the user was added.
    pub created_at: OffsetDateTime,
    /// When the user was last changed.
    pub updated_at: OffsetDateTime,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"[REDACTED]")
            .field("roles", &self.roles)
            .field("disabled_at", &self.disabled_at)
            .field("tokens_valid_after", &self.tokens_valid_after)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

impl UserRecord {
    /// The user's standing as the in-memory revocation state takes it.
    pub fn standing(&self) -> Revocation {
        Revocation::User {
            id: self.id,
            disabled: self.disabled_at.is_some(),
            tokens_valid_after: self.tokens_valid_after.map(super::unix_seconds_up),
        }
    }
}

/// A user to add.
pub struct NewUser<'a> {
    /// The new user's id.
    pub id: UserId,
    /// The new user's name.
    pub username: &'a Username,
    /// The argon2 PHC string of its password.
    pub password_hash: &'a str,
    /// Its roles.
    pub roles: &'a [Role],
}

/// Adding a user failed.
#[derive(Debug, thiserror::Error)]
pub enum AddUserError {
    /// A user of that name (in any letter case) exists.
    #[error("a user with that name already exists")]
    NameTaken,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one purge of expired revocations did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeOutcome {
    /// This many expired rows were deleted.
    Removed(u64),
    /// Another process holds the purge lock; nothing was done.
    Busy,
}

/// One fact that revokes tokens, as the store reports it: what the
/// in-memory revocation state is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The token `jti` was logged out; forget it after `expires_at`
    /// (Unix seconds), when the token can no longer validate anyway.
    Token {
        /// The token's id.
        jti: Uuid,
        /// Unix seconds.
        expires_at: i64,
    },
    /// A user's standing now: tokens issued before `tokens_valid_after`
    /// (Unix seconds) are revoked, and all of them while it is disabled.
    User {
        /// The user.
        id: UserId,
        /// Whether the user is disabled.
        disabled: bool,
        /// The cut-off, Unix seconds.
        tokens_valid_after: Option<i64>,
    },
    /// The user was deleted: all its tokens are revoked.
    UserDeleted {
        /// The user.
        id: UserId,
    },
    /// The session `id` ended: every access token it issued is revoked.
    /// Forget it after `expires_at` (Unix seconds), when the last of them
    /// can no longer validate anyway.
    Session {
        /// The session.
        id: SessionId,
        /// Unix seconds.
        expires_at: i64,
    },
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session's id, the `sid` of its access tokens.
    pub id: SessionId,
    /// Whose it is.
    pub user_id: UserId,
    /// When the Login that started it happened.
    pub created_at: OffsetDateTime,
    /// When its newest refresh token was issued.
    pub last_refreshed_at: OffsetDateTime,
    /// When the newest refresh token lapses unless used.
    pub expires_at: OffsetDateTime,
    /// The latest `expires_at` may ever be.
    pub max_expires_at: OffsetDateTime,
    /// Set once the session has ended.
    pub revoked_at: Option<OffsetDateTime>,
    /// The client's address at Login.
    pub client_address: Option<String>,
    /// The client's `user-agent` at Login.
    pub user_agent: Option<String>,
    /// The generation of the newest refresh token (the first is 1).
    pub generation: u64,
    /// The latest `exp` plus leeway of an access token it issued.
    pub access_expires_at: OffsetDateTime,
}

/// Which of a user's sessions to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionSelection {
    /// This one, whether it has ended already or not.
    One(SessionId),
    /// Every live one but this.
    AllBut(SessionId),
    /// Every live one.
    All,
}

/// The failed Logins counted against one key (a canonical username): what
/// the login throttle keeps in the `failed_logins` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedLogins {
    /// Attempts counted and not cleared by a success.
    pub failures: u32,
    /// When the latest was counted.
    pub last_failed_at: OffsetDateTime,
    /// Attempts are refused until this instant.
    pub blocked_until: Option<OffsetDateTime>,
}

/// What the instances on one database agree on, as recorded (the
/// `deployment` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRecord {
    /// The `iss` of every instance's tokens.
    pub issuer: String,
    /// The `aud` of every instance's tokens.
    pub audience: String,
    /// The longest access-token lifetime any instance has started with.
    pub max_access_token_ttl: std::time::Duration,
}

/// A signing key as stored: its public half in the clear, its private half
/// sealed with the key-encryption key, and the instants of its lifecycle.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The key id (RFC 7638 thumbprint).
    pub kid: String,
    /// The Ed25519 public key, 32 bytes.
    pub public_key: Vec<u8>,
    /// The PKCS#8 private key, sealed.
    pub sealed_private_key: Vec<u8>,
    /// The id of the key-encryption key that sealed it.
    pub sealed_by: String,
    /// When the key was made.
    pub created_at: OffsetDateTime,
    /// From this instant the key signs new tokens.
    pub activates_at: OffsetDateTime,
    /// From this instant it no longer does (its successor's activation).
    pub retires_at: Option<OffsetDateTime>,
    /// Set when the key was revoked: nothing it signed is valid.
    pub revoked_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("sealed_by", &self.sealed_by)
            .field("activates_at", &self.activates_at)
            .field("retires_at", &self.retires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// One change to the signing keys, made with others in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEdit {
    /// Adds a key.
    Insert(StoredKey),
    /// Sets the lifecycle instants of the key of the same kid (its
    /// material never changes).
    Reschedule(StoredKey),
}
