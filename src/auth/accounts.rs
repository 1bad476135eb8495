//! Account management for operators: add, change password, disable,
//! enable, delete, list, and a user's sessions.

use time::OffsetDateTime;

use super::{PasswordPolicy, Passwords, revocation_cutoff};
use crate::{
    domain::{Password, Role, UserId, Username},
    store::{NewUser, SessionRecord, Storage as _, Store, StoreError, UserRecord},
};

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// No user of that name.
    #[error("no user named {0:?}")]
    NotFound(String),
    /// A user of that name exists, in some letter case.
    #[error("a user named {0:?} already exists")]
    NameTaken(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The new password breaks the policy.
    #[error("the password must have at least {0} characters")]
    PasswordTooShort(usize),
    /// Hashing failed.
    #[error("cannot hash the password")]
    Hashing(#[source] super::PasswordError),
}

/// The account use cases.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: Store,
    passwords: Passwords,
    policy: PasswordPolicy,
}

impl Accounts {
    /// Account management over `store`, hashing with `passwords`, new
    /// passwords held to `policy`.
    pub fn new(store: Store, passwords: Passwords, policy: PasswordPolicy) -> Self {
        Self {
            store,
            passwords,
            policy,
        }
    }

    /// Hashes a new password that meets the policy.
    async fn hash_new(&self, password: &Password) -> Result<String, AccountError> {
        if password.chars() < self.policy.min_chars {
            return Err(AccountError::PasswordTooShort(self.policy.min_chars));
        }
        self.passwords
            .hash(password)
            .await
            .map_err(AccountError::Hashing)
    }

    /// Adds a user.
    ///
    /// # Errors
    /// [`AccountError::NameTaken`] when the name is in use in any case;
    /// [`AccountError::PasswordTooShort`] when the policy refuses it.
    pub async fn add(
        &self,
        username: &Username,
        password: &Password,
        roles: &[Role],
    ) -> Result<UserId, AccountError> {
        let hash = self.hash_new(password).await?;
        let id = UserId::generate();
        self.store
            .add_user(NewUser {
                id,
                username,
                password_hash: &hash,
                roles,
            })
            .await
            .map_err(|err| match err {
                crate::store::AddUserError::NameTaken => {
                    AccountError::NameTaken(username.to_string())
                }
                crate::store::AddUserError::Store(err) => AccountError::Store(err),
            })?;
        Ok(id)
    }

    /// Sets a new password and revokes every token issued before now.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user;
    /// [`AccountError::PasswordTooShort`] when the policy refuses it.
    pub async fn change_password(
        &self,
        username: &Username,
        password: &Password,
    ) -> Result<(), AccountError> {
        let hash = self.hash_new(password).await?;
        let cutoff = revocation_cutoff(OffsetDateTime::now_utc());
        found(
            username,
            self.store.set_password(username, &hash, cutoff).await?,
        )
    }

    /// Disables a user and revokes every token issued before now.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user.
    pub async fn disable(&self, username: &Username) -> Result<(), AccountError> {
        let cutoff = revocation_cutoff(OffsetDateTime::now_utc());
        found(username, self.store.disable_user(username, cutoff).await?)
    }

    /// Lets a disabled user log in again; its old tokens stay revoked.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user.
    pub async fn enable(&self, username: &Username) -> Result<(), AccountError> {
        found(username, self.store.enable_user(username).await?)
    }

    /// Deletes a user; its tokens stop validating.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user.
    pub async fn delete(&self, username: &Username) -> Result<(), AccountError> {
        found(username, self.store.delete_user(username).await?)
    }

    /// Every user, by name.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn list(&self) -> Result<Vec<UserRecord>, AccountError> {
        Ok(self.store.list_users().await?)
    }

    /// The live sessions of a user, newest first.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user.
    pub async fn sessions(&self, username: &Username) -> Result<Vec<SessionRecord>, AccountError> {
        let user = self.named(username).await?;
        Ok(self
            .store
            .list_sessions(user.id, OffsetDateTime::now_utc())
            .await?)
    }

    /// Ends every session of a user and revokes every token issued to it
    /// until now, as a Logout of scope USER does.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user.
    pub async fn logout_everywhere(&self, username: &Username) -> Result<(), AccountError> {
        let user = self.named(username).await?;
        let cutoff = revocation_cutoff(OffsetDateTime::now_utc());
        let standing = self.store.cut_off_user(user.id, cutoff).await?;
        found(username, standing.is_some())
    }

    async fn named(&self, username: &Username) -> Result<UserRecord, AccountError> {
        self.store
            .find_user_by_name(username)
            .await?
            .ok_or_else(|| AccountError::NotFound(username.to_string()))
    }
}

fn found(username: &Username, found: bool) -> Result<(), AccountError> {
    if found {
        Ok(())
    } else {
        Err(AccountError::NotFound(username.to_string()))
    }
}
