//! The Ed25519 signing key: loaded from a PKCS#8 PEM file, or generated
//! into one on first start.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use anyhow::{Context as _, bail};
use aws_lc_rs::{
    digest,
    signature::{Ed25519KeyPair, KeyPair as _},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};

/// The key that signs and verifies access tokens, with its key id.
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    /// The public key, base64url without padding: the JWK's `x`.
    public_x: String,
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
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads the key at `path`, or generates one there (mode 0600) when the
    /// file does not exist. Two processes starting at once end up with the
    /// same key: the file appears whole or not at all.
    ///
    /// # Errors
    /// When the file cannot be read or written, or does not hold an Ed25519
    /// private key in PKCS#8 PEM.
    pub fn load_or_generate(path: &Path) -> anyhow::Result<Self> {
        match fs::read(path) {
            Ok(pem) => {
                ensure_private(path, "signing key")?;
                Self::from_pkcs8_pem(&pem)
                    .with_context(|| format!("signing key file {}", path.display()))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let key = generate_into(path).with_context(|| {
                    format!("cannot create signing key file {}", path.display())
                })?;
                Ok(key)
            }
            Err(err) => {
                Err(err).with_context(|| format!("cannot read signing key file {}", path.display()))
            }
        }
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
        let pair = Ed25519KeyPair::from_pkcs8(parsed.contents())
            .map_err(|err| anyhow::anyhow!("not an Ed25519 PKCS#8 private key: {err}"))?;
        let public = pair.public_key().as_ref();
        let public_x = URL_SAFE_NO_PAD.encode(public);
        Ok(Self {
            encoding: EncodingKey::from_ed_der(parsed.contents()),
            decoding: DecodingKey::from_ed_der(public),
            kid: thumbprint(&public_x),
            public_x,
        })
    }

    /// The public half, as the JWK clients verify tokens with.
    pub fn public_jwk(&self) -> PublicJwk {
        PublicJwk {
            kid: self.kid.clone(),
            x: self.public_x.clone(),
        }
    }

    /// The key id written into every token header: the key's RFC 7638 JWK
    /// thumbprint, so it changes exactly when the key does.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
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

fn generate_into(path: &Path) -> anyhow::Result<SigningKey> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let document = Ed25519KeyPair::generate()
        .and_then(|pair| pair.to_pkcs8v1())
        .map_err(|_| anyhow::anyhow!("the system could not generate a key"))?;
    let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", document.as_ref()));

    // Write a private temporary file, then link it into place: the link
    // fails if another process got there first, and then its key wins.
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = file
        .write_all(pem_text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a new Ed25519 signing key");
            SigningKey::from_pkcs8_pem(pem_text.as_bytes())
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            SigningKey::from_pkcs8_pem(&fs::read(path)?)
        }
        Err(err) => Err(err.into()),
    }
}

/// Refuses a private-key file that users other than its owner and group
/// may read, or that its group may write: what such a key signs proves
/// nothing. A key its group may read (a Kubernetes secret mounted with an
/// `fsGroup`, say) is accepted with a warning.
///
/// # Errors
/// When the file's mode lets others read it, or its group write it; the
/// message says how to fix it.
pub fn ensure_private(path: &Path, what: &str) -> anyhow::Result<()> {
    let mode = fs::metadata(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o027 != 0 {
        bail!(
            "the {what} file {} has mode {mode:o}: other users may read or change it; \
             restrict it to 0600 (chmod 600), or 0640 to share it with a group",
            path.display()
        );
    }
    if mode & 0o040 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "the {what} file is readable by its group"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
            let loaded = SigningKey::load_or_generate(&path);
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
    }

    #[test]
    fn refuses_a_file_that_is_not_an_ed25519_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        fs::write(
            &path,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        assert!(SigningKey::load_or_generate(&path).is_err());
    }
}
