//! The key set in memory: what ValidateToken verifies against and Login
//! signs with, replaced whole whenever the stored keys change.

use std::{
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::{PublicJwk, PublicKey, SigningKey};

/// A key of the ring: its public half, its private half where it could be
/// unsealed, and when it signs. Revoked keys are not in the ring.
#[derive(Debug, Clone)]
pub(crate) struct RingKey {
    pub(crate) public: PublicKey,
    pub(crate) signing: Option<Arc<SigningKey>>,
    /// Unix seconds.
    pub(crate) activates_at: i64,
    /// Unix seconds.
    pub(crate) retires_at: Option<i64>,
}

impl RingKey {
    fn signs_at(&self, now: i64) -> bool {
        self.activates_at <= now && self.retires_at.is_none_or(|retired| now < retired)
    }

    fn is_published_at(&self, now: i64, retention: i64) -> bool {
        self.retires_at
            .is_none_or(|retired| now < retired.saturating_add(retention))
    }
}

/// The keys published now, and the one that signs.
#[derive(Debug)]
pub struct KeyRing {
    keys: RwLock<Arc<[RingKey]>>,
    /// Counts the times a key stopped verifying before its time (revoked):
    /// whatever was verified under an older generation must be verified
    /// again.
    generation: AtomicU64,
    /// How long a retired key stays published, in seconds: the longest a
    /// token lives plus the leeway.
    retention: i64,
}

/// Why no token can be signed now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoSigner {
    /// No key is active.
    #[error("no signing key is active")]
    NoActiveKey,
    /// The active key is sealed with another key-encryption key.
    #[error("the active signing key {0} cannot be unsealed here")]
    Sealed(String),
}

impl KeyRing {
    /// An empty ring whose retired keys stay published for `retention`.
    pub fn new(retention: Duration) -> Self {
        Self {
            keys: RwLock::new(Arc::from(Vec::new())),
            generation: AtomicU64::new(0),
            retention: i64::try_from(retention.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// A ring of one key that always signs: for tools and tests that sign
    /// tokens without a store.
    pub fn single(key: SigningKey, retention: Duration) -> Self {
        let ring = Self::new(retention);
        ring.install(vec![RingKey {
            public: key.public().clone(),
            signing: Some(Arc::new(key)),
            activates_at: i64::MIN,
            retires_at: None,
        }]);
        ring
    }

    /// Replaces the keys. When one that verified tokens is gone, the
    /// generation moves on.
    pub(crate) fn install(&self, keys: Vec<RingKey>) {
        let mut held = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let dropped = held
            .iter()
            .any(|old| !keys.iter().any(|new| new.public.kid() == old.public.kid()));
        *held = Arc::from(keys);
        if dropped {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// How long a retired key stays published.
    pub(crate) fn retention(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.retention).unwrap_or(0))
    }

    /// The generation: a token verified under another one is checked again.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn keys(&self) -> Arc<[RingKey]> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key that signs at `now` (Unix seconds).
    ///
    /// # Errors
    /// When no key is active, or the active one cannot be unsealed here.
    pub fn signer(&self, now: i64) -> Result<Arc<SigningKey>, NoSigner> {
        let keys = self.keys();
        let active = keys
            .iter()
            .filter(|key| key.signs_at(now))
            .max_by_key(|key| key.activates_at)
            .ok_or(NoSigner::NoActiveKey)?;
        active
            .signing
            .clone()
            .ok_or_else(|| NoSigner::Sealed(active.public.kid().to_owned()))
    }

    /// Runs `verify` with the published key `kid` at `now`, or returns
    /// `None` when no such key is published.
    pub fn with_verifier<T>(
        &self,
        kid: &str,
        now: i64,
        verify: impl FnOnce(&PublicKey) -> T,
    ) -> Option<T> {
        let keys = self.keys();
        keys.iter()
            .find(|key| key.public.kid() == kid && key.is_published_at(now, self.retention))
            .map(|key| verify(&key.public))
    }

    /// The keys published at `now`: pending, active and retired, in the
    /// order they activate.
    pub fn published(&self, now: i64) -> Vec<PublicJwk> {
        self.keys()
            .iter()
            .filter(|key| key.is_published_at(now, self.retention))
            .map(|key| key.public.jwk().clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_key(key: &SigningKey, activates_at: i64, retires_at: Option<i64>) -> RingKey {
        RingKey {
            public: key.public().clone(),
            signing: None,
            activates_at,
            retires_at,
        }
    }

    #[test]
    fn one_key_signs_and_retired_keys_are_published_for_the_retention() {
        let (a, b) = (
            SigningKey::generate().unwrap(),
            SigningKey::generate().unwrap(),
        );
        let ring = KeyRing::new(Duration::from_secs(100));
        let mut keys = vec![ring_key(&a, 0, Some(50)), ring_key(&b, 50, None)];
        keys[1].signing = Some(Arc::new(SigningKey::from_pkcs8_der(b.pkcs8()).unwrap()));
        ring.install(keys);
        assert_eq!(
            ring.signer(49).unwrap_err(),
            NoSigner::Sealed(a.kid().to_owned())
        );
        assert_eq!(ring.signer(50).unwrap().kid(), b.kid());
        assert_eq!(ring.published(149).len(), 2);
        assert_eq!(ring.published(150), vec![b.public_jwk()]);
        assert!(ring.with_verifier(a.kid(), 149, |_| ()).is_some());
        assert!(ring.with_verifier(a.kid(), 150, |_| ()).is_none());
        assert!(ring.with_verifier("unknown", 0, |_| ()).is_none());
    }

    #[test]
    fn the_generation_moves_only_when_a_key_goes() {
        let (a, b) = (
            SigningKey::generate().unwrap(),
            SigningKey::generate().unwrap(),
        );
        let ring = KeyRing::new(Duration::from_secs(100));
        ring.install(vec![ring_key(&a, 0, None)]);
        let first = ring.generation();
        ring.install(vec![ring_key(&a, 0, Some(10)), ring_key(&b, 10, None)]);
        assert_eq!(ring.generation(), first, "adding a key keeps the cache");
        ring.install(vec![ring_key(&b, 10, None)]);
        assert_ne!(ring.generation(), first);
    }
}
