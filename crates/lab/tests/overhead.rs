//! Per-packet overhead on the wire per access mode (issue 12 item 6) against RFC 5265
//! section 5.2, measured on the lab's captures: for each 60-octet user probe (IPv4 +
//! UDP + 32 octets) the outermost IPv4 length minus the user packet's, with the ESP
//! decrypted by the client's key log (`esp_key_log`). The expected value is worked out
//! layer by layer for the negotiated suite (AES-GCM: 8-octet IV, 16-octet ICV, padding
//! to 4 octets) and asserted exactly; the printout sets it beside RFC 5265's figures
//! (c 20, cvc 97 for a 64-bit block cipher with a 12-octet ICV; +8 for ESP in UDP,
//! +12 for Mobile IP over UDP). Root and strongSwan are required.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use lab::enterprise;
use lab::gateway::GwAuth;
use lab::roam::Outside;
use lab::testing::{exe, lab_lock_needing, STRONGSWAN};
use lab::topo::Segment;
use lab::transit::{self, Start, Timeline};

const USER: u32 = 60;

/// (IPv4 lengths outermost first, UDP destination ports) of each probe frame.
fn probe_frames(pcap: &Path, keys: &str) -> Vec<(Vec<u32>, Vec<u32>)> {
    layer_fields(
        pcap,
        keys,
        "udp.dstport == 5002 && ip.src == 10.10.0.100",
        ["ip.len", "udp.dstport"],
    )
}

/// (DSCP, ECN) of each IPv4 layer, outermost first, of each marked echo request.
fn marked_frames(pcap: &Path, keys: &str) -> Vec<(Vec<u32>, Vec<u32>)> {
    layer_fields(
        pcap,
        keys,
        "icmp.type == 8 && ip.src == 10.10.0.100",
        ["ip.dsfield.dscp", "ip.dsfield.ecn"],
    )
}

/// Two fields of every layer, outermost first, of each frame matching `filter`, with
/// the ESP decrypted by `keys`.
fn layer_fields(pcap: &Path, keys: &str, filter: &str, f: [&str; 2]) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut a: Vec<String> = vec![
        "-n".into(),
        "-r".into(),
        pcap.display().to_string(),
        "-o".into(),
        "esp.enable_encryption_decode:TRUE".into(),
    ];
    for l in keys.lines() {
        a.push("-o".into());
        a.push(format!("uat:esp_sa:{l}"));
    }
    a.extend(
        [
            "-Y",
            filter,
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-e",
            f[0],
            "-e",
            f[1],
        ]
        .map(String::from),
    );
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let nums =
        |s: &str| -> Vec<u32> { s.split(',').filter_map(|x| x.trim().parse().ok()).collect() };
    lab::netns::run("tshark", &a)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(';'))
        .map(|(l, p)| (nums(l), nums(p)))
        .collect()
}

/// The overhead the layers should add to a `user`-octet packet: `imip` i-MIP
/// IP-in-IP, ESP (with UDP encapsulation or not) and the x-MIP layer (IP-in-IP, or
/// RFC 3519 UDP: 20 + 8 + 4).
fn expected(imip: bool, esp: Option<bool>, xmip: Option<bool>) -> u32 {
    let mut inner = USER + if imip { 20 } else { 0 };
    if let Some(udp) = esp {
        let pad = (4 - (inner + 2) % 4) % 4;
        inner = 20 + if udp { 8 } else { 0 } + 8 + 8 + inner + pad + 2 + 16;
    }
    inner += match xmip {
        None => 0,
        Some(false) => 20,
        Some(true) => 32,
    };
    inner - USER
}

fn run(outside: Outside, route: &[(Segment, &str)]) {
    let mut ml = transit::start_lab(&exe(), GwAuth::Psk, outside, Start::Home, "").unwrap();
    // The lab's MN VPN file already logs the ESP keys (lab::roam::esp_keylog).
    let keylog = lab::roam::esp_keylog(&ml.lab);
    ml.start_mn().unwrap();
    transit::wait_gate(&ml, "open-home", Duration::from_secs(20)).unwrap();
    let dir = ml.lab.dir.join("pcap");
    enterprise::start_captures(&mut ml.lab, &dir).unwrap();
    let mut tl = Timeline::start(&ml, "home").unwrap();
    for (seg, _) in route {
        transit::move_and_wait(&mut ml, &mut tl, *seg, Duration::from_secs(20)).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        marked_pings(&ml);
        std::thread::sleep(Duration::from_millis(500));
    }
    let (rec, _) = tl.finish();
    assert!(rec.faults.is_empty(), "{:?}", rec.faults);
    std::thread::sleep(Duration::from_millis(200));
    enterprise::stop_captures(&mut ml.lab);
    let keys = std::fs::read_to_string(&keylog).unwrap_or_default();
    for (seg, mode) in route {
        let frames = probe_frames(&dir.join(format!("{}.pcap", seg.name())), &keys);
        assert!(
            frames.len() > 20,
            "{}: {} probe frames",
            seg.name(),
            frames.len()
        );
        // The MN's own frames on its segment, by their number of IPv4 layers (on
        // int-b the foreign agent's reverse tunnel to the i-HA crosses it too).
        let depth = match *mode {
            "f" => 1,
            "c" => 2,
            "mc" => 3,
            _ => 4,
        };
        let mine: Vec<&(Vec<u32>, Vec<u32>)> =
            frames.iter().filter(|f| f.0.len() == depth).collect();
        let (lens, ports) = mine[0];
        assert_eq!(*lens.last().unwrap(), USER, "{lens:?}");
        let overhead = lens[0] - USER;
        let esp_udp = ports.contains(&4500);
        let xmip_udp = ports.contains(&434);
        let want = match *mode {
            "c" => expected(true, None, None),
            "f" => expected(false, None, None),
            "cvc" => expected(true, Some(esp_udp), Some(xmip_udp)),
            "mc" => expected(true, Some(esp_udp), None),
            m => panic!("mode {m}"),
        };
        let rfc = match *mode {
            "c" => 20,
            "f" => 0,
            "cvc" => 97,
            _ => 77, // mc: i-MIP 20 + ESP 57, as RFC 5265's fvc (no x-MIP)
        } + if esp_udp { 8 } else { 0 }
            + if xmip_udp { 12 } else { 0 };
        eprintln!(
            "{:<8} {mode:<4} probe {USER} -> {} octets on the wire: overhead {overhead} (layers {lens:?}{}{}); expected {want}; RFC 5265 5.2 maximum {rfc}",
            seg.name(),
            lens[0],
            if esp_udp { ", ESP in UDP 4500" } else { "" },
            if xmip_udp { ", x-MIP over UDP 434" } else { "" },
        );
        assert!(
            mine.iter().all(|f| f.0 == *lens),
            "{}: probe frames differ: {:?}",
            seg.name(),
            mine.iter()
                .map(|f| &f.0)
                .collect::<std::collections::BTreeSet<_>>()
        );
        assert_eq!(overhead, want, "{}: {lens:?} {ports:?}", seg.name());
        assert!(overhead <= rfc, "{}: {overhead} > {rfc}", seg.name());
        // Every layer carries the user's DSCP (RFC 2003 3.1, RFC 4301 5.1.2.1); only
        // the user's own header keeps its ECT(1), every outer one is Not-ECT (RFC 6040
        // compatibility mode).
        let marked: Vec<_> = marked_frames(&dir.join(format!("{}.pcap", seg.name())), &keys)
            .into_iter()
            .filter(|f| f.0.len() == depth)
            .collect();
        assert!(
            marked.len() >= 5,
            "{}: {} marked requests",
            seg.name(),
            marked.len()
        );
        let mut ecn = vec![0; depth];
        ecn[depth - 1] = 1;
        for (dscp, e) in &marked {
            assert_eq!(
                *dscp,
                vec![46; depth],
                "{} {mode}: DSCP per layer",
                seg.name()
            );
            assert_eq!(*e, ecn, "{} {mode}: ECN per layer", seg.name());
        }
    }
}

/// Ten pings from the home address to the CN marked DSCP EF and ECT(1).
fn marked_pings(ml: &lab::scenario::MipLab) {
    let out = lab::netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &ml.lab.ns("mn"),
            "ping",
            "-n",
            "-q",
            "-Q",
            "0xb9",
            "-i",
            "0.05",
            "-W",
            "1",
            "-c",
            "10",
            "-I",
            "10.10.0.100",
            "10.40.0.10",
        ],
    );
    assert!(out.is_ok(), "marked pings: {out:?}");
}

#[test]
fn per_packet_overhead_per_mode() {
    let Some(_g) = lab_lock_needing("per_packet_overhead_per_mode", STRONGSWAN) else {
        return;
    };
    run(
        Outside::Xmip,
        &[
            (Segment::IntA, "c"),
            (Segment::ExtA, "cvc"),
            (Segment::ExtNat, "cvc"),
        ],
    );
    run(
        Outside::Mobike,
        &[
            (Segment::IntB, "f"),
            (Segment::ExtA, "mc"),
            (Segment::ExtNat, "mc"),
        ],
    );
}
