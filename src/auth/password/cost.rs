//! What a password costs: the argon2id parameters of new hashes, the
//! bounds a stored hash must keep to be run, and the rules for new
//! passwords.

use argon2::Params;

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

impl HashCost {
    /// The most memory a stored hash may ask for: 256 MiB.
    pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
    /// The most passes a stored hash may ask for.
    pub const MAX_ITERATIONS: u32 = 16;
    /// The most lanes a stored hash may ask for.
    pub const MAX_PARALLELISM: u32 = 16;

    pub(super) fn of(params: &Params) -> Self {
        Self {
            memory_kib: params.m_cost(),
            iterations: params.t_cost(),
            parallelism: params.p_cost(),
        }
    }

    /// Whether a hash of this cost is safe to run: a stored hash asking for
    /// more (written by an attacker with database access, say) would let
    /// one Login exhaust memory or time, so it is refused instead.
    pub(super) fn is_sane(&self) -> bool {
        self.memory_kib <= Self::MAX_MEMORY_KIB
            && self.iterations <= Self::MAX_ITERATIONS
            && self.parallelism <= Self::MAX_PARALLELISM
    }
}

/// What a new password must be like. Existing passwords are not checked
/// again at Login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// The fewest characters (Unicode scalar values, after NFC).
    pub min_chars: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_chars: 8 }
    }
}
