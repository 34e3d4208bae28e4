//! Attacks on an outside link (issue 17 item 2) against the client that exists today,
//! `mipsec vpn` on the MN in the enterprise lab, each judged by the leak classifier
//! (`lab::leak`) on the capture of ext-a:
//!
//! * TunnelVision (CVE-2024-3661): a real rogue DHCP server (dnsmasq) pushes option-121
//!   routes through itself for 10.0.0.0/8, 0.0.0.0/1 and 128.0.0.0/1, received by a real
//!   DHCP client (busybox udhcpc) in the MN's namespace;
//! * a rogue DHCP server handing out the intranet's domain name and a lease in 10.20.0.0/24;
//! * a captured i-HA reply (with TNC) replayed on ext-a, forged registration replies and
//!   forged ESP, sent at the client by the injector (`lab::inject`).
//!
//! Each test shows its negative control: without the client the same routes make the
//! classifier count leaks. Root, strongSwan, dnsmasq and busybox are required (no skip
//! unless MIPSEC_SKIP_LAB=1).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lab::dhcp::{self, RogueDhcp};
use lab::enterprise::{self, GwAuth};
use lab::gateway;
use lab::inject;
use lab::leak::{self, Class, Plan, SegmentReport};
use lab::mip::{self, Request, FLAG_T, PROBE_HOA, PROBE_KEY, PROBE_SPI};
use lab::netns;
use lab::testing::{exe, lab_lock_needing, DHCP, STRONGSWAN};
use lab::topo::{Lab, Segment, CN_ADDR, HA_ADDR, MN_HOME};

/// The kill switch an administrator sets for this enterprise: the whole intranet.
const INTRANET: &[&str] = &["10.0.0.0/8"];

/// The enterprise lab with the i-HA and the gateway up, the MN on ext-a (the lab's
/// address 198.51.100.50/24 and default route, which a DHCP client run replaces) and
/// the stranger on ext-a as the attacker.
fn lab_on_ext_a() -> Lab {
    let mut lab = lab::enterprise::build(&exe()).unwrap();
    let (c, s) = enterprise::write_iha_config(&lab).unwrap();
    enterprise::start_daemon(&mut lab, "ha", "iha", "ha", &c, &s).unwrap();
    gateway::start_gateway(&mut lab, GwAuth::Psk).unwrap();
    lab.move_mn(Segment::ExtA).unwrap();
    dhcp::stranger_to_ext_a(&lab).unwrap();
    lab
}

/// A registration request from `tia` through the tunnel to the i-HA; the reply code.
fn register_through_tunnel(lab: &Lab, tia: Ipv4Addr) -> Option<u8> {
    let r = Request {
        flags: FLAG_T,
        lifetime: 30,
        home_address: PROBE_HOA,
        home_agent: HA_ADDR,
        care_of: tia,
        identification: mip::timestamp_id(),
    };
    let msg = mip::encode_request(&r, PROBE_SPI, &mip::key_bytes(PROBE_KEY));
    let h = netns::spawn_in(&lab.ns("mn"), move || {
        let s = UdpSocket::bind((tia, 0))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.send_to(&msg, SocketAddrV4::new(HA_ADDR, 434))?;
        let mut buf = [0u8; 1500];
        Ok(s.recv(&mut buf)
            .ok()
            .and_then(|n| mip::reply_code(buf.get(..n).unwrap_or(&[]))))
    });
    h.join().unwrap().unwrap()
}

/// User traffic from the MN to the intranet: 3 pings to the CN, a TCP connect to its
/// port 5001, UDP to the CN and to the i-HA, and `extra` pings. Returns what answered.
fn user_traffic(lab: &Lab, extra: &[Ipv4Addr]) -> usize {
    let mn = lab.ns("mn");
    let mut answered = 0;
    for dst in std::iter::once(CN_ADDR).chain(extra.iter().copied()) {
        let st = Command::new("ip")
            .args([
                "netns", "exec", &mn, "ping", "-n", "-q", "-c", "3", "-i", "0.1",
            ])
            .args(["-W", "1", &dst.to_string()])
            .output()
            .unwrap();
        answered += usize::from(st.status.success());
    }
    let h = netns::spawn_in(&mn, move || {
        let tcp = TcpStream::connect_timeout(
            &SocketAddrV4::new(CN_ADDR, 5001).into(),
            Duration::from_millis(700),
        )
        .is_ok();
        if let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
            for dst in [CN_ADDR, HA_ADDR] {
                let _ = s.send_to(b"user data", SocketAddrV4::new(dst, 5002));
            }
        }
        Ok(usize::from(tcp))
    });
    answered + h.join().unwrap().unwrap()
}

/// The classifier's verdict on a capture of ext-a, after checking that its decoder and
/// tshark's agree on every frame of it.
fn classify(pcap: &Path, injectors: &[[u8; 6]]) -> SegmentReport {
    let n = lab::leak_xcheck::crosscheck(pcap).unwrap();
    eprintln!("{}: {n} frames, decoder agrees with tshark", pcap.display());
    let mut plan = Plan::lab();
    plan.injectors.extend_from_slice(injectors);
    let frames = leak::read_pcap(pcap).unwrap();
    leak::classify_frames(&plan, "ext-a", &frames)
}

fn routes(lab: &Lab) -> String {
    netns::run(
        "ip",
        &["-n", &lab.ns("mn"), "route", "show", "table", "main"],
    )
    .unwrap()
}

/// TunnelVision. The hotspot's DHCP server (dnsmasq, run by the attacker) first hands
/// out a plain lease; `mipsec vpn` connects with its kill switch on the intranet. Then
/// the attacker strikes: the client's next renewal (udhcpc, SIGUSR1) brings option-121
/// routes through the attacker for 10.0.0.0/8, 0.0.0.0/1 and 128.0.0.0/1, which land in
/// the MN's main table (from the server's packets, decoded by udhcpc). Pings, a TCP
/// connect and UDP to the CN and the i-HA never appear in the clear on ext-a, while
/// the tunnel itself, now routed through the attacker, still carries a registration to
/// the i-HA; the same holds for a client (re)started after the routes are in. Leaks 0.
/// Negative control: the client stopped, the same traffic follows the rogue routes and
/// the classifier counts it.
#[test]
fn tunnelvision_routes_leak_without_the_client_and_not_with_it() {
    let Some(_g) = lab_lock_needing(
        "tunnelvision_routes_leak_without_the_client_and_not_with_it",
        &[STRONGSWAN, DHCP].concat(),
    ) else {
        return;
    };
    let t_test = Instant::now();
    let mut lab = lab_on_ext_a();
    let mut benign = RogueDhcp::tunnelvision();
    benign.classless.clear();
    benign.router = Some(Ipv4Addr::new(198, 51, 100, 254));
    dhcp::start_rogue(&mut lab, &benign).unwrap();
    let on = lab.dir.join("tv-client.pcap");
    inject::capture(&mut lab, "cap-on", "br-exta", &on).unwrap();
    let (udhcpc, lease) = dhcp::start_client(&mut lab).unwrap();
    assert_eq!(lease.get("ip"), "198.51.100.50", "{lease:?}");
    assert_eq!(lease.get("staticroutes"), "", "{lease:?}");
    let (cfg, sock) = inject::vpn_config_with_kill_switch(&lab, Some(INTRANET)).unwrap();
    let (tia, vpn_up) = inject::start_vpn_with(&mut lab, &cfg, &sock).unwrap();
    let st = gateway::vpn_status(&sock).unwrap();
    assert_eq!(st["kill_switch"][0], "10.0.0.0/8", "{st}");

    // The attack, while the tunnel is up: option 121 on the next renewal.
    dhcp::start_rogue(&mut lab, &RogueDhcp::tunnelvision()).unwrap();
    let lease = dhcp::renew_client(&lab, udhcpc).unwrap();
    let sr = lease.get("staticroutes");
    for r in [
        "10.0.0.0/8 198.51.100.66",
        "0.0.0.0/1 198.51.100.66",
        "128.0.0.0/1 198.51.100.66",
    ] {
        assert!(sr.contains(r), "option 121 not received: {lease:?}");
    }
    let rt = routes(&lab);
    for r in [
        "10.0.0.0/8 via 198.51.100.66",
        "0.0.0.0/1 via 198.51.100.66",
        "128.0.0.0/1 via 198.51.100.66",
    ] {
        assert!(rt.contains(r), "{rt}");
    }
    assert_eq!(
        user_traffic(&lab, &[HA_ADDR]),
        0,
        "user traffic got through"
    );
    assert_eq!(
        register_through_tunnel(&lab, tia),
        Some(0),
        "{}",
        lab.log_tail("iha", 10)
    );
    // A client started with the rogue routes already in place.
    lab.stop("vpn", libc::SIGTERM);
    let (tia, _) = inject::start_vpn_with(&mut lab, &cfg, &sock).unwrap();
    assert_eq!(
        user_traffic(&lab, &[HA_ADDR]),
        0,
        "user traffic got through"
    );
    assert_eq!(register_through_tunnel(&lab, tia), Some(0));
    inject::stop_capture(&mut lab, "cap-on");
    let with_client = classify(&on, &[]);
    eprintln!("with mipsec vpn:\n{}", leak::render_one(&with_client));
    assert_eq!(
        with_client.count(Class::Leak),
        0,
        "{}",
        leak::render_one(&with_client)
    );
    assert!(
        with_client.count(Class::Encrypted) >= 4,
        "the tunnel carried nothing"
    );
    assert!(with_client.count(Class::Control) >= 4, "no IKE/DHCP seen");

    // Negative control: the client stopped (SIGTERM removes its kill switch); the
    // rogue routes stay; the same traffic.
    lab.stop("vpn", libc::SIGTERM);
    let off = lab.dir.join("tv-no-client.pcap");
    inject::capture(&mut lab, "cap-off", "br-exta", &off).unwrap();
    assert!(routes(&lab).contains("10.0.0.0/8 via 198.51.100.66"));
    user_traffic(&lab, &[HA_ADDR]);
    inject::stop_capture(&mut lab, "cap-off");
    let without = classify(&off, &[]);
    eprintln!(
        "negative control, no client:\n{}",
        leak::render_one(&without)
    );
    let cn_leaks = without
        .by_kind
        .iter()
        .filter(|((c, w), _)| *c == Class::Leak && w.contains("10.40.0.10"))
        .map(|(_, n)| n)
        .sum::<u64>();
    assert!(
        cn_leaks >= 6,
        "the control's pings to the CN were not seen: {cn_leaks}"
    );
    assert!(
        without.count(Class::Leak) >= 10,
        "{}",
        leak::render_one(&without)
    );
    eprintln!(
        "TIA {tia} after {vpn_up:?}; renewal with option 121 took {:?}; test took {:?}",
        lease.took,
        t_test.elapsed()
    );
}

/// A hotspot that looks like the intranet (MN-8: hints prove nothing): its DHCP server
/// hands out the intranet's domain name, a lease in 10.20.0.0/24 (int-a's prefix) and
/// router/DNS 10.20.0.1, and masquerades the lease to the internet. `mipsec vpn` comes
/// up behind it; a ping to 10.20.0.77 (on-link for the main table, an int-a address for
/// the user), to the CN and the i-HA, TCP and UDP never leave in the clear: leaks 0
/// (the lease and the server's addresses are that segment's own). Negative control:
/// without the client the same traffic is counted (the ARP for 10.20.0.77 included).
#[test]
fn intranet_lookalike_dhcp_leaks_nothing() {
    let Some(_g) = lab_lock_needing(
        "intranet_lookalike_dhcp_leaks_nothing",
        &[STRONGSWAN, DHCP].concat(),
    ) else {
        return;
    };
    let t_test = Instant::now();
    let mut lab = lab_on_ext_a();
    dhcp::start_rogue(&mut lab, &RogueDhcp::intranet_lookalike()).unwrap();
    let on = lab.dir.join("lookalike-client.pcap");
    inject::capture(&mut lab, "cap-on", "br-exta", &on).unwrap();
    let lease = dhcp::run_client(&lab).unwrap();
    assert_eq!(lease.get("ip"), "10.20.0.50", "{lease:?}");
    assert_eq!(lease.get("domain"), dhcp::INTRANET_DOMAIN, "{lease:?}");
    assert!(routes(&lab).contains("default via 10.20.0.1"));
    let (cfg, sock) = inject::vpn_config_with_kill_switch(&lab, Some(INTRANET)).unwrap();
    let (tia, _) = inject::start_vpn_with(&mut lab, &cfg, &sock).unwrap();
    let st = gateway::vpn_status(&sock).unwrap();
    assert_eq!(st["behind_nat"], true, "{st}");
    let neighbour = Ipv4Addr::new(10, 20, 0, 77);
    assert_eq!(user_traffic(&lab, &[neighbour, HA_ADDR]), 0);
    assert_eq!(register_through_tunnel(&lab, tia), Some(0));
    inject::stop_capture(&mut lab, "cap-on");
    let with_client = classify(&on, &[]);
    eprintln!("with mipsec vpn:\n{}", leak::render_one(&with_client));
    assert_eq!(
        with_client.count(Class::Leak),
        0,
        "{}",
        leak::render_one(&with_client)
    );
    assert!(with_client.count(Class::Encrypted) >= 2);
    let lease_ip: Ipv4Addr = "10.20.0.50".parse().unwrap();
    assert!(
        with_client.local.contains(&lease_ip),
        "{:?}",
        with_client.local
    );

    lab.stop("vpn", libc::SIGTERM);
    let off = lab.dir.join("lookalike-no-client.pcap");
    inject::capture(&mut lab, "cap-off", "br-exta", &off).unwrap();
    dhcp::run_client(&lab).unwrap();
    user_traffic(&lab, &[neighbour, HA_ADDR]);
    inject::stop_capture(&mut lab, "cap-off");
    let without = classify(&off, &[]);
    eprintln!(
        "negative control, no client:\n{}",
        leak::render_one(&without)
    );
    assert!(
        without
            .by_kind
            .keys()
            .any(|(c, w)| *c == Class::Leak && w.contains("ARP target 10.20.0.77")),
        "{}",
        leak::render_one(&without)
    );
    assert!(
        without.count(Class::Leak) >= 6,
        "{}",
        leak::render_one(&without)
    );
    eprintln!("test took {:?}", t_test.elapsed());
}

/// Replayed and forged packets at the client, from the attacker on ext-a: the i-HA's
/// real reply (with TNC) to a registration through the tunnel, captured on the home
/// network, replayed to the TIA (routed at the MN's MAC) and to the care-of address;
/// forged registration replies (code 0, TNC, garbage authenticator); a rogue foreign
/// agent's advertisements (broadcast, decoded by tshark as valid); forged ESP in UDP
/// 4500 "from the gateway" with random SPIs and with the client's own inbound SPI and
/// garbage. Nothing changes: same IKE SA, TIA, inbound SPI, no reconnect, every forged
/// ESP packet counted in `esp_drops`, no ESP accepted from them, the tunnel still
/// carries a registration, and ext-a shows no leak (the injected frames are classed
/// `injected`; without that the classifier counts them, so it sees them). Negative
/// control: with the client stopped, the MN answers the replay with an ICMP error to
/// the i-HA in the clear, which the classifier counts.
#[test]
fn replayed_and_forged_packets_change_nothing() {
    let Some(_g) = lab_lock_needing(
        "replayed_and_forged_packets_change_nothing",
        &[STRONGSWAN, DHCP].concat(),
    ) else {
        return;
    };
    let t_test = Instant::now();
    let mut lab = lab_on_ext_a();
    let coa = Segment::ExtA.mn_addr();
    let home = lab.dir.join("home.pcap");
    inject::capture(&mut lab, "cap-home", "br-home", &home).unwrap();
    let exta = lab.dir.join("attack-ext-a.pcap");
    inject::capture(&mut lab, "cap-exta", "br-exta", &exta).unwrap();
    let (cfg, sock) = inject::vpn_config_with_kill_switch(&lab, Some(INTRANET)).unwrap();
    let (tia, _) = inject::start_vpn_with(&mut lab, &cfg, &sock).unwrap();
    assert_eq!(register_through_tunnel(&lab, tia), Some(0));
    inject::stop_capture(&mut lab, "cap-home");
    let reply = inject::captured_reply(&home, HA_ADDR).unwrap();
    assert!(inject::reply_has_tnc(&reply), "the i-HA's reply has no TNC");
    let before = gateway::vpn_status(&sock).unwrap();
    let iha_before = mip::status(&lab.exe, &lab.dir.join("iha.sock")).unwrap()["bindings"].clone();

    // The attacker's packets. Replay: the reply as captured, to the TIA via the MN.
    let ev = lab.ns("ev");
    netns::run(
        "ip",
        &[
            "-n",
            &ev,
            "route",
            "add",
            &format!("{tia}/32"),
            "via",
            &coa.to_string(),
        ],
    )
    .unwrap();
    let mut pkts: Vec<Vec<u8>> = vec![reply.clone(); 3];
    let ihl = usize::from(reply[0] & 0xf) * 4;
    let dport = u16::from_be_bytes([reply[ihl + 2], reply[ihl + 3]]);
    let body = reply[ihl + 8..].to_vec();
    for port in [dport, 434] {
        let to = SocketAddrV4::new(coa, port);
        pkts.push(inject::udp(SocketAddrV4::new(HA_ADDR, 434), to, &body));
    }
    // Forged replies: accepted, TNC, an authenticator of garbage.
    let mut ext = vec![149, 0, 32, 20];
    ext.extend_from_slice(&PROBE_SPI.to_be_bytes());
    ext.extend_from_slice(&inject::random_bytes(16));
    for (hoa, dst) in [(MN_HOME, tia), (PROBE_HOA, tia), (MN_HOME, coa)] {
        let m = inject::registration_reply(0, hoa, HA_ADDR, mip::timestamp_id(), &ext);
        pkts.push(inject::udp(
            SocketAddrV4::new(HA_ADDR, 434),
            SocketAddrV4::new(dst, 434),
            &m,
        ));
    }
    let n_mip = pkts.len();
    // A rogue foreign agent on ext-a: the attacker advertises itself (broadcast).
    for seq in 0..3 {
        pkts.push(inject::agent_advertisement(
            dhcp::ROGUE_ADDR,
            Ipv4Addr::BROADCAST,
            dhcp::ROGUE_ADDR,
            seq,
        ));
    }
    // Forged ESP in UDP 4500 from the gateway: random SPIs, then the live inbound SPI.
    let gw = SocketAddrV4::new(enterprise::GW_OUTER, 4500);
    let to = SocketAddrV4::new(coa, 4500);
    let spi_in = before["spi_in"].as_u64().unwrap() as u32;
    assert_ne!(spi_in, 0, "{before}");
    for i in 0..10u32 {
        let spi = rand::random::<u32>() | 0x100;
        pkts.push(inject::udp(gw, to, &inject::forged_esp(spi, i + 1, 64)));
    }
    for seq in [1u32, 2, 100, 1000, 0x7fff_ffff, 3, 4, 5, 6, 7] {
        pkts.push(inject::udp(gw, to, &inject::forged_esp(spi_in, seq, 64)));
    }
    let n_esp = pkts.len() - n_mip - 3;
    let sent = inject::send_raw(&ev, pkts).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let after = gateway::vpn_status(&sock).unwrap();
    for k in [
        "ike_spi_i",
        "ike_spi_r",
        "tia",
        "spi_in",
        "spi_out",
        "reconnects",
        "dead_gateway",
        "state",
    ] {
        assert_eq!(before[k], after[k], "{k} changed: {before} -> {after}");
    }
    let d = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(
        d("esp_drops"),
        n_esp as u64,
        "forged ESP not all counted: {after}"
    );
    assert_eq!(d("esp_rx_packets"), 0, "forged ESP accepted: {after}");
    let iha_after = mip::status(&lab.exe, &lab.dir.join("iha.sock")).unwrap()["bindings"].clone();
    assert_eq!(iha_before, iha_after);
    assert_eq!(
        register_through_tunnel(&lab, tia),
        Some(0),
        "tunnel broken after the attack"
    );
    inject::stop_capture(&mut lab, "cap-exta");

    let evil = inject::mac_of(&lab, "ev", "eth0").unwrap();
    let r = classify(&exta, &[evil]);
    eprintln!("under attack:\n{}", leak::render_one(&r));
    assert_eq!(r.count(Class::Leak), 0, "{}", leak::render_one(&r));
    let injected_ip = r
        .by_kind
        .get(&(Class::Injected, "from an injector".to_string()))
        .copied()
        .unwrap_or(0);
    assert!(
        injected_ip >= sent as u64,
        "only {injected_ip} of {sent} injected frames on ext-a"
    );
    // tshark reads the rogue agent's advertisements as valid ones from a foreign agent.
    let adverts = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&exta)
        .args([
            "-Y",
            "icmp.type == 9 && icmp.mip.f == 1 && !_ws.malformed && !(_ws.expert.severity >= \"Warning\")",
        ])
        .output()
        .unwrap();
    let detail = || {
        let o = Command::new("tshark")
            .args(["-n", "-V", "-r"])
            .arg(&exta)
            .args(["-Y", "icmp.type == 9"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        String::from_utf8_lossy(&adverts.stdout).lines().count(),
        3,
        "{}",
        detail()
    );
    // The classifier sees the attack frames themselves (the replay names the i-HA).
    let plain = classify(&exta, &[]);
    assert!(
        plain.count(Class::Leak) >= n_mip as u64,
        "{}",
        leak::render_one(&plain)
    );
    // Negative control: without the client (SIGTERM removes its kill switch) the MN's
    // own answer to the replay, an ICMP error to the i-HA, leaves in the clear.
    lab.stop("vpn", libc::SIGTERM);
    let ctl = lab.dir.join("replay-no-client.pcap");
    inject::capture(&mut lab, "cap-ctl", "br-exta", &ctl).unwrap();
    let to_coa = inject::udp(
        SocketAddrV4::new(HA_ADDR, 434),
        SocketAddrV4::new(coa, 434),
        &body,
    );
    inject::send_raw(&ev, vec![to_coa; 3]).unwrap();
    inject::stop_capture(&mut lab, "cap-ctl");
    let ctl = classify(&ctl, &[evil]);
    eprintln!("replay without the client:\n{}", leak::render_one(&ctl));
    assert!(
        ctl.by_kind
            .keys()
            .any(|(c, w)| *c == Class::Leak && w.contains("destination 10.10.0.1")),
        "{}",
        leak::render_one(&ctl)
    );
    eprintln!(
        "sent {sent} ({n_mip} Mobile IP, 3 agent advertisements, {n_esp} ESP); esp_drops +{}; \
         without the client the replay drew {} leaking frames; test took {:?}",
        d("esp_drops"),
        ctl.count(Class::Leak),
        t_test.elapsed()
    );
}
