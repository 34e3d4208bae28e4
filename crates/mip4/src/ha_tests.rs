use super::*;
use crate::auth::Algorithm;
use std::time::UNIX_EPOCH;

const KEY: &str = "00112233445566778899aabbccddeeff";
const RRQ_D_T: &str =
    "012207080a0100320a010001c000020aeb1f040000000000201400000100fcb28c2962dfe84fdb5d559a350cda1c";
const RRP_TNC: &str =
    "030007080a0100320a010001eb1f04000000000095020000201400000100347c6301c0839814397334bfd62188a1";
const RRQ_NAI: &str = "01220708000000000a010001c000020aeb1f04040000000083106d6e3140636f72702e6578616d706c65201400000100d47f2384b2f7cb711f8022f8fc779ee0";

fn sa() -> SecurityAssociation {
    SecurityAssociation::new(256, Algorithm::HmacMd5, &hex::decode(KEY).unwrap())
}

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_735_689_600)
}

fn ha(trusted: &[&str]) -> HomeAgent {
    let mut cfg = HaConfig::new(Ipv4Addr::new(10, 1, 0, 1));
    cfg.trusted_networks = trusted.iter().map(|s| s.parse().unwrap()).collect();
    cfg.dynamic_pool = Some((Ipv4Addr::new(10, 1, 0, 200), 10));
    let mut h = HomeAgent::new(cfg, [7; 32]);
    h.add_mobile_node(MobileNodeConfig {
        home_addr: Some(Ipv4Addr::new(10, 1, 0, 50)),
        nai: None,
        sas: vec![sa()],
        replay: ReplayMethod::Timestamp,
    })
    .unwrap();
    h.add_mobile_node(MobileNodeConfig {
        home_addr: None,
        nai: Some("mn1@corp.example".into()),
        sas: vec![sa()],
        replay: ReplayMethod::Timestamp,
    })
    .unwrap();
    h
}

fn coa_src() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 434)
}

fn local() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 1), 434)
}

#[test]
fn reference_request_yields_reference_reply_with_tnc() {
    let mut h = ha(&["192.0.2.0/24"]);
    let now = Instant::now();
    h.handle_datagram(
        now,
        wall(),
        coa_src(),
        local(),
        &hex::decode(RRQ_D_T).unwrap(),
    );
    let t = h.poll_transmit().expect("a reply");
    assert_eq!(hex::encode(&t.payload), RRP_TNC);
    assert_eq!(t.dst, coa_src());
    let Some(HaEvent::BindingAdded(b)) = h.poll_event() else {
        panic!("binding expected")
    };
    assert_eq!(b.care_of, Ipv4Addr::new(192, 0, 2, 10));
    assert!(b.reverse_tunnel && b.colocated);
    assert_eq!(b.tunnel, Tunnel::IpInIp);
    assert_eq!(b.expires, now + Duration::from_secs(1800));
    assert_eq!(h.binding_count(), 1);
}

#[test]
fn untrusted_sources_are_dropped_silently_and_counted() {
    let mut h = ha(&["10.0.0.0/8"]);
    h.handle_datagram(
        Instant::now(),
        wall(),
        coa_src(),
        local(),
        &hex::decode(RRQ_D_T).unwrap(),
    );
    assert!(h.poll_transmit().is_none());
    assert!(h.poll_event().is_none());
    assert_eq!(h.stats().drops.get(&DropReason::UntrustedSource), Some(&1));
}

#[test]
fn without_trusted_list_no_tnc() {
    let mut h = ha(&[]);
    h.handle_datagram(
        Instant::now(),
        wall(),
        coa_src(),
        local(),
        &hex::decode(RRQ_D_T).unwrap(),
    );
    let r = RegistrationReply::parse(&h.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(r.code, ReplyCode::ACCEPTED);
    assert!(!r.extensions.contains(&Extension::TrustedNetworksConfigured));
}

#[test]
fn nai_request_gets_a_pool_address_and_the_nai_back() {
    let mut h = ha(&[]);
    h.handle_datagram(
        Instant::now(),
        wall(),
        coa_src(),
        local(),
        &hex::decode(RRQ_NAI).unwrap(),
    );
    let t = h.poll_transmit().unwrap();
    let r = RegistrationReply::parse(&t.payload).unwrap();
    assert_eq!(r.code, ReplyCode::ACCEPTED);
    assert_eq!(r.home_addr, Ipv4Addr::new(10, 1, 0, 200));
    assert_eq!(
        r.extensions[0],
        Extension::Nai(b"mn1@corp.example".to_vec())
    );
    let k = sa();
    assert_eq!(
        auth::verify(&t.payload, 20, AuthKind::MnHa, |_| Some(&k)),
        Ok(256)
    );
}

#[test]
fn replayed_request_is_denied_133_with_ha_time() {
    let mut h = ha(&[]);
    let rrq = hex::decode(RRQ_D_T).unwrap();
    h.handle_datagram(Instant::now(), wall(), coa_src(), local(), &rrq);
    let _ = h.poll_transmit();
    h.handle_datagram(
        Instant::now(),
        wall() + Duration::from_secs(3),
        coa_src(),
        local(),
        &rrq,
    );
    let r = RegistrationReply::parse(&h.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(r.code, ReplyCode::HA_IDENT_MISMATCH);
    assert_eq!(r.ident, 0xeb1f_0403u64 << 32);
}

#[test]
fn denials_by_code() {
    let sa = sa();
    let sign = |req: RegistrationRequest| {
        let mut b = req.to_bytes();
        sa.append(AuthKind::MnHa, &mut b);
        b
    };
    let base = RegistrationRequest::parse_fixed(&hex::decode(RRQ_D_T).unwrap()).unwrap();
    let cases: Vec<(RegistrationRequest, u8)> = vec![
        (
            RegistrationRequest {
                flags: Flags::D | Flags::G,
                ..base.clone()
            },
            139,
        ),
        (
            RegistrationRequest {
                flags: Flags::D | Flags::M,
                ..base.clone()
            },
            139,
        ),
        (
            RegistrationRequest {
                home_agent: Ipv4Addr::new(10, 1, 0, 9),
                ..base.clone()
            },
            136,
        ),
        (
            RegistrationRequest {
                extensions: vec![Extension::Unknown {
                    ty: 100,
                    data: vec![1],
                }],
                ..base.clone()
            },
            134,
        ),
    ];
    for (i, (req, code)) in cases.into_iter().enumerate() {
        let mut h = ha(&[]);
        let mut req = req;
        req.ident += i as u64;
        h.handle_datagram(Instant::now(), wall(), coa_src(), local(), &sign(req));
        let r = RegistrationReply::parse(&h.poll_transmit().unwrap().payload).unwrap();
        assert_eq!(r.code.0, code, "case {i}");
        assert_eq!(h.binding_count(), 0);
    }
    // A skippable unknown extension is ignored.
    let mut h = ha(&[]);
    let req = RegistrationRequest {
        extensions: vec![Extension::Unknown {
            ty: 200,
            data: vec![1],
        }],
        ..base.clone()
    };
    h.handle_datagram(Instant::now(), wall(), coa_src(), local(), &sign(req));
    assert_eq!(
        RegistrationReply::parse(&h.poll_transmit().unwrap().payload)
            .unwrap()
            .code,
        ReplyCode::ACCEPTED
    );
    // Wrong key: 131, counted.
    let mut h = ha(&[]);
    let mut b = base.to_bytes();
    SecurityAssociation::new(256, Algorithm::HmacMd5, &[9; 16]).append(AuthKind::MnHa, &mut b);
    h.handle_datagram(Instant::now(), wall(), coa_src(), local(), &b);
    assert_eq!(
        RegistrationReply::parse(&h.poll_transmit().unwrap().payload)
            .unwrap()
            .code
            .0,
        131
    );
    assert_eq!(h.stats().auth_failures.get(&AuthError::Mismatch), Some(&1));
    // Reverse tunnel mandatory, T clear: 138.
    let mut cfg = HaConfig::new(Ipv4Addr::new(10, 1, 0, 1));
    cfg.reverse_tunneling = ReverseTunneling::Mandatory;
    let mut h = HomeAgent::new(cfg, [0; 32]);
    h.add_mobile_node(MobileNodeConfig {
        home_addr: Some(base.home_addr),
        nai: None,
        sas: vec![sa.clone()],
        replay: ReplayMethod::Timestamp,
    })
    .unwrap();
    h.handle_datagram(
        Instant::now(),
        wall(),
        coa_src(),
        local(),
        &sign(RegistrationRequest {
            flags: Flags::D,
            ..base.clone()
        }),
    );
    assert_eq!(
        RegistrationReply::parse(&h.poll_transmit().unwrap().payload)
            .unwrap()
            .code
            .0,
        138
    );
}

#[test]
fn nat_detected_switches_to_udp_tunnel() {
    let mut h = ha(&[]);
    let base = RegistrationRequest::parse_fixed(&hex::decode(RRQ_D_T).unwrap()).unwrap();
    let req = RegistrationRequest {
        extensions: vec![Extension::UdpTunnelRequest {
            force: false,
            r: false,
            encapsulation: 4,
        }],
        ..base
    };
    let mut b = req.to_bytes();
    sa().append(AuthKind::MnHa, &mut b);
    let nat = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 40123);
    h.handle_datagram(Instant::now(), wall(), nat, local(), &b);
    let r = RegistrationReply::parse(&h.poll_transmit().unwrap().payload).unwrap();
    assert!(r.extensions.contains(&Extension::UdpTunnelReply {
        code: UdpTunnelReplyCode::WILL_TUNNEL,
        force: false,
        keepalive: 110
    }));
    let Some(HaEvent::BindingAdded(bd)) = h.poll_event() else {
        panic!()
    };
    assert_eq!(
        bd.tunnel,
        Tunnel::Udp {
            peer: nat,
            keepalive: 110
        }
    );
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let mut h = ha(&[]);
    let rrq = hex::decode(RRQ_D_T).unwrap();
    for n in 0..rrq.len() {
        h.handle_datagram(Instant::now(), wall(), coa_src(), local(), &rrq[..n]);
    }
    h.handle_datagram(Instant::now(), wall(), coa_src(), local(), &[3, 0, 0]);
    assert_eq!(h.binding_count(), 0);
    assert_eq!(h.stats().drops.get(&DropReason::Empty), Some(&1));
    assert_eq!(h.stats().drops.get(&DropReason::Truncated), Some(&23));
    assert_eq!(
        h.stats().drops.get(&DropReason::UnexpectedMessage),
        Some(&1)
    );
}

#[test]
fn batch_entry_point_matches_one_by_one() {
    let rrq = hex::decode(RRQ_D_T).unwrap();
    let nai = hex::decode(RRQ_NAI).unwrap();
    let inputs: Vec<&[u8]> = vec![&rrq, &[1, 2, 3], &nai, &rrq[..24], &rrq];
    let mut a = ha(&[]);
    let mut b = ha(&[]);
    let now = Instant::now();
    let batch: Vec<_> = inputs.iter().map(|p| (coa_src(), local(), *p)).collect();
    a.handle_datagrams(now, wall(), &batch);
    for p in &inputs {
        b.handle_datagram(now, wall(), coa_src(), local(), p);
    }
    let drain = |h: &mut HomeAgent| {
        let mut v = Vec::new();
        while let Some(t) = h.poll_transmit() {
            v.push(t.payload);
        }
        v
    };
    let (ta, tb) = (drain(&mut a), drain(&mut b));
    assert_eq!(ta, tb);
    assert_eq!(ta.len(), 4);
    assert_eq!(a.stats(), b.stats());
    assert_eq!(a.bindings(), b.bindings());
}

#[test]
fn restored_binding_and_replay_state_survive_a_restart() {
    let rrq = hex::decode(RRQ_D_T).unwrap();
    let mut a = ha(&[]);
    let now = Instant::now();
    a.handle_datagram(now, wall(), coa_src(), local(), &rrq);
    let b = a.bindings()[0].clone();
    let last = a.last_ident(b.home_addr);
    assert_eq!(last, Some(0xeb1f_0400_0000_0000));
    // A new instance restores them: the binding is back, the old request is a replay.
    let mut fresh = ha(&[]);
    assert!(fresh.restore_binding(now, b.clone(), last));
    assert!(matches!(fresh.poll_event(), Some(HaEvent::BindingAdded(_))));
    assert_eq!(fresh.bindings(), vec![b.clone()]);
    fresh.handle_datagram(now, wall(), coa_src(), local(), &rrq);
    let r = RegistrationReply::parse(&fresh.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(r.code, ReplyCode::HA_IDENT_MISMATCH);
    // Expired or unknown bindings are refused.
    let mut expired = b.clone();
    expired.expires = now;
    assert!(!ha(&[]).restore_binding(now, expired, None));
    let mut stranger = b;
    stranger.home_addr = Ipv4Addr::new(10, 1, 0, 99);
    assert!(!ha(&[]).restore_binding(now, stranger, None));
}

/// Issue 15: octets after MN-HA that are not extensions RFC 5944 allows there
/// were accepted with code 0 (see `crate::trailer`).
#[test]
fn bytes_after_mn_ha_must_be_allowed_extensions() {
    let sa = sa();
    let base = RegistrationRequest::parse_fixed(&hex::decode(RRQ_D_T).unwrap()).unwrap();
    let signed = |ident: u64| {
        let mut b = RegistrationRequest {
            ident,
            ..base.clone()
        }
        .to_bytes();
        sa.append(AuthKind::MnHa, &mut b);
        b
    };
    let fa_ha = SecurityAssociation::new(9, Algorithm::HmacMd5, &[5; 16]);
    type Trailer<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    let cases: Vec<(&str, Trailer, u8)> = vec![
        ("nothing", Box::new(|_| {}), 0),
        (
            "7f ff and noise",
            Box::new(|b| b.extend_from_slice(&[0x7f, 0xff, 0xde, 0xad, 0xbe, 0xef])),
            134,
        ),
        (
            "a second MN-HA",
            Box::new(|b| sa.append(AuthKind::MnHa, b)),
            134,
        ),
        (
            "a non-skippable unknown",
            Box::new(|b| b.extend_from_slice(&[0x7f, 0x00])),
            134,
        ),
        ("a lone octet", Box::new(|b| b.push(0x90)), 134),
        (
            "a skippable extension and FA-HA",
            Box::new(|b| {
                b.extend_from_slice(&[200, 1, 7]);
                fa_ha.append(AuthKind::FaHa, b)
            }),
            0,
        ),
        ("MN-FA", Box::new(|b| fa_ha.append(AuthKind::MnFa, b)), 0),
        (
            "an extension after FA-HA",
            Box::new(|b| {
                fa_ha.append(AuthKind::FaHa, b);
                b.extend_from_slice(&[200, 0]);
            }),
            134,
        ),
    ];
    for (i, (name, add, code)) in cases.into_iter().enumerate() {
        let mut h = ha(&[]);
        let mut b = signed(base.ident + i as u64);
        add(&mut b);
        h.handle_datagram(Instant::now(), wall(), coa_src(), local(), &b);
        let r = RegistrationReply::parse(&h.poll_transmit().unwrap().payload).unwrap();
        assert_eq!(r.code.0, code, "{name}");
        assert_eq!(h.binding_count(), usize::from(code == 0), "{name}");
        assert_eq!(h.stats().replies_by_code.get(&code), Some(&1), "{name}");
    }
}

/// Issue 15: every renewal left an 8-octet entry in the expiry wheel until the
/// old lifetime passed (1800 entries per node renewing every second).
#[test]
fn long_renewal_run_keeps_one_timer_entry_per_binding() {
    let sa = sa();
    let base = RegistrationRequest::parse_fixed(&hex::decode(RRQ_D_T).unwrap()).unwrap();
    let mut h = ha(&[]);
    let t0 = Instant::now();
    let renew = |h: &mut HomeAgent, i: u64, lifetime: u16| {
        let mut b = RegistrationRequest {
            ident: base.ident + (i << 32),
            lifetime,
            ..base.clone()
        }
        .to_bytes();
        sa.append(AuthKind::MnHa, &mut b);
        let now = t0 + Duration::from_secs(i);
        h.handle_timeout(now);
        h.handle_datagram(now, wall() + Duration::from_secs(i), coa_src(), local(), &b);
        let r = RegistrationReply::parse(&h.poll_transmit().unwrap().payload).unwrap();
        assert_eq!(r.code, ReplyCode::ACCEPTED, "renewal {i}");
    };
    let mut peak = 0;
    for i in 0..10_000 {
        renew(&mut h, i, 1800);
        peak = peak.max(h.timer_entries());
    }
    assert_eq!(peak, 1, "one wheel entry per binding, none per renewal");
    assert_eq!(h.binding_count(), 1);
    while h.poll_event().is_some() {}
    // The binding still expires on time: 1800 s after the last renewal, not before.
    let last = t0 + Duration::from_secs(9_999);
    h.handle_timeout(last + Duration::from_secs(1799));
    assert_eq!(h.binding_count(), 1);
    h.handle_timeout(last + Duration::from_secs(1801));
    assert_eq!(h.binding_count(), 0);
    assert_eq!(h.timer_entries(), 0);

    // A renewal that shortens the lifetime is honoured: expiry at the new deadline.
    let mut h = ha(&[]);
    renew(&mut h, 0, 1800);
    renew(&mut h, 1, 10);
    assert!(h.timer_entries() <= 2);
    h.handle_timeout(t0 + Duration::from_secs(12));
    assert_eq!(h.binding_count(), 0);
    h.handle_timeout(t0 + Duration::from_secs(2000));
    assert_eq!(h.timer_entries(), 0);
}

#[test]
fn per_node_memory_is_bounded() {
    // Per node: one MnRecord (its first binding and SA inline, 376 octets on
    // x86_64) plus its SA list and NAI on the heap and a 16-octet index entry;
    // per binding: one expiry-wheel entry (see HomeAgent::schedule); per renewal: 0.
    let node = std::mem::size_of::<MnRecord>();
    eprintln!(
        "MnRecord {node} B, Binding {} B",
        std::mem::size_of::<Binding>()
    );
    assert!(node <= 512, "MnRecord grew to {node} octets");
}
