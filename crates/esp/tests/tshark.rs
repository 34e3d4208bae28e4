//! Wireshark's ESP dissector (tshark, third independent implementation) decrypts what we
//! seal, as plain ESP (protocol 50) and as UDP-encapsulated ESP on port 4500, with no
//! malformed-packet or expert warnings. tshark 4.0 has no ChaCha20-Poly1305 ESP
//! decryption, so that suite is covered by the scapy test only. Fails without tshark.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::process::Command;
use std::time::Instant;

use esp::{udp_encap, OutboundSa, RandomIv, SaConfig, Suite};
use rand::SeedableRng;
use wire::pcap::{LinkType, PcapWriter};

const SRC: [u8; 4] = [192, 0, 2, 10];
const DST: [u8; 4] = [192, 0, 2, 1];
const INNER_DST: [u8; 4] = [10, 40, 0, 10];

fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut h = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ];
    h.extend(src);
    h.extend(dst);
    let c = wire::checksum::checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// Inner IPv4/UDP to an unassigned port, so tshark shows the payload as `data`.
fn inner(payload: &[u8]) -> Vec<u8> {
    let ulen = 8 + payload.len();
    let mut udp = vec![0x9c, 0x41, 0x9c, 0x42, (ulen >> 8) as u8, ulen as u8, 0, 0];
    udp.extend_from_slice(payload);
    ipv4(17, [10, 10, 0, 100], INNER_DST, &udp)
}

/// A pcap file with LINKTYPE_RAW: one IPv4 packet a record, record `i` at `i` seconds.
fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut w = PcapWriter::new(LinkType::Raw);
    for (i, p) in (0u64..).zip(packets) {
        w.ipv4(i * 1_000_000, p);
    }
    w.into_bytes()
}

fn tshark_names(suite: Suite) -> Option<(&'static str, &'static str)> {
    Some(match suite {
        Suite::AesGcm128 | Suite::AesGcm256 => ("AES-GCM with 16 octet ICV [RFC4106]", "NULL"),
        Suite::AesCbc128HmacSha1 | Suite::AesCbc256HmacSha1 => {
            ("AES-CBC [RFC3602]", "HMAC-SHA-1-96 [RFC2404]")
        }
        Suite::AesCbc128HmacSha256 | Suite::AesCbc256HmacSha256 => {
            ("AES-CBC [RFC3602]", "HMAC-SHA-256-128 [RFC4868]")
        }
        Suite::ChaCha20Poly1305 => return None,
    })
}

#[test]
fn tshark_decrypts_our_esp_without_warnings() {
    let now = Instant::now();
    let mut packets = Vec::new();
    let mut expected = Vec::new();
    let mut args: Vec<String> = [
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "esp.spi",
        "-e",
        "ip.dst",
        "-e",
        "data.data",
        "-e",
        "_ws.malformed",
        "-e",
        "_ws.expert.severity",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut spi = 0x0100_0000u32;
    for suite in Suite::ALL {
        let Some((encr, auth)) = tshark_names(suite) else {
            continue;
        };
        for udp in [false, true] {
            spi += 1;
            let enc: Vec<u8> = (0..suite.enc_key_len())
                .map(|i| (i as u8) ^ (spi as u8))
                .collect();
            let integ: Vec<u8> = (0..suite.integ_key_len())
                .map(|i| (i as u8).wrapping_mul(3))
                .collect();
            args.push("-o".into());
            args.push(format!(
                "uat:esp_sa:\"IPv4\",\"{}\",\"{}\",\"{spi:#010x}\",\"{encr}\",\"0x{}\",\"{auth}\",\"{}\"",
                "192.0.2.10",
                "192.0.2.1",
                hex::encode(&enc),
                if integ.is_empty() { String::new() } else { format!("0x{}", hex::encode(&integ)) },
            ));
            let cfg = SaConfig::new(spi, suite);
            let mut tx = if suite.is_aead() {
                OutboundSa::new(cfg, &enc, &integ, now)
            } else {
                let rng = rand::rngs::StdRng::seed_from_u64(u64::from(spi));
                OutboundSa::with_iv_source(cfg, &enc, &integ, now, Box::new(RandomIv(rng)))
            }
            .unwrap();
            for n in [1usize, 15, 16, 17, 300] {
                let payload: Vec<u8> = (0..n).map(|i| (i as u8) ^ 0x5a).collect();
                let mut esp_pkt = Vec::new();
                tx.seal(now, esp::NEXT_HEADER_IPV4, &inner(&payload), &mut esp_pkt)
                    .unwrap();
                let outer = if udp {
                    let mut d = udp_encap::udp_header(4500, 4500, esp_pkt.len())
                        .unwrap()
                        .to_vec();
                    d.extend_from_slice(&esp_pkt);
                    ipv4(17, SRC, DST, &d)
                } else {
                    ipv4(50, SRC, DST, &esp_pkt)
                };
                packets.push(outer);
                expected.push((
                    spi,
                    hex::encode(&payload),
                    format!("{suite:?} udp={udp} len={n}"),
                ));
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("esp-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("esp.pcap");
    std::fs::write(&file, pcap(&packets)).unwrap();
    args.push("-r".into());
    args.push(file.to_string_lossy().into_owned());
    let out = Command::new("tshark")
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("FAIL: tshark is required for this cross-check: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stdout}");
    for (line, (spi, payload, name)) in lines.iter().zip(&expected) {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f[0], format!("{spi:#010x}"), "{name}: {line}");
        assert_eq!(
            f[1], "192.0.2.1,10.40.0.10",
            "{name}: inner header not decrypted: {line}"
        );
        assert_eq!(f[2], payload, "{name}: {line}");
        assert_eq!(f[3], "", "{name}: malformed: {line}");
        assert_eq!(f[4], "", "{name}: expert info: {line}");
    }
    println!("tshark decrypted {} packets", lines.len());
}
