//! Id mapping between the workload and the core: the workload numbers servers and users
//! densely from 0 (an index into the simulator's vectors), the core gets ids from 1, as
//! a database would hand them out.

use payperplay_core::{ServerId, UserId};

/// The core id of the workload's server 0.
const FIRST_SERVER_ID: u64 = 1;

/// The core id of the workload's user 0.
const FIRST_USER_ID: u64 = 1;

/// The core id of the workload's dense server index.
#[inline]
pub(super) fn server_id(server_idx: usize) -> ServerId {
    ServerId(server_idx as u64 + FIRST_SERVER_ID)
}

/// The workload's dense index of a core server id.
#[inline]
pub(super) fn server_idx(server_id: ServerId) -> usize {
    (server_id.0 - FIRST_SERVER_ID) as usize
}

/// The core id of the workload's dense user number.
#[inline]
pub(super) fn user_id(user: u32) -> UserId {
    UserId(user as u64 + FIRST_USER_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_and_indices_round_trip_and_core_ids_start_at_one() {
        assert_eq!(server_id(0), ServerId(1));
        assert_eq!(user_id(0), UserId(1));
        for server_idx in [0, 1, 41, 9_999] {
            assert_eq!(self::server_idx(server_id(server_idx)), server_idx);
        }
    }
}
