use super::super::*;
use crate::auth::{Algorithm, SecurityAssociation};
use crate::wire::extension::AuthKind;
use std::time::{Duration, Instant, UNIX_EPOCH};

const HA_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

fn key(k: u8) -> SecurityAssociation {
    SecurityAssociation::new(256, Algorithm::HmacMd5, &[k; 16])
}

fn node(home: Option<[u8; 4]>, nai: Option<&str>, k: u8) -> MobileNodeConfig {
    MobileNodeConfig {
        home_addr: home.map(Ipv4Addr::from),
        nai: nai.map(str::to_string),
        sas: vec![key(k)],
        replay: ReplayMethod::Timestamp,
    }
}

fn wall(i: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_735_689_600 + i)
}

fn ha(pool: Option<([u8; 4], u32)>) -> HomeAgent {
    let mut cfg = HaConfig::new(HA_ADDR);
    cfg.dynamic_pool = pool.map(|(a, n)| (Ipv4Addr::from(a), n));
    HomeAgent::new(cfg, [1; 32])
}

/// Sends a signed request at second `i` and returns the reply's code and home address.
fn register(h: &mut HomeAgent, i: u64, home: [u8; 4], nai: Option<&str>, k: u8) -> (u8, Ipv4Addr) {
    let ident = (NtpTime::from_system_time(wall(i)).0 >> 32 << 32) | i;
    let req = RegistrationRequest {
        flags: Flags::D,
        lifetime: 600,
        home_addr: Ipv4Addr::from(home),
        home_agent: HA_ADDR,
        care_of: Ipv4Addr::new(192, 0, 2, 10),
        ident,
        extensions: nai
            .map(|n| vec![Extension::Nai(n.as_bytes().to_vec())])
            .unwrap_or_default(),
    };
    let mut b = req.to_bytes();
    key(k).append(AuthKind::MnHa, &mut b);
    let src = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 434);
    let now = Instant::now();
    h.handle_datagram(now, wall(i), src, SocketAddrV4::new(HA_ADDR, 434), &b);
    let r = RegistrationReply::parse(&h.poll_transmit().expect("a reply").payload).unwrap();
    (r.code.0, r.home_addr)
}

#[test]
fn reload_keeps_live_bindings_and_takes_new_keys() {
    let mut h = ha(None);
    h.replace_mobile_nodes(vec![
        node(Some([10, 1, 0, 50]), None, 1),
        node(Some([10, 1, 0, 51]), None, 2),
    ])
    .unwrap();
    assert_eq!(register(&mut h, 1, [10, 1, 0, 50], None, 1).0, 0);
    assert_eq!(register(&mut h, 1, [10, 1, 0, 51], None, 2).0, 0);
    while h.poll_event().is_some() {}
    let before = h.bindings_of(Ipv4Addr::new(10, 1, 0, 50)).to_vec();

    // .50 gets a new key, .51 goes, .52 comes.
    let s = h
        .replace_mobile_nodes(vec![
            node(Some([10, 1, 0, 50]), None, 9),
            node(Some([10, 1, 0, 52]), None, 3),
        ])
        .unwrap();
    assert_eq!(
        s,
        ReloadSummary {
            added: 1,
            kept: 1,
            removed: 1
        }
    );
    assert_eq!(h.bindings_of(Ipv4Addr::new(10, 1, 0, 50)), &before[..]);
    assert_eq!(h.binding_count(), 1);
    assert_eq!(
        h.poll_event(),
        Some(HaEvent::BindingRemoved {
            home_addr: Ipv4Addr::new(10, 1, 0, 51),
            care_of: Ipv4Addr::new(192, 0, 2, 10),
            reason: RemoveReason::Revoked,
        })
    );
    assert_eq!(h.poll_event(), None, "the kept binding is not touched");
    // Replay state kept: the old Identification is still a replay (with the new key).
    assert_eq!(register(&mut h, 1, [10, 1, 0, 50], None, 9).0, 133);
    // The old key no longer works, the new one does; the removed node is unknown.
    assert_eq!(register(&mut h, 2, [10, 1, 0, 50], None, 1).0, 131);
    assert_eq!(register(&mut h, 3, [10, 1, 0, 50], None, 9).0, 0);
    assert_eq!(register(&mut h, 3, [10, 1, 0, 51], None, 2).0, 131);
    assert_eq!(register(&mut h, 3, [10, 1, 0, 52], None, 3).0, 0);

    // A bad set changes nothing.
    let e = h.replace_mobile_nodes(vec![
        node(Some([10, 1, 0, 60]), None, 1),
        node(Some([10, 1, 0, 60]), None, 1),
    ]);
    assert_eq!(
        e,
        Err(ConfigError::DuplicateHome(Ipv4Addr::new(10, 1, 0, 60)))
    );
    assert_eq!(h.binding_count(), 2);
    assert_eq!(h.record_count(), 2);
}

#[test]
fn nai_nodes_get_pool_addresses_that_survive_a_restart() {
    // The pool includes the HA's own address, which is never handed out.
    let mut h = ha(Some(([10, 1, 0, 1], 3)));
    h.replace_mobile_nodes(vec![
        node(None, Some("a@corp.example"), 1),
        node(None, Some("b@corp.example"), 2),
        node(None, Some("c@corp.example"), 3),
    ])
    .unwrap();
    let (code, a) = register(&mut h, 1, [0; 4], Some("a@corp.example"), 1);
    assert_eq!((code, a), (0, Ipv4Addr::new(10, 1, 0, 2)));
    let (code, b) = register(&mut h, 1, [0; 4], Some("b@corp.example"), 2);
    assert_eq!((code, b), (0, Ipv4Addr::new(10, 1, 0, 3)));
    // Renewing keeps the address.
    assert_eq!(
        register(&mut h, 2, [0; 4], Some("a@corp.example"), 1),
        (0, a)
    );
    // Pool exhausted: 130 (insufficient resources).
    assert_eq!(
        register(&mut h, 1, [0; 4], Some("c@corp.example"), 3).0,
        130
    );
    assert_eq!(h.pool_address_of("b@corp.example"), Some(b));

    // Restart: the assignments come back from the state file before requests.
    let mut h2 = ha(Some(([10, 1, 0, 1], 3)));
    h2.replace_mobile_nodes(vec![
        node(None, Some("a@corp.example"), 1),
        node(None, Some("b@corp.example"), 2),
    ])
    .unwrap();
    assert!(h2.assign_pool_address("b@corp.example", b));
    assert!(!h2.assign_pool_address("a@corp.example", b), "taken");
    assert!(!h2.assign_pool_address("a@corp.example", HA_ADDR), "HA");
    assert!(!h2.assign_pool_address("a@corp.example", Ipv4Addr::new(10, 9, 0, 1)));
    assert!(!h2.assign_pool_address("x@corp.example", a), "unknown NAI");
    assert_eq!(
        register(&mut h2, 5, [0; 4], Some("b@corp.example"), 2),
        (0, b)
    );

    // Removing a node returns its address to the pool.
    h.replace_mobile_nodes(vec![
        node(None, Some("b@corp.example"), 2),
        node(None, Some("c@corp.example"), 3),
    ])
    .unwrap();
    assert_eq!(
        register(&mut h, 6, [0; 4], Some("c@corp.example"), 3),
        (0, a)
    );
    assert_eq!(h.pool_address_of("b@corp.example"), Some(b));
}

#[test]
fn every_security_association_of_a_node_is_usable() {
    let mut h = ha(None);
    let mut n = node(Some([10, 1, 0, 50]), None, 1);
    n.sas
        .push(SecurityAssociation::new(300, Algorithm::HmacMd5, &[2; 16]));
    h.replace_mobile_nodes(vec![n]).unwrap();
    let send = |h: &mut HomeAgent, i: u64, sa: &SecurityAssociation| {
        let ident = (NtpTime::from_system_time(wall(i)).0 >> 32 << 32) | i;
        let mut b = RegistrationRequest {
            flags: Flags::D,
            lifetime: 600,
            home_addr: Ipv4Addr::new(10, 1, 0, 50),
            home_agent: HA_ADDR,
            care_of: Ipv4Addr::new(192, 0, 2, 10),
            ident,
            extensions: vec![],
        }
        .to_bytes();
        sa.append(AuthKind::MnHa, &mut b);
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 434);
        h.handle_datagram(
            Instant::now(),
            wall(i),
            src,
            SocketAddrV4::new(HA_ADDR, 434),
            &b,
        );
        RegistrationReply::parse(&h.poll_transmit().unwrap().payload)
            .unwrap()
            .code
            .0
    };
    assert_eq!(send(&mut h, 1, &key(1)), 0);
    assert_eq!(
        send(
            &mut h,
            2,
            &SecurityAssociation::new(300, Algorithm::HmacMd5, &[2; 16])
        ),
        0
    );
    assert_eq!(
        send(
            &mut h,
            3,
            &SecurityAssociation::new(300, Algorithm::HmacMd5, &[1; 16])
        ),
        131
    );
}

#[test]
fn removing_nodes_in_the_middle_keeps_the_index_right() {
    let mut h = ha(None);
    let all: Vec<_> = (50..56u8)
        .map(|i| node(Some([10, 1, 0, i]), None, i))
        .collect();
    h.replace_mobile_nodes(all).unwrap();
    for i in 50..56u8 {
        assert_eq!(register(&mut h, 1, [10, 1, 0, i], None, i).0, 0);
    }
    // Keep 50, 52, 55 (with its key changed); drop 51, 53, 54; add 60.
    let s = h
        .replace_mobile_nodes(vec![
            node(Some([10, 1, 0, 55]), None, 99),
            node(Some([10, 1, 0, 50]), None, 50),
            node(Some([10, 1, 0, 60]), None, 60),
            node(Some([10, 1, 0, 52]), None, 52),
        ])
        .unwrap();
    assert_eq!((s.kept, s.removed, s.added), (3, 3, 1));
    assert_eq!(h.binding_count(), 3);
    for (i, k, code) in [
        (50, 50, 0),
        (52, 52, 0),
        (55, 99, 0),
        (60, 60, 0),
        (51, 51, 131),
        (54, 54, 131),
    ] {
        assert_eq!(
            register(&mut h, 2, [10, 1, 0, i], None, k).0,
            code,
            "node {i}"
        );
    }
    for i in [50u8, 52, 55] {
        assert_eq!(
            h.bindings_of(Ipv4Addr::new(10, 1, 0, i)).len(),
            1,
            "node {i}"
        );
    }
}
