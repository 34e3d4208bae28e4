//! The VPN gateway model.
//!
//! Not the real `ikev2` responder: a faithful model of what the mobility core
//! sees of it. IKE_SA_INIT + IKE_AUTH are two round trips over the interface's
//! outer path (each lost with the link's loss, retransmitted after 1 s, up to
//! four times), plus a fixed crypto cost; success hands out a fresh TIA. A
//! MOBIKE update is one round trip from the new address. The SA exists at the
//! gateway until the node stops it or a failed MOBIKE update removes it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// What the gateway holds per interface of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sa {
    pub(crate) tia: Ipv4Addr,
}

#[derive(Debug, Default)]
pub(crate) struct Gateway {
    pub(crate) sas: BTreeMap<u32, Sa>,
    next_tia: u8,
}

impl Gateway {
    pub(crate) fn new_tia(&mut self) -> Ipv4Addr {
        self.next_tia = self.next_tia.wrapping_add(1).max(1);
        Ipv4Addr::new(10, 99, 0, self.next_tia)
    }
}
