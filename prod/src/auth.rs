//! Passwords (argon2id), tokens (256 random bits, stored only as SHA-256 hashes) and
//! the extractors that turn a bearer token into a principal.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::api::AppState;
use crate::config::Argon2Config;
use crate::error::ApiError;
use crate::store::{Principal, Role};

/// Prefix of session tokens; API tokens use `ppt_`. Both are 64 hex digits after it.
pub const SESSION_PREFIX: &str = "pps_";
pub const API_TOKEN_PREFIX: &str = "ppt_";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("argon2 parameters rejected: {0}")]
    Params(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn argon2(config: Argon2Config) -> Result<Argon2<'static>, AuthError> {
    let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)
        .map_err(|error| AuthError::Params(error.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with argon2id and a fresh 128-bit salt (PHC string).
pub fn hash_password(password: &str, config: Argon2Config) -> Result<String, AuthError> {
    let mut salt_bytes = [0u8; 16];
    getrandom::fill(&mut salt_bytes).map_err(|error| AuthError::Hash(error.to_string()))?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|error| AuthError::Hash(error.to_string()))?;
    let hash = argon2(config)?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| AuthError::Hash(error.to_string()))?;
    Ok(hash.to_string())
}

/// Verifies against the stored PHC string (its own parameters apply).
pub fn verify_password(password: &str, stored_hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored_hash) else {
        return false;
    };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// A fresh token: `prefix` and 256 random bits in hex. Returns the token (shown to the
/// client once) and the hash to store.
pub fn new_token(prefix: &str) -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    let token = format!("{prefix}{}", hex::encode(bytes));
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The bearer token of a request, if well-formed.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    let well_formed = (token.starts_with(SESSION_PREFIX) || token.starts_with(API_TOKEN_PREFIX))
        && token.len() == SESSION_PREFIX.len() + 64;
    well_formed.then_some(token)
}

/// Recently seen verified principals by token hash, so a busy client does not cost
/// a database round trip per request. An entry lives `TTL_MS` at most; logout evicts
/// it at once (in this process). Unverified principals are never cached, because
/// verification changes what they may do.
#[derive(Debug, Default)]
pub struct PrincipalCache {
    entries: std::sync::Mutex<std::collections::HashMap<Vec<u8>, (Principal, payperplay_core::Timestamp)>>,
}

impl PrincipalCache {
    pub const TTL_MS: u64 = 5_000;
    pub const ENTRIES_MAX: usize = 100_000;

    pub fn get(&self, hash: &[u8], now: payperplay_core::Timestamp) -> Option<Principal> {
        let entries = self.entries.lock().expect("not poisoned");
        let (principal, cached_at) = entries.get(hash)?;
        (now.since(*cached_at) < Self::TTL_MS && *cached_at <= now).then_some(*principal)
    }

    pub fn insert(&self, hash: Vec<u8>, principal: Principal, now: payperplay_core::Timestamp) {
        if !principal.email_verified {
            return;
        }
        let mut entries = self.entries.lock().expect("not poisoned");
        if entries.len() >= Self::ENTRIES_MAX {
            entries.clear();
        }
        entries.insert(hash, (principal, now));
    }

    pub fn evict(&self, hash: &[u8]) {
        self.entries.lock().expect("not poisoned").remove(hash);
    }
}

/// Any signed-in user.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated(pub Principal);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or(ApiError::Unauthorized)?;
        let hash = token_hash(token);
        let now = state.clock.now();
        if let Some(principal) = state.principals.get(&hash, now) {
            return Ok(Authenticated(principal));
        }
        let principal = state.store.principal(&hash, now).await?.ok_or(ApiError::Unauthorized)?;
        state.principals.insert(hash, principal, now);
        Ok(Authenticated(principal))
    }
}

/// A signed-in user with the admin role.
#[derive(Debug, Clone, Copy)]
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Authenticated(principal) = Authenticated::from_request_parts(parts, state).await?;
        if principal.role != Role::Admin {
            return Err(ApiError::Forbidden {
                code: "admin_only",
                message: "this route needs the admin role".to_string(),
            });
        }
        Ok(Admin(principal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: Argon2Config = Argon2Config {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn password_hash_is_argon2id_and_verifies() {
        let hash = hash_password("correct horse", CHEAP).unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a phc string"));
        let again = hash_password("correct horse", CHEAP).unwrap();
        assert_ne!(hash, again, "salts differ");
    }

    #[test]
    fn principal_cache_expires_evicts_and_skips_unverified() {
        use payperplay_core::Timestamp;
        let cache = PrincipalCache::default();
        let verified = Principal {
            user_id: 1,
            role: Role::User,
            email_verified: true,
        };
        cache.insert(vec![1], verified, Timestamp(1_000));
        assert_eq!(
            cache
                .get(&[1], Timestamp(1_000 + PrincipalCache::TTL_MS - 1))
                .map(|p| p.user_id),
            Some(1)
        );
        assert!(
            cache.get(&[1], Timestamp(1_000 + PrincipalCache::TTL_MS)).is_none(),
            "expired"
        );
        cache.evict(&[1]);
        assert!(cache.get(&[1], Timestamp(1_001)).is_none(), "evicted");
        let unverified = Principal {
            email_verified: false,
            ..verified
        };
        cache.insert(vec![2], unverified, Timestamp(1_000));
        assert!(
            cache.get(&[2], Timestamp(1_000)).is_none(),
            "unverified is never cached"
        );
    }

    #[test]
    fn tokens_are_256_bit_and_only_their_hash_is_kept() {
        let (token, hash) = new_token(SESSION_PREFIX);
        assert_eq!(token.len(), SESSION_PREFIX.len() + 64);
        assert_eq!(hash.len(), 32);
        assert_eq!(hash, token_hash(&token));
        assert!(!hex::encode(&hash).contains(&token[SESSION_PREFIX.len()..]));
        let (other, _) = new_token(SESSION_PREFIX);
        assert_ne!(token, other);
    }
}
