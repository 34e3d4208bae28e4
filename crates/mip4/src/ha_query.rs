//! Reading the binding table a page at a time, for a status command that must
//! not stall registrations at a million bindings.

use super::{Binding, HomeAgent};
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;

impl HomeAgent {
    /// The bindings of the (at most) `limit` lowest home addresses above `after`
    /// (all addresses when `None`) that have bindings, in home-address order, and
    /// whether more follow. Costs one pass over the home-address index (16 octets
    /// an entry) and a heap of `limit` addresses, never a sort or a copy of the
    /// whole table: a few tens of milliseconds at a million nodes, whatever the page.
    pub fn bindings_page(&self, after: Option<Ipv4Addr>, limit: usize) -> (Vec<Binding>, bool) {
        let limit = limit.max(1);
        // Max-heap of the `limit + 1` lowest candidates seen so far.
        let mut heap: BinaryHeap<(Ipv4Addr, usize)> = BinaryHeap::with_capacity(limit + 2);
        for (&home, &idx) in &self.by_home {
            if after.is_some_and(|a| home <= a) {
                continue;
            }
            if heap.len() > limit && heap.peek().is_some_and(|(top, _)| home >= *top) {
                continue;
            }
            if self.mns.get(idx).is_none_or(|m| m.bindings.is_empty()) {
                continue;
            }
            heap.push((home, idx));
            if heap.len() > limit + 1 {
                heap.pop();
            }
        }
        let mut picked = heap.into_sorted_vec();
        let more = picked.len() > limit;
        picked.truncate(limit);
        let mut out = Vec::new();
        for (_, idx) in picked {
            let mut bs: Vec<Binding> = self.mns[idx].bindings.to_vec();
            bs.sort_by_key(|b| b.care_of);
            out.extend(bs);
        }
        (out, more)
    }

    /// The bindings of the node with this NAI.
    pub fn bindings_of_nai(&self, nai: &str) -> &[Binding] {
        self.by_nai
            .get(nai.as_bytes())
            .and_then(|i| self.mns.get(*i))
            .map(|m| m.bindings.as_slice())
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::auth::{Algorithm, SecurityAssociation};

    #[test]
    fn pages_walk_every_binding_once_in_order() {
        let t0 = Instant::now();
        let mut h = HomeAgent::new(HaConfig::new(Ipv4Addr::new(10, 0, 0, 1)), [0; 32]);
        let sa = SecurityAssociation::new(256, Algorithm::HmacMd5, &[1; 16]);
        let mut want = Vec::new();
        // 300 nodes, every third without a binding, added in scrambled order.
        for i in 0..300u32 {
            let home = Ipv4Addr::from(0x0a01_0000 + (i * 7919) % 300);
            h.add_mobile_node(MobileNodeConfig {
                home_addr: Some(home),
                nai: None,
                sas: vec![sa.clone()],
                replay: ReplayMethod::Timestamp,
            })
            .unwrap();
            if i % 3 != 0 {
                let b = Binding {
                    home_addr: home,
                    care_of: Ipv4Addr::new(192, 0, 2, 1),
                    source: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 434),
                    local: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 434),
                    lifetime: 100,
                    expires: t0 + Duration::from_secs(100),
                    reverse_tunnel: false,
                    colocated: true,
                    broadcast: false,
                    tunnel: Tunnel::IpInIp,
                    nai: None,
                };
                assert!(h.restore_binding(t0, b, None));
                want.push(home);
            }
        }
        want.sort();
        let mut got = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let (page, more) = h.bindings_page(after, 37);
            assert!(page.len() <= 37);
            got.extend(page.iter().map(|b| b.home_addr));
            after = page.last().map(|b| b.home_addr);
            pages += 1;
            if !more {
                break;
            }
        }
        assert_eq!(got, want);
        assert_eq!(pages, want.len().div_ceil(37));
        assert_eq!(h.bindings_page(None, 10_000).0, h.bindings());
    }
}
