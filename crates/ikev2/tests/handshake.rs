#![allow(clippy::unwrap_used)]
mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use ikev2::wire::{DhId, TrafficSelector};

#[test]
fn psk_handshake_each_group() {
    for group in [DhId::CURVE25519, DhId::ECP_256, DhId::MODP_2048] {
        let (ci, cr) = configs(group);
        let mut p = Pair::new(ci, cr, 1);
        p.run(Duration::from_secs(2));
        assert!(
            p.i.is_established(),
            "{group:?}: {:?} / {:?}",
            p.i_events,
            p.r_events
        );
        let ci = Pair::child(&p.i_events).expect("initiator child");
        let cr = Pair::child(&p.r_events).expect("responder child");
        assert_mirror(&ci, &cr);
        assert_eq!(ci.tia, Some(Ipv4Addr::new(10, 99, 0, 10)));
        assert_eq!(ci.dns, vec![Ipv4Addr::new(10, 99, 0, 1)]);
        // TSi narrowed to the assigned address, TSr to the gateway's subnet.
        assert_eq!(
            ci.ts_local,
            vec![TrafficSelector::ipv4_host(Ipv4Addr::new(10, 99, 0, 10))]
        );
        assert_eq!(
            ci.ts_remote,
            vec![TrafficSelector::ipv4_range(
                Ipv4Addr::new(10, 1, 0, 0),
                Ipv4Addr::new(10, 1, 255, 255)
            )]
        );
        assert_eq!(ci.encr_key_in.len(), 20, "AES-GCM-128 key + salt");
        assert!(!ci.udp_encap);
        // MOBIKE on both sides -> floated to 4500 even without NAT.
        assert_eq!(p.i.local().port(), 4500);
        assert_eq!(p.i.stats().retransmits, 0);
    }
}
