//! The foreign agent learns a visitor's link-layer address from the frame that carried
//! its Registration Request (RFC 5944 3.7.2), not from its neighbour table: a node that
//! never sent an ARP packet naming its home address is still answered, so a node need
//! not ARP from its home address on a visited link (which shows the home address
//! there), and an agent restarted without its state knows the node again from its next
//! request. Root only; a mutex runs the labs one at a time.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use lab::inject;
use lab::mip;
use lab::netns::ip;
use lab::scenario::MipLab;
use lab::testing::{exe, lab_lock};
use lab::topo::{FA_ADDR, HA_ADDR, MN_HOME, STRANGER_ADDR};

/// A Registration Request (RFC 5944 3.3) for `hoa` via the FA with reverse tunneling,
/// and an MN-HA authentication extension (type 32, SPI 256) whose authenticator no key
/// made: the agent relays it, the home agent denies it.
fn request(hoa: Ipv4Addr, ident: u64) -> Vec<u8> {
    let mut m = vec![1, 0x02, 0, 60]; // type 1, flag T, lifetime 60 s
    m.extend_from_slice(&hoa.octets());
    m.extend_from_slice(&HA_ADDR.octets());
    m.extend_from_slice(&FA_ADDR.octets());
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&[32, 20, 0, 0, 1, 0]);
    m.extend_from_slice(&[0x5a; 16]);
    m
}

fn counter(v: &serde_json::Value, k: &str) -> u64 {
    mip::get_u64(v, &["counters", k])
}

fn no_mac_drops(v: &serde_json::Value) -> u64 {
    mip::get_u64(
        v,
        &["counters", "drops", "no link-layer address for the sender"],
    )
}

/// The stranger on int-b sends a request for the home address from its raw socket: its
/// kernel resolves the agent with its own address (10.30.0.66), so no ARP packet on the
/// link names the home address, and the agent's neighbour table has no entry for it.
/// The agent relays the request and delivers the home agent's denial to the stranger's
/// MAC, the frame's source. Before, it dropped the request ("no link-layer address for
/// the sender").
#[test]
fn foreign_agent_learns_the_visitor_from_the_request_frame() {
    let Some(_g) = lab_lock("foreign_agent_learns_the_visitor_from_the_request_frame") else {
        return;
    };
    let ml = MipLab::start(&exe(), true, 300).unwrap();
    let ev = ml.lab.ns("ev");
    let ev_mac = inject::mac_of(&ml.lab, "ev", "eth0").unwrap();
    let before = ml.fa_status().unwrap();
    let cap = ml.lab.dir.join("ev.pcap");
    let mut tcpdump = std::process::Command::new("ip")
        .args([
            "netns", "exec", &ev, "tcpdump", "-i", "eth0", "-U", "-n", "-w",
        ])
        .arg(&cap)
        .args(["udp", "port", "434"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // One request at a time (the agent keeps one pending request per node).
    let mut after = before.clone();
    for i in 0..3u64 {
        let p = inject::udp(
            SocketAddrV4::new(MN_HOME, 434),
            SocketAddrV4::new(FA_ADDR, 434),
            &request(MN_HOME, 0x1000 + i),
        );
        assert_eq!(inject::send_raw(&ev, vec![p]).unwrap(), 1);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            after = ml.fa_status().unwrap();
            if counter(&after, "replies_relayed") > counter(&before, "replies_relayed") + i {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: plain syscall on our child's pid.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGTERM) };
    let _ = tcpdump.wait();
    let neigh = ip(&[
        "-n",
        &ml.lab.ns("fa"),
        "neigh",
        "show",
        &MN_HOME.to_string(),
    ])
    .unwrap();
    eprintln!("FA status after: {after}\nFA neighbour entry for the home address: {neigh:?}");
    assert!(
        !neigh.contains("lladdr"),
        "no ARP named the home address, so the agent's kernel does not know it: {neigh}"
    );
    assert_eq!(no_mac_drops(&after), no_mac_drops(&before), "{after}");
    assert_eq!(
        counter(&after, "requests_relayed"),
        counter(&before, "requests_relayed") + 3,
        "{after}"
    );
    assert!(
        counter(&after, "replies_relayed") >= counter(&before, "replies_relayed") + 3,
        "{after}"
    );
    // The denials went to the stranger's MAC, addressed to the home address.
    let frames = lab::leak::read_pcap(&cap).unwrap();
    let to_ev = frames
        .iter()
        .filter(|f| f.data.get(0..6) == Some(&ev_mac[..]))
        .filter_map(inject::ip_of)
        .filter(|p| p.get(12..16) == Some(&FA_ADDR.octets()[..]))
        .filter(|p| p.get(16..20) == Some(&MN_HOME.octets()[..]))
        .count();
    assert!(to_ev >= 3, "replies to the stranger's MAC: {to_ev}");
    // The stranger's kernel resolved the agent with its own address.
    let theirs = ip(&[
        "-n",
        &ml.lab.ns("fa"),
        "neigh",
        "show",
        &STRANGER_ADDR.to_string(),
    ])
    .unwrap();
    eprintln!("FA neighbour entry for the stranger's address: {theirs:?}");
}

/// ARP packets on `pcap` whose sender or target protocol address is `a`.
fn arp_naming(pcap: &std::path::Path, a: Ipv4Addr) -> usize {
    lab::leak::read_pcap(pcap)
        .unwrap()
        .iter()
        .filter(|f| f.data.get(12..14) == Some(&[8, 6][..]))
        .filter(|f| {
            f.data.get(28..32) == Some(&a.octets()[..])
                || f.data.get(38..42) == Some(&a.octets()[..])
        })
        .count()
}

/// RFC 5944 4.6: away from home the node broadcasts no ARP naming its home address. It
/// resolves the agent with an ARP probe (sender 0.0.0.0) and pins the agent's MAC, so
/// neither the node nor its kernel ARPs from the home address, through a registration,
/// a restart of the agent (the node resolves it again) and user data. Before, the node
/// sent an ARP request for the agent from its home address on every status change, and
/// its kernel resolved the agent from whatever address the first packet had.
#[test]
fn the_node_never_arps_from_its_home_address_on_a_visited_link() {
    let Some(_g) = lab_lock("the_node_never_arps_from_its_home_address_on_a_visited_link") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    let cap = ml.lab.dir.join("intb.pcap");
    inject::capture(
        &mut ml.lab,
        "cap-intb",
        lab::topo::Segment::IntB.bridge(),
        &cap,
    )
    .unwrap();
    ml.lab.move_mn(lab::topo::Segment::IntB).unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| {
        v["mode"] == "foreign" && v["registered"] == true
    })
    .unwrap();
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)));
    let ok0 = mip::get_u64(&ml.mn_status().unwrap(), &["counters", "registrations_ok"]);
    ml.lab.stop("fa", libc::SIGTERM);
    ml.start_fa().unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| {
        v["registered"] == true && mip::get_u64(v, &["counters", "registrations_ok"]) > ok0
    })
    .unwrap();
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(500));
    inject::stop_capture(&mut ml.lab, "cap-intb");
    let probes = lab::leak::read_pcap(&cap)
        .unwrap()
        .iter()
        .filter(|f| f.data.get(12..14) == Some(&[8, 6][..]))
        .filter(|f| f.data.get(28..32) == Some(&[0, 0, 0, 0][..]))
        .count();
    let naming_home = arp_naming(&cap, MN_HOME);
    eprintln!("int-b: {probes} ARP probes, {naming_home} ARP packets naming the home address");
    assert!(
        probes >= 2,
        "the node resolved the agent by probe twice: {probes}"
    );
    assert_eq!(naming_home, 0, "ARP naming the home address on int-b");
}
