//! The key-encryption key: seals private signing keys before they reach the
//! store (AES-256-GCM, bound to the key id), and opens them again.

use std::path::Path;

use anyhow::Context as _;
use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest, hkdf, hmac,
};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use secrecy::{ExposeSecret as _, SecretSlice, SecretString};

use super::files::{ensure_private, write_private_file_once};

/// The first byte of every sealed key: the format, should it ever change.
const FORMAT: u8 = 1;

/// The HKDF purpose of the refresh-token key.
const REFRESH_TOKEN_KEY_INFO: &[u8] = b"authd refresh tokens v1";

/// The HKDF purpose of the key that authenticates page tokens.
const PAGE_TOKEN_KEY_INFO: &[u8] = b"authd page tokens v1";

/// The key that seals the private signing keys kept in the database.
/// Instances sharing a database must share it.
pub struct KeyEncryptionKey {
    key: LessSafeKey,
    id: String,
    /// The key that authenticates refresh tokens, derived from this one.
    refresh_tokens: hmac::Key,
    /// The key that authenticates page tokens, derived from this one.
    page_tokens: hmac::Key,
}

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEncryptionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A sealed key that does not open.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Sealed under another key-encryption key.
    #[error("it was sealed with another key-encryption key (id {0})")]
    OtherKey(String),
    /// Not a sealed key of ours, or altered since it was sealed.
    #[error("it does not decrypt: altered, or sealed with another key-encryption key")]
    Corrupt,
}

impl KeyEncryptionKey {
    /// Reads the key file at `path` (32 bytes, base64), or `None` when there
    /// is none. The file must not be readable by others.
    ///
    /// # Errors
    /// When the file cannot be read, is readable by others, or does not hold
    /// such a key.
    pub fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => SecretString::from(text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(err).with_context(|| {
                    format!("cannot read the key-encryption key file {}", path.display())
                });
            }
        };
        ensure_private(path, "key-encryption key")?;
        let bytes = SecretSlice::from(
            STANDARD
                .decode(text.expose_secret().trim())
                .ok()
                .filter(|bytes| bytes.len() == 32)
                .with_context(|| {
                    format!(
                        "the key-encryption key file {} does not hold 32 bytes in base64",
                        path.display()
                    )
                })?,
        );
        Self::from_bytes(bytes.expose_secret()).map(Some)
    }

    /// Generates a key into a new file at `path` (mode 0600), or reads the
    /// one another process wrote there first.
    ///
    /// # Errors
    /// When the file cannot be written or read back.
    pub fn generate_into(path: &Path) -> anyhow::Result<Self> {
        let mut bytes = [0_u8; 32];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("the system could not generate a key"))?;
        let text = SecretString::from(format!("{}\n", STANDARD.encode(bytes)));
        bytes.fill(0);
        let written =
            write_private_file_once(path, text.expose_secret().as_bytes()).with_context(|| {
                format!(
                    "cannot create the key-encryption key file {}",
                    path.display()
                )
            })?;
        if written {
            tracing::info!(path = %path.display(), "generated a new key-encryption key");
        }
        Self::load(path)?
            .with_context(|| format!("the key-encryption key file {} vanished", path.display()))
    }

    /// The key of these 32 bytes.
    ///
    /// # Errors
    /// When there are not 32 of them.
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| anyhow::anyhow!("a key-encryption key has 32 bytes"))?;
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(b"authd key-encryption key\0");
        context.update(bytes);
        let id = URL_SAFE_NO_PAD.encode(&context.finish().as_ref()[..9]);
        // HKDF with a purpose of its own: one secret kept outside the
        // database serves both, and neither key tells anything of the other.
        let derive = |purpose: &[u8]| {
            hkdf::Salt::new(hkdf::HKDF_SHA256, b"authd")
                .extract(bytes)
                .expand(&[purpose], hmac::HMAC_SHA256)
                .map(hmac::Key::from)
                .map_err(|_| anyhow::anyhow!("cannot derive a key from the key-encryption key"))
        };
        Ok(Self {
            key: LessSafeKey::new(key),
            id,
            refresh_tokens: derive(REFRESH_TOKEN_KEY_INFO)?,
            page_tokens: derive(PAGE_TOKEN_KEY_INFO)?,
        })
    }

    /// The key that authenticates refresh tokens: derived from this one,
    /// so that a copy of the database cannot make them.
    pub(crate) fn refresh_token_key(&self) -> hmac::Key {
        self.refresh_tokens.clone()
    }

    /// The key that authenticates page tokens: derived from this one, so
    /// that every instance sharing the database takes the others' tokens.
    pub(crate) fn page_token_key(&self) -> hmac::Key {
        self.page_tokens.clone()
    }

    /// A short id of this key (not derived from it in any way that helps
    /// guess it), stored beside what it sealed.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals the private key of `kid`.
    ///
    /// # Errors
    /// When the system cannot make a nonce.
    pub fn seal(&self, kid: &str, private_key: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0_u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let mut sealed = private_key.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| anyhow::anyhow!("cannot seal the key"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`KeyEncryptionKey::seal`] sealed for `kid` under the key
    /// whose id is `sealed_by`.
    ///
    /// # Errors
    /// When another key sealed it, or it was altered (or is another kid's).
    pub fn open(
        &self,
        kid: &str,
        sealed_by: &str,
        sealed: &[u8],
    ) -> Result<SecretSlice<u8>, SealError> {
        if sealed_by != self.id {
            return Err(SealError::OtherKey(sealed_by.to_owned()));
        }
        let Some((&FORMAT, rest)) = sealed.split_first() else {
            return Err(SealError::Corrupt);
        };
        if rest.len() < NONCE_LEN {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Corrupt)?;
        let mut buffer = SecretSlice::from(ciphertext.to_vec());
        let plain_len = self
            .key
            .open_in_place(
                nonce,
                Aad::from(kid.as_bytes()),
                secrecy::ExposeSecretMut::expose_secret_mut(&mut buffer),
            )
            .map_err(|_| SealError::Corrupt)?
            .len();
        Ok(SecretSlice::from(
            buffer.expose_secret()[..plain_len].to_vec(),
        ))
    }
}

/// Refuses a sealed key that another key-encryption key made: the message
/// for start-up.
pub(crate) fn explain_open_failure(kid: &str, err: &SealError, path_hint: &str) -> anyhow::Error {
    match err {
        SealError::OtherKey(other) => anyhow::anyhow!(
            "the signing key {kid} in the database was sealed with another key-encryption key \
             (id {other}) than {path_hint}: instances sharing a database must share that file"
        ),
        SealError::Corrupt => anyhow::anyhow!(
            "the signing key {kid} in the database does not decrypt with {path_hint}: \
             the row was altered, or the file is not the one that sealed it"
        ),
    }
}

/// Refuses to run without the key-encryption key when the database holds
/// keys sealed by one.
pub(crate) fn missing_file(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "the database holds signing keys but the key-encryption key file {} does not exist: \
         copy it from the instances that share this database (--key-encryption-key-file)",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_its_key_and_kid() {
        let kek = KeyEncryptionKey::from_bytes(&[7; 32]).unwrap();
        let sealed = kek.seal("kid-a", b"private bytes").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        let opened = kek.open("kid-a", kek.id(), &sealed).unwrap();
        assert_eq!(opened.expose_secret(), b"private bytes");
        assert!(matches!(
            kek.open("kid-b", kek.id(), &sealed),
            Err(SealError::Corrupt)
        ));

        let other = KeyEncryptionKey::from_bytes(&[8; 32]).unwrap();
        assert_ne!(other.id(), kek.id());
        assert!(matches!(
            other.open("kid-a", kek.id(), &sealed),
            Err(SealError::OtherKey(_))
        ));
        assert!(matches!(
            other.open("kid-a", other.id(), &sealed),
            Err(SealError::Corrupt)
        ));

        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            kek.open("kid-a", kek.id(), &altered),
            Err(SealError::Corrupt)
        ));
        assert!(!format!("{kek:?}").contains("[7"));
    }

    #[test]
    fn the_file_is_generated_once_and_refused_when_others_may_read_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        assert!(KeyEncryptionKey::load(&path).unwrap().is_none());
        let made = KeyEncryptionKey::generate_into(&path).unwrap();
        let again = KeyEncryptionKey::generate_into(&path).unwrap();
        assert_eq!(made.id(), again.id());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(KeyEncryptionKey::load(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not base64").unwrap();
        assert!(KeyEncryptionKey::load(&path).is_err());
    }
}
