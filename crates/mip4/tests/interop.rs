//! Cross-checks with an independent implementation: scapy's Mobile IP layers plus
//! Python's hmac/hashlib (tests/fixtures/scapy_mip4.py). The vectors it produced are
//! committed in tests/fixtures/scapy_vectors.json; these tests rebuild every one
//! with mipsec's encoder, parse them with mipsec's parser, regenerate them with
//! scapy to prove the file is scapy's output, and have scapy decode and verify
//! messages mipsec's agents produce.
#![allow(clippy::unwrap_used)]

use mip4::auth::{self, Algorithm, SecurityAssociation};
use mip4::wire::agent::{AgentAdvertisement, AgentFlags, MobilityAgentExt, RouterEntry};
use mip4::wire::extension::{AuthKind, UdpTunnelReplyCode};
use mip4::wire::tunnel::TunnelData;
use mip4::wire::{Extension, Flags, RegistrationReply, RegistrationRequest, ReplyCode};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scapy_mip4.py");
const VECTORS: &str = include_str!("fixtures/scapy_vectors.json");

fn key() -> Vec<u8> {
    hex::decode("00112233445566778899aabbccddeeff").unwrap()
}

fn vector(name: &str) -> Vec<u8> {
    let v: Value = serde_json::from_str(VECTORS).unwrap();
    hex::decode(v[name].as_str().unwrap()).unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect(
            "python3 is required for the scapy cross-check (scripts/install-deps.sh installs it)",
        );
    assert!(
        out.status.success(),
        "scapy reference failed (is scapy installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn signed(req: &RegistrationRequest, sa: &SecurityAssociation) -> Vec<u8> {
    let mut b = req.to_bytes();
    sa.append(AuthKind::MnHa, &mut b);
    b
}

#[test]
fn committed_vectors_are_scapys_output() {
    let fresh: Value = serde_json::from_str(&python(&["vectors"])).unwrap();
    let committed: Value = serde_json::from_str(VECTORS).unwrap();
    assert_eq!(fresh, committed);
}

#[test]
fn encoder_matches_scapy_byte_for_byte() {
    let sa = SecurityAssociation::new(256, Algorithm::HmacMd5, &key());
    let req = RegistrationRequest {
        flags: Flags::D | Flags::T,
        lifetime: 1800,
        home_addr: ip("10.10.0.100"),
        home_agent: ip("10.10.0.1"),
        care_of: ip("10.20.0.50"),
        ident: 0xEC00000012345678,
        extensions: vec![],
    };
    assert_eq!(signed(&req, &sa), vector("rrq_colocated"));

    let req = RegistrationRequest {
        flags: Flags::S | Flags::D | Flags::T,
        lifetime: 600,
        home_addr: Ipv4Addr::UNSPECIFIED,
        home_agent: ip("10.10.0.1"),
        care_of: ip("192.168.1.20"),
        ident: 0xEC00000100000001,
        extensions: vec![
            Extension::Nai(b"laptop7@corp.example".to_vec()),
            Extension::UdpTunnelRequest {
                force: true,
                r: false,
                encapsulation: 4,
            },
        ],
    };
    assert_eq!(signed(&req, &sa), vector("rrq_nai_udp_tunnel"));

    let legacy = SecurityAssociation::new(0x1000, Algorithm::PrefixSuffixMd5, &key());
    let req = RegistrationRequest {
        flags: Flags::empty(),
        lifetime: 300,
        home_addr: ip("10.10.0.100"),
        home_agent: ip("10.10.0.1"),
        care_of: ip("10.30.0.1"),
        ident: 0xEC00000200000002,
        extensions: vec![Extension::Unknown {
            ty: 200,
            data: vec![1, 2, 3],
        }],
    };
    assert_eq!(signed(&req, &legacy), vector("rrq_legacy_md5"));

    let req = RegistrationRequest {
        flags: Flags::T,
        lifetime: 1800,
        home_addr: ip("10.10.0.100"),
        home_agent: ip("10.10.0.1"),
        care_of: ip("10.30.0.1"),
        ident: 0xEC00000300000003,
        extensions: vec![],
    };
    let mut b = signed(&req, &sa);
    Extension::EncapDeliveryStyle.emit(&mut b);
    SecurityAssociation::new(
        300,
        Algorithm::HmacMd5,
        &hex::decode("fedcba98765432100123456789abcdef").unwrap(),
    )
    .append(AuthKind::MnFa, &mut b);
    SecurityAssociation::new(
        400,
        Algorithm::HmacMd5,
        &hex::decode("0f1e2d3c4b5a69788796a5b4c3d2e1f0").unwrap(),
    )
    .append(AuthKind::FaHa, &mut b);
    assert_eq!(b, vector("rrq_via_fa"));

    let rep = RegistrationReply {
        code: ReplyCode::ACCEPTED,
        lifetime: 600,
        home_addr: ip("10.10.0.100"),
        home_agent: ip("10.10.0.1"),
        ident: 0xEC00000100000001,
        extensions: vec![
            Extension::UdpTunnelReply {
                code: UdpTunnelReplyCode::WILL_TUNNEL,
                force: false,
                keepalive: 110,
            },
            Extension::TrustedNetworksConfigured,
        ],
    };
    let mut b = rep.to_bytes();
    sa.append(AuthKind::MnHa, &mut b);
    assert_eq!(b, vector("rrp_udp_tnc"));

    let rep = RegistrationReply {
        code: ReplyCode::HA_IDENT_MISMATCH,
        lifetime: 0,
        home_addr: ip("10.10.0.100"),
        home_agent: ip("10.10.0.1"),
        ident: 0xEC00100012345678,
        extensions: vec![],
    };
    let mut b = rep.to_bytes();
    sa.append(AuthKind::MnHa, &mut b);
    assert_eq!(b, vector("rrp_133"));

    let td = vector("tunnel_data");
    let inner = wire::udp::build_ipv4(ip("10.10.0.100"), ip("10.40.0.10"), 5000, 7, b"ping");
    let mut ours = Vec::new();
    TunnelData {
        next_header: 4,
        packet: &inner,
    }
    .emit(&mut ours);
    // scapy sets IP id 1; ours leaves 0: compare everything but id and checksums.
    let parsed = TunnelData::parse(&td).unwrap();
    assert_eq!(parsed.next_header, 4);
    assert_eq!(&ours[..4], &td[..4]);
    assert_eq!(&ours[4 + 20..], &td[4 + 20..]);

    let adv = AgentAdvertisement {
        code: 0,
        lifetime: 9000,
        routers: vec![RouterEntry {
            addr: ip("10.30.0.1"),
            preference: 0,
        }],
        mobility: MobilityAgentExt {
            sequence: 7,
            registration_lifetime: 1800,
            flags: AgentFlags::F | AgentFlags::T | AgentFlags::U,
            care_of: vec![ip("10.30.0.1")],
        },
        prefix_lengths: Some(vec![24]),
        padding: 1,
    };
    assert_eq!(adv.to_bytes(), vector("agent_advertisement"));
}

#[test]
fn parser_reads_scapys_messages() {
    let sa = SecurityAssociation::new(256, Algorithm::HmacMd5, &key());
    for name in ["rrq_colocated", "rrq_nai_udp_tunnel", "rrq_via_fa"] {
        let b = vector(name);
        let r = RegistrationRequest::parse(&b).unwrap();
        assert_eq!(r.to_bytes(), b, "{name}");
        assert_eq!(
            auth::verify(&b, 24, AuthKind::MnHa, |_| Some(&sa)),
            Ok(256),
            "{name}"
        );
    }
    let b = vector("rrq_legacy_md5");
    let legacy = SecurityAssociation::new(0x1000, Algorithm::PrefixSuffixMd5, &key());
    assert_eq!(
        auth::verify(&b, 24, AuthKind::MnHa, |_| Some(&legacy)),
        Ok(0x1000)
    );
    // The HMAC SA must not accept the legacy authenticator.
    assert!(auth::verify(&b, 24, AuthKind::MnHa, |_| Some(&sa)).is_err());
    let r = RegistrationReply::parse(&vector("rrp_udp_tnc")).unwrap();
    assert!(r.extensions.contains(&Extension::TrustedNetworksConfigured));
    let a = AgentAdvertisement::parse(&vector("agent_advertisement")).unwrap();
    assert!(a.mobility.flags.contains(AgentFlags::U));
}

#[test]
fn scapy_decodes_and_verifies_what_our_agents_send() {
    use mip4::client::{Attachment, ClientConfig, RegistrationClient};
    use mip4::ha::{HaConfig, HomeAgent, MobileNodeConfig};
    use std::net::SocketAddrV4;
    use std::time::{Instant, SystemTime};

    let sa = SecurityAssociation::new(256, Algorithm::HmacMd5, &key());
    let (home, haddr, coa) = (ip("10.10.0.100"), ip("10.10.0.1"), ip("10.20.0.50"));
    let mut cfg = ClientConfig::new(home, haddr, sa.clone());
    cfg.udp_tunnel = Some(false);
    let mut mn = RegistrationClient::new(cfg, [3; 32]);
    let mut hcfg = HaConfig::new(haddr);
    hcfg.trusted_networks = vec!["10.20.0.0/16".parse().unwrap()];
    let mut ha = HomeAgent::new(hcfg, [4; 32]);
    ha.add_mobile_node(MobileNodeConfig {
        home_addr: Some(home),
        nai: None,
        sas: vec![sa],
        replay: mip4::replay::ReplayMethod::Timestamp,
    })
    .unwrap();
    let now = Instant::now();
    let wall = SystemTime::now();
    let att = Attachment {
        care_of: coa,
        local: SocketAddrV4::new(coa, 434),
        dest: SocketAddrV4::new(haddr, 434),
        colocated: true,
    };
    mn.register(now, wall, att);
    let rrq = mn.poll_transmit().unwrap();
    ha.handle_datagram(now, wall, rrq.src, rrq.dst, &rrq.payload);
    let rrp = ha.poll_transmit().unwrap();
    let out = python(&[
        "decode",
        &hex::encode(&rrq.payload),
        &hex::encode(&rrp.payload),
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["type"], 1);
    assert_eq!(v[0]["flags"], 0x22);
    assert_eq!(v[0]["home"], "10.10.0.100");
    assert_eq!(v[0]["coa"], "10.20.0.50");
    assert_eq!(v[0]["mn_ha_valid"], true);
    assert_eq!(v[1]["type"], 3);
    assert_eq!(v[1]["code"], 0);
    assert_eq!(v[1]["lifetime"], 1800);
    assert_eq!(v[1]["mn_ha_valid"], true);
    // TNC (149, 2, 0, 0) sits before the MN-HA extension.
    assert!(v[1]["ext"]
        .as_str()
        .unwrap()
        .starts_with("95020000201400000100"));
}
