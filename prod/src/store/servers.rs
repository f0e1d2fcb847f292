//! Minecraft servers: rows owned by a user, soft-deleted.

use payperplay_core::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use super::{Store, StoreError, StoreResult};
use crate::clock::to_db;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct ServerRow {
    pub id: i64,
    pub owner_id: i64,
    pub name: String,
    pub ram_mib: i32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The server's custom hostname (normalised: lowercase, no trailing dot), if any.
    pub hostname: Option<String>,
}

/// What an update does to a server's custom hostname.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostnameChange<'a> {
    Keep,
    Clear,
    /// A normalised hostname.
    Set(&'a str),
}

impl Store {
    pub async fn insert_server(
        &self,
        owner_id: i64,
        name: &str,
        ram_mib: u32,
        hostname: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<ServerRow> {
        Ok(sqlx::query_as(
            "INSERT INTO servers (owner_id, name, ram_mib, created_at_ms, updated_at_ms, hostname)
             VALUES ($1, $2, $3, $4, $4, $5)
             RETURNING id, owner_id, name, ram_mib, created_at_ms, updated_at_ms, hostname",
        )
        .bind(owner_id)
        .bind(name)
        .bind(ram_mib as i32)
        .bind(to_db(now))
        .bind(hostname)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Removes a server row the core refused to create (nothing refers to it yet).
    pub async fn remove_uncreated_server(&self, server_id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM servers WHERE id = $1")
            .bind(server_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A live server whoever owns it (the player router resolves hostnames with it);
    /// `NotFound` for deleted servers.
    pub async fn live_server(&self, server_id: i64) -> StoreResult<ServerRow> {
        sqlx::query_as(
            "SELECT id, owner_id, name, ram_mib, created_at_ms, updated_at_ms, hostname FROM servers
             WHERE id = $1 AND deleted_at_ms IS NULL",
        )
        .bind(server_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("server"))
    }

    /// The live server whose custom hostname is `hostname` (normalised), if any.
    pub async fn live_server_by_hostname(&self, hostname: &str) -> StoreResult<Option<ServerRow>> {
        Ok(sqlx::query_as(
            "SELECT id, owner_id, name, ram_mib, created_at_ms, updated_at_ms, hostname FROM servers
             WHERE hostname = $1 AND deleted_at_ms IS NULL",
        )
        .bind(hostname)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The owner's live server; `NotFound` for other owners' and deleted servers.
    pub async fn server(&self, owner_id: i64, server_id: i64) -> StoreResult<ServerRow> {
        sqlx::query_as(
            "SELECT id, owner_id, name, ram_mib, created_at_ms, updated_at_ms, hostname FROM servers
             WHERE id = $1 AND owner_id = $2 AND deleted_at_ms IS NULL",
        )
        .bind(server_id)
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("server"))
    }

    pub async fn servers_of(&self, owner_id: i64) -> StoreResult<Vec<ServerRow>> {
        Ok(sqlx::query_as(
            "SELECT id, owner_id, name, ram_mib, created_at_ms, updated_at_ms, hostname FROM servers
             WHERE owner_id = $1 AND deleted_at_ms IS NULL ORDER BY id",
        )
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every live server (for reconciling with the core at start-up).
    pub async fn all_live_servers(&self) -> StoreResult<Vec<ServerRow>> {
        Ok(sqlx::query_as(
            "SELECT id, owner_id, name, ram_mib, created_at_ms, updated_at_ms, hostname FROM servers
             WHERE deleted_at_ms IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn update_server(
        &self,
        owner_id: i64,
        server_id: i64,
        name: Option<&str>,
        ram_mib: Option<u32>,
        hostname: HostnameChange<'_>,
        now: Timestamp,
    ) -> StoreResult<ServerRow> {
        let (set_hostname, new_hostname) = match hostname {
            HostnameChange::Keep => (false, None),
            HostnameChange::Clear => (true, None),
            HostnameChange::Set(hostname) => (true, Some(hostname)),
        };
        sqlx::query_as(
            "UPDATE servers SET name = COALESCE($3, name), ram_mib = COALESCE($4, ram_mib),
                 updated_at_ms = $5, hostname = CASE WHEN $6 THEN $7 ELSE hostname END
             WHERE id = $1 AND owner_id = $2 AND deleted_at_ms IS NULL
             RETURNING id, owner_id, name, ram_mib, created_at_ms, updated_at_ms, hostname",
        )
        .bind(server_id)
        .bind(owner_id)
        .bind(name)
        .bind(ram_mib.map(|mib| mib as i32))
        .bind(to_db(now))
        .bind(set_hostname)
        .bind(new_hostname)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("server"))
    }

    pub async fn mark_server_deleted(&self, owner_id: i64, server_id: i64, now: Timestamp) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE servers SET deleted_at_ms = $3, updated_at_ms = $3
             WHERE id = $1 AND owner_id = $2 AND deleted_at_ms IS NULL",
        )
        .bind(server_id)
        .bind(owner_id)
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound("server"));
        }
        Ok(())
    }
}

impl Store {
    /// The server's sealed RCON password, `None` before its first start.
    pub async fn rcon_password_sealed(&self, server_id: i64) -> StoreResult<Option<String>> {
        let row: Option<(Option<String>,)> = sqlx::query_as("SELECT rcon_password_sealed FROM servers WHERE id = $1")
            .bind(server_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some((sealed,)) => Ok(sealed),
            None => Err(StoreError::NotFound("server")),
        }
    }

    /// Stores `sealed` unless the server already has a password; returns the one that
    /// stays (two concurrent first starts agree on one password).
    pub async fn set_rcon_password_sealed_once(&self, server_id: i64, sealed: &str) -> StoreResult<String> {
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "UPDATE servers SET rcon_password_sealed = COALESCE(rcon_password_sealed, $2)
             WHERE id = $1 RETURNING rcon_password_sealed",
        )
        .bind(server_id)
        .bind(sealed)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some((Some(stored),)) => Ok(stored),
            _ => Err(StoreError::NotFound("server")),
        }
    }
}

/// A server's last failed start, as the server view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
pub struct LastStartFailure {
    /// `unknown_image`, `engine_refused`, `disk_full`, `no_free_port`,
    /// `node_unreachable`, `engine_error` or `other`.
    pub kind: String,
    /// The node the start was tried on.
    pub node: String,
    /// What went wrong, naming the node and the cause.
    pub message: String,
    pub failed_at_ms: i64,
}

impl Store {
    /// Keeps `failure` as the server's last failed start (replacing an older one).
    pub async fn record_start_failure(
        &self,
        server_id: i64,
        failure: &crate::drivers::StartFailure,
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO server_start_failures (server_id, kind, node, message, failed_at_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (server_id) DO UPDATE
             SET kind = $2, node = $3, message = $4, failed_at_ms = $5",
        )
        .bind(server_id)
        .bind(failure.kind.name())
        .bind(&failure.node)
        .bind(&failure.message)
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the server's last failed start (a start succeeded).
    pub async fn clear_start_failure(&self, server_id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM server_start_failures WHERE server_id = $1")
            .bind(server_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The server's last failed start, if its last start failed.
    pub async fn start_failure(&self, server_id: i64) -> StoreResult<Option<LastStartFailure>> {
        Ok(
            sqlx::query_as("SELECT kind, node, message, failed_at_ms FROM server_start_failures WHERE server_id = $1")
                .bind(server_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
