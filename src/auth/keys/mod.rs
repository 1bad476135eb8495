//! The Ed25519 keys that sign and verify access tokens: their material, the
//! files they may come from, their sealing at rest, their lifecycle, and the
//! in-memory set the tokens are checked against.

mod files;
mod lifecycle;
mod ring;
mod sealing;

pub use files::{ensure_private, write_private_file_once};
pub use lifecycle::{KeyInfo, KeyState, RevokeRefusal, Rotation};
pub(crate) use lifecycle::{
    apply_edits, in_activation_order, is_rotation_due, plan_bootstrap, plan_revoke, plan_rotation,
};
pub(crate) use ring::RingKey;
pub use ring::{KeyRing, NoSigner};
pub use sealing::{KeyEncryptionKey, SealError};
pub(crate) use sealing::{explain_open_failure, missing_file};

use std::path::Path;

use anyhow::{Context as _, bail};
use aws_lc_rs::{
    digest,
    signature::{Ed25519KeyPair, KeyPair as _},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use secrecy::{ExposeSecret as _, SecretSlice};

/// A private key that signs tokens, with its key id.
pub struct SigningKey {
    encoding: EncodingKey,
    public: PublicKey,
    /// The PKCS#8 document, kept to seal it for the store.
    pkcs8: SecretSlice<u8>,
}

/// The public half of a key: what verifies its tokens.
#[derive(Clone)]
pub struct PublicKey {
    decoding: DecodingKey,
    jwk: PublicJwk,
    raw: [u8; 32],
}

/// A public key that verifies tokens, as an RFC 8037 OKP JSON Web Key
/// (`kty` OKP, `crv` Ed25519, `use` sig, `alg` EdDSA: [`PublicJwk::KTY`]
/// and the other constants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    /// The key id, as in the tokens' header.
    pub kid: String,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
}

impl PublicJwk {
    /// The key type of every key authd publishes.
    pub const KTY: &str = "OKP";
    /// Its curve.
    pub const CRV: &str = "Ed25519";
    /// What it is for.
    pub const USE: &str = "sig";
    /// The algorithm of the tokens it verifies.
    pub const ALG: &str = "EdDSA";
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.jwk.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key.
    ///
    /// # Errors
    /// When the system cannot generate one.
    pub fn generate() -> anyhow::Result<Self> {
        let document = Ed25519KeyPair::generate()
            .and_then(|pair| pair.to_pkcs8v1())
            .map_err(|_| anyhow::anyhow!("the system could not generate a key"))?;
        Self::from_pkcs8_der(document.as_ref())
    }

    /// Reads an Ed25519 private key from a PKCS#8 document (DER).
    ///
    /// # Errors
    /// When the bytes are not such a key.
    pub fn from_pkcs8_der(der: &[u8]) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|err| anyhow::anyhow!("not an Ed25519 PKCS#8 private key: {err}"))?;
        Ok(Self {
            encoding: EncodingKey::from_ed_der(der),
            public: PublicKey::from_bytes(pair.public_key().as_ref())?,
            pkcs8: SecretSlice::from(der.to_vec()),
        })
    }

    /// Reads an Ed25519 private key from PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    ///
    /// # Errors
    /// When the text is not such a key.
    pub fn from_pkcs8_pem(pem_text: &[u8]) -> anyhow::Result<Self> {
        let parsed = pem::parse(pem_text).context("not a PEM file")?;
        if parsed.tag() != "PRIVATE KEY" {
            bail!("expected a PKCS#8 'PRIVATE KEY', found '{}'", parsed.tag());
        }
        Self::from_pkcs8_der(parsed.contents())
    }

    /// The key in PKCS#8 PEM, as [`SigningKey::from_pkcs8_pem`] reads it.
    pub fn to_pkcs8_pem(&self) -> secrecy::SecretString {
        pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            self.pkcs8.expose_secret().to_vec(),
        ))
        .into()
    }

    /// Loads the key at `path`, or generates one there (mode 0600) when the
    /// file does not exist. Two processes doing so at once end up with the
    /// same key. For tools and tests that sign tokens themselves; the
    /// server keeps its keys in the database.
    ///
    /// # Errors
    /// When the file cannot be read or written, or does not hold an Ed25519
    /// private key in PKCS#8 PEM.
    pub fn load_or_generate(path: &Path) -> anyhow::Result<Self> {
        if let Some(key) = Self::load_if_present(path)? {
            return Ok(key);
        }
        let key = Self::generate()?;
        let pem_text = key.to_pkcs8_pem();
        write_private_file_once(path, pem_text.expose_secret().as_bytes())
            .with_context(|| format!("cannot create signing key file {}", path.display()))?;
        // Another process may have written its key first: read what won.
        Self::load_if_present(path)?
            .with_context(|| format!("signing key file {} vanished", path.display()))
    }

    /// The key in the PEM file at `path`, or `None` when there is no such
    /// file. The file must not be readable by others.
    ///
    /// # Errors
    /// When the file cannot be read, is readable by others, or does not
    /// hold an Ed25519 private key in PKCS#8 PEM.
    pub fn load_if_present(path: &Path) -> anyhow::Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(pem) => {
                ensure_private(path, "signing key")?;
                Self::from_pkcs8_pem(&pem)
                    .with_context(|| format!("signing key file {}", path.display()))
                    .map(Some)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => {
                Err(err).with_context(|| format!("cannot read signing key file {}", path.display()))
            }
        }
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The public half, as the JWK clients verify tokens with.
    pub fn public_jwk(&self) -> PublicJwk {
        self.public.jwk.clone()
    }

    /// The key id written into every token header: the key's RFC 7638 JWK
    /// thumbprint, so it changes exactly when the key does.
    pub fn kid(&self) -> &str {
        &self.public.jwk.kid
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    pub(crate) fn pkcs8(&self) -> &[u8] {
        self.pkcs8.expose_secret()
    }
}

impl PublicKey {
    /// The public key of 32 raw bytes.
    ///
    /// # Errors
    /// When there are not 32 of them.
    pub fn from_bytes(raw: &[u8]) -> anyhow::Result<Self> {
        let raw: [u8; 32] = raw.try_into().map_err(|_| {
            anyhow::anyhow!("an Ed25519 public key has 32 bytes, not {}", raw.len())
        })?;
        let x = URL_SAFE_NO_PAD.encode(raw);
        Ok(Self {
            decoding: DecodingKey::from_ed_der(&raw),
            jwk: PublicJwk {
                kid: thumbprint(&x),
                x,
            },
            raw,
        })
    }

    /// The key id: the RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// The key as a JWK.
    pub fn jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.raw
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// The RFC 7638 thumbprint of an Ed25519 public key whose JWK `x` is
/// `public_x`: the SHA-256 of its required members, in lexical order.
fn thumbprint(public_x: &str) -> String {
    let jwk = format!(
        r#"{{"crv":"{}","kty":"{}","x":"{public_x}"}}"#,
        PublicJwk::CRV,
        PublicJwk::KTY
    );
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, jwk.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _};

    use super::*;

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 8037, appendix A.3: the thumbprint of the example public key.
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn a_key_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-key.pem");
        SigningKey::load_or_generate(&path).unwrap();
        for (mode, accepted) in [
            (0o600, true),
            (0o400, true),
            (0o640, true),
            (0o644, false),
            (0o660, false),
            (0o604, false),
        ] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let loaded = SigningKey::load_if_present(&path);
            assert_eq!(loaded.is_ok(), accepted, "mode {mode:o}");
            if let Err(err) = loaded {
                assert!(err.to_string().contains("chmod 600"), "{err}");
            }
        }
    }

    #[test]
    fn generates_once_with_private_mode_and_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/signing-key.pem");
        let first = SigningKey::load_or_generate(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = SigningKey::load_or_generate(&path).unwrap();
        assert_eq!(first.kid(), again.kid());
        assert!(!format!("{first:?}").contains("PRIVATE"));
        let public = PublicKey::from_bytes(first.public().as_bytes()).unwrap();
        assert_eq!(public.kid(), first.kid());
    }

    #[test]
    fn a_missing_file_is_none_and_a_wrong_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        assert!(SigningKey::load_if_present(&path).unwrap().is_none());
        fs::write(
            &path,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SigningKey::load_if_present(&path).is_err());
    }
}
