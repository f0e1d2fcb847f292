//! Catalog helpers the policies share: usable RAM per VM type, the type to order for
//! a request, and first-fit-decreasing bin counting for queued demand.

use crate::config::{Catalog, ReserveConfig};
use crate::types::VmTypeIdx;

/// Usable RAM of a new node of this type.
pub fn usable_mib(catalog: &Catalog, reserve: &ReserveConfig, t: VmTypeIdx) -> u32 {
    let ram_mib = catalog.server_types[t.0 as usize].ram_mib;
    ram_mib - reserve.reserve_mib(ram_mib, false)
}

/// `usable_mib` of every catalog type, indexed by `VmTypeIdx` (see
/// `FleetView::type_usable_mib`).
pub fn type_usable_mib(catalog: &Catalog, reserve: &ReserveConfig) -> Vec<u32> {
    (0..catalog.server_types.len())
        .map(|i| usable_mib(catalog, reserve, VmTypeIdx(i as u16)))
        .collect()
}

/// The preferred type when it holds `need_mib`, else the cheapest type that does.
/// `type_usable_mib` is `type_usable_mib(catalog, reserve)`.
pub fn choose_type(
    catalog: &Catalog,
    type_usable_mib: &[u32],
    preferred: Option<VmTypeIdx>,
    need_mib: u32,
) -> Option<VmTypeIdx> {
    if let Some(t) = preferred
        && type_usable_mib[t.0 as usize] >= need_mib
    {
        return Some(t);
    }
    (0..catalog.server_types.len())
        .map(|i| VmTypeIdx(i as u16))
        .filter(|&t| type_usable_mib[t.0 as usize] >= need_mib)
        .min_by_key(|&t| (catalog.server_types[t.0 as usize].price_micros_per_hour, t))
}

/// How many new bins of `bin_mib` first-fit-decreasing needs for `decreasing` (the
/// demands, largest first) once the `existing_free` bins are used up. `bins` is scratch
/// space (cleared first; it keeps its allocation for the next call).
pub fn bins_needed(
    decreasing: impl IntoIterator<Item = u32>,
    existing_free: impl IntoIterator<Item = u32>,
    bin_mib: u32,
    bins: &mut Vec<u32>,
) -> u32 {
    bins.clear();
    bins.extend(existing_free);
    let n_existing = bins.len();
    for need in decreasing {
        match bins.iter_mut().find(|free| **free >= need) {
            Some(free) => *free -= need,
            None if need <= bin_mib => bins.push(bin_mib - need),
            None => {}
        }
    }
    (bins.len() - n_existing) as u32
}
