//! Passwords (argon2id, at most `password_hashing_concurrency_max` at once), tokens
//! (256 random bits, stored only as SHA-256 hashes), the extractors that turn a bearer
//! token into a principal (enforcing API token scopes and the per-user mutation
//! limit), and the request limits of the accounts side: per client address (an IPv6
//! /64; behind a configured proxy, the address its header names) and per account,
//! each in a table of bounded size.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, Method};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::api::AppState;
use crate::config::{Argon2Config, AuthConfig};
use crate::error::ApiError;
use crate::store::{Principal, Role, Scope};

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

    /// Forgets every cached token of the user (log out everywhere, password change).
    pub fn evict_user(&self, user_id: i64) {
        self.entries
            .lock()
            .expect("not poisoned")
            .retain(|_, (principal, _)| principal.user_id != user_id);
    }
}

/// Any signed-in user, through a session or an API token whose scopes allow this
/// request. Requests that change something count against the user's mutation limit.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated(pub Principal);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or(ApiError::Unauthorized)?;
        let hash = token_hash(token);
        let now = state.clock.now();
        let principal = match state.principals.get(&hash, now) {
            Some(principal) => principal,
            None => {
                let principal = state.store.principal(&hash, now).await?.ok_or(ApiError::Unauthorized)?;
                state.principals.insert(hash, principal, now);
                principal
            }
        };
        check_scope(&principal, &parts.method, parts.uri.path())?;
        if !is_read(&parts.method) {
            state.accounts.mutations_by_user.check(&principal.user_id)?;
        }
        crate::runtime::RequestScope::note_user(principal.user_id);
        Ok(Authenticated(principal))
    }
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// The rule for API tokens: `read` allows reading; `servers` changing servers;
/// `billing` changing billing; any token may log itself out. Everything else (the
/// account itself, its tokens, admin) needs a session.
pub fn check_scope(principal: &Principal, method: &Method, path: &str) -> Result<(), ApiError> {
    let Some(scopes) = principal.scopes else {
        return Ok(());
    };
    let needed = if path.starts_with("/v1/admin") {
        None
    } else if is_read(method) {
        Some(Scope::Read)
    } else if path == "/v1/accounts/logout" {
        return Ok(());
    } else if path.starts_with("/v1/servers") {
        Some(Scope::Servers)
    } else if path.starts_with("/v1/billing") {
        Some(Scope::Billing)
    } else {
        None
    };
    match needed {
        Some(scope) if scopes.contains(scope) => Ok(()),
        Some(scope) => Err(ApiError::Forbidden {
            code: "token_scope",
            message: format!("this API token lacks the {:?} scope", scope.as_str()),
        }),
        None => Err(ApiError::Forbidden {
            code: "session_required",
            message: "this route needs a session (log in), not an API token".to_string(),
        }),
    }
}

/// A signed-in user with the admin role, a verified address and a session (an API
/// token never acts as admin).
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
        if !principal.email_verified {
            return Err(ApiError::Forbidden {
                code: "email_not_verified",
                message: "admin routes need a verified email address".to_string(),
            });
        }
        Ok(Admin(principal))
    }
}

/// An address range written "IP" or "IP/PREFIX".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl IpPrefix {
    pub fn parse(text: &str) -> Result<IpPrefix, String> {
        let (address, prefix_len) = match text.trim().split_once('/') {
            Some((address, len)) => (address, Some(len)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| "not an IP address (expected \"IP\" or \"IP/PREFIX\")".to_string())?;
        let bits_max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix_len {
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= bits_max)
                .ok_or_else(|| format!("prefix length must be 0 to {bits_max}"))?,
            None => bits_max,
        };
        Ok(IpPrefix { address, prefix_len })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, address) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix_len),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix_len),
            _ => false,
        }
    }
}

fn prefix_eq(net: &[u8], ip: &[u8], prefix_len: u8) -> bool {
    let whole = usize::from(prefix_len / 8);
    let rest = prefix_len % 8;
    if net[..whole] != ip[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        net[whole] & mask == ip[whole] & mask
    }
}

/// A GCRA limiter (governor) per key whose table holds at most `keys_max` keys: when
/// full, keys whose burst is back are forgotten; if it is still full, the request is
/// refused (a flood from many keys costs a bounded table, never unbounded memory).
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    keys_max: usize,
    /// Seconds a refused client is told to wait at most (one cell of the quota).
    period_s: u64,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn per_minute(n_per_minute: u32, keys_max: usize) -> Self {
        let n = NonZeroU32::new(n_per_minute).expect("validated >= 1");
        KeyedLimiter {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            keys_max,
            period_s: 60_u64.div_ceil(u64::from(n.get())),
        }
    }

    /// `Ok` when `key` may go on; otherwise 429 with the seconds to wait.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        if self.limiter.len() >= self.keys_max {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            if self.limiter.len() >= self.keys_max {
                return Err(ApiError::RateLimited {
                    retry_after_s: self.period_s,
                });
            }
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_s: wait.as_secs().saturating_add(1).min(self.period_s.max(1)),
            }
        })
    }

    /// Keys remembered now.
    pub fn n_keys(&self) -> usize {
        self.limiter.len()
    }
}

/// IPv4 (also IPv4-mapped IPv6) by address, IPv6 by its /64: one customer line gets
/// a whole /64, so counting single IPv6 addresses would limit nothing.
pub fn limit_key(address: IpAddr) -> IpAddr {
    payperplay_router::limit::limit_key(address)
}

/// The accounts side's limits, shared by all requests.
pub struct AccountGuard {
    pub login_by_address: KeyedLimiter<IpAddr>,
    /// Registrations, resends and reset requests per client address.
    pub register_by_address: KeyedLimiter<IpAddr>,
    /// Login attempts per typed address (hashed, so the table holds no addresses).
    pub login_by_account: KeyedLimiter<[u8; 32]>,
    pub mutations_by_user: KeyedLimiter<i64>,
    hashing: Semaphore,
    trusted_proxies: Vec<IpPrefix>,
    forwarded_header: HeaderName,
    argon2: Argon2Config,
    dummy_hash: Mutex<Option<String>>,
}

impl AccountGuard {
    pub fn new(auth: &AuthConfig) -> Self {
        let keys_max = auth.rate_limiter_keys_max;
        AccountGuard {
            login_by_address: KeyedLimiter::per_minute(auth.login_per_minute, keys_max),
            register_by_address: KeyedLimiter::per_minute(auth.register_per_minute, keys_max),
            login_by_account: KeyedLimiter::per_minute(auth.login_per_account_per_minute, keys_max),
            mutations_by_user: KeyedLimiter::per_minute(auth.mutations_per_user_per_minute, keys_max),
            hashing: Semaphore::new(auth.password_hashing_concurrency_max as usize),
            trusted_proxies: auth
                .trusted_proxies
                .iter()
                .map(|proxy| IpPrefix::parse(proxy).expect("validated at load"))
                .collect(),
            forwarded_header: HeaderName::try_from(auth.forwarded_header.as_str()).expect("validated at load"),
            argon2: auth.argon2,
            dummy_hash: Mutex::new(None),
        }
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy, then the
    /// last address in the proxy's header (the one the proxy itself added). Loopback
    /// when there is no peer (tests calling the router without a socket).
    pub fn client_address(&self, parts: &Parts) -> IpAddr {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |ConnectInfo(address)| address.ip());
        if !self.trusted_proxies.iter().any(|proxy| proxy.contains(peer)) {
            return peer;
        }
        parts
            .headers
            .get_all(&self.forwarded_header)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .next_back()
            .and_then(|last| last.trim().parse::<IpAddr>().ok())
            .unwrap_or(peer)
    }

    /// Hashes a password on the blocking pool, at most `password_hashing_concurrency_max`
    /// at once (each holds `argon2.memory_kib`).
    pub async fn hash_password(&self, password: String) -> Result<String, ApiError> {
        let _permit = self.hashing.acquire().await.expect("the semaphore is never closed");
        let argon2 = self.argon2;
        tokio::task::spawn_blocking(move || hash_password(&password, argon2))
            .await
            .map_err(|_| ApiError::Internal("password hashing task failed".to_string()))?
            .map_err(|error| ApiError::Internal(error.to_string()))
    }

    /// Checks a password against a stored hash (or, for an unknown user or one without
    /// a password (signed up through OAuth), against a dummy hash of the configured
    /// cost, so timing does not tell which addresses have accounts), under the same
    /// concurrency cap.
    pub async fn verify_password(&self, password: String, stored_hash: Option<String>) -> Result<bool, ApiError> {
        let (stored_hash, usable) = match stored_hash {
            Some(hash) if !hash.is_empty() => (hash, true),
            _ => (self.dummy_hash().await?, false),
        };
        let _permit = self.hashing.acquire().await.expect("the semaphore is never closed");
        let matches = tokio::task::spawn_blocking(move || verify_password(&password, &stored_hash))
            .await
            .map_err(|_| ApiError::Internal("password check task failed".to_string()))?;
        Ok(usable && matches)
    }

    async fn dummy_hash(&self) -> Result<String, ApiError> {
        if let Some(hash) = self.dummy_hash.lock().expect("not poisoned").clone() {
            return Ok(hash);
        }
        let hash = self.hash_password("dummy password for timing".to_string()).await?;
        *self.dummy_hash.lock().expect("not poisoned") = Some(hash.clone());
        Ok(hash)
    }
}

/// The client address of a request, as [`AccountGuard::client_address`] sees it.
pub struct ClientAddress(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(state.accounts.client_address(parts)))
    }
}

/// A user has at most `auth.servers_per_user_max` live servers (409 `quota_exceeded`).
/// Checked before the insert: two creates at the same instant may both pass, so the
/// bound can be exceeded by the requests in flight, never by more.
pub async fn check_server_quota(state: &AppState, user_id: i64) -> Result<(), ApiError> {
    let n_live = state.store.count_live_servers(user_id).await?;
    let n_max = state.auth.servers_per_user_max;
    if n_live >= i64::from(n_max) {
        return Err(ApiError::Conflict {
            code: "quota_exceeded",
            field: None,
            message: format!("you have {n_live} servers, the most allowed is {n_max}: delete one first"),
        });
    }
    Ok(())
}

/// How often unverified accounts past `auth.unverified_purge_after_ms` are purged.
pub const PURGE_INTERVAL_MS: u64 = 600_000;

/// Deletes unverified accounts older than `purge_after_ms` every
/// [`PURGE_INTERVAL_MS`] until shutdown (an address cannot be squatted for ever).
pub async fn purge_unverified_accounts(
    store: crate::store::Store,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    purge_after_ms: u64,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), crate::store::StoreError> {
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let now = clock.now();
        let n_purged = store
            .purge_unverified(payperplay_core::Timestamp(now.0.saturating_sub(purge_after_ms)))
            .await?;
        if n_purged > 0 {
            tracing::info!(n_purged, "unverified accounts purged");
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(PURGE_INTERVAL_MS)) => {}
        }
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
            scopes: None,
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

    #[test]
    fn proxies_are_prefixes_and_ipv6_is_limited_by_its_64() {
        let proxy = IpPrefix::parse("10.0.0.0/8").unwrap();
        assert!(proxy.contains("10.1.2.3".parse().unwrap()));
        assert!(proxy.contains("::ffff:10.1.2.3".parse().unwrap()), "IPv4-mapped");
        assert!(!proxy.contains("11.0.0.1".parse().unwrap()));
        let single = IpPrefix::parse("192.0.2.7").unwrap();
        assert!(single.contains("192.0.2.7".parse().unwrap()));
        assert!(!single.contains("192.0.2.8".parse().unwrap()));
        let v6 = IpPrefix::parse("2001:db8::/33").unwrap();
        assert!(v6.contains("2001:db8:7fff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8:8000::1".parse().unwrap()));
        assert!(IpPrefix::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(IpPrefix::parse("nope").is_err());
        assert_eq!(
            limit_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            limit_key("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
        assert_ne!(
            limit_key("2001:db8:1:2::1".parse().unwrap()),
            limit_key("2001:db8:1:3::1".parse().unwrap())
        );
    }

    #[test]
    fn a_limiter_refuses_with_a_wait_and_its_table_stays_bounded() {
        let limiter = KeyedLimiter::<u32>::per_minute(2, 3);
        assert!(limiter.check(&1).is_ok());
        assert!(limiter.check(&1).is_ok());
        match limiter.check(&1) {
            Err(ApiError::RateLimited { retry_after_s }) => assert!((1..=30).contains(&retry_after_s)),
            other => panic!("expected 429, got {other:?}"),
        }
        for key in 2..100 {
            let _ = limiter.check(&key);
            assert!(limiter.n_keys() <= 3, "{} keys", limiter.n_keys());
        }
    }

    #[test]
    fn api_token_scopes_allow_what_they_name_and_nothing_else() {
        use crate::store::Scopes;
        let principal = |scopes: Option<&[Scope]>| Principal {
            user_id: 1,
            role: Role::Admin,
            email_verified: true,
            scopes: scopes.map(Scopes::of),
        };
        let read = principal(Some(&[Scope::Read]));
        assert!(check_scope(&read, &Method::GET, "/v1/servers").is_ok());
        assert!(check_scope(&read, &Method::POST, "/v1/servers").is_err());
        assert!(check_scope(&read, &Method::POST, "/v1/accounts/logout").is_ok());
        assert!(
            check_scope(&read, &Method::GET, "/v1/admin/users").is_err(),
            "never admin"
        );
        let servers = principal(Some(&[Scope::Servers]));
        assert!(check_scope(&servers, &Method::POST, "/v1/servers/1/start").is_ok());
        assert!(
            check_scope(&servers, &Method::GET, "/v1/servers").is_err(),
            "no read scope"
        );
        assert!(check_scope(&servers, &Method::POST, "/v1/billing/x").is_err());
        assert!(check_scope(&servers, &Method::POST, "/v1/accounts/tokens").is_err());
        let session = principal(None);
        assert!(check_scope(&session, &Method::POST, "/v1/accounts/tokens").is_ok());
        assert!(check_scope(&session, &Method::GET, "/v1/admin/users").is_ok());
    }

    #[tokio::test]
    async fn password_hashing_waits_for_a_free_slot() {
        let mut config = AuthConfig {
            password_hashing_concurrency_max: 1,
            ..AuthConfig::default()
        };
        config.argon2 = CHEAP;
        let guard = std::sync::Arc::new(AccountGuard::new(&config));
        // The one slot is taken: a hash must wait for it, however long.
        let slot = guard.hashing.acquire().await.unwrap();
        let hashing = {
            let guard = guard.clone();
            tokio::spawn(async move { guard.hash_password("correct horse".to_string()).await })
        };
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!hashing.is_finished(), "hashed without a slot");
        drop(slot);
        let hash = hashing.await.unwrap().unwrap();
        assert!(verify_password("correct horse", &hash));
        assert_eq!(guard.hashing.available_permits(), 1, "the slot is given back");
    }
}
