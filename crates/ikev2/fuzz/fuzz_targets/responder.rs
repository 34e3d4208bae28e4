//! A responder fed arbitrary datagrams (split at 0xfe 0xfe) on ports 500 and 4500, with
//! time moving forward, never panics.
#![no_main]
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ikev2::wire::Identification;
use ikev2::{Config, Responder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let mut cfg = Config::psk(b"fuzz", Identification::fqdn("gw"));
    cfg.vip_pool = Some((Ipv4Addr::new(10, 9, 0, 1), 4));
    let mut r = Responder::new(cfg, [7; 32]);
    for (i, d) in data.split(|b| *b == 0xfe).enumerate() {
        let port = if i % 2 == 0 { 500 } else { 4500 };
        let from = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), port);
        let to = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 2).into(), port);
        r.handle_datagram(now, from, to, d);
        while r.poll_transmit().is_some() {}
        while r.poll_event().is_some() {}
        now += Duration::from_millis(700);
        if let Some(t) = r.poll_timeout() {
            if t <= now {
                r.handle_timeout(now);
            }
        }
    }
});
