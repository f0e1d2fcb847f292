//! Billing: accruals settle into ledger entries on state transitions, and each
//! user's balance deadline (low-balance warning, then zero) is one timer.
//!
//! A user's servers and the ones holding RAM are sorted id vectors (`IdSet`), not
//! B-tree sets: a handful each, changed at every start and stop, without an allocation.

use super::*;

impl Core {
    pub(super) fn begin_storage_accrual(&mut self, server_id: ServerId) {
        let now = self.now;
        let world_size_mib = self.config.billing.world_size_mib;
        let server = self.servers.get_mut(&server_id).expect("exists");
        if !server.has_world {
            server.accrual.kind = None;
            return;
        }
        server.accrual.kind = Some(if server.world_archived {
            AccrualKind::Archive
        } else {
            AccrualKind::Storage
        });
        server.accrual.since = now;
        server.accrual.mib = world_size_mib;
    }

    /// Charge what a server accrued since its last settlement and post the entry.
    pub(super) fn settle(&mut self, server_id: ServerId) {
        let now = self.now;
        let billing = &self.config.billing;
        let server = self.servers.get_mut(&server_id).expect("exists");
        let accrual = &mut server.accrual;
        let Some(kind) = accrual.kind else { return };
        let elapsed_ms = now.since(accrual.since);
        if elapsed_ms == 0 {
            return;
        }
        if kind == AccrualKind::Warm {
            // Paid by the platform: counted, not charged to the owner.
            self.stats.prewarm_platform_mib_ms += accrual.mib as u64 * elapsed_ms;
            accrual.since = now;
            return;
        }
        let (price, period_ms, carry, ledger_kind) = match kind {
            AccrualKind::Ram => (
                billing.ram_price_micros_per_gib_hour,
                MS_PER_HOUR,
                &mut accrual.carry_ram,
                LedgerKind::RamTime,
            ),
            AccrualKind::Storage => (
                billing.storage_price_micros_per_gib_month,
                MS_PER_MONTH,
                &mut accrual.carry_storage,
                LedgerKind::Storage,
            ),
            AccrualKind::Archive => (
                billing.archive_price_micros_per_gib_month,
                MS_PER_MONTH,
                &mut accrual.carry_archive,
                LedgerKind::ArchiveStorage,
            ),
            AccrualKind::Warm => unreachable!("settled above"),
        };
        let denominator = MIB_PER_GIB * period_ms;
        let accrued = ram_time_numerator(accrual.mib as u64, elapsed_ms, price);
        let numerator = *carry as u128 + accrued;
        // A 128-bit division is a library call; nearly every numerator fits 64 bits.
        let (charge, remainder) = match u64::try_from(numerator) {
            Ok(n) => ((n / denominator) as i64, n % denominator),
            Err(_) => (
                (numerator / denominator as u128) as i64,
                (numerator % denominator as u128) as u64,
            ),
        };
        *carry = remainder;
        let from = accrual.since;
        accrual.since = now;
        let owner = server.owner;
        if kind == AccrualKind::Ram {
            self.accrue_user(owner);
            let user = self.users.get_mut(&owner).expect("owner");
            user.unsettled_ram_numerator -= accrued;
        }
        if charge == 0 {
            return;
        }
        self.users.get_mut(&owner).expect("owner").balance_micros -= charge;
        let entry = LedgerEntry {
            user_id: owner,
            server_id: Some(server_id),
            amount_micros: -charge,
            kind: ledger_kind,
            from,
            to: now,
        };
        self.push_command(CommandKind::PostLedgerEntry { entry });
    }

    /// Settle every RAM accrual of a user, so the booked balance is current.
    pub(super) fn settle_user_ram(&mut self, user_id: UserId) {
        if self.users[&user_id].ram_mib_held == 0 {
            return;
        }
        let mut next = ServerId(0);
        while let Some(server_id) = self.users[&user_id].holding.first_from(next) {
            self.settle(server_id);
            next = ServerId(server_id.0 + 1);
        }
    }

    /// The owner now pays for `ram_mib` the server holds (its RAM accrual is open).
    #[inline]
    pub(super) fn owner_holds_ram(&mut self, owner: UserId, server_id: ServerId, ram_mib: u32) {
        self.accrue_user(owner);
        let user = self.users.get_mut(&owner).expect("owner");
        user.ram_mib_held += ram_mib as u64;
        user.holding.insert(server_id);
    }

    /// The owner no longer pays for the server's `ram_mib` (its RAM accrual is closed).
    #[inline]
    pub(super) fn owner_releases_ram(&mut self, owner: UserId, server_id: ServerId, ram_mib: u32) {
        self.accrue_user(owner);
        let user = self.users.get_mut(&owner).expect("owner");
        user.ram_mib_held -= ram_mib as u64;
        user.holding.remove(&server_id);
    }

    /// Bring a user's unsettled RAM-time up to now.
    pub(super) fn accrue_user(&mut self, user_id: UserId) {
        let now = self.now;
        let price = self.config.billing.ram_price_micros_per_gib_hour;
        let user = self.users.get_mut(&user_id).expect("user exists");
        user.unsettled_ram_numerator += ram_time_numerator(user.ram_mib_held, now.since(user.unsettled_since), price);
        user.unsettled_since = now;
    }

    /// The booked balance minus RAM-time accrued but not settled yet (rounded up).
    pub fn projected_balance_micros(&self, user_id: UserId) -> i64 {
        let user = &self.users[&user_id];
        let price = self.config.billing.ram_price_micros_per_gib_hour;
        let unsettled = user.unsettled_ram_numerator
            + ram_time_numerator(user.ram_mib_held, self.now.since(user.unsettled_since), price);
        let denominator = MIB_PER_GIB as u128 * MS_PER_HOUR as u128;
        user.balance_micros - unsettled.div_ceil(denominator) as i64
    }

    /// When the user's balance reaches its next mark at the current burn rate: the
    /// low-balance threshold before the warning, zero after it; `None` while nothing
    /// accrues. O(1): the projection uses the user's aggregate unsettled RAM-time, not
    /// its servers. Brings that RAM-time up to now (no ledger entry).
    pub(super) fn balance_deadline(&mut self, user_id: UserId) -> Option<Timestamp> {
        self.accrue_user(user_id);
        let user = &self.users[&user_id];
        let rate = user.ram_mib_held as i128 * self.config.billing.ram_price_micros_per_gib_hour as i128;
        if rate == 0 {
            return None;
        }
        let target = if user.low_balance_warned {
            0
        } else {
            self.config.billing.low_balance_threshold_micros
        };
        let denominator = MIB_PER_GIB as i128 * MS_PER_HOUR as i128;
        let headroom = (user.balance_micros - target) as i128 * denominator - user.unsettled_ram_numerator as i128;
        if headroom > 0 {
            // A 128-bit division is a library call; most operands fit 64 bits.
            let ms = match (u64::try_from(headroom), u64::try_from(rate)) {
                (Ok(h), Ok(r)) => h.div_ceil(r),
                _ => u64::try_from((headroom + rate - 1) / rate).unwrap_or(u64::MAX / 2),
            };
            Some(self.now.plus_ms(ms))
        } else if target > 0 {
            Some(self.now)
        } else {
            // Out of money: stop what still starts or runs, now; stopping servers finish.
            let running = user
                .holding
                .iter()
                .any(|id| matches!(self.servers[id].state, ServerState::Starting | ServerState::Running));
            running.then_some(self.now)
        }
    }

    /// Arm the user's balance timer for `balance_deadline`. The timer may be early, never
    /// late: an armed entry at or before the new deadline is kept, and when it fires
    /// early it only re-arms (`fire_balance_timer`). Every start and stop moves the
    /// deadline, so re-arming on each would leave a dead entry behind per change.
    pub(super) fn arm_user_timer(&mut self, user_id: UserId) {
        let at = self.balance_deadline(user_id);
        let slot = self.users[&user_id].armed_timer;
        if let Some(armed) = slot
            && at.is_none_or(|at| armed.at <= at)
        {
            return;
        }
        let new = self.arm_timer(slot, at, Timer::User(user_id));
        self.users.get_mut(&user_id).expect("exists").armed_timer = new;
    }

    pub(super) fn fire_balance_timer(&mut self, user_id: UserId) {
        // An early entry (see `arm_user_timer`): nothing is due yet, just re-arm.
        if self.balance_deadline(user_id).is_none_or(|at| at > self.now) {
            self.arm_user_timer(user_id);
            return;
        }
        self.settle_user_ram(user_id);
        let threshold = self.config.billing.low_balance_threshold_micros;
        let user = self.users.get_mut(&user_id).expect("exists");
        let balance_micros = user.balance_micros;
        if balance_micros <= threshold && !user.low_balance_warned {
            user.low_balance_warned = true;
            self.push_command(CommandKind::SendEmail {
                user_id,
                email: Email::LowBalance { balance_micros },
            });
        }
        if balance_micros <= 0 {
            let running: Vec<ServerId> = self.users[&user_id]
                .servers
                .iter()
                .copied()
                .filter(|id| matches!(self.servers[id].state, ServerState::Starting | ServerState::Running))
                .collect();
            for &server_id in &running {
                self.begin_stop(server_id, StopReason::OutOfBalance);
            }
            if !running.is_empty() {
                self.push_command(CommandKind::SendEmail {
                    user_id,
                    email: Email::StoppedForZeroBalance { server_ids: running },
                });
            }
        }
        self.arm_user_timer(user_id);
    }
}
