//! The home agent, the foreign agent and the registration client fed arbitrary
//! datagrams, including
//! ones that authenticate: never a panic, every input accounted for.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mip4::auth::{Algorithm, SecurityAssociation};
use mip4::client::{Attachment, ClientConfig, RegistrationClient};
use mip4::fa::{FaConfig, ForeignAgent};
use mip4::ha::{HaConfig, HomeAgent, MobileNodeConfig};
use mip4::replay::ReplayMethod;
use mip4::wire::extension::AuthKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let key = b"0123456789abcdef";
    let sa = SecurityAssociation::new(256, Algorithm::HmacMd5, key);
    let home = Ipv4Addr::new(10, 1, 0, 50);
    let ha_addr = Ipv4Addr::new(10, 1, 0, 1);
    let mut cfg = HaConfig::new(ha_addr);
    cfg.dynamic_pool = Some((Ipv4Addr::new(10, 1, 0, 200), 4));
    let mut ha = HomeAgent::new(cfg, [0; 32]);
    let _ = ha.add_mobile_node(MobileNodeConfig {
        home_addr: Some(home),
        nai: Some("a@b".into()),
        sas: vec![sa.clone()],
        replay: ReplayMethod::Timestamp,
    });
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let from = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 434);
    let to = SocketAddrV4::new(ha_addr, 434);
    // Raw, and signed with the right key so that the deeper checks run.
    ha.handle_datagram(now, wall, from, to, data);
    let mut signed = data.to_vec();
    sa.append(AuthKind::MnHa, &mut signed);
    ha.handle_datagram(now, wall, from, to, &signed);
    while ha.poll_transmit().is_some() {}
    while ha.poll_event().is_some() {}
    ha.handle_timeout(now + Duration::from_secs(100_000));
    assert_eq!(ha.binding_count(), 0);

    let mut mn = RegistrationClient::new(ClientConfig::new(home, ha_addr, sa.clone()), [1; 32]);
    mn.register(
        now,
        wall,
        Attachment {
            care_of: from.ip().to_owned(),
            local: from,
            dest: to,
            colocated: true,
        },
    );
    mn.handle_datagram(now, wall, to, data);
    mn.handle_datagram(now, wall, to, &signed);
    while mn.poll_transmit().is_some() {}
    while mn.poll_event().is_some() {}

    let fa_addr = Ipv4Addr::new(192, 0, 2, 1);
    let mut fa = ForeignAgent::new(FaConfig::new(fa_addr, 24), now);
    fa.handle_datagram(now, SocketAddrV4::new(home, 434), [2; 6], data);
    fa.handle_datagram(now, SocketAddrV4::new(home, 434), [2; 6], &signed);
    // ...and the same bytes as a home agent's reply.
    fa.handle_datagram(now, to, [0; 6], data);
    fa.handle_timeout(now + Duration::from_secs(10_000));
    while fa.poll_transmit().is_some() {}
    while fa.poll_event().is_some() {}
});
