//! Account management, for operators at the command line and for the admin
//! API alike: add, look up, list, change roles or password, disable,
//! enable, delete, and a user's sessions.

use std::sync::Arc;

use time::OffsetDateTime;

use super::{PasswordPolicy, Passwords, RevocationState, revocation_cutoff};
use crate::{
    domain::{Password, Role, UserId, UserRef, Username},
    store::{NewUser, Revocation, SessionRecord, Storage as _, Store, StoreError, UserRecord},
};

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// No such user.
    #[error("no user {0}")]
    NotFound(UserRef),
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

/// One page of users, in the order of their names' keys.
#[derive(Debug, Clone)]
pub struct UserPage {
    /// The users of this page.
    pub users: Vec<UserRecord>,
    /// Where the next page starts (the last key of this one), or `None`
    /// when this is the last.
    pub next: Option<String>,
}

/// How many times a role change is tried again after another change of the
/// same user's roles won the race.
const MAX_ROLE_ATTEMPTS: usize = 8;

/// The account use cases.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: Store,
    passwords: Passwords,
    policy: PasswordPolicy,
    /// Where a serving instance applies the revocations it makes, so that
    /// its own answers change with the call that changed them.
    revocations: Option<Arc<RevocationState>>,
}

impl Accounts {
    /// Account management over `store`, hashing with `passwords`, new
    /// passwords held to `policy`. Other instances learn of the changes
    /// through the store's revocation feed.
    pub fn new(store: Store, passwords: Passwords, policy: PasswordPolicy) -> Self {
        Self {
            store,
            passwords,
            policy,
            revocations: None,
        }
    }

    /// The same, applying each revocation to `state` as soon as it is
    /// committed: for the instance that serves the admin API.
    #[must_use]
    pub fn applying_to(mut self, state: Arc<RevocationState>) -> Self {
        self.revocations = Some(state);
        self
    }

    fn apply(&self, revocation: Revocation) {
        if let Some(state) = &self.revocations {
            state.apply(revocation);
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

    /// Adds a user with `roles` (each once, in the order first given).
    ///
    /// # Errors
    /// [`AccountError::NameTaken`] when the name is in use in any case;
    /// [`AccountError::PasswordTooShort`] when the policy refuses it.
    pub async fn add(
        &self,
        username: &Username,
        password: &Password,
        roles: &[Role],
    ) -> Result<UserRecord, AccountError> {
        let hash = self.hash_new(password).await?;
        self.store
            .add_user(NewUser {
                id: UserId::generate(),
                username,
                password_hash: &hash,
                roles: &distinct(roles),
            })
            .await
            .map_err(|err| match err {
                crate::store::AddUserError::NameTaken => {
                    AccountError::NameTaken(username.to_string())
                }
                crate::store::AddUserError::Store(err) => AccountError::Store(err),
            })
    }

    /// The user `user` names.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user.
    pub async fn get(&self, user: &UserRef) -> Result<UserRecord, AccountError> {
        found(user, self.store.find_user(user).await?)
    }

    /// At most `limit` users (at least one), in the order of their names'
    /// keys, from just after the key `after`.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn list(&self, after: Option<&str>, limit: u32) -> Result<UserPage, AccountError> {
        let limit = limit.max(1);
        // One more than asked says whether a next page exists, so the last
        // page never hands out a token that leads to an empty one.
        let mut users = self
            .store
            .list_users(after, limit.saturating_add(1))
            .await?;
        let more = users.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        users.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next = more
            .then(|| users.last().map(|user| user.username.key()))
            .flatten();
        Ok(UserPage { users, next })
    }

    /// Gives `user` exactly `roles` (each once, in the order first given).
    /// Taking a role away revokes the user's tokens issued until now and
    /// ends its sessions, since those tokens still carry it; adding roles
    /// alone leaves them be (they reach the next tokens).
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user;
    /// [`AccountError::Store`] with [`StoreError::Contended`] when other
    /// role changes of the same user keep winning.
    pub async fn set_roles(
        &self,
        user: &UserRef,
        roles: &[Role],
    ) -> Result<UserRecord, AccountError> {
        let roles = distinct(roles);
        for _ in 0..MAX_ROLE_ATTEMPTS {
            let current = self.get(user).await?;
            let removes = current.roles.iter().any(|held| !roles.contains(held));
            let cutoff = removes.then(|| revocation_cutoff(OffsetDateTime::now_utc()));
            if let Some(changed) = self
                .store
                .set_roles(current.id, &current.roles, &roles, cutoff)
                .await?
            {
                if removes {
                    self.apply(changed.standing());
                }
                return Ok(changed);
            }
        }
        Err(AccountError::Store(StoreError::Contended))
    }

    /// Sets a new password and revokes every token issued before now.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user;
    /// [`AccountError::PasswordTooShort`] when the policy refuses it.
    pub async fn change_password(
        &self,
        user: &UserRef,
        password: &Password,
    ) -> Result<UserRecord, AccountError> {
        let hash = self.hash_new(password).await?;
        let cutoff = revocation_cutoff(OffsetDateTime::now_utc());
        let changed = found(user, self.store.set_password(user, &hash, cutoff).await?)?;
        self.apply(changed.standing());
        Ok(changed)
    }

    /// Disables a user and revokes every token issued before now.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user.
    pub async fn disable(&self, user: &UserRef) -> Result<UserRecord, AccountError> {
        let cutoff = revocation_cutoff(OffsetDateTime::now_utc());
        let changed = found(user, self.store.disable_user(user, cutoff).await?)?;
        self.apply(changed.standing());
        Ok(changed)
    }

    /// Lets a disabled user log in again; its old tokens stay revoked.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user.
    pub async fn enable(&self, user: &UserRef) -> Result<UserRecord, AccountError> {
        let changed = found(user, self.store.enable_user(user).await?)?;
        self.apply(changed.standing());
        Ok(changed)
    }

    /// Deletes a user; its tokens stop validating.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user.
    pub async fn delete(&self, user: &UserRef) -> Result<UserId, AccountError> {
        let id = found(user, self.store.delete_user(user).await?)?;
        self.apply(Revocation::UserDeleted { id });
        Ok(id)
    }

    /// The live sessions of a user, newest first.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user.
    pub async fn sessions(&self, user: &UserRef) -> Result<Vec<SessionRecord>, AccountError> {
        let record = self.get(user).await?;
        Ok(self
            .store
            .list_sessions(record.id, OffsetDateTime::now_utc())
            .await?)
    }

    /// Ends every session of a user and revokes every token issued to it
    /// until now, as a Logout of scope USER does.
    ///
    /// # Errors
    /// [`AccountError::NotFound`] when there is no such user.
    pub async fn logout_everywhere(&self, user: &UserRef) -> Result<(), AccountError> {
        let record = self.get(user).await?;
        let cutoff = revocation_cutoff(OffsetDateTime::now_utc());
        let standing = found(user, self.store.cut_off_user(record.id, cutoff).await?)?;
        self.apply(standing);
        Ok(())
    }
}

fn found<T>(user: &UserRef, found: Option<T>) -> Result<T, AccountError> {
    found.ok_or_else(|| AccountError::NotFound(user.clone()))
}

/// `roles` without repeats, in the order first given.
fn distinct(roles: &[Role]) -> Vec<Role> {
    let mut unique: Vec<Role> = Vec::with_capacity(roles.len());
    for role in roles {
        if !unique.contains(role) {
            unique.push(role.clone());
        }
    }
    unique
}
