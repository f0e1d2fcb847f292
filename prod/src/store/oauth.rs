//! OAuth sign-in: pending authorizations (single-use state, expiring) and identities
//! with their provider tokens sealed at rest; re-sealing under a new key.

use payperplay_core::Timestamp;
use payperplay_nodes::{SecretBox, SecretError};
use secrecy::SecretString;

use super::{Store, StoreError, StoreResult, UserRow};
use crate::clock::to_db;

/// Rows re-sealed per query by [`Store::reseal_secrets`].
const RESEAL_PAGE_ROWS: i64 = 500;

/// A pending authorization, taken (and deleted) when the provider answers.
#[derive(Debug, Clone)]
pub struct OAuthState {
    pub provider: String,
    pub pkce_verifier: String,
    pub link_user_id: Option<i64>,
    pub expires_at_ms: i64,
}

/// What the provider told us about the person signing in.
#[derive(Debug, Clone)]
pub struct OAuthProfile {
    pub provider: String,
    pub subject: String,
    /// Lower-cased.
    pub email: String,
    /// Whether the provider says the address is verified.
    pub email_verified: bool,
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
}

/// How a sign-in ended.
#[derive(Debug, Clone)]
pub enum OAuthSignIn {
    /// The identity was known: its user signs in (tokens re-sealed).
    Known(UserRow),
    /// The identity was linked to an existing account (by request, or by a verified
    /// address both sides agree on).
    Linked(UserRow),
    /// A new user and identity were created (one transaction).
    Created(UserRow),
    /// Refused: the address belongs to an account and linking needs both sides
    /// verified, or the account to link is not verified, or the identity is
    /// another account's.
    Refused(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl From<sqlx::Error> for SealError {
    fn from(error: sqlx::Error) -> Self {
        SealError::Store(error.into())
    }
}

/// Re-sealing counts per kind of secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealCounts {
    pub oauth_identities: u64,
    pub rcon_passwords: u64,
}

impl Store {
    pub async fn create_oauth_state(
        &self,
        state_hash: &[u8],
        provider: &str,
        pkce_verifier: &str,
        link_user_id: Option<i64>,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        // Expired states are cleaned here, so the table stays small.
        sqlx::query("DELETE FROM oauth_states WHERE expires_at_ms <= $1")
            .bind(to_db(now))
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO oauth_states (state_hash, provider, pkce_verifier, link_user_id, created_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(state_hash)
        .bind(provider)
        .bind(pkce_verifier)
        .bind(link_user_id)
        .bind(to_db(now))
        .bind(to_db(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes the pending authorization with this state: deleted whatever happens
    /// next, so a state works once. `None` for an unknown (or already used) state.
    pub async fn take_oauth_state(&self, state_hash: &[u8]) -> StoreResult<Option<OAuthState>> {
        let row: Option<(String, String, Option<i64>, i64)> = sqlx::query_as(
            "DELETE FROM oauth_states WHERE state_hash = $1
             RETURNING provider, pkce_verifier, link_user_id, expires_at_ms",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(provider, pkce_verifier, link_user_id, expires_at_ms)| OAuthState {
                provider,
                pkce_verifier,
                link_user_id,
                expires_at_ms,
            }),
        )
    }

    /// Signs in with a provider's profile, in one transaction: a known identity signs
    /// its user in; otherwise the identity is linked (to `link_user_id`, which must be
    /// verified, or to the account with the same address when both the account and
    /// the provider have verified it) or a new user is created with it. The provider's
    /// tokens are sealed with the row id as associated data.
    pub async fn oauth_sign_in(
        &self,
        profile: &OAuthProfile,
        link_user_id: Option<i64>,
        secrets: &SecretBox,
        now: Timestamp,
    ) -> Result<OAuthSignIn, SealError> {
        let mut tx = self.pool.begin().await?;
        let known: Option<(i64, i64)> =
            sqlx::query_as("SELECT id, user_id FROM oauth_identities WHERE provider = $1 AND subject = $2 FOR UPDATE")
                .bind(&profile.provider)
                .bind(&profile.subject)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((identity_id, user_id)) = known {
            if link_user_id.is_some_and(|link| link != user_id) {
                return Ok(OAuthSignIn::Refused(
                    "this provider identity belongs to another account",
                ));
            }
            seal_identity(&mut tx, identity_id, profile, secrets, now).await?;
            let user: UserRow = sqlx::query_as("SELECT * FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(OAuthSignIn::Known(user));
        }
        let existing: Option<UserRow> = match link_user_id {
            Some(user_id) => {
                sqlx::query_as("SELECT * FROM users WHERE id = $1 FOR UPDATE")
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query_as("SELECT * FROM users WHERE email = $1 FOR UPDATE")
                    .bind(&profile.email)
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        let (user, created) = match existing {
            Some(user) if link_user_id.is_some() => {
                if !user.email_verified {
                    return Ok(OAuthSignIn::Refused("verify your address before linking a provider"));
                }
                (user, false)
            }
            Some(user) => {
                if !(user.email_verified && profile.email_verified) {
                    return Ok(OAuthSignIn::Refused(
                        "an account with this address exists: log in with its password and link the provider",
                    ));
                }
                (user, false)
            }
            None if link_user_id.is_some() => return Err(StoreError::NotFound("user").into()),
            None => {
                // No password: the account signs in through the provider (or sets
                // one with a reset by mail). An empty hash never verifies.
                let user: UserRow = sqlx::query_as(
                    "INSERT INTO users (email, email_verified, password_hash, role, balance_micros, created_at_ms)
                     VALUES ($1, $2, '', 'user', 0, $3) RETURNING *",
                )
                .bind(&profile.email)
                .bind(profile.email_verified)
                .bind(to_db(now))
                .fetch_one(&mut *tx)
                .await?;
                (user, true)
            }
        };
        let identity_id: i64 = sqlx::query_scalar(
            "INSERT INTO oauth_identities
                 (user_id, provider, subject, email, key_id, access_token_sealed, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, '', $6, $6) RETURNING id",
        )
        .bind(user.id)
        .bind(&profile.provider)
        .bind(&profile.subject)
        .bind(&profile.email)
        .bind(i64::from(secrets.current_key_id()))
        .bind(to_db(now))
        .fetch_one(&mut *tx)
        .await?;
        seal_identity(&mut tx, identity_id, profile, secrets, now).await?;
        tx.commit().await?;
        Ok(if created {
            OAuthSignIn::Created(user)
        } else {
            OAuthSignIn::Linked(user)
        })
    }

    /// Re-seals every sealed secret not sealed with the current key (OAuth provider
    /// tokens, RCON passwords), page by page, each row in its own statement. Rows
    /// sealed with a key that is no longer configured are an error naming the row.
    pub async fn reseal_secrets(&self, secrets: &SecretBox) -> Result<ResealCounts, SealError> {
        let current = i64::from(secrets.current_key_id());
        let mut counts = ResealCounts::default();
        loop {
            let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
                "SELECT id, access_token_sealed, refresh_token_sealed FROM oauth_identities
                 WHERE key_id <> $1 ORDER BY id LIMIT $2",
            )
            .bind(current)
            .bind(RESEAL_PAGE_ROWS)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            for (id, access, refresh) in rows {
                let access = secrets.encrypt(id, &secrets.decrypt(id, &access)?)?;
                let refresh = match refresh {
                    Some(sealed) => Some(secrets.encrypt(id, &secrets.decrypt(id, &sealed)?)?),
                    None => None,
                };
                sqlx::query(
                    "UPDATE oauth_identities SET access_token_sealed = $2, refresh_token_sealed = $3, key_id = $4
                     WHERE id = $1",
                )
                .bind(id)
                .bind(access)
                .bind(refresh)
                .bind(current)
                .execute(&self.pool)
                .await?;
                counts.oauth_identities += 1;
            }
        }
        let current_prefix = format!("v1:{current}:%");
        loop {
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, rcon_password_sealed FROM servers
                 WHERE rcon_password_sealed IS NOT NULL AND rcon_password_sealed NOT LIKE $1 ORDER BY id LIMIT $2",
            )
            .bind(&current_prefix)
            .bind(RESEAL_PAGE_ROWS)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            for (id, sealed) in rows {
                let resealed = secrets.encrypt(id, &secrets.decrypt(id, &sealed)?)?;
                sqlx::query("UPDATE servers SET rcon_password_sealed = $2 WHERE id = $1")
                    .bind(id)
                    .bind(resealed)
                    .execute(&self.pool)
                    .await?;
                counts.rcon_passwords += 1;
            }
        }
        Ok(counts)
    }
}

async fn seal_identity(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    identity_id: i64,
    profile: &OAuthProfile,
    secrets: &SecretBox,
    now: Timestamp,
) -> Result<(), SealError> {
    let access = secrets.encrypt(identity_id, &profile.access_token)?;
    let refresh = match &profile.refresh_token {
        Some(token) => Some(secrets.encrypt(identity_id, token)?),
        None => None,
    };
    sqlx::query(
        "UPDATE oauth_identities
         SET access_token_sealed = $2, refresh_token_sealed = $3, key_id = $4, email = $5, updated_at_ms = $6
         WHERE id = $1",
    )
    .bind(identity_id)
    .bind(access)
    .bind(refresh)
    .bind(i64::from(secrets.current_key_id()))
    .bind(&profile.email)
    .bind(to_db(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
