//! The per-address connection rate limit, with bounded memory.
//!
//! A GCRA limiter (governor) keyed by the client's address: IPv4 addresses one by one,
//! IPv6 by their /64 (one customer line gets a whole /64, so counting single IPv6
//! addresses would limit nothing). The table holds at most `tracked_addresses_max`
//! keys: when it is full, keys idle long enough to have their whole burst back are
//! forgotten (at most once per [`PURGE_INTERVAL_MS`]); if it is still full, a new
//! connection is refused, so a flood from many addresses costs a bounded table, never
//! unbounded memory.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// The least time between two purges of the full table (a purge walks the whole table).
pub const PURGE_INTERVAL_MS: u64 = 1_000;

/// What the limiter says about a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// This address opened too many connections too fast.
    RateLimited,
    /// The table of addresses is full of recent ones.
    TooManyAddresses,
}

pub struct AddressLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    tracked_addresses_max: usize,
    last_purge_at: Mutex<Option<Instant>>,
}

impl AddressLimiter {
    pub fn new(per_s: NonZeroU32, burst: NonZeroU32, tracked_addresses_max: usize) -> Self {
        AddressLimiter {
            limiter: RateLimiter::keyed(Quota::per_second(per_s).allow_burst(burst)),
            tracked_addresses_max,
            last_purge_at: Mutex::new(None),
        }
    }

    pub fn admit(&self, address: IpAddr) -> Admission {
        if self.limiter.len() >= self.tracked_addresses_max {
            self.purge_at_most_every(Duration::from_millis(PURGE_INTERVAL_MS));
            if self.limiter.len() >= self.tracked_addresses_max {
                return Admission::TooManyAddresses;
            }
        }
        match self.limiter.check_key(&limit_key(address)) {
            Ok(()) => Admission::Admitted,
            Err(_) => Admission::RateLimited,
        }
    }

    /// Forgets addresses whose burst is full again and gives the memory back.
    pub fn purge(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn purge_at_most_every(&self, interval: Duration) {
        let now = Instant::now();
        {
            let mut last = self
                .last_purge_at
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.is_some_and(|at| now.duration_since(at) < interval) {
                return;
            }
            *last = Some(now);
        }
        self.purge();
    }

    /// Addresses remembered now.
    pub fn tracked_addresses(&self) -> usize {
        self.limiter.len()
    }
}

/// IPv4 (also IPv4-mapped IPv6) by address, IPv6 by /64.
pub fn limit_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_s: u32, burst: u32, tracked: usize) -> AddressLimiter {
        AddressLimiter::new(
            NonZeroU32::new(per_s).unwrap(),
            NonZeroU32::new(burst).unwrap(),
            tracked,
        )
    }

    #[test]
    fn an_address_gets_its_burst_then_is_limited_while_others_are_not() {
        let limiter = limiter(1, 3, 100);
        let flooder: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.admit(flooder), Admission::Admitted);
        }
        assert_eq!(limiter.admit(flooder), Admission::RateLimited);
        assert_eq!(limiter.admit("10.0.0.2".parse().unwrap()), Admission::Admitted);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let limiter = limiter(1, 2, 100);
        assert_eq!(limiter.admit("2001:db8:1:2::1".parse().unwrap()), Admission::Admitted);
        assert_eq!(
            limiter.admit("2001:db8:1:2::ffff".parse().unwrap()),
            Admission::Admitted
        );
        assert_eq!(
            limiter.admit("2001:db8:1:2:aaaa::1".parse().unwrap()),
            Admission::RateLimited
        );
        assert_eq!(limiter.admit("2001:db8:1:3::1".parse().unwrap()), Admission::Admitted);
        assert_eq!(
            limit_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_table_never_grows_past_its_bound() {
        let limiter = limiter(1, 1, 50);
        let mut refused = 0;
        for index in 0..200u32 {
            let address = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + index));
            if limiter.admit(address) == Admission::TooManyAddresses {
                refused += 1;
            }
            assert!(limiter.tracked_addresses() <= 50);
        }
        // Every address just used its whole burst, so none can be forgotten yet.
        assert_eq!(refused, 150);
    }
}
