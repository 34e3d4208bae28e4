//! An initiator fed arbitrary responses: the first 8 octets are overwritten with its SPIi so
//! the IKE_SA_INIT response path (proposal, KE, NAT-D, cookie, INVALID_KE) is reached.
#![no_main]
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ikev2::wire::Identification;
use ikev2::{Config, Initiator};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let local = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 500);
    let remote = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 2).into(), 500);
    let mut i = Initiator::new(Config::psk(b"fuzz", Identification::fqdn("c")), local, remote, [3; 32], now);
    for d in data.split(|b| *b == 0xfe) {
        let mut d = d.to_vec();
        let spi = i.spis().0.to_be_bytes();
        if d.len() >= 8 {
            d[..8].copy_from_slice(&spi);
        }
        i.handle_datagram(now, remote, local, &d);
        while i.poll_transmit().is_some() {}
        while i.poll_event().is_some() {}
        now += Duration::from_millis(300);
        i.handle_timeout(now);
    }
});
