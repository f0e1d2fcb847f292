//! The world: `<data dir>/world/level.dat`, a small JSON document (not vanilla's NBT)
//! that counts saves, so tests can see that a stop saved and a restart found the old
//! world. Created on first boot; rewritten atomically (temp file, fsync, rename).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const LEVEL_NAME: &str = "world";
const FORMAT: &str = "payperplay-testgame-world/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    pub format: String,
    pub level_name: String,
    pub created_at_ms: u64,
    /// How many times the world was saved (0 right after creation).
    pub save_count: u64,
    pub saved_at_ms: u64,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a world file of this server: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// The world on disk and its current level data.
#[derive(Debug)]
pub struct World {
    level_path: PathBuf,
    pub level: Level,
}

impl World {
    /// Loads the world under `data_dir`, creating (and writing) it when absent.
    pub fn open(data_dir: &Path, version: &str, now_ms: u64) -> Result<(World, bool), WorldError> {
        let world_dir = data_dir.join(LEVEL_NAME);
        let level_path = world_dir.join("level.dat");
        match std::fs::read(&level_path) {
            Ok(bytes) => {
                let level: Level = serde_json::from_slice(&bytes).map_err(|source| WorldError::Corrupt {
                    path: level_path.clone(),
                    source,
                })?;
                Ok((World { level_path, level }, false))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&world_dir).map_err(|source| WorldError::Io {
                    action: "create",
                    path: world_dir.clone(),
                    source,
                })?;
                let level = Level {
                    format: FORMAT.to_owned(),
                    level_name: LEVEL_NAME.to_owned(),
                    created_at_ms: now_ms,
                    save_count: 0,
                    saved_at_ms: now_ms,
                    version: version.to_owned(),
                };
                let world = World { level_path, level };
                world.write()?;
                Ok((world, true))
            }
            Err(source) => Err(WorldError::Io {
                action: "read",
                path: level_path,
                source,
            }),
        }
    }

    /// Saves: one more save, stamped `now_ms`.
    pub fn save(&mut self, now_ms: u64) -> Result<(), WorldError> {
        self.level.save_count += 1;
        self.level.saved_at_ms = now_ms;
        self.write()
    }

    pub fn level_path(&self) -> &Path {
        &self.level_path
    }

    fn write(&self) -> Result<(), WorldError> {
        use std::io::Write;
        let temp_path = self.level_path.with_extension("dat.tmp");
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| WorldError::Io { action, path, source }
        };
        let mut bytes = serde_json::to_vec_pretty(&self.level).expect("level data serializes");
        bytes.push(b'\n');
        let mut file = std::fs::File::create(&temp_path).map_err(io("create", &temp_path))?;
        file.write_all(&bytes).map_err(io("write", &temp_path))?;
        file.sync_all().map_err(io("sync", &temp_path))?;
        std::fs::rename(&temp_path, &self.level_path).map_err(io("rename into place", &self.level_path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_is_created_saved_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut world, created) = World::open(dir.path(), "1.12.2", 1_000).unwrap();
        assert!(created);
        assert_eq!(world.level.save_count, 0);
        world.save(2_000).unwrap();
        let (again, created) = World::open(dir.path(), "1.12.2", 3_000).unwrap();
        assert!(!created);
        assert_eq!((again.level.save_count, again.level.saved_at_ms), (1, 2_000));
        assert_eq!(again.level.created_at_ms, 1_000);
    }

    #[test]
    fn a_corrupt_world_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("world")).unwrap();
        std::fs::write(dir.path().join("world/level.dat"), b"\x1f\x8b not json").unwrap();
        let error = World::open(dir.path(), "1.12.2", 0).unwrap_err();
        assert!(error.to_string().contains("level.dat is not a world file"), "{error}");
    }
}
