//! Provisioning of the home agent's mobile nodes at run time: replacing the
//! whole set (a key file reloaded on SIGHUP) without touching the bindings of
//! nodes that stay, and the dynamic home address pool of RFC 2794 / RFC 5944
//! section 3.6 (a request with home address 0.0.0.0 and a NAI).

use super::{
    BuildAddrHasher, ConfigError, HaEvent, HomeAgent, MobileNodeConfig, RemoveReason, ReplayState,
};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// What [`HomeAgent::replace_mobile_nodes`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: usize,
    /// Kept, with their (possibly new) keys; bindings and replay state untouched.
    pub kept: usize,
    /// Gone from the new set: their bindings were removed ([`RemoveReason::Revoked`]).
    pub removed: usize,
}

impl HomeAgent {
    /// Replaces the set of mobile nodes by `nodes`, all or nothing: on an error
    /// nothing changes. A node whose identity (static home address and NAI) is in
    /// both sets keeps its bindings, its replay state and its pool address, and
    /// takes the new security associations and replay method. A node that is
    /// gone loses its bindings (events `BindingRemoved { reason: Revoked }`) and
    /// its pool address returns to the pool.
    pub fn replace_mobile_nodes(
        &mut self,
        nodes: Vec<MobileNodeConfig>,
    ) -> Result<ReloadSummary, ConfigError> {
        // 1. Validate the whole new set, and match each node to the record it
        //    keeps (same static address and NAI), changing nothing yet. One pass
        //    over the new set with the address index: about 0.1 s a million nodes.
        let mut homes: HashSet<Ipv4Addr, BuildAddrHasher> = HashSet::default();
        let mut nais: HashSet<&str> = HashSet::new();
        let mut matched: Vec<Option<usize>> = Vec::with_capacity(nodes.len());
        let mut seen = vec![false; self.mns.len()];
        for n in &nodes {
            if n.home_addr.is_none() && n.nai.is_none() {
                return Err(ConfigError::NoIdentity);
            }
            if n.sas.is_empty() {
                return Err(ConfigError::NoSa);
            }
            if let Some(h) = n.home_addr {
                if !homes.insert(h) {
                    return Err(ConfigError::DuplicateHome(h));
                }
            }
            if let Some(a) = &n.nai {
                if !nais.insert(a.as_str()) {
                    return Err(ConfigError::DuplicateNai(a.clone()));
                }
                if n.home_addr.is_none() && self.cfg.dynamic_pool.is_none() {
                    return Err(ConfigError::NoPool(a.clone()));
                }
            }
            let idx = match (&n.home_addr, &n.nai) {
                (Some(h), _) => self.by_home.get(h).copied(),
                (None, Some(a)) => self.by_nai.get(a.as_bytes()).copied(),
                (None, None) => None,
            }
            .filter(|&i| self.mns[i].cfg.home_addr == n.home_addr && self.mns[i].cfg.nai == n.nai);
            if let Some(i) = idx {
                seen[i] = true;
            }
            matched.push(idx);
        }
        // A new static address must not be a pool address a kept node holds.
        for (n, m) in nodes.iter().zip(&matched) {
            if let (Some(h), None) = (n.home_addr, m) {
                if self.by_home.get(&h).is_some_and(|&i| seen[i]) {
                    return Err(ConfigError::DuplicateHome(h));
                }
            }
        }

        // 2. Apply: update the kept nodes in place, remove the others, add the new.
        let mut summary = ReloadSummary::default();
        let mut added = Vec::new();
        for (mut n, m) in nodes.into_iter().zip(matched) {
            let Some(i) = m else {
                added.push(n);
                continue;
            };
            let rec = &mut self.mns[i];
            if rec.cfg.replay != n.replay {
                rec.replay = ReplayState::default();
            }
            // As in add_mobile_node: the first SA inline, the others in cfg.
            rec.sa0 = n.sas.remove(0);
            n.sas.shrink_to_fit();
            rec.cfg = n;
            summary.kept += 1;
        }
        // Back to front: `remove_node` moves the last record into the hole, and
        // every record after `i` has been decided already.
        for i in (0..seen.len()).rev() {
            if !seen[i] {
                self.remove_node(i);
                summary.removed += 1;
            }
        }
        for n in added {
            self.add_mobile_node(n)?;
            summary.added += 1;
        }
        Ok(summary)
    }

    /// Removes node `idx`, revoking its bindings; the last node takes its index.
    fn remove_node(&mut self, idx: usize) {
        let rec = self.mns.swap_remove(idx);
        for b in &rec.bindings {
            self.binding_count -= 1;
            self.events.push_back(HaEvent::BindingRemoved {
                home_addr: b.home_addr,
                care_of: b.care_of,
                reason: RemoveReason::Revoked,
            });
        }
        // Its wheel entries turn stale: they find no record and are dropped.
        if let Some(h) = rec.home_addr {
            self.by_home.remove(&h);
        }
        if let Some(n) = &rec.cfg.nai {
            self.by_nai.remove(n.as_bytes());
        }
        if let Some(moved) = self.mns.get(idx) {
            if let Some(h) = moved.home_addr {
                self.by_home.insert(h, idx);
            }
            if let Some(n) = &moved.cfg.nai {
                self.by_nai.insert(n.as_bytes().to_vec(), idx);
            }
        }
    }

    /// The pool address held by the node with this NAI, if any.
    pub fn pool_address_of(&self, nai: &str) -> Option<Ipv4Addr> {
        let m = self.mns.get(*self.by_nai.get(nai.as_bytes())?)?;
        m.cfg.home_addr.is_none().then_some(m.home_addr).flatten()
    }

    /// Gives the NAI-only node `nai` the pool address `addr` again (restoring
    /// the assignment saved before a restart). False, and nothing changes, if
    /// there is no such node, it already has an address, or `addr` is outside
    /// the pool or taken.
    pub fn assign_pool_address(&mut self, nai: &str, addr: Ipv4Addr) -> bool {
        let Some(&idx) = self.by_nai.get(nai.as_bytes()) else {
            return false;
        };
        if self.mns[idx].home_addr.is_some()
            || !self.in_pool(addr)
            || self.by_home.contains_key(&addr)
        {
            return false;
        }
        self.by_home.insert(addr, idx);
        self.mns[idx].home_addr = Some(addr);
        true
    }

    fn in_pool(&self, a: Ipv4Addr) -> bool {
        let Some((start, size)) = self.cfg.dynamic_pool else {
            return false;
        };
        let off = u32::from(a).wrapping_sub(u32::from(start));
        off < size && a != self.cfg.address
    }

    /// The next free pool address, searching round-robin from where the last
    /// search stopped, so addresses given back are used again.
    pub(super) fn pool_free_address(&mut self) -> Option<Ipv4Addr> {
        let (start, size) = self.cfg.dynamic_pool?;
        for _ in 0..size {
            let off = self.pool_next % size;
            self.pool_next = (off + 1) % size;
            let a = Ipv4Addr::from(u32::from(start).wrapping_add(off));
            if a != self.cfg.address && !self.by_home.contains_key(&a) {
                return Some(a);
            }
        }
        None
    }

    #[cfg(test)]
    pub(super) fn record_count(&self) -> usize {
        self.mns.len()
    }
}

#[cfg(test)]
#[path = "ha_provision_tests.rs"]
mod tests;
