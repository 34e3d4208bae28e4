//! Bad input to the daemons in the lab (root): malformed, wrongly signed and replayed
//! registrations to the HA, forged replies to the MN, forged RFC 3519 tunnel data from
//! behind the node's NAT, and bad input to the foreign agent from on and off its link.
//! Each is counted by reason, nothing is hijacked, nobody crashes. Each test builds its
//! own lab with a fresh prefix; `lab::testing::lab_lock` runs them one at a time.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use lab::mip::{self, Request, FLAG_D, FLAG_T, MN_KEY, MN_SPI};
use lab::scenario::{start_capture, MipLab};
use lab::testing::{binding_coa, counter, exe, fields, lab_in_foreign_mode, lab_lock};
use lab::topo::{Segment, CN_ADDR, HA_ADDR, MN_HOME};
use serde_json::Value;

const HA_434: SocketAddrV4 = SocketAddrV4::new(HA_ADDR, 434);

/// (d) Bad input to both daemons: malformed datagrams to UDP 434, a request signed with
/// a wrong key, a replayed request, a forged reply to the MN. Each is counted in
/// `mipsec status --json`, the binding is not hijacked, and nobody crashes.
#[test]
fn bad_input_is_counted_and_survived() {
    let Some(_g) = lab_lock("bad_input_is_counted_and_survived") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    // Capture the MN's registration at int-a, to replay it once the MN is at int-c.
    let cap = ml.lab.dir.join("reg.pcap");
    start_capture(&mut ml.lab, "ha", "eth0", &cap, "udp dst port 434").unwrap();
    ml.lab.move_mn(Segment::IntA).unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| {
        MipLab::registered_at(v, Segment::IntA.mn_addr())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ml.lab.stop("capture-ha", libc::SIGINT);
    let hexes = fields(
        &cap,
        &[],
        "mip.type == 1 && mip.coa == 10.20.0.50",
        &["udp.payload"],
    );
    let captured = hex::decode(hexes.first().map_or("", String::as_str).replace(':', "")).unwrap();
    assert!(captured.len() >= 46, "no request captured: {hexes:?}");
    let coa = Segment::IntC.mn_addr();
    ml.lab.move_mn(Segment::IntC).unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| MipLab::registered_at(v, coa))
        .unwrap();

    // --- HA ---
    let ha0 = ml.ha_status().unwrap();
    let malformed: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![1, 0x22, 0, 30, 10, 10, 0, 100], // truncated request
        {
            // a request whose extension length runs past the end
            let mut m = mip::encode_request(&good_request(coa), MN_SPI, &mip::key_bytes(MN_KEY));
            m[25] = 200;
            m
        },
        vec![0xff; 100], // unknown type
        vec![
            3, 0, 0, 0, 10, 10, 0, 100, 10, 10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
        ], // a reply, to the HA
    ];
    let n_malformed = malformed.len() as u64;
    ml.udp_exchange("cn", HA_434, malformed, Duration::from_millis(200))
        .unwrap();
    let ha1 = ml.ha_status().unwrap();
    // Each one is either dropped (counted by reason) or answered with a denial
    // (134 = poorly formed request, counted by code).
    let rejected = |v: &Value| {
        mip::sum_obj(v, &["counters", "drops"]) + mip::sum_obj(v, &["counters", "replies_by_code"])
            - counter(v, &["counters", "replies_by_code"], "0")
    };
    let d_rej = rejected(&ha1) - rejected(&ha0);
    assert_eq!(
        d_rej, n_malformed,
        "HA counted {d_rej} rejections for {n_malformed} malformed datagrams:\n{ha0}\n{ha1}"
    );
    assert_eq!(
        counter(&ha1, &["counters", "replies_by_code"], "0"),
        counter(&ha0, &["counters", "replies_by_code"], "0")
    );

    let wrong_key = mip::encode_request(&good_request(CN_ADDR), MN_SPI, &[0x42; 16]);
    let replies = ml
        .udp_exchange(
            "cn",
            HA_434,
            vec![wrong_key, captured],
            Duration::from_millis(500),
        )
        .unwrap();
    let codes: Vec<Option<u8>> = replies
        .iter()
        .map(|r| r.as_deref().and_then(mip::reply_code))
        .collect();
    eprintln!(
        "HA reply codes: wrong key {:?}, replay {:?}",
        codes[0], codes[1]
    );
    let ha2 = ml.ha_status().unwrap();
    eprintln!("HA status after bad input: {ha2}");
    // RFC 5944 3.4: 131 = mobile node failed authentication, 133 = identification mismatch.
    assert_eq!(codes[0], Some(131), "wrong key");
    assert_eq!(codes[1], Some(133), "replay");
    assert!(
        counter(&ha2, &["counters", "replies_by_code"], "131")
            > counter(&ha1, &["counters", "replies_by_code"], "131")
    );
    assert!(
        counter(&ha2, &["counters", "replies_by_code"], "133")
            > counter(&ha1, &["counters", "replies_by_code"], "133")
    );
    assert_eq!(
        binding_coa(&ha2, MN_HOME),
        Some(coa.to_string()),
        "binding hijacked: {ha2}"
    );

    // --- MN (its registration socket is the care-of address, port 434) ---
    let mn0 = ml.mn_status().unwrap();
    let forged = mip::encode_reply(
        0,
        300,
        MN_HOME,
        HA_ADDR,
        mip::timestamp_id(),
        MN_SPI,
        &[0x42; 16],
    );
    let to_mn: Vec<Vec<u8>> = vec![vec![], vec![3], vec![3, 0, 1], vec![0xff; 64], forged];
    let n_mn = to_mn.len() as u64;
    ml.udp_exchange(
        "cn",
        SocketAddrV4::new(coa, 434),
        to_mn,
        Duration::from_millis(100),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mn1 = ml.mn_status().unwrap();
    eprintln!("MN status after bad input: {mn1}");
    let mn_drops = |v: &Value| {
        mip::sum_obj(v, &["counters", "drops"]) + mip::sum_obj(v, &["counters", "reply_drops"])
    };
    let d_mn = mn_drops(&mn1) - mn_drops(&mn0);
    assert!(
        d_mn >= n_mn,
        "MN counted {d_mn} drops for {n_mn} bad datagrams:\n{mn0}\n{mn1}"
    );
    assert!(MipLab::registered_at(&mn1, coa), "{mn1}");

    for n in ["ha", "mn"] {
        assert!(
            ml.lab.is_running(n),
            "mipsec {n} died:\n{}",
            ml.lab.log_tail(n, 20)
        );
    }
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(2)),
        "traffic broken after bad input"
    );
}

fn good_request(coa: Ipv4Addr) -> Request {
    Request {
        flags: FLAG_D | FLAG_T,
        lifetime: 300,
        home_address: MN_HOME,
        home_agent: HA_ADDR,
        care_of: coa,
        identification: mip::timestamp_id(),
    }
}

/// An IPv4/UDP packet built by hand (header checksum included, UDP checksum 0).
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + 8 + payload.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = p
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// RFC 3519 section 6.1: behind a NAT, anybody sharing the node's public address can
/// send tunnel data from another port. The HA drops and counts it, the binding stays
/// on the port the node registered from (only an authenticated request moves it), and
/// the node's own traffic keeps flowing.
#[test]
fn nat_binding_moves_on_registrations_not_on_data() {
    let Some(_g) = lab_lock("nat_binding_moves_on_registrations_not_on_data") else {
        return;
    };
    let ml = lab::testing::lab_behind_nat();
    let peer = |ha: &Value| {
        ha["bindings"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["home_address"] == MN_HOME.to_string()))
            .map(|b| b["udp_peer"].clone())
            .unwrap_or(Value::Null)
    };
    let dropped = |ha: &Value| {
        counter(
            ha,
            &["counters", "drops"],
            "tunnel data from an address or port the node did not register from",
        )
    };
    let before = ml.ha_status().unwrap();
    let registered_peer = peer(&before);
    assert!(
        registered_peer.is_string(),
        "no UDP tunnel binding: {before}"
    );
    // Tunnel Data (type 4, next header 4 = IPv4), carrying a datagram "from" the home
    // address to the CN's echo port, sent from the NAT segment on a fresh port.
    let inner = ipv4_udp(MN_HOME, CN_ADDR, 40000, lab::traffic::UDP_PORT, b"forged");
    let mut forged = vec![4u8, 4, 0, 0];
    forged.extend_from_slice(&inner);
    ml.udp_exchange("mn", HA_434, vec![forged; 5], Duration::from_millis(100))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let after = ml.ha_status().unwrap();
    assert_eq!(
        dropped(&after) - dropped(&before),
        5,
        "forged tunnel data not dropped: {after}"
    );
    assert_eq!(peer(&after), registered_peer, "binding moved: {after}");
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)),
        "the node's own traffic stopped\n{}",
        ml.lab.log_tail("mn", 20)
    );
    eprintln!("5 forged datagrams dropped; binding stays on {registered_peer}");
}

/// The foreign agent daemon under bad input on UDP 434 while it serves a visitor: from
/// its link, a truncated message, an unknown message type and a malformed request; from
/// off the link, a reply that answers no relayed request (forging the HA's fields) and a
/// request. Each is dropped and counted by reason; the agent keeps running and the visitor stays
/// registered with traffic flowing.
#[test]
fn foreign_agent_counts_bad_input_and_keeps_serving() {
    let Some(_g) = lab_lock("foreign_agent_counts_bad_input_and_keeps_serving") else {
        return;
    };
    let mut ml = lab_in_foreign_mode();
    let before = ml.fa_status().unwrap();
    let mut reply = vec![3u8, 0, 0, 60];
    reply.extend_from_slice(&MN_HOME.octets());
    reply.extend_from_slice(&HA_ADDR.octets());
    reply.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_be_bytes());
    let fa = SocketAddrV4::new(lab::topo::FA_ADDR, 434);
    // From the visitor's own link (the MN namespace): the agent parses these.
    let on_link = vec![
        vec![1u8, 0, 0],                   // truncated request
        vec![99u8; 24],                    // unknown message type
        vec![1u8, 0x02, 0, 60, 10, 10, 0], // request cut inside its fixed part
    ];
    ml.udp_exchange("mn", fa, on_link, Duration::from_millis(100))
        .unwrap();
    // From off the link (the CN): a reply for no relayed request, and a request,
    // which the agent refuses to serve for a sender that is not on its link.
    let off_link = vec![reply, vec![1u8, 0, 0]];
    ml.udp_exchange("cn", fa, off_link, Duration::from_millis(100))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(ml.lab.is_running("fa"), "{}", ml.lab.log_tail("fa", 20));
    let after = ml.fa_status().unwrap();
    let d = |v: &Value, k: &str| counter(v, &["counters", "drops"], k);
    // The agent takes each on-link sender's MAC from the frame (so the cut request
    // reaches the parser too): two truncated requests from the link, one from off it.
    for (k, n) in [
        ("Truncated", 3),
        ("UnexpectedMessage", 1),
        ("UnsolicitedReply", 1),
    ] {
        assert!(
            d(&after, k) >= d(&before, k) + n,
            "{k} not counted {n} more times:\nbefore {before}\nafter {after}"
        );
    }
    let no_mac = "no link-layer address for the sender";
    assert_eq!(d(&after, no_mac), d(&before, no_mac), "{after}");
    assert_eq!(
        counter(&after, &["counters"], "replies_relayed"),
        counter(&before, &["counters"], "replies_relayed"),
        "the forged reply was relayed: {after}"
    );
    let st = ml.mn_status().unwrap();
    assert!(st["mode"] == "foreign" && st["registered"] == true, "{st}");
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)),
        "no echo through the agent after the bad input\n{}",
        ml.lab.log_tail("fa", 20)
    );
    eprintln!("FA after bad input: {}", after["counters"]);
}
