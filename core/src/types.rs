//! Units and identifiers. Everything is an integer: time in milliseconds UTC, RAM in
//! MiB, money in micro-units (1 EUR = 1_000_000 micros).

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC). The core never reads a clock: the driver
/// (simulator or production shell) passes `now` into every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn ms(self) -> u64 {
        self.0
    }

    pub fn plus_ms(self, duration_ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_ms))
    }

    /// Milliseconds from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

pub const MS_PER_SECOND: u64 = 1_000;
pub const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
pub const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
pub const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;
/// Hetzner and most hosts count a month as 730 hours for monthly caps and proration.
pub const MS_PER_MONTH: u64 = 730 * MS_PER_HOUR;
pub const MIB_PER_GIB: u64 = 1024;
pub const MICROS_PER_EUR: i64 = 1_000_000;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// A customer account. Allocated by the shell (the database in production).
    UserId
);
id_type!(
    /// A Minecraft server. Allocated by the shell.
    ServerId
);
id_type!(
    /// A machine in the fleet (dedicated or cloud VM). Allocated by the core.
    NodeId
);
id_type!(
    /// A decision the core issued. Allocated by the core; doubles as the idempotency
    /// key the shell uses towards Docker, Hetzner and SMTP.
    CommandId
);

/// Index of a VM type in the core's cloud catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VmTypeIdx(pub u16);

/// Index of a location in the core's cloud catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LocationIdx(pub u16);

/// `mib × duration_ms × price_per_gib_per_period / (1024 × period_ms)` as a numerator
/// over a fixed denominator, so accrual can carry its remainder and never lose a
/// fraction of a micro.
pub fn ram_time_numerator(ram_mib: u64, duration_ms: u64, price_micros_per_gib_period: u64) -> u128 {
    ram_mib as u128 * duration_ms as u128 * price_micros_per_gib_period as u128
}
