//! `[auth]`, `[auth.argon2]` and `[oauth]`, and the checks that keep them from
//! weakening accounts silently.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub session_ttl_ms: u64,
    pub verification_ttl_ms: u64,
    /// Login attempts allowed per client address (an IPv6 /64) per minute.
    pub login_per_minute: u32,
    /// Registrations allowed per client address (an IPv6 /64) per minute.
    pub register_per_minute: u32,
    /// Ignored: nobody becomes admin by registering. An operator grants the role with
    /// `payperplay admin grant EMAIL` (audited); `serve` warns when this is set.
    pub admin_emails: Vec<String>,
    pub argon2: Argon2Config,
    /// Login attempts allowed per account (address typed) per minute, from anywhere.
    pub login_per_account_per_minute: u32,
    /// Authenticated requests that change something, per user per minute.
    pub mutations_per_user_per_minute: u32,
    /// Account mails (verification, reset, "you have an account") per user per day.
    pub account_mails_per_day: u32,
    /// Unverified accounts older than this are deleted (and their address freed).
    pub unverified_purge_after_ms: u64,
    /// How long a password reset link works.
    pub password_reset_ttl_ms: u64,
    /// Lifetime of an API token when its request names none, and the longest allowed.
    pub api_token_ttl_ms_default: u64,
    pub api_token_ttl_ms_max: u64,
    /// Live API tokens per user at most.
    pub api_tokens_per_user_max: u32,
    /// Servers (not deleted) per user at most.
    pub servers_per_user_max: u32,
    /// Password hashes computed at once at most (each takes `argon2.memory_kib`).
    pub password_hashing_concurrency_max: u32,
    /// Keys each rate limiter remembers at most (oldest forgotten first).
    pub rate_limiter_keys_max: usize,
    /// Reverse proxies ("IP" or "IP/PREFIX") whose `forwarded_header` names the
    /// client. A request from any other peer is limited by its peer address.
    pub trusted_proxies: Vec<String>,
    /// The header a trusted proxy puts the client address in (the last entry counts).
    pub forwarded_header: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_ttl_ms: 30 * 24 * 3_600_000,
            verification_ttl_ms: 48 * 3_600_000,
            login_per_minute: 10,
            register_per_minute: 5,
            admin_emails: Vec::new(),
            argon2: Argon2Config::default(),
            login_per_account_per_minute: 5,
            mutations_per_user_per_minute: 120,
            account_mails_per_day: 5,
            unverified_purge_after_ms: 7 * 24 * 3_600_000,
            password_reset_ttl_ms: 3_600_000,
            api_token_ttl_ms_default: 90 * 24 * 3_600_000,
            api_token_ttl_ms_max: 366 * 24 * 3_600_000,
            api_tokens_per_user_max: 20,
            servers_per_user_max: 20,
            password_hashing_concurrency_max: 4,
            rate_limiter_keys_max: 100_000,
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".to_string(),
        }
    }
}

/// argon2id cost parameters (defaults: OWASP's 19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Argon2Config {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// OAuth 2.0 sign-in providers. The redirect URI registered at each provider is
/// `{http.public_base_url}/v1/oauth/{name}/callback`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    pub providers: Vec<OAuthProviderConfig>,
    /// How long a started sign-in may take at the provider.
    pub state_ttl_ms: u64,
    /// Bound on each request to a provider (token exchange, user info).
    pub request_timeout_ms: u64,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            providers: Vec::new(),
            state_ttl_ms: 600_000,
            request_timeout_ms: 10_000,
        }
    }
}

/// Presets fill in a provider's URLs, scopes and profile fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthPreset {
    Google,
    Discord,
}

/// One provider: a preset, or a generic OIDC-style provider by its issuer (its
/// `/authorize`, `/token`, `/userinfo`) or explicit URLs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthProviderConfig {
    /// In URLs: `/v1/oauth/{name}/...` (lower-case letters, digits, `-`).
    pub name: String,
    #[serde(default)]
    pub preset: Option<OAuthPreset>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub auth_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub userinfo_url: Option<String>,
    pub client_id: String,
    pub client_secret: SecretString,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// User info fields: the stable id, the address, whether it is verified.
    #[serde(default)]
    pub subject_field: Option<String>,
    #[serde(default)]
    pub email_field: Option<String>,
    #[serde(default)]
    pub email_verified_field: Option<String>,
}

/// A provider with every field decided.
#[derive(Debug, Clone)]
pub struct OAuthProvider {
    pub name: String,
    pub auth_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    pub subject_field: String,
    pub email_field: String,
    pub email_verified_field: String,
}

impl OAuthProviderConfig {
    /// Fills what the preset or the issuer implies; explicit fields win.
    pub fn resolve(&self) -> Result<OAuthProvider, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid(format!("oauth.providers {:?}: {message}", self.name));
        let (auth, token, userinfo, scopes, subject, email, verified) = match self.preset {
            Some(OAuthPreset::Google) => (
                Some("https://accounts.google.com/o/oauth2/v2/auth".to_string()),
                Some("https://oauth2.googleapis.com/token".to_string()),
                Some("https://openidconnect.googleapis.com/v1/userinfo".to_string()),
                vec!["openid", "email", "profile"],
                "sub",
                "email",
                "email_verified",
            ),
            Some(OAuthPreset::Discord) => (
                Some("https://discord.com/oauth2/authorize".to_string()),
                Some("https://discord.com/api/oauth2/token".to_string()),
                Some("https://discord.com/api/users/@me".to_string()),
                vec!["identify", "email"],
                "id",
                "email",
                "verified",
            ),
            None => {
                let issuer = self.issuer.as_deref().map(|issuer| issuer.trim_end_matches('/'));
                (
                    issuer.map(|issuer| format!("{issuer}/authorize")),
                    issuer.map(|issuer| format!("{issuer}/token")),
                    issuer.map(|issuer| format!("{issuer}/userinfo")),
                    vec!["openid", "email"],
                    "sub",
                    "email",
                    "email_verified",
                )
            }
        };
        let url = |explicit: &Option<String>, implied: Option<String>, what: &str| {
            let url = explicit
                .clone()
                .or(implied)
                .ok_or_else(|| invalid(format!("needs {what} (or an issuer or a preset)")))?;
            let parsed = url::Url::parse(&url).map_err(|error| invalid(format!("{what} {url:?}: {error}")))?;
            let loopback = parsed.host_str().is_some_and(is_loopback_host);
            if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
                return Err(invalid(format!("{what} {url:?} must be https (http only on loopback)")));
            }
            Ok(url)
        };
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_name {
            return Err(invalid(
                "name must be 1 to 32 lower-case letters, digits or `-`".to_string(),
            ));
        }
        if self.client_id.is_empty() {
            return Err(invalid("client_id is empty".to_string()));
        }
        Ok(OAuthProvider {
            name: self.name.clone(),
            auth_url: url(&self.auth_url, auth, "auth_url")?,
            token_url: url(&self.token_url, token, "token_url")?,
            userinfo_url: url(&self.userinfo_url, userinfo, "userinfo_url")?,
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            scopes: self
                .scopes
                .clone()
                .unwrap_or_else(|| scopes.into_iter().map(str::to_string).collect()),
            subject_field: self.subject_field.clone().unwrap_or_else(|| subject.to_string()),
            email_field: self.email_field.clone().unwrap_or_else(|| email.to_string()),
            email_verified_field: self
                .email_verified_field
                .clone()
                .unwrap_or_else(|| verified.to_string()),
        })
    }
}

impl Config {
    /// Settings that would weaken accounts silently are errors: credentials over
    /// plain SMTP to anything but loopback, argon2 parameters argon2 refuses (the
    /// dummy hash for unknown users would be empty and their logins fast), zero
    /// limits, unparsable proxies.
    pub fn validate_accounts(&self) -> Result<(), ConfigError> {
        let smtp = &self.smtp;
        let has_credentials = smtp.username.is_some() || smtp.password.is_some();
        if has_credentials && smtp.tls == SmtpTls::None && !is_loopback_host(&smtp.host) {
            return Err(ConfigError::Invalid(format!(
                "smtp: credentials would cross the network in clear to {:?}: set smtp.tls to \"start_tls\" or \"tls\" \
                 (tls = \"none\" is only for a relay on loopback)",
                smtp.host
            )));
        }
        let argon2 = self.auth.argon2;
        argon2::Params::new(argon2.memory_kib, argon2.iterations, argon2.parallelism, None).map_err(|error| {
            ConfigError::Invalid(format!(
                "auth.argon2 (memory_kib = {}, iterations = {}, parallelism = {}): {error}",
                argon2.memory_kib, argon2.iterations, argon2.parallelism
            ))
        })?;
        let auth = &self.auth;
        if auth.login_per_account_per_minute == 0
            || auth.mutations_per_user_per_minute == 0
            || auth.password_hashing_concurrency_max == 0
            || auth.rate_limiter_keys_max == 0
            || auth.api_tokens_per_user_max == 0
            || auth.servers_per_user_max == 0
        {
            return Err(ConfigError::Invalid(
                "auth: login_per_account_per_minute, mutations_per_user_per_minute, \
                 password_hashing_concurrency_max, rate_limiter_keys_max, api_tokens_per_user_max and \
                 servers_per_user_max must be at least 1"
                    .to_string(),
            ));
        }
        if auth.api_token_ttl_ms_default == 0 || auth.api_token_ttl_ms_default > auth.api_token_ttl_ms_max {
            return Err(ConfigError::Invalid(
                "auth.api_token_ttl_ms_default must be 1 to auth.api_token_ttl_ms_max".to_string(),
            ));
        }
        if auth.unverified_purge_after_ms < auth.verification_ttl_ms {
            return Err(ConfigError::Invalid(
                "auth.unverified_purge_after_ms must be at least auth.verification_ttl_ms (a code must not outlive its account)"
                    .to_string(),
            ));
        }
        for proxy in &auth.trusted_proxies {
            crate::auth::IpPrefix::parse(proxy)
                .map_err(|message| ConfigError::Invalid(format!("auth.trusted_proxies: {proxy:?}: {message}")))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for provider in &self.oauth.providers {
            provider.resolve()?;
            if !names.insert(provider.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "oauth.providers: {:?} is configured twice",
                    provider.name
                )));
            }
        }
        if !self.oauth.providers.is_empty() && self.secrets.keys.is_empty() {
            return Err(ConfigError::Invalid(
                "oauth.providers need a secret key to seal provider tokens: set PAYPERPLAY_SECRET_KEY or [secrets]"
                    .to_string(),
            ));
        }
        if axum::http::HeaderName::try_from(auth.forwarded_header.as_str()).is_err() {
            return Err(ConfigError::Invalid(format!(
                "auth.forwarded_header {:?} is not a header name",
                auth.forwarded_header
            )));
        }
        Ok(())
    }
}

/// `localhost`, or an address in 127.0.0.0/8 or ::1.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
