//! What an order may name: VM types with prices per location, locations, and the
//! platform's SSH key.

use reqwest::Method;
use serde_json::json;

use super::transport::Failure;
use super::{HetznerClient, LABEL_PLATFORM, PER_PAGE_MAX, decode, join_names, next_page};
use crate::error::{ErrorClass, HetznerError};
use crate::model::{
    Location, LocationsEnvelope, ServerType, ServerTypesEnvelope, SshKey, SshKeyEnvelope, SshKeysEnvelope,
};

impl HetznerClient {
    /// Every VM type with its prices and availability per location.
    pub async fn server_types(&self) -> Result<Vec<ServerType>, HetznerError> {
        self.list_all("list_server_types", "server_types", |answer: ServerTypesEnvelope| {
            (answer.server_types, answer.meta.pagination)
        })
        .await
    }

    /// Every location.
    pub async fn locations(&self) -> Result<Vec<Location>, HetznerError> {
        self.list_all("list_locations", "locations", |answer: LocationsEnvelope| {
            (answer.locations, answer.meta.pagination)
        })
        .await
    }

    /// Checks that every configured VM type and location exists at Hetzner, and that
    /// each type is offered in each location; names the first one that is not.
    pub async fn check_catalog(
        &self,
        server_types: &[&str],
        locations: &[&str],
    ) -> Result<Vec<ServerType>, HetznerError> {
        let known_locations = self.locations().await?;
        for location in locations {
            if !known_locations.iter().any(|known| known.name == *location) {
                return Err(HetznerError::UnknownLocation {
                    name: (*location).to_owned(),
                    known: join_names(known_locations.iter().map(|known| known.name.as_str())),
                });
            }
        }
        let known_types = self.server_types().await?;
        for server_type in server_types {
            if !known_types.iter().any(|known| known.name == *server_type) {
                return Err(HetznerError::UnknownServerType {
                    name: (*server_type).to_owned(),
                    known: join_names(known_types.iter().map(|known| known.name.as_str())),
                });
            }
        }
        Ok(known_types)
    }

    // ---------------------------------------------------------------- SSH keys

    /// Makes sure the platform's SSH key exists under `name`; returns it. A key of that
    /// name with another public key is an error (we never replace a key silently).
    pub async fn ensure_ssh_key(&self, name: &str, public_key: &str) -> Result<SshKey, HetznerError> {
        const OP: &str = "create_ssh_key";
        let public_key = public_key.trim();
        if let Some(existing) = self.find_ssh_key(|key| key.name == name).await? {
            return same_key(existing, name, public_key);
        }
        let body = json!({
            "name": name,
            "public_key": public_key,
            "labels": { LABEL_PLATFORM: self.config.platform },
        });
        match self.execute(OP, Method::POST, "ssh_keys", &[], Some(&body)).await {
            Ok(bytes) => Ok(decode::<SshKeyEnvelope>(OP, &bytes)?.ssh_key),
            Err(Failure::Api { error, .. }) if error.code == "uniqueness_error" => {
                // Created meanwhile, or the same key exists under another name.
                if let Some(existing) = self.find_ssh_key(|key| key.name == name).await? {
                    return same_key(existing, name, public_key);
                }
                match self
                    .find_ssh_key(|key| key_body(&key.public_key) == key_body(public_key))
                    .await?
                {
                    Some(existing) => Ok(existing),
                    None => Err(HetznerError::Api {
                        operation: OP,
                        status: 409,
                        code: error.code,
                        message: error.message,
                        class: ErrorClass::Permanent,
                    }),
                }
            }
            Err(failure) => Err(self.failure_to_error(OP, failure)),
        }
    }

    async fn find_ssh_key(&self, matches: impl Fn(&SshKey) -> bool) -> Result<Option<SshKey>, HetznerError> {
        const OP: &str = "list_ssh_keys";
        let mut page = 1;
        loop {
            let query = [("page", page.to_string()), ("per_page", PER_PAGE_MAX.to_string())];
            let bytes = self
                .execute(OP, Method::GET, "ssh_keys", &query, None)
                .await
                .map_err(|failure| self.failure_to_error(OP, failure))?;
            let answer: SshKeysEnvelope = decode(OP, &bytes)?;
            if let Some(found) = answer.ssh_keys.into_iter().find(|key| matches(key)) {
                return Ok(Some(found));
            }
            match next_page(OP, &answer.meta.pagination, page)? {
                Some(next) => page = next,
                None => return Ok(None),
            }
        }
    }
}

fn same_key(existing: SshKey, name: &str, public_key: &str) -> Result<SshKey, HetznerError> {
    if key_body(&existing.public_key) == key_body(public_key) {
        Ok(existing)
    } else {
        Err(HetznerError::Config(format!(
            "an SSH key named {name:?} exists at Hetzner with another public key (fingerprint {})",
            existing.fingerprint
        )))
    }
}

/// `ssh-ed25519 AAAA... comment` → `ssh-ed25519 AAAA...` (comments do not matter).
fn key_body(public_key: &str) -> String {
    public_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}
