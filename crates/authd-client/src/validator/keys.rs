//! The public keys of the JWKS, as last fetched, less the revoked ones.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use authd_token::DecodingKey;

use crate::PublicKey;

/// The keys tokens are verified with, by `kid`.
#[derive(Default)]
pub(super) struct KeySet {
    keys: RwLock<Arc<HashMap<String, Arc<DecodingKey>>>>,
    /// Moves on whenever a key stops verifying (revoked, or no longer
    /// published): tokens verified before must be verified again.
    generation: AtomicU64,
    /// Whether a JWKS was ever installed.
    loaded: AtomicBool,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.snapshot().keys().collect::<Vec<_>>())
            .field("generation", &self.generation())
            .finish()
    }
}

impl KeySet {
    fn snapshot(&self) -> Arc<HashMap<String, Arc<DecodingKey>>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key of `kid`, if published and not revoked.
    pub(super) fn get(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Installs the keys of a JWKS fetched now, less those `revoked`.
    pub(super) fn install(&self, published: &[PublicKey], revoked: impl Fn(&str) -> bool) {
        let mut keys = HashMap::with_capacity(published.len());
        for key in published {
            if revoked(&key.kid) {
                continue;
            }
            match DecodingKey::from_ed_components(&key.x) {
                Ok(decoding) => {
                    keys.insert(key.kid.clone(), Arc::new(decoding));
                }
                Err(_) => {
                    tracing::warn!(kid = %key.kid, "skipping a published key that does not decode")
                }
            }
        }
        let mut current = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let dropped = current.keys().any(|kid| !keys.contains_key(kid));
        *current = Arc::new(keys);
        if dropped {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.loaded.store(true, Ordering::Release);
    }

    /// Stops verifying with `kid`, at once.
    pub(super) fn revoke(&self, kid: &str) {
        let mut current = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        // Moved on even when the key is not held: a verification begun
        // with it before it was dropped must not be cached as current.
        self.generation.fetch_add(1, Ordering::AcqRel);
        if current.contains_key(kid) {
            let mut keys = HashMap::clone(&current);
            keys.remove(kid);
            *current = Arc::new(keys);
        }
    }
}
