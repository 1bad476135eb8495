//! Verification of a stored PHC string: only argon2id of sane cost is
//! run, in the hashing thread's kept memory, compared in constant time.

use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Params, PasswordHash, Version};

use super::{HashCost, threads::Scratch};

/// Whether `password` hashes to the stored argon2id hash `parsed`, of the
/// checked parameters `params`, computed in the thread's kept memory; the
/// outputs are compared in constant time.
pub(super) fn verify_in(
    scratch: &mut Scratch,
    password: &[u8],
    parsed: &PasswordHash,
    params: Params,
) -> Result<bool, &'static str> {
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err("no salt or no hash");
    };
    let version = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from)
        .map_err(|_| "unknown argon2 version")?;
    let blocks = params.block_count();
    let argon2 = Argon2::new(Algorithm::Argon2id, version, params);
    let mut computed = [0u8; argon2::password_hash::phc::Output::MAX_LENGTH];
    let computed = computed
        .get_mut(..expected.len())
        .ok_or("hash output too long")?;
    scratch
        .with_blocks(blocks, |blocks| {
            argon2.hash_password_into_with_memory(password, salt.as_ref(), computed, blocks)
        })
        .ok_or("out of memory")?
        .map_err(|_| "argon2 refused the stored parameters")?;
    let computed = argon2::password_hash::phc::Output::new(computed)
        .map_err(|_| "hash output out of range")?;
    // `Output`'s equality is constant-time.
    Ok(computed == *expected)
}

/// The parameters of a stored hash, if it is an argon2id hash of sane cost.
pub(super) fn sane_params(parsed: &PasswordHash) -> Result<Params, &'static str> {
    if parsed.algorithm != ARGON2ID_IDENT {
        return Err("not argon2id");
    }
    let params = Params::try_from(parsed).map_err(|_| "unreadable argon2 parameters")?;
    if !HashCost::of(&params).is_sane() {
        return Err("argon2 parameters out of bounds");
    }
    Ok(params)
}
