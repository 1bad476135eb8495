//! Password hashing with argon2id, off the async runtime and bounded, so a
//! login flood can neither starve other requests nor exhaust memory.

use std::sync::Arc;

use anyhow::Context as _;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::domain::Password;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for HashCost {
    /// OWASP's recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Hashes and verifies passwords.
#[derive(Debug, Clone)]
pub struct Passwords {
    argon2: Argon2<'static>,
    /// One permit per hash in progress: at most this many run at once, each
    /// on a blocking thread, each holding `memory_kib` of memory.
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the user does not
    /// exist, so an unknown name costs the same time as a wrong password.
    dummy_hash: Arc<str>,
}

impl Passwords {
    /// A hasher with `cost`, running at most `concurrency` hashes at once.
    ///
    /// # Errors
    /// When the cost parameters are out of argon2's range.
    pub fn new(cost: HashCost, concurrency: usize) -> anyhow::Result<Self> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|err| anyhow::anyhow!("invalid argon2 parameters: {err}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let random = uuid::Uuid::new_v4();
        let dummy_hash = argon2
            .hash_password(random.as_bytes())
            .map_err(|err| anyhow::anyhow!("argon2 failed: {err}"))
            .context("cannot prepare the dummy password hash")?
            .to_string();
        Ok(Self {
            argon2,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Hashes a password into a PHC string with a fresh random salt.
    ///
    /// # Errors
    /// When argon2 fails, which only broken parameters cause.
    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let password = password.clone();
        let argon2 = self.argon2.clone();
        self.run_blocking(move || {
            argon2
                .hash_password(password.expose())
                .map(|hash| hash.to_string())
                .map_err(|err| anyhow::anyhow!("argon2 failed: {err}"))
        })
        .await?
    }

    /// Whether `password` matches the PHC string `stored`. With no stored
    /// hash (an unknown user) a dummy hash is verified instead, and the
    /// answer is false: every call does exactly one argon2 verification.
    ///
    /// # Errors
    /// When the blocking pool is gone (the runtime is shutting down).
    pub async fn verify(&self, password: &Password, stored: Option<&str>) -> anyhow::Result<bool> {
        let password = password.clone();
        let argon2 = self.argon2.clone();
        let known = stored.is_some();
        let hash: Arc<str> = stored.map_or_else(|| self.dummy_hash.clone(), Arc::from);
        self.run_blocking(
            move || match argon2.verify_password(password.expose(), &*hash) {
                Ok(()) => known,
                Err(argon2::password_hash::Error::PasswordInvalid) => false,
                Err(err) => {
                    tracing::error!(error = %err, "a stored password hash cannot be read");
                    false
                }
            },
        )
        .await
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .context("the password hasher is shut down")?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .instrument(tracing::Span::current())
            .await
            .context("a password hashing task failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        Passwords::new(
            HashCost {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            2,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_do_not() {
        let passwords = cheap();
        let right = Password::parse("correct horse").unwrap();
        let wrong = Password::parse("correct horsf").unwrap();
        let hash = passwords.hash(&right).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(passwords.verify(&right, Some(&hash)).await.unwrap());
        assert!(!passwords.verify(&wrong, Some(&hash)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_users_never_verify_and_garbage_hashes_fail_closed() {
        let passwords = cheap();
        let password = Password::parse("anything").unwrap();
        assert!(!passwords.verify(&password, None).await.unwrap());
        assert!(
            !passwords
                .verify(&password, Some("not a phc string"))
                .await
                .unwrap()
        );
    }

    #[test]
    fn default_cost_is_owasp() {
        let cost = HashCost::default();
        assert_eq!(
            (cost.memory_kib, cost.iterations, cost.parallelism),
            (19456, 2, 1)
        );
    }
}
