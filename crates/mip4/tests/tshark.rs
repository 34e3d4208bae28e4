//! Messages mipsec's encoder writes, put in a pcap, must decode in tshark's
//! Mobile IP and ICMP dissectors with no malformed packet and no expert warning.
//! tshark (Wireshark) is the independent oracle; scripts/install-deps.sh installs it.
#![allow(clippy::unwrap_used)]

use mip4::auth::{Algorithm, SecurityAssociation};
use mip4::client::{Attachment, ClientConfig, RegistrationClient};
use mip4::ha::{HaConfig, HomeAgent, MobileNodeConfig, ReverseTunneling};
use mip4::replay::ReplayMethod;
use mip4::wire::agent::{
    AgentAdvertisement, AgentFlags, AgentSolicitation, MobilityAgentExt, RouterEntry,
};
use mip4::wire::extension::AuthKind;
use mip4::wire::tunnel::TunnelData;
use mip4::wire::{Extension, Flags, RegistrationRequest};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};
use wire::pcap::{LinkType, PcapWriter};

const HA: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
const HOME: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 100);

fn sa() -> SecurityAssociation {
    SecurityAssociation::new(256, Algorithm::HmacMd5, b"0123456789abcdef")
}

/// UDP 434 payloads produced by our HA and MN client in a handful of exchanges.
fn registration_messages() -> Vec<(SocketAddrV4, SocketAddrV4, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cfg = HaConfig::new(HA);
    cfg.trusted_networks = vec![
        "10.0.0.0/8".parse().unwrap(),
        "192.168.0.0/16".parse().unwrap(),
    ];
    cfg.dynamic_pool = Some((Ipv4Addr::new(10, 10, 0, 200), 8));
    let mut ha = HomeAgent::new(cfg, [9; 32]);
    ha.add_mobile_node(MobileNodeConfig {
        home_addr: Some(HOME),
        nai: None,
        sas: vec![sa()],
        replay: ReplayMethod::Timestamp,
    })
    .unwrap();
    ha.add_mobile_node(MobileNodeConfig {
        home_addr: None,
        nai: Some("laptop7@corp.example".into()),
        sas: vec![sa()],
        replay: ReplayMethod::Timestamp,
    })
    .unwrap();
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut exchange =
        |ha: &mut HomeAgent, mn: &mut RegistrationClient, att: Attachment, dereg: bool| {
            if dereg {
                mn.deregister(now, wall, att);
            } else {
                mn.register(now, wall, att);
            }
            let rrq = mn.poll_transmit().unwrap();
            // A NAT in front of 192.168/16 rewrites the source.
            let src = if rrq.src.ip().octets()[0] == 192 {
                SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 1), 40000)
            } else {
                rrq.src
            };
            ha.handle_datagram(now, wall, src, rrq.dst, &rrq.payload);
            out.push((src, rrq.dst, rrq.payload));
            while let Some(t) = ha.poll_transmit() {
                mn.handle_datagram(now, wall, t.src, &t.payload);
                out.push((t.src, t.dst, t.payload));
            }
        };
    let att = |coa: Ipv4Addr| Attachment {
        care_of: coa,
        local: SocketAddrV4::new(coa, 434),
        dest: SocketAddrV4::new(HA, 434),
        colocated: true,
    };
    // Co-located, with TNC in the reply; then deregistration.
    let mut mn = RegistrationClient::new(ClientConfig::new(HOME, HA, sa()), [1; 32]);
    exchange(&mut ha, &mut mn, att(Ipv4Addr::new(10, 20, 0, 50)), false);
    exchange(&mut ha, &mut mn, att(HOME), true);
    // NAI with a dynamic home address, UDP tunneling behind a NAT.
    let mut c = ClientConfig::new(Ipv4Addr::UNSPECIFIED, HA, sa());
    c.nai = Some("laptop7@corp.example".into());
    c.udp_tunnel = Some(false);
    c.simultaneous = true;
    let mut mn = RegistrationClient::new(c, [2; 32]);
    exchange(&mut ha, &mut mn, att(Ipv4Addr::new(192, 168, 1, 20)), false);
    // Wrong key: 131. Clock an hour off: 133.
    let mut mn = RegistrationClient::new(
        ClientConfig::new(
            HOME,
            HA,
            SecurityAssociation::new(256, Algorithm::HmacMd5, b"wrong key 123456"),
        ),
        [3; 32],
    );
    exchange(&mut ha, &mut mn, att(Ipv4Addr::new(10, 20, 0, 51)), false);
    let mut mn = RegistrationClient::new(ClientConfig::new(HOME, HA, sa()), [4; 32]);
    mn.register(
        now,
        wall + Duration::from_secs(3600),
        att(Ipv4Addr::new(10, 20, 0, 52)),
    );
    let rrq = mn.poll_transmit().unwrap();
    ha.handle_datagram(now, wall, rrq.src, rrq.dst, &rrq.payload);
    out.push((rrq.src, rrq.dst, rrq.payload));
    out.push({
        let t = ha.poll_transmit().unwrap();
        (t.src, t.dst, t.payload)
    });
    // Through a foreign agent: MN-HA, encapsulating delivery style, MN-FA, FA-HA;
    // the HA requires reverse tunneling and rejects GRE.
    let mut cfg = HaConfig::new(HA);
    cfg.reverse_tunneling = ReverseTunneling::Mandatory;
    let mut ha2 = HomeAgent::new(cfg, [5; 32]);
    ha2.add_mobile_node(MobileNodeConfig {
        home_addr: Some(HOME),
        nai: None,
        sas: vec![sa()],
        replay: ReplayMethod::Timestamp,
    })
    .unwrap();
    let fa = SocketAddrV4::new(Ipv4Addr::new(10, 30, 0, 1), 434);
    for (i, flags) in [Flags::T, Flags::G, Flags::empty()].into_iter().enumerate() {
        let req = RegistrationRequest {
            flags,
            lifetime: 1800,
            home_addr: HOME,
            home_agent: HA,
            care_of: *fa.ip(),
            ident: (u64::from(mip4::replay::NtpTime::from_system_time(wall).seconds()) << 32)
                + i as u64,
            extensions: vec![],
        };
        let mut b = req.to_bytes();
        sa().append(AuthKind::MnHa, &mut b);
        // RFC 3024: for the foreign agent only, after MN-HA and before MN-FA.
        Extension::EncapDeliveryStyle.emit(&mut b);
        SecurityAssociation::new(300, Algorithm::HmacMd5, b"mn-fa key 012345")
            .append(AuthKind::MnFa, &mut b);
        SecurityAssociation::new(400, Algorithm::HmacMd5, b"fa-ha key 012345")
            .append(AuthKind::FaHa, &mut b);
        ha2.handle_datagram(now, wall, fa, SocketAddrV4::new(HA, 434), &b);
        out.push((fa, SocketAddrV4::new(HA, 434), b));
        let t = ha2.poll_transmit().unwrap();
        out.push((t.src, t.dst, t.payload));
    }
    out
}

/// A registration relayed by our foreign agent (with FA-HA both ways), and its
/// advertisements: (IPv4 source, destination, UDP payload or ICMP message, is_icmp).
fn foreign_agent_messages() -> Vec<(Ipv4Addr, Ipv4Addr, Vec<u8>, bool)> {
    use mip4::fa::{FaConfig, FaTransmit, ForeignAgent};
    let fa_addr = Ipv4Addr::new(10, 30, 0, 1);
    let fa_ha = SecurityAssociation::new(400, Algorithm::HmacMd5, b"fa-ha key 012345");
    let mut hcfg = HaConfig::new(HA);
    hcfg.fa_ha_sas = vec![(fa_addr, fa_ha.clone())];
    let mut ha = HomeAgent::new(hcfg, [6; 32]);
    ha.add_mobile_node(MobileNodeConfig {
        home_addr: Some(HOME),
        nai: None,
        sas: vec![sa()],
        replay: ReplayMethod::Timestamp,
    })
    .unwrap();
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut fa = ForeignAgent::new(
        FaConfig {
            fa_ha_sas: vec![(HA, fa_ha)],
            ..FaConfig::new(fa_addr, 24)
        },
        now,
    );
    let mut c = ClientConfig::new(HOME, HA, sa());
    c.encapsulating_delivery = true;
    let mut mn = RegistrationClient::new(c, [7; 32]);
    mn.register(
        now,
        wall,
        Attachment {
            care_of: fa_addr,
            local: SocketAddrV4::new(HOME, 434),
            dest: SocketAddrV4::new(fa_addr, 434),
            colocated: false,
        },
    );
    let mut out = Vec::new();
    let rrq = mn.poll_transmit().unwrap();
    out.push((HOME, fa_addr, rrq.payload.clone(), false));
    fa.handle_datagram(now, rrq.src, [2, 0, 0, 0, 0, 9], &rrq.payload);
    fa.handle_timeout(now);
    fa.handle_solicitation(now, Ipv4Addr::new(10, 30, 0, 77));
    while let Some(t) = fa.poll_transmit() {
        match t {
            FaTransmit::Advertisement { dst, icmp } => out.push((fa_addr, dst, icmp, true)),
            FaTransmit::ToHomeAgent(t) => {
                out.push((fa_addr, HA, t.payload.clone(), false));
                ha.handle_datagram(now, wall, t.src, t.dst, &t.payload);
            }
            FaTransmit::ToMobileNode { .. } => panic!("no reply yet"),
        }
    }
    let rrp = ha.poll_transmit().unwrap();
    out.push((HA, fa_addr, rrp.payload.clone(), false));
    fa.handle_datagram(now, rrp.src, [0; 6], &rrp.payload);
    while let Some(t) = fa.poll_transmit() {
        if let FaTransmit::ToMobileNode {
            home_addr, payload, ..
        } = t
        {
            out.push((fa_addr, home_addr, payload, false));
        }
    }
    assert_eq!(
        out.len(),
        6,
        "request, 2 advertisements, relayed request, reply, relayed reply"
    );
    out
}

fn capture() -> PcapWriter {
    let mut p = PcapWriter::new(LinkType::Ethernet);
    let mut t = 1_700_000_000_000_000u64;
    for (src, dst, payload, icmp) in foreign_agent_messages() {
        t += 1000;
        let mut ip = if icmp {
            wire::ipv4::Ipv4Header::build(src, dst, 1, &payload)
        } else {
            wire::udp::build_ipv4(src, dst, 434, 434, &payload)
        };
        if icmp {
            set_ttl1(&mut ip);
        }
        p.ipv4(t, &ip);
    }
    for (src, dst, payload) in registration_messages() {
        t += 1000;
        p.ipv4(
            t,
            &wire::udp::build_ipv4(*src.ip(), *dst.ip(), src.port(), dst.port(), &payload),
        );
    }
    // RFC 3519 tunnel data carrying a UDP packet from the home address.
    let inner = wire::udp::build_ipv4(HOME, Ipv4Addr::new(10, 40, 0, 10), 40001, 7, b"ping");
    let mut td = Vec::new();
    TunnelData {
        next_header: 4,
        packet: &inner,
    }
    .emit(&mut td);
    p.ipv4(
        t + 1,
        &wire::udp::build_ipv4(Ipv4Addr::new(10, 99, 0, 1), HA, 40000, 434, &td),
    );
    // Agent advertisement (to 224.0.0.1) and solicitation (to 224.0.0.2).
    let adv = AgentAdvertisement {
        code: 0,
        lifetime: 9000,
        routers: vec![RouterEntry {
            addr: Ipv4Addr::new(10, 30, 0, 1),
            preference: 0,
        }],
        mobility: MobilityAgentExt {
            sequence: 1,
            registration_lifetime: 1800,
            flags: AgentFlags::F | AgentFlags::T | AgentFlags::U,
            care_of: vec![Ipv4Addr::new(10, 30, 0, 1)],
        },
        prefix_lengths: Some(vec![24]),
        padding: 1,
    };
    let mut ip = wire::ipv4::Ipv4Header::build(
        Ipv4Addr::new(10, 30, 0, 1),
        Ipv4Addr::new(224, 0, 0, 1),
        1,
        &adv.to_bytes(),
    );
    set_ttl1(&mut ip);
    p.ipv4(t + 2, &ip);
    let mut sol = Vec::new();
    AgentSolicitation.emit(&mut sol);
    let mut ip = wire::ipv4::Ipv4Header::build(
        Ipv4Addr::new(10, 30, 0, 77),
        Ipv4Addr::new(224, 0, 0, 2),
        1,
        &sol,
    );
    set_ttl1(&mut ip);
    p.ipv4(t + 3, &ip);
    p
}

fn set_ttl1(ip: &mut [u8]) {
    let mut h = wire::ipv4::Ipv4Header::parse(ip).unwrap();
    h.ttl = 1;
    h.emit(ip).unwrap();
}

fn tshark(pcap: &[u8], name: &str, args: &[&str]) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(name);
    std::fs::write(&path, pcap).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args(args)
        .output()
        .expect("tshark is required (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const PROBLEMS: &[&str] = &[
    "-Y",
    "_ws.malformed || _ws.expert.severity >= \"Warning\"",
    "-T",
    "fields",
    "-e",
    "frame.number",
];

#[test]
fn our_messages_decode_cleanly_in_tshark() {
    let p = capture();
    let bad = tshark(p.as_bytes(), "mip4-encoder.pcap", PROBLEMS);
    assert_eq!(
        bad.trim(),
        "",
        "tshark reports malformed packets or warnings in frames: {bad}"
    );

    let fields = tshark(
        p.as_bytes(),
        "mip4-encoder.pcap",
        &[
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-e",
            "mip.type",
            "-e",
            "mip.code",
            "-e",
            "mip.ext.type",
            "-e",
            "icmp.type",
        ],
    );
    let lines: Vec<&str> = fields.lines().collect();
    let mip_types: Vec<&str> = lines
        .iter()
        .map(|l| l.split(';').next().unwrap())
        .filter(|t| !t.is_empty())
        .collect();
    let requests = mip_types.iter().filter(|t| **t == "1").count();
    let replies = mip_types.iter().filter(|t| **t == "3").count();
    // 8 from the HA/MN exchanges, plus through the FA: request, relayed request;
    // reply, relayed reply.
    assert_eq!((requests, replies), (10, 10), "{fields}");
    assert!(
        mip_types.contains(&"4"),
        "tunnel data not decoded: {fields}"
    );
    // tshark saw the reply codes we sent and our extensions, TNC (149) included.
    for code in ["0", "131", "133", "138", "139"] {
        assert!(
            lines.iter().any(|l| l.split(';').nth(1) == Some(code)),
            "code {code} missing: {fields}"
        );
    }
    for ext in ["32", "33", "34", "44", "130", "131", "144", "149"] {
        assert!(
            lines.iter().any(|l| l
                .split(';')
                .nth(2)
                .is_some_and(|e| e.split(',').any(|x| x == ext))),
            "extension {ext} missing: {fields}"
        );
    }
    assert!(
        lines.iter().any(|l| l.ends_with(";9")),
        "agent advertisement missing"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(";10")),
        "agent solicitation missing"
    );
}

#[test]
fn the_tshark_check_catches_a_malformed_message() {
    // Negative control: the same check flags a truncated request.
    let mut p = PcapWriter::new(LinkType::Ethernet);
    let b = wire::udp::build_ipv4(Ipv4Addr::new(10, 20, 0, 50), HA, 434, 434, &[1, 0x22, 7]);
    p.ipv4(1, &b);
    let bad = tshark(p.as_bytes(), "mip4-negative.pcap", PROBLEMS);
    assert_eq!(bad.trim(), "1");
}
