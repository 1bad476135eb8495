//! The signing keys of the deployment: kept in the store, sealed with the
//! key-encryption key, followed by every instance, rotated and revoked
//! here.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use time::OffsetDateTime;

use super::keys::{
    KeyEncryptionKey, KeyInfo, KeyRing, KeyState, PublicKey, RevokeRefusal, RingKey, Rotation,
    SigningKey, apply_edits, explain_open_failure, in_activation_order, is_rotation_due,
    missing_file, plan_bootstrap, plan_revoke, plan_rotation,
};
use super::sessions::RefreshTokenKey;
use crate::store::{Storage as _, Store, StoreError, StoredKey};

/// Where the key material comes from.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// The key-encryption key, generated (mode 0600) on first start.
    pub encryption_key_file: PathBuf,
    /// A signing key from before keys were kept in the database: it becomes
    /// the first active key, with its `kid`, when the database holds none.
    pub signing_key_file: PathBuf,
}

/// A key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The revocation was refused, and why.
    #[error(transparent)]
    Refused(#[from] RevokeRefusal),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key could not be made or sealed.
    #[error("cannot make a signing key")]
    Internal(#[source] anyhow::Error),
}

/// What the ring was last built from.
#[derive(Debug, Default)]
struct Installed {
    /// The rows: a read that finds the same ones changes nothing.
    rows: Vec<StoredKey>,
    /// Counts the edits of this process installed: a read begun before one
    /// of them may predate it, and is not installed over it.
    edits: u64,
}

/// The key set, as this process follows it.
#[derive(Debug)]
pub struct SigningKeys {
    store: Store,
    kek: KeyEncryptionKey,
    /// The key-encryption key's file, for messages.
    kek_file: PathBuf,
    ring: Arc<KeyRing>,
    /// The rows the ring was built from, and how many edits of this
    /// process were installed.
    installed: Mutex<Installed>,
    /// Held by an edit of this process from its transaction to its install,
    /// so that edits install in the order they committed.
    editing: tokio::sync::Mutex<()>,
}

impl SigningKeys {
    /// Opens the key set of `store`: reads (or, for a database without
    /// keys, generates) the key-encryption key; gives a database without
    /// keys its first one (the signing key file's, when there is one); and
    /// unseals every key. Retired keys stay published for `retention`.
    ///
    /// # Errors
    /// When the key-encryption key is missing while the database holds
    /// keys, or does not unseal them; or the database fails.
    pub async fn open(store: Store, files: &KeyFiles, retention: Duration) -> anyhow::Result<Self> {
        let mut existing = store
            .signing_keys()
            .await
            .context("cannot read the signing keys")?;
        in_activation_order(&mut existing);
        let kek_file = files.encryption_key_file.clone();
        let kek = match KeyEncryptionKey::load(&kek_file)? {
            Some(kek) => kek,
            None if existing.is_empty() => KeyEncryptionKey::generate_into(&kek_file)?,
            None => return Err(missing_file(&kek_file)),
        };
        let keys = Self {
            store,
            kek,
            kek_file,
            ring: Arc::new(KeyRing::new(retention)),
            installed: Mutex::new(Installed::default()),
            editing: tokio::sync::Mutex::new(()),
        };
        let rows = keys.bootstrap(&files.signing_key_file, existing).await?;
        keys.install(rows, true, None)?;
        Ok(keys)
    }

    /// Gives a database without keys its first, unless it has some.
    async fn bootstrap(
        &self,
        signing_key_file: &Path,
        existing: Vec<StoredKey>,
    ) -> anyhow::Result<Vec<StoredKey>> {
        if !existing.is_empty() {
            // Not needed any more: read only to warn about a file someone
            // may expect to be used, and never an obstacle to starting.
            if let Ok(Some(legacy)) = SigningKey::load_if_present(signing_key_file)
                && !existing.iter().any(|key| key.kid == legacy.kid())
            {
                tracing::warn!(
                    path = %signing_key_file.display(),
                    kid = legacy.kid(),
                    "the signing key file is not read: the database holds the signing keys \
                     (change them with `authd keys rotate`)"
                );
            }
            return Ok(existing);
        }
        let (key, imported) = match SigningKey::load_if_present(signing_key_file)? {
            Some(key) => (key, true),
            None => (SigningKey::generate()?, false),
        };
        let kid = key.kid().to_owned();
        let new = self.stored(&key)?;
        let now = OffsetDateTime::now_utc();
        let (rows, made) = self
            .store
            .edit_signing_keys(move |rows| {
                let edits = plan_bootstrap(&rows, new, now);
                let made = !edits.is_empty();
                let rows = apply_edits(rows, &edits);
                (edits, (rows, made))
            })
            .await
            .context("cannot store the first signing key")?;
        if made && imported {
            tracing::info!(%kid, path = %signing_key_file.display(),
                "the signing key file is now the first active key in the database");
        } else if made {
            tracing::info!(%kid, "generated the first signing key");
        }
        Ok(rows)
    }

    /// The in-memory key set tokens are signed and verified with.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.clone()
    }

    /// The key refresh tokens are made and checked with, derived from the
    /// key-encryption key: every instance sharing the database has it.
    pub fn refresh_token_key(&self) -> RefreshTokenKey {
        RefreshTokenKey::new(self.kek.refresh_token_key())
    }

    /// The key page tokens are made and checked with, derived from the
    /// key-encryption key as the refresh-token key is.
    pub fn page_token_key(&self) -> aws_lc_rs::hmac::Key {
        self.kek.page_token_key()
    }

    /// The state of each key now, of those the ring was last built from.
    pub fn states(&self) -> Vec<KeyState> {
        let now = OffsetDateTime::now_utc();
        let retention = self.ring.retention();
        self.lock_installed()
            .rows
            .iter()
            .map(|row| KeyState::of(row, now, retention))
            .collect()
    }

    /// The revoked keys among those the ring was last built from, each with
    /// the instant (Unix seconds) after which no token it signed can be
    /// current.
    pub fn revoked(&self) -> Vec<(String, i64)> {
        let retention = self.ring.retention();
        self.lock_installed()
            .rows
            .iter()
            .filter_map(|row| {
                let at = row.revoked_at?;
                Some((row.kid.clone(), (at + retention).unix_timestamp()))
            })
            .collect()
    }

    /// Reads the keys again and installs them when they changed. A key that
    /// does not unseal still verifies; it cannot sign here.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails: the ring stays as it was.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let edits = self.lock_installed().edits;
        let mut rows = self.store.signing_keys().await?;
        in_activation_order(&mut rows);
        if let Err(err) = self.install(rows, false, Some(edits)) {
            tracing::error!(error = %err, "cannot use the signing keys");
        }
        Ok(())
    }

    /// Schedules a new key: published now, signing after `lead`, when the
    /// active one retires.
    ///
    /// # Errors
    /// [`KeyError`] when the key cannot be made or the database fails.
    pub async fn rotate(&self, lead: Duration) -> Result<Rotation, KeyError> {
        self.rotate_when(lead, None).await
    }

    /// Rotates as [`SigningKeys::rotate`] does when the active key has
    /// signed for `interval`; however many instances ask at once, one
    /// rotation happens.
    ///
    /// # Errors
    /// [`KeyError`] when the key cannot be made or the database fails.
    pub async fn rotate_if_due(
        &self,
        interval: Duration,
        lead: Duration,
    ) -> Result<Rotation, KeyError> {
        // Asked of the keys as last read, so that a check costs no write;
        // the rotation asks again under the lock.
        let due = is_rotation_due(
            &self.lock_installed().rows,
            OffsetDateTime::now_utc(),
            interval,
        );
        if !due {
            return Ok(Rotation::NotDue);
        }
        self.rotate_when(lead, Some(interval)).await
    }

    async fn rotate_when(
        &self,
        lead: Duration,
        due_after: Option<Duration>,
    ) -> Result<Rotation, KeyError> {
        let key = SigningKey::generate().map_err(KeyError::Internal)?;
        let new = self.stored(&key).map_err(KeyError::Internal)?;
        let _editing = self.editing.lock().await;
        let now = OffsetDateTime::now_utc();
        let (rotation, rows) = self
            .store
            .edit_signing_keys(move |rows| {
                let (edits, rotation) = plan_rotation(&rows, new, now, lead, due_after);
                let rows = apply_edits(rows, &edits);
                (edits, (rotation, rows))
            })
            .await?;
        if let Rotation::Scheduled { kid, activates_at } = &rotation {
            tracing::info!(%kid, %activates_at, "rotated the signing key");
            self.install_or_log(rows);
        }
        Ok(rotation)
    }

    /// Revokes the key `kid`: it leaves the key set at once here, and on
    /// every instance within the bound of a revocation. Returns the key
    /// made active in its place, when it was the active one.
    ///
    /// # Errors
    /// [`KeyError::Refused`] for an unknown or revoked key, or the only one
    /// that can sign; [`KeyError::Store`] when the database fails.
    pub async fn revoke(&self, kid: &str) -> Result<Option<String>, KeyError> {
        let _editing = self.editing.lock().await;
        let now = OffsetDateTime::now_utc();
        let wanted = kid.to_owned();
        let (outcome, rows) = self
            .store
            .edit_signing_keys(move |rows| {
                let (edits, outcome) = plan_revoke(&rows, &wanted, now);
                let rows = apply_edits(rows, &edits);
                (edits, (outcome, rows))
            })
            .await?;
        let promoted = outcome?;
        tracing::warn!(%kid, promoted = ?promoted, "revoked a signing key");
        self.install_or_log(rows);
        Ok(promoted)
    }

    /// Every stored key as of now, for `authd keys list`; needs no
    /// key-encryption key.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn list(store: &Store, retention: Duration) -> Result<Vec<KeyInfo>, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut keys = store.signing_keys().await?;
        in_activation_order(&mut keys);
        Ok(keys
            .iter()
            .map(|key| KeyInfo::of(key, now, retention))
            .collect())
    }

    fn stored(&self, key: &SigningKey) -> anyhow::Result<StoredKey> {
        let now = OffsetDateTime::now_utc();
        Ok(StoredKey {
            kid: key.kid().to_owned(),
            public_key: key.public().as_bytes().to_vec(),
            sealed_private_key: self.kek.seal(key.kid(), key.pkcs8())?,
            sealed_by: self.kek.id().to_owned(),
            created_at: now,
            activates_at: now,
            retires_at: None,
            revoked_at: None,
        })
    }

    /// Installs the rows an edit of this process committed.
    fn install_or_log(&self, rows: Vec<StoredKey>) {
        let mut installed = self.lock_installed();
        installed.edits += 1;
        let edits = installed.edits;
        drop(installed);
        if let Err(err) = self.install(rows, false, Some(edits)) {
            tracing::error!(error = %err, "cannot use the signing keys");
        }
    }

    fn lock_installed(&self) -> std::sync::MutexGuard<'_, Installed> {
        self.installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds the ring from `rows` unless they are the ones installed, or
    /// were read before an edit of this process installed since
    /// (`edits_seen` when the read began). `strict`: a key that does not
    /// unseal is an error (at start-up); otherwise it verifies but does not
    /// sign, and is logged.
    fn install(
        &self,
        rows: Vec<StoredKey>,
        strict: bool,
        edits_seen: Option<u64>,
    ) -> anyhow::Result<()> {
        let mut installed = self.lock_installed();
        if installed.rows == rows || edits_seen.is_some_and(|seen| seen != installed.edits) {
            return Ok(());
        }
        let hint = format!("the key-encryption key file {}", self.kek_file.display());
        let mut ring = Vec::with_capacity(rows.len());
        for row in rows.iter().filter(|row| row.revoked_at.is_none()) {
            let public = PublicKey::from_bytes(&row.public_key)
                .with_context(|| format!("the signing key {} in the database", row.kid))?;
            anyhow::ensure!(
                public.kid() == row.kid,
                "the signing key {} in the database has the public key of {}",
                row.kid,
                public.kid()
            );
            let signing = match self.unseal(row, &public, &hint) {
                Ok(key) => Some(Arc::new(key)),
                Err(err) if strict => return Err(err),
                Err(err) => {
                    tracing::error!(error = %err, "this instance cannot sign with that key");
                    None
                }
            };
            ring.push(RingKey {
                public,
                signing,
                activates_at: row.activates_at.unix_timestamp(),
                retires_at: row.retires_at.map(OffsetDateTime::unix_timestamp),
            });
        }
        self.ring.install(ring);
        installed.rows = rows;
        Ok(())
    }

    fn unseal(
        &self,
        row: &StoredKey,
        public: &PublicKey,
        hint: &str,
    ) -> anyhow::Result<SigningKey> {
        let pkcs8 = self
            .kek
            .open(&row.kid, &row.sealed_by, &row.sealed_private_key)
            .map_err(|err| explain_open_failure(&row.kid, &err, hint))?;
        let key = SigningKey::from_pkcs8_der(pkcs8.expose_secret())
            .with_context(|| format!("the signing key {} in the database", row.kid))?;
        anyhow::ensure!(
            key.public().as_bytes() == public.as_bytes(),
            "the signing key {} in the database does not match its public key",
            row.kid
        );
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DatabaseSettings, DatabaseUrl};

    #[tokio::test]
    async fn a_read_begun_before_an_edit_is_not_installed_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("authd.db"));
        let store = Store::connect(&DatabaseSettings::new(url)).await.unwrap();
        store.migrate().await.unwrap();
        let files = KeyFiles {
            encryption_key_file: dir.path().join("kek"),
            signing_key_file: dir.path().join("none.pem"),
        };
        let keys = SigningKeys::open(store.clone(), &files, Duration::from_secs(60))
            .await
            .unwrap();
        let seen = keys.lock_installed().edits;
        let stale = store.signing_keys().await.unwrap();

        keys.rotate(Duration::from_secs(600)).await.unwrap();
        keys.install(stale, false, Some(seen)).unwrap();

        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert_eq!(keys.ring().published(now).len(), 2, "the rotation stays");
        keys.refresh().await.unwrap();
        assert_eq!(keys.ring().published(now).len(), 2);
    }
}
