//! The Minecraft Java Edition protocol pieces PayPerPlay speaks: the test game server
//! (`payperplay-testgame`), the production status-ping observer and the player router.
//!
//! - [`codec`]: VarInt/VarLong, strings, the primitive reader and writer over a packet body.
//! - [`frame`]: uncompressed packet framing (`VarInt length, VarInt id, body`), async.
//! - [`packets`]: handshake, status, ping/pong, login start, login disconnect, login success.
//! - [`legacy`]: the pre-1.7 server list ping (`0xFE`, `0xFE 0x01`, `0xFE 0x01 0xFA "MC|PingHost"`).
//! - [`rcon`]: the Source RCON packet codec and an RCON client.
//! - [`client`]: [`status_ping`], which asks a server whether it is up and who plays.
//! - [`server`]: [`server::read_opening`], a connection's first bytes as a legacy ping or a
//!   handshake (with its raw bytes, for a proxy).
//!
//! Every decoder has an explicit limit (packet length, string length); read deadlines are
//! the caller's (wrap reads in `tokio::time::timeout`), except in the clients, which take
//! a timeout for the whole exchange.

pub mod client;
pub mod codec;
pub mod error;
pub mod frame;
pub mod legacy;
pub mod packets;
pub mod rcon;
pub mod server;

pub use client::{StatusReport, status_ping};
pub use error::ProtoError;
