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
}

impl Store {
    pub async fn insert_server(
        &self,
        owner_id: i64,
        name: &str,
        ram_mib: u32,
        now: Timestamp,
    ) -> StoreResult<ServerRow> {
        Ok(sqlx::query_as(
            "INSERT INTO servers (owner_id, name, ram_mib, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $4)
             RETURNING id, owner_id, name, ram_mib, created_at_ms, updated_at_ms",
        )
        .bind(owner_id)
        .bind(name)
        .bind(ram_mib as i32)
        .bind(to_db(now))
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
            "SELECT id, owner_id, name, ram_mib, created_at_ms, updated_at_ms FROM servers
             WHERE id = $1 AND deleted_at_ms IS NULL",
        )
        .bind(server_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("server"))
    }

    /// The owner's live server; `NotFound` for other owners' and deleted servers.
    pub async fn server(&self, owner_id: i64, server_id: i64) -> StoreResult<ServerRow> {
        sqlx::query_as(
            "SELECT id, owner_id, name, ram_mib, created_at_ms, updated_at_ms FROM servers
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
            "SELECT id, owner_id, name, ram_mib, created_at_ms, updated_at_ms FROM servers
             WHERE owner_id = $1 AND deleted_at_ms IS NULL ORDER BY id",
        )
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every live server (for reconciling with the core at start-up).
    pub async fn all_live_servers(&self) -> StoreResult<Vec<ServerRow>> {
        Ok(sqlx::query_as(
            "SELECT id, owner_id, name, ram_mib, created_at_ms, updated_at_ms FROM servers
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
        now: Timestamp,
    ) -> StoreResult<ServerRow> {
        sqlx::query_as(
            "UPDATE servers SET name = COALESCE($3, name), ram_mib = COALESCE($4, ram_mib),
                 updated_at_ms = $5
             WHERE id = $1 AND owner_id = $2 AND deleted_at_ms IS NULL
             RETURNING id, owner_id, name, ram_mib, created_at_ms, updated_at_ms",
        )
        .bind(server_id)
        .bind(owner_id)
        .bind(name)
        .bind(ram_mib.map(|mib| mib as i32))
        .bind(to_db(now))
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
