#![allow(clippy::unwrap_used)]
//! Independent decode of every datagram we emit: write a pcap and let tshark's IKEv2
//! dissector complain about anything malformed. Fails (does not skip) without tshark unless
//! MIPSEC_SKIP_LAB=1.
mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::*;
use ikev2::wire::DhId;
use wire::pcap::{LinkType, PcapWriter};

fn ipv4_udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("v4 only")
    };
    let total = 20 + 8 + payload.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ];
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    let ck = wire::checksum::checksum(&p);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    let ulen = (8 + payload.len()) as u16;
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&ulen.to_be_bytes());
    p.extend_from_slice(&[0, 0]); // UDP checksum optional over IPv4
    p.extend_from_slice(payload);
    p
}

/// A pcap file with LINKTYPE_RAW: one IPv4 packet a record, record `i` at `i` seconds.
fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut w = PcapWriter::new(LinkType::Raw);
    for (i, p) in (0u64..).zip(packets) {
        w.ipv4(i * 1_000_000, p);
    }
    w.into_bytes()
}

/// Returns tshark's complaints and the per-packet summary, or None when tshark is absent
/// and skipping is allowed.
fn tshark(name: &str, packets: &[Vec<u8>]) -> Option<(String, String)> {
    tshark_with(
        name,
        packets,
        &[],
        &["-e", "isakmp.exchangetype", "-e", "isakmp.nextpayload"],
    )
}

fn tshark_with(
    name: &str,
    packets: &[Vec<u8>],
    opts: &[&str],
    fields: &[&str],
) -> Option<(String, String)> {
    let path = std::env::temp_dir().join(format!("ikev2-{}-{name}.pcap", std::process::id()));
    std::fs::write(&path, pcap(packets)).unwrap();
    let run = |args: &[&str]| {
        Command::new("tshark")
            .arg("-r")
            .arg(&path)
            .args(opts)
            .args(args)
            .output()
    };
    let bad = match run(&["-Y", "_ws.malformed || _ws.expert.severity >= warning"]) {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => {
            if std::env::var("MIPSEC_SKIP_LAB").as_deref() == Ok("1") {
                eprintln!("SKIP: tshark not runnable ({e}); MIPSEC_SKIP_LAB=1");
                return None;
            }
            panic!("tshark is required for this test (set MIPSEC_SKIP_LAB=1 to skip): {e}");
        }
    };
    let mut args = vec!["-T", "fields", "-E", "occurrence=f"];
    args.extend_from_slice(fields);
    let all = run(&args).unwrap();
    assert!(
        !all.stdout.is_empty(),
        "tshark: {}",
        String::from_utf8_lossy(&all.stderr)
    );
    if std::env::var_os("IKEV2_KEEP_PCAP").is_none() {
        let _ = std::fs::remove_file(&path);
    }
    Some((bad, String::from_utf8_lossy(&all.stdout).into_owned()))
}

fn frames(p: &Pair) -> Vec<Vec<u8>> {
    p.wire
        .iter()
        .map(|(_, t)| ipv4_udp(t.src, t.dst, &t.payload))
        .collect()
}

#[test]
fn tshark_decodes_every_message_cleanly() {
    for (nat, frag, seed) in [(false, false, 40u64), (true, false, 41), (false, true, 42)] {
        let (mut ci, mut cr) = configs(DhId::CURVE25519);
        if frag {
            ci.fragment_size = 200;
            cr.fragment_size = 200;
        }
        let mut p = Pair::new(ci, cr, seed);
        p.nat = nat;
        p.run(Duration::from_secs(2));
        assert!(p.i.is_established());
        // exercise the other exchanges too
        let c = p.i.child_sas()[0].clone();
        p.i.rekey_child(p.now, c.spi_in);
        p.run(Duration::from_secs(1));
        p.i.check_liveness(p.now);
        p.run(Duration::from_secs(1));
        p.i.rekey_ike(p.now);
        p.run(Duration::from_secs(1));
        p.i.close(p.now);
        p.run(Duration::from_secs(1));
        assert!(p.i.is_closed());
        let Some((bad, all)) = tshark(&format!("s{seed}"), &frames(&p)) else {
            return;
        };
        assert_eq!(bad, "", "tshark complaints:\n{bad}\nall:\n{all}");
        let lines = all.lines().count();
        assert_eq!(lines, p.wire.len());
        // every frame decodes as IKEv2 and every exchange type appears
        let exch: Vec<&str> = all
            .lines()
            .map(|l| l.split('\t').next().unwrap_or(""))
            .collect();
        for want in ["34", "35", "36", "37"] {
            assert!(exch.contains(&want), "exchange {want} missing in\n{all}");
        }
        assert!(
            exch.iter().all(|e| ["34", "35", "36", "37"].contains(e)),
            "{all}"
        );
        if frag {
            assert!(all.lines().any(|l| l.ends_with("\t53")), "no SKF in\n{all}");
        }
    }
}

#[test]
fn tshark_check_catches_a_broken_message() {
    // Negative control: a payload length that runs past the message end must be flagged.
    let (ci, cr) = configs(DhId::CURVE25519);
    let mut p = Pair::new(ci, cr, 43);
    p.run(Duration::from_millis(5));
    let t = &p.wire[0].1;
    let mut b = t.payload.clone();
    b[28 + 2] = 0xff; // SA payload length
    let Some((bad, _)) = tshark("neg", &[ipv4_udp(t.src, t.dst, &b)]) else {
        return;
    };
    assert_ne!(bad, "");
}

/// tshark decrypts our SK payloads with the keys we derived: an independent check of
/// SKEYSEED/prf+, the key split, AES-GCM/CBC, HMAC and padding.
#[test]
fn tshark_decrypts_sk_payloads() {
    let suites = [
        (
            ikev2::IkeProposal::aes_gcm_256(&[DhId::CURVE25519]),
            "AES-GCM-256 with 16 octet ICV [RFC5282]",
            "NONE [RFC4306]",
        ),
        (
            ikev2::IkeProposal::aes_cbc_128_sha256(&[DhId::ECP_256]),
            "AES-CBC-128 [RFC3602]",
            "HMAC_SHA2_256_128 [RFC4868]",
        ),
    ];
    for (k, (prop, encr, integ)) in suites.into_iter().enumerate() {
        let (mut ci, mut cr) = configs(DhId::CURVE25519);
        ci.ike_proposals = vec![prop.clone()];
        cr.ike_proposals = vec![prop];
        let mut p = Pair::new(ci, cr, 50 + k as u64);
        p.run(Duration::from_secs(2));
        assert!(p.i.is_established());
        p.i.check_liveness(p.now);
        p.run(Duration::from_secs(1));
        let keys = p.i.ike_keys_for_debug().unwrap();
        let (si, sr, ei, er, ai, ar) = (
            keys.spi_i, keys.spi_r, keys.sk_ei, keys.sk_er, keys.sk_ai, keys.sk_ar,
        );
        let row = format!(
            "uat:ikev2_decryption_table:{si:016x},{sr:016x},{},{},\"{encr}\",{},{},\"{integ}\"",
            hex::encode(ei),
            hex::encode(er),
            hex::encode(ai),
            hex::encode(ar)
        );
        let Some((bad, all)) = tshark_with(
            &format!("dec{k}"),
            &frames(&p),
            &["-o", &row],
            &[
                "-E",
                "occurrence=a",
                "-e",
                "isakmp.exchangetype",
                "-e",
                "isakmp.nextpayload",
            ],
        ) else {
            return;
        };
        assert_eq!(bad, "", "tshark complaints:\n{bad}\nall:\n{all}");
        // Next Payload values of payloads only (drop the 0/3 "last substructure" markers
        // of proposals and transforms, which tshark reports under the same field).
        let lines: Vec<String> = all
            .lines()
            .map(|l| {
                let (ex, np) = l.split_once('\t').unwrap_or((l, ""));
                let np: Vec<&str> = np
                    .split([',', '\\', '/'])
                    .filter(|x| *x != "0" && *x != "3")
                    .collect();
                format!("{ex}\t{}", np.join("/"))
            })
            .collect();
        // IKE_AUTH request decrypted: SK(46) then IDi(35), N(41), IDr(36), AUTH(39), CP(47),
        // SA(33), TSi(44), TSr(45), N(41)
        assert!(
            lines[2].starts_with("35\t46/35/41/36/39/47/33/44/45/41"),
            "{all}"
        );
        // IKE_AUTH response: IDr, AUTH, CP, SA, TSi, TSr, N(MOBIKE)
        assert!(lines[3].starts_with("35\t46/36/39/47/33/44/45/41"), "{all}");
        // empty INFORMATIONAL liveness check and its answer
        assert_eq!(lines[4], "37\t46", "{all}");
        assert_eq!(lines[5], "37\t46", "{all}");
    }
}
