//! Unit tests of the leak classifier on frames built here (the scapy-built pcaps and
//! the cross-check against tshark are in tests/leak_classifier.rs).

use super::*;

const MN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x50];
const EVIL: [u8; 6] = [2, 0, 0, 0, 0, 0x66];
const COA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const XHA: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const XHOME: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 100);
const CN: Ipv4Addr = Ipv4Addr::new(10, 40, 0, 10);

fn ip(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

fn udp(sp: u16, dp: u16, data: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sp.to_be_bytes());
    u.extend_from_slice(&dp.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    u
}

fn eth(src: [u8; 6], et: u16, payload: &[u8]) -> Frame {
    let mut d = vec![0xff; 6];
    d.extend_from_slice(&src);
    d.extend_from_slice(&et.to_be_bytes());
    d.extend_from_slice(payload);
    Frame {
        linktype: 1,
        data: d,
    }
}

fn ipf(p: Vec<u8>) -> Frame {
    eth(MN_MAC, 0x0800, &p)
}

fn class_of(f: &Frame) -> Verdict {
    let mut seg = Seg::default();
    classify_frame(&Plan::lab(), &mut seg, f)
}

fn esp_payload() -> Vec<u8> {
    let mut e = vec![0xc0, 0xff, 0xee, 0x01, 0, 0, 0, 7];
    e.extend_from_slice(&[0xaa; 40]);
    e
}

fn ike() -> Vec<u8> {
    vec![0x11; 28]
}

fn rrq(hoa: Ipv4Addr, ha: Ipv4Addr, coa: Ipv4Addr) -> Vec<u8> {
    let mut m = vec![1, 0x02, 0, 30];
    m.extend_from_slice(&hoa.octets());
    m.extend_from_slice(&ha.octets());
    m.extend_from_slice(&coa.octets());
    m.extend_from_slice(&[0; 8]);
    m
}

#[test]
fn each_class() {
    let cases: Vec<(&str, Frame, Class)> = vec![
        (
            "ike 500",
            ipf(ip(COA, GW, 17, &udp(500, 500, &ike()))),
            Class::Control,
        ),
        (
            "ike 4500",
            ipf(ip(
                COA,
                GW,
                17,
                &udp(4500, 4500, &[&[0u8; 4][..], &ike()].concat()),
            )),
            Class::Control,
        ),
        (
            "keepalive",
            ipf(ip(COA, GW, 17, &udp(4500, 4500, &[0xff]))),
            Class::Control,
        ),
        (
            "esp in udp",
            ipf(ip(COA, GW, 17, &udp(4500, 4500, &esp_payload()))),
            Class::Encrypted,
        ),
        (
            "esp",
            ipf(ip(COA, GW, 50, &esp_payload())),
            Class::Encrypted,
        ),
        (
            "esp not with the gateway",
            ipf(ip(COA, Ipv4Addr::new(203, 0, 113, 9), 50, &esp_payload())),
            Class::Leak,
        ),
        (
            "ipip esp not with the gateway",
            ipf(ip(
                COA,
                XHA,
                4,
                &ip(XHOME, Ipv4Addr::new(203, 0, 113, 9), 50, &esp_payload()),
            )),
            Class::Leak,
        ),
        (
            "ipip dhcp",
            ipf(ip(COA, XHA, 4, &ip(XHOME, GW, 17, &udp(68, 67, &[0; 300])))),
            Class::Leak,
        ),
        (
            "rrq to x-HA",
            ipf(ip(COA, XHA, 17, &udp(434, 434, &rrq(XHOME, XHA, COA)))),
            Class::Control,
        ),
        (
            "rrq to i-HA",
            ipf(ip(
                COA,
                crate::topo::HA_ADDR,
                17,
                &udp(434, 434, &rrq(XHOME, XHA, COA)),
            )),
            Class::Leak,
        ),
        (
            "rrq with home address",
            ipf(ip(
                COA,
                XHA,
                17,
                &udp(434, 434, &rrq(crate::topo::MN_HOME, XHA, COA)),
            )),
            Class::Leak,
        ),
        (
            "rrq with another HA",
            ipf(ip(COA, XHA, 17, &udp(434, 434, &rrq(XHOME, COA, COA)))),
            Class::Leak,
        ),
        (
            "ping outside",
            ipf(ip(COA, GW, 1, &[8, 0, 0, 0, 0, 1, 0, 1])),
            Class::Control,
        ),
        (
            "ping cn",
            ipf(ip(COA, CN, 1, &[8, 0, 0, 0, 0, 1, 0, 1])),
            Class::Leak,
        ),
        (
            "tcp outside",
            ipf(ip(COA, GW, 6, &[0x13, 0x89, 0, 80, 0, 0, 0, 0])),
            Class::Leak,
        ),
        (
            "dns",
            ipf(ip(COA, GW, 17, &udp(3333, 53, b"query"))),
            Class::Leak,
        ),
        (
            "ipip esp",
            ipf(ip(
                COA,
                XHA,
                4,
                &ip(XHOME, GW, 17, &udp(4500, 4500, &esp_payload())),
            )),
            Class::Encrypted,
        ),
        (
            "ipip ike",
            ipf(ip(COA, XHA, 4, &ip(XHOME, GW, 17, &udp(500, 500, &ike())))),
            Class::Control,
        ),
        (
            "ipip plaintext intranet",
            ipf(ip(COA, XHA, 4, &ip(XHOME, CN, 17, &udp(5000, 5002, b"hi")))),
            Class::Leak,
        ),
        (
            "ipip user payload",
            ipf(ip(COA, XHA, 4, &ip(XHOME, GW, 6, &[0; 20]))),
            Class::Leak,
        ),
        (
            "ipip not with x-HA",
            ipf(ip(COA, GW, 4, &ip(XHOME, GW, 50, &esp_payload()))),
            Class::Leak,
        ),
        (
            "udp tunnel data esp",
            ipf(ip(
                COA,
                XHA,
                17,
                &udp(
                    434,
                    434,
                    &[&[4u8, 4, 0, 0][..], &ip(XHOME, GW, 50, &esp_payload())].concat(),
                ),
            )),
            Class::Encrypted,
        ),
        (
            "udp tunnel data plaintext",
            ipf(ip(
                COA,
                XHA,
                17,
                &udp(
                    434,
                    434,
                    &[
                        &[4u8, 4, 0, 0][..],
                        &ip(XHOME, CN, 1, &[8, 0, 0, 0, 0, 0, 0, 0]),
                    ]
                    .concat(),
                ),
            )),
            Class::Leak,
        ),
        (
            "icmp error quoting intranet",
            ipf(ip(
                COA,
                GW,
                1,
                &[
                    &[3u8, 3, 0, 0, 0, 0, 0, 0][..],
                    &ip(GW, CN, 17, &udp(1, 2, b"")),
                ]
                .concat(),
            )),
            Class::Leak,
        ),
        (
            "arp outside",
            eth(
                MN_MAC,
                0x0806,
                &arp_pkt(COA, Ipv4Addr::new(198, 51, 100, 254)),
            ),
            Class::Control,
        ),
        (
            "arp for the home agent",
            eth(MN_MAC, 0x0806, &arp_pkt(COA, crate::topo::HA_ADDR)),
            Class::Leak,
        ),
        (
            "gratuitous arp home address",
            eth(
                MN_MAC,
                0x0806,
                &arp_pkt(crate::topo::MN_HOME, crate::topo::MN_HOME),
            ),
            Class::Leak,
        ),
        (
            "injected",
            eth(
                EVIL,
                0x0800,
                &ip(crate::topo::HA_ADDR, COA, 17, &udp(434, 434, b"x")),
            ),
            Class::Injected,
        ),
        ("ipv6", eth(MN_MAC, 0x86dd, &[0x60; 40]), Class::Leak),
        ("garbage ip", ipf(vec![0x45, 0, 0, 200, 0]), Class::Leak),
    ];
    for (name, f, want) in cases {
        let mut plan = Plan::lab();
        plan.injectors.push(EVIL);
        let mut seg = Seg::default();
        let got = classify_frame(&plan, &mut seg, &f);
        assert_eq!(got.class, want, "{name}: {got:?}");
    }
}

fn arp_pkt(sip: Ipv4Addr, tip: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&MN_MAC);
    a.extend_from_slice(&sip.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tip.octets());
    a
}

fn bootp(op: u8, ciaddr: Ipv4Addr, yiaddr: Ipv4Addr, opts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = op;
    b[12..16].copy_from_slice(&ciaddr.octets());
    b[16..20].copy_from_slice(&yiaddr.octets());
    b[236..240].copy_from_slice(&[0x63, 0x82, 0x53, 0x63]);
    for (c, v) in opts {
        b.push(*c);
        b.push(v.len() as u8);
        b.extend_from_slice(v);
    }
    b.push(255);
    b
}

/// A hostile DHCP server handing out 10.20.0.50 (inside the intranet's range) with
/// router and server 10.20.0.1: those three addresses are that segment's own; the MN's
/// traffic from its lease to the gateway is not a leak, its traffic to another
/// 10.20.0.x address is, and a request for its home address always is.
#[test]
fn dhcp_named_addresses_are_local_to_their_segment() {
    let lease = Ipv4Addr::new(10, 20, 0, 50);
    let srv = Ipv4Addr::new(10, 20, 0, 1);
    let bcast = Ipv4Addr::BROADCAST;
    let zero = Ipv4Addr::UNSPECIFIED;
    let ack = bootp(
        2,
        zero,
        lease,
        &[
            (53, vec![5]),
            (54, srv.octets().to_vec()),
            (3, srv.octets().to_vec()),
        ],
    );
    let frames = vec![
        ipf(ip(
            zero,
            bcast,
            17,
            &udp(68, 67, &bootp(1, zero, zero, &[(53, vec![1])])),
        )),
        ipf(ip(srv, lease, 17, &udp(67, 68, &ack))),
        eth(MN_MAC, 0x0806, &arp_pkt(lease, srv)),
        ipf(ip(lease, GW, 17, &udp(4500, 4500, &esp_payload()))),
        ipf(ip(
            lease,
            Ipv4Addr::new(10, 20, 0, 77),
            1,
            &[8, 0, 0, 0, 0, 0, 0, 0],
        )),
        ipf(ip(
            zero,
            bcast,
            17,
            &udp(
                68,
                67,
                &bootp(
                    1,
                    zero,
                    zero,
                    &[(50, crate::topo::MN_HOME.octets().to_vec())],
                ),
            ),
        )),
        ipf(ip(lease, srv, 6, &[0, 80, 0, 80, 0, 0, 0, 0])),
    ];
    let r = classify_frames(&Plan::lab(), "ext-a", &frames);
    let classes: Vec<usize> = r.leaks.iter().map(|(i, _)| *i).collect();
    assert_eq!(classes, vec![5, 6, 7], "{}", render_one(&r));
    assert_eq!(r.count(Class::Control), 3);
    assert_eq!(r.count(Class::Encrypted), 1);
    assert!(render_one(&r).ends_with("leaks: 3\n"));
    // On another segment the same lease is an intranet address.
    let r = classify_frames(&Plan::lab(), "ext-b", &frames[3..4]);
    assert_eq!(r.count(Class::Leak), 1);
}

#[test]
fn fragments_follow_their_first() {
    let mut first = ip(COA, GW, 17, &udp(4500, 4500, &esp_payload()));
    first[6] = 0x20; // MF
                     // UDP length says more than the first fragment holds.
    first[20 + 4..20 + 6].copy_from_slice(&2000u16.to_be_bytes());
    let mut rest = ip(COA, GW, 17, &[0xaa; 64]);
    rest[6..8].copy_from_slice(&(100u16).to_be_bytes());
    let mut orphan = ip(COA, GW, 17, &[0xaa; 64]);
    orphan[4..6].copy_from_slice(&[9, 9]);
    orphan[6..8].copy_from_slice(&(100u16).to_be_bytes());
    let r = classify_frames(&Plan::lab(), "s", &[ipf(first), ipf(rest), ipf(orphan)]);
    assert_eq!(r.count(Class::Encrypted), 2);
    assert_eq!(r.leaks.len(), 1);
    assert!(r.leaks[0].1.contains("first fragment"), "{:?}", r.leaks);
}

#[test]
fn pcap_reader_both_orders_and_cut_tail() {
    let f = ipf(ip(COA, GW, 50, &esp_payload()));
    for le in [true, false] {
        let w32 = |x: u32| if le { x.to_le_bytes() } else { x.to_be_bytes() };
        let w16 = |x: u16| if le { x.to_le_bytes() } else { x.to_be_bytes() };
        let mut b = Vec::new();
        b.extend_from_slice(&w32(0xa1b2_c3d4));
        b.extend_from_slice(&w16(2));
        b.extend_from_slice(&w16(4));
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&w32(65535));
        b.extend_from_slice(&w32(1));
        for _ in 0..2 {
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&w32(f.data.len() as u32));
            b.extend_from_slice(&w32(f.data.len() as u32));
            b.extend_from_slice(&f.data);
        }
        b.extend_from_slice(&[0; 10]); // cut record header
        let frames = parse_pcap(&b).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].data, f.data);
        assert_eq!(class_of(&frames[0]).class, Class::Encrypted);
    }
    assert!(parse_pcap(b"\x0a\x0d\x0d\x0a....................").is_err());
    let mut huge = vec![0xd4, 0xc3, 0xb2, 0xa1];
    huge.extend_from_slice(&[0; 16]);
    huge.extend_from_slice(&1u32.to_le_bytes());
    huge.extend_from_slice(&[0; 8]);
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse_pcap(&huge).is_err());
}

#[test]
fn helpers() {
    assert_eq!(
        parse_net("10.0.0.0/8"),
        Some((Ipv4Addr::new(10, 0, 0, 0), 8))
    );
    assert_eq!(parse_net("10.0.0.0/33"), None);
    assert_eq!(parse_mac("02:00:00:00:00:66"), Some(EVIL));
    assert_eq!(parse_mac("02:00:00:00:00"), None);
    assert!(in_net(Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::UNSPECIFIED, 0));
    assert!(!in_net(
        Ipv4Addr::new(11, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 0),
        8
    ));
}

/// MN-6: a detection request to the i-HA on an outside link is control only when the
/// plan names that i-HA, and only the request itself: the i-HA's reply, a request for
/// another home address, one naming another home agent, one from an intranet source,
/// one inside a tunnel, and user data to the i-HA stay leaks.
#[test]
fn detection_requests_to_the_i_ha() {
    let iha = crate::topo::HA_ADDR;
    let home = crate::topo::MN_HOME;
    let mut plan = Plan::lab();
    let req = ipf(ip(COA, iha, 17, &udp(434, 434, &rrq(home, iha, COA))));
    let mut seg = Seg::default();
    assert_eq!(classify_frame(&plan, &mut seg, &req).class, Class::Leak);
    plan.detection_to.push(iha);
    let vd = classify_frame(&plan, &mut seg, &req);
    assert_eq!(
        (vd.class, vd.what.as_str()),
        (Class::Control, "mn-6 detection request to the i-HA")
    );
    let mut reply = rrq(home, iha, COA);
    reply[0] = 3;
    let still_leaks = [
        ipf(ip(iha, COA, 17, &udp(434, 434, &reply))),
        ipf(ip(COA, iha, 17, &udp(434, 434, &rrq(CN, iha, COA)))),
        ipf(ip(COA, iha, 17, &udp(434, 434, &rrq(home, XHA, COA)))),
        ipf(ip(CN, iha, 17, &udp(434, 434, &rrq(home, iha, COA)))),
        ipf(ip(COA, iha, 17, &udp(434, 435, &rrq(home, iha, COA)))),
        ipf(ip(COA, iha, 17, &udp(434, 5002, b"user data"))),
        ipf(ip(
            COA,
            XHA,
            4,
            &ip(XHOME, iha, 17, &udp(434, 434, &rrq(home, iha, COA))),
        )),
    ];
    for (i, f) in still_leaks.iter().enumerate() {
        let vd = classify_frame(&plan, &mut seg, f);
        assert_eq!(vd.class, Class::Leak, "case {i}: {vd:?}");
    }
    // On a look-alike network whose DHCP server leased an intranet-looking address, the
    // request from that lease is the node's detection request there (the soak's
    // look-alike attack); from the same address elsewhere it is a leak.
    let lease = Ipv4Addr::new(10, 20, 0, 50);
    let from_lease = ipf(ip(lease, iha, 17, &udp(434, 434, &rrq(home, iha, lease))));
    assert_eq!(
        classify_frame(&plan, &mut seg, &from_lease).class,
        Class::Leak
    );
    let mut lookalike = Seg::default();
    lookalike.local.insert(lease);
    let vd = classify_frame(&plan, &mut lookalike, &from_lease);
    assert_eq!(vd.class, Class::Control, "{vd:?}");
}

/// A Registration Request with the extensions `mipsec mn` sends (RFC 3519 UDP tunnel
/// request, MN-HA authentication), as captured on ext-b through the x-FA.
fn rrq_ext(hoa: Ipv4Addr, ha: Ipv4Addr, coa: Ipv4Addr) -> Vec<u8> {
    let mut m = rrq(hoa, ha, coa);
    m.extend_from_slice(&[144, 6, 0, 4, 0, 0, 0, 0]);
    m.extend_from_slice(&[32, 20, 0, 0, 1, 0]);
    m.extend_from_slice(&[0x8e; 16]);
    m
}

/// RFC 5944 3.6.1.1 / RFC 5265 MN-6 through an agent: a node registers through a
/// foreign agent from its home address, so with the agent in `Plan::agents` the request
/// from the home address to it and the agent's reply to the home address are control,
/// when strictly well-formed; every variation carrying the home address is still a leak.
#[test]
fn registrations_between_the_home_address_and_an_agent() {
    let iha = crate::topo::HA_ADDR;
    let home = crate::topo::MN_HOME;
    let xfa = crate::topo::XFA_ADDR;
    let mut plan = Plan::lab();
    plan.detection_to.push(iha);
    let req = ipf(ip(home, xfa, 17, &udp(434, 434, &rrq_ext(home, iha, xfa))));
    let mut reply = rrq(home, iha, xfa)[..20].to_vec();
    reply[0] = 3;
    reply[1] = 78; // registration timeout, from the agent
    let rep = ipf(ip(xfa, home, 17, &udp(434, 434, &reply)));
    let mut seg = Seg::default();
    assert_eq!(classify_frame(&plan, &mut seg, &req).class, Class::Leak);
    assert_eq!(classify_frame(&plan, &mut seg, &rep).class, Class::Leak);
    plan.agents.push(xfa);
    let vd = classify_frame(&plan, &mut seg, &req);
    assert_eq!(
        (vd.class, vd.what.as_str()),
        (Class::Control, "registration request to the agent")
    );
    let vd = classify_frame(&plan, &mut seg, &rep);
    assert_eq!(
        (vd.class, vd.what.as_str()),
        (Class::Control, "registration reply from the agent")
    );
    // The x-HA's registration through the agent, from the home address, too.
    let xreq = ipf(ip(home, xfa, 17, &udp(434, 434, &rrq_ext(home, XHA, xfa))));
    assert_eq!(classify_frame(&plan, &mut seg, &xreq).class, Class::Control);
    let no_auth = rrq(home, iha, xfa);
    let mut unknown_ext = rrq_ext(home, iha, xfa);
    unknown_ext.extend_from_slice(&[200, 9]);
    unknown_ext.extend_from_slice(b"user data");
    let mut cut = rrq_ext(home, iha, xfa);
    cut.pop();
    let mut short_auth = rrq(home, iha, xfa);
    short_auth.extend_from_slice(&[32, 4, 0, 0, 1, 0]);
    let mut reply_trailer = reply.clone();
    reply_trailer.extend_from_slice(b"x");
    let mut fragment = ip(home, xfa, 17, &udp(434, 434, &rrq_ext(home, iha, xfa)));
    fragment[6] = 0x20; // more fragments
    let still_leaks = [
        ipf(ip(home, xfa, 17, &udp(434, 434, &no_auth))),
        ipf(ip(home, xfa, 17, &udp(434, 434, &unknown_ext))),
        ipf(ip(home, xfa, 17, &udp(434, 434, &cut))),
        ipf(ip(home, xfa, 17, &udp(434, 434, &short_auth))),
        ipf(ip(xfa, home, 17, &udp(434, 434, &reply_trailer))),
        // The home address in the message is not the sender's.
        ipf(ip(home, xfa, 17, &udp(434, 434, &rrq_ext(CN, iha, xfa)))),
        // Care-of address other than the agent; home agent neither i-HA nor x-HA.
        ipf(ip(home, xfa, 17, &udp(434, 434, &rrq_ext(home, iha, COA)))),
        ipf(ip(home, xfa, 17, &udp(434, 434, &rrq_ext(home, CN, xfa)))),
        // Not to the agent; not port 434; a reply from the node; user data.
        ipf(ip(home, COA, 17, &udp(434, 434, &rrq_ext(home, iha, COA)))),
        ipf(ip(home, xfa, 17, &udp(434, 5001, &rrq_ext(home, iha, xfa)))),
        ipf(ip(xfa, home, 17, &udp(5001, 434, &reply))),
        ipf(ip(home, xfa, 17, &udp(434, 434, &reply))),
        ipf(ip(home, xfa, 17, &udp(5001, 5001, b"user data"))),
        ipf(ip(home, xfa, 6, &[0; 20])),
        ipf(fragment),
        // Inside a tunnel it is not the node talking to the agent on the link.
        ipf(ip(
            COA,
            XHA,
            4,
            &ip(home, xfa, 17, &udp(434, 434, &rrq_ext(home, iha, xfa))),
        )),
        // And the ARP with the home address the node used to send the agent.
        eth(MN_MAC, 0x0806, &arp_pkt(home, xfa)),
    ];
    for (i, f) in still_leaks.iter().enumerate() {
        let vd = classify_frame(&plan, &mut seg, f);
        assert_eq!(vd.class, Class::Leak, "case {i}: {vd:?}");
    }
}
