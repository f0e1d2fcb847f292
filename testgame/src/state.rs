//! What the listeners share: the configuration, the connected players, and the channels
//! that carry chat to players and stop/crash requests to `main`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use payperplay_mcproto::packets::{PlayerSample, hyphenated_uuid};
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::Config;

/// How many player names a status answer samples (vanilla: 12).
pub const STATUS_SAMPLE_PLAYERS_MAX: usize = 12;
const CHAT_QUEUE_LEN: usize = 64;

/// Why the server should end, as asked over RCON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Save the world and exit 0.
    Stop,
    /// Exit 1 without saving.
    Crash,
}

#[derive(Debug, Clone)]
pub struct Player {
    pub name: String,
    pub uuid: u128,
}

pub struct Shared {
    pub config: Config,
    /// Players in play state by entity id (which grows with every login: join order).
    players: Mutex<BTreeMap<i32, Player>>,
    next_entity_id: AtomicI32,
    pub chat: broadcast::Sender<String>,
    /// Becomes true when the server stops: play connections send a disconnect and close.
    pub stopping: watch::Sender<bool>,
    pub control: mpsc::Sender<Control>,
}

/// Why a login is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefusal {
    Full,
    NameTaken,
}

impl Shared {
    pub fn new(config: Config, control: mpsc::Sender<Control>) -> Self {
        Shared {
            config,
            players: Mutex::new(BTreeMap::new()),
            next_entity_id: AtomicI32::new(1),
            chat: broadcast::channel(CHAT_QUEUE_LEN).0,
            stopping: watch::channel(false).0,
            control,
        }
    }

    fn players(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Player>> {
        self.players.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a player unless the server is full or the name is taken; the entity id.
    pub fn join(&self, player: Player) -> Result<i32, JoinRefusal> {
        let mut players = self.players();
        if players.len() >= self.config.max_players as usize {
            return Err(JoinRefusal::Full);
        }
        if players
            .values()
            .any(|other| other.name.eq_ignore_ascii_case(&player.name))
        {
            return Err(JoinRefusal::NameTaken);
        }
        let entity_id = self.next_entity_id.fetch_add(1, Ordering::Relaxed);
        players.insert(entity_id, player);
        Ok(entity_id)
    }

    pub fn leave(&self, entity_id: i32) -> Option<Player> {
        self.players().remove(&entity_id)
    }

    pub fn online_count(&self) -> usize {
        self.players().len()
    }

    /// Names in join order.
    pub fn player_names(&self) -> Vec<String> {
        self.players().values().map(|player| player.name.clone()).collect()
    }

    /// The first players by join order, for a status answer.
    pub fn sample(&self) -> Vec<PlayerSample> {
        self.players()
            .values()
            .take(STATUS_SAMPLE_PLAYERS_MAX)
            .map(|player| PlayerSample {
                name: player.name.clone(),
                id: hyphenated_uuid(player.uuid),
            })
            .collect()
    }
}
