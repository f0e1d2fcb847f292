//! Secrets at rest: AES-256-GCM with a random 96-bit nonce per encryption, the row id as
//! associated data (a ciphertext copied to another row does not decrypt), and a key id
//! in every sealed value so keys can be rotated: new values are sealed with the current
//! key, old ones still open with the key they name.
//!
//! Sealed text format (fits a TEXT column): `v1:<key id>:<nonce hex>:<ciphertext+tag hex>`.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use secrecy::{ExposeSecret, SecretString};

/// Bytes of an AES-256 key.
pub const KEY_BYTES: usize = 32;
/// Bytes of a GCM nonce.
pub const NONCE_BYTES: usize = 12;
/// Random bytes behind a generated RCON password (hex-encoded: 32 characters).
pub const RCON_PASSWORD_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret key {key_id}: expected {KEY_BYTES} bytes as {} hex digits, got {got}", KEY_BYTES * 2)]
    BadKey { key_id: u32, got: String },
    #[error("the current secret key id {key_id} is not among the configured keys")]
    NoCurrentKey { key_id: u32 },
    #[error("sealed secret of row {row_id} is malformed: {reason}")]
    Malformed { row_id: i64, reason: &'static str },
    #[error("sealed secret of row {row_id} names key {key_id}, which is not configured (rotated out?)")]
    UnknownKey { row_id: i64, key_id: u32 },
    #[error("sealed secret of row {row_id} does not decrypt with key {key_id} (wrong key, wrong row, or tampered)")]
    Decrypt { row_id: i64, key_id: u32 },
    #[error("the system random generator failed: {0}")]
    Random(String),
}

/// Encrypts and decrypts small secrets (RCON passwords) for storage. Its `Debug` shows
/// key ids only, never key material.
#[derive(Clone)]
pub struct SecretBox {
    current_key_id: u32,
    ciphers: BTreeMap<u32, Aes256Gcm>,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox")
            .field("current_key_id", &self.current_key_id)
            .field("key_ids", &self.ciphers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretBox {
    /// `keys`: (key id, 64 hex digits) pairs from configuration or the environment;
    /// `current_key_id` seals new values.
    pub fn from_hex_keys<'a>(
        current_key_id: u32,
        keys: impl IntoIterator<Item = (u32, &'a str)>,
    ) -> Result<SecretBox, SecretError> {
        let mut ciphers = BTreeMap::new();
        for (key_id, key_hex) in keys {
            let bytes = hex::decode(key_hex.trim()).map_err(|_| SecretError::BadKey {
                key_id,
                got: format!("{} characters, not all hex", key_hex.trim().len()),
            })?;
            let key = Key::<Aes256Gcm>::try_from(bytes.as_slice()).map_err(|_| SecretError::BadKey {
                key_id,
                got: format!("{} bytes", bytes.len()),
            })?;
            ciphers.insert(key_id, Aes256Gcm::new(&key));
        }
        if !ciphers.contains_key(&current_key_id) {
            return Err(SecretError::NoCurrentKey { key_id: current_key_id });
        }
        Ok(SecretBox {
            current_key_id,
            ciphers,
        })
    }

    /// A fresh random key as 64 hex digits (for `payperplay` set-up and tests).
    pub fn generate_key_hex() -> Result<String, SecretError> {
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key).map_err(|error| SecretError::Random(error.to_string()))?;
        Ok(hex::encode(key))
    }

    pub fn current_key_id(&self) -> u32 {
        self.current_key_id
    }

    /// Seals `plaintext` for the row `row_id` with the current key and a fresh nonce.
    pub fn encrypt(&self, row_id: i64, plaintext: &SecretString) -> Result<String, SecretError> {
        let cipher = &self.ciphers[&self.current_key_id];
        let nonce = Nonce::generate();
        let aad = associated_data(row_id, self.current_key_id);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Random("AES-GCM refused to encrypt".to_string()))?;
        Ok(format!(
            "v1:{}:{}:{}",
            self.current_key_id,
            hex::encode(nonce.as_slice()),
            hex::encode(ciphertext)
        ))
    }

    /// Opens a value sealed by [`SecretBox::encrypt`] for the same `row_id`.
    pub fn decrypt(&self, row_id: i64, sealed: &str) -> Result<SecretString, SecretError> {
        let malformed = |reason| SecretError::Malformed { row_id, reason };
        let mut parts = sealed.split(':');
        if parts.next() != Some("v1") {
            return Err(malformed("it does not start with `v1:`"));
        }
        let key_id: u32 = parts
            .next()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| malformed("the key id is not a number"))?;
        let nonce_bytes = parts
            .next()
            .and_then(|text| hex::decode(text).ok())
            .filter(|bytes| bytes.len() == NONCE_BYTES)
            .ok_or_else(|| malformed("the nonce is not 24 hex digits"))?;
        let ciphertext = parts
            .next()
            .and_then(|text| hex::decode(text).ok())
            .ok_or_else(|| malformed("the ciphertext is not hex"))?;
        if parts.next().is_some() {
            return Err(malformed("it has more than four fields"));
        }
        let cipher = self
            .ciphers
            .get(&key_id)
            .ok_or(SecretError::UnknownKey { row_id, key_id })?;
        let nonce = Nonce::try_from(nonce_bytes.as_slice()).map_err(|_| malformed("the nonce has the wrong length"))?;
        let aad = associated_data(row_id, key_id);
        let plaintext = cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Decrypt { row_id, key_id })?;
        let text = String::from_utf8(plaintext).map_err(|_| malformed("the plaintext is not UTF-8"))?;
        Ok(SecretString::from(text))
    }
}

/// The row id (and the key id, so a sealed value cannot be relabelled to another key).
fn associated_data(row_id: i64, key_id: u32) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..8].copy_from_slice(&row_id.to_le_bytes());
    aad[8..].copy_from_slice(&key_id.to_le_bytes());
    aad
}

/// A fresh random RCON password: 128 bits from the OS, as 32 hex digits (RCON payloads
/// are ASCII).
pub fn generate_rcon_password() -> Result<SecretString, SecretError> {
    let mut bytes = [0u8; RCON_PASSWORD_BYTES];
    getrandom::fill(&mut bytes).map_err(|error| SecretError::Random(error.to_string()))?;
    Ok(SecretString::from(hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_key_box(current: u32) -> (SecretBox, String, String) {
        let key_1 = SecretBox::generate_key_hex().unwrap();
        let key_2 = SecretBox::generate_key_hex().unwrap();
        let secret_box = SecretBox::from_hex_keys(current, [(1, key_1.as_str()), (2, key_2.as_str())]).unwrap();
        (secret_box, key_1, key_2)
    }

    #[test]
    fn a_sealed_secret_opens_for_its_row_and_hides_the_plaintext() {
        let (secret_box, _, _) = two_key_box(1);
        let password = generate_rcon_password().unwrap();
        let sealed = secret_box.encrypt(42, &password).unwrap();
        assert!(sealed.starts_with("v1:1:"), "{sealed}");
        assert!(!sealed.contains(password.expose_secret()));
        let opened = secret_box.decrypt(42, &sealed).unwrap();
        assert_eq!(opened.expose_secret(), password.expose_secret());
    }

    #[test]
    fn two_encryptions_of_one_secret_differ_by_their_random_nonce() {
        let (secret_box, _, _) = two_key_box(1);
        let password = SecretString::from("hunter2".to_string());
        let first = secret_box.encrypt(7, &password).unwrap();
        let second = secret_box.encrypt(7, &password).unwrap();
        assert_ne!(first, second);
        assert_eq!(secret_box.decrypt(7, &first).unwrap().expose_secret(), "hunter2");
        assert_eq!(secret_box.decrypt(7, &second).unwrap().expose_secret(), "hunter2");
    }

    #[test]
    fn a_secret_copied_to_another_row_does_not_open() {
        let (secret_box, _, _) = two_key_box(1);
        let sealed = secret_box.encrypt(1, &SecretString::from("pw".to_string())).unwrap();
        let error = secret_box.decrypt(2, &sealed).unwrap_err();
        assert!(
            matches!(error, SecretError::Decrypt { row_id: 2, key_id: 1 }),
            "{error}"
        );
    }

    #[test]
    fn a_tampered_ciphertext_does_not_open() {
        let (secret_box, _, _) = two_key_box(1);
        let sealed = secret_box.encrypt(5, &SecretString::from("pw".to_string())).unwrap();
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(matches!(
            secret_box.decrypt(5, &tampered),
            Err(SecretError::Decrypt { .. })
        ));
    }

    #[test]
    fn after_rotation_old_values_open_and_new_ones_use_the_new_key() {
        let (old_box, key_1, key_2) = two_key_box(1);
        let sealed_old = old_box.encrypt(9, &SecretString::from("old".to_string())).unwrap();
        let rotated = SecretBox::from_hex_keys(2, [(1, key_1.as_str()), (2, key_2.as_str())]).unwrap();
        assert_eq!(rotated.decrypt(9, &sealed_old).unwrap().expose_secret(), "old");
        let sealed_new = rotated.encrypt(9, &SecretString::from("new".to_string())).unwrap();
        assert!(sealed_new.starts_with("v1:2:"), "{sealed_new}");
        // Once key 1 is retired, the old value names a key that is gone.
        let retired = SecretBox::from_hex_keys(2, [(2, key_2.as_str())]).unwrap();
        let error = retired.decrypt(9, &sealed_old).unwrap_err();
        assert!(
            matches!(error, SecretError::UnknownKey { row_id: 9, key_id: 1 }),
            "{error}"
        );
        // Relabelling the key id does not help an attacker: the key id is authenticated too.
        let relabelled = sealed_old.replacen("v1:1:", "v1:2:", 1);
        assert!(matches!(
            rotated.decrypt(9, &relabelled),
            Err(SecretError::Decrypt { .. })
        ));
    }

    #[test]
    fn debug_output_shows_neither_keys_nor_plaintext() {
        let (secret_box, key_1, key_2) = two_key_box(2);
        let debug = format!("{secret_box:?}");
        assert!(debug.contains("current_key_id: 2"), "{debug}");
        assert!(!debug.contains(&key_1) && !debug.contains(&key_2), "{debug}");
        let password = generate_rcon_password().unwrap();
        let debug = format!("{password:?}");
        assert!(!debug.contains(password.expose_secret()), "{debug}");
    }

    #[test]
    fn bad_keys_and_malformed_values_are_named() {
        let error = SecretBox::from_hex_keys(1, [(1, "abcd")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "secret key 1: expected 32 bytes as 64 hex digits, got 2 bytes"
        );
        let key = SecretBox::generate_key_hex().unwrap();
        let error = SecretBox::from_hex_keys(3, [(1, key.as_str())]).unwrap_err();
        assert!(matches!(error, SecretError::NoCurrentKey { key_id: 3 }));
        let secret_box = SecretBox::from_hex_keys(1, [(1, key.as_str())]).unwrap();
        let error = secret_box.decrypt(4, "v2:1:00:00").unwrap_err();
        assert_eq!(
            error.to_string(),
            "sealed secret of row 4 is malformed: it does not start with `v1:`"
        );
    }

    #[test]
    fn generated_passwords_are_32_hex_digits_and_differ() {
        let first = generate_rcon_password().unwrap();
        let second = generate_rcon_password().unwrap();
        assert_eq!(first.expose_secret().len(), 32);
        assert!(first.expose_secret().bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(first.expose_secret(), second.expose_secret());
    }
}
