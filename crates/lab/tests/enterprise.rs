//! The enterprise lab of RFC 5265 Figure 1 (issue 12 item 1, and item 5's firewall and
//! capture checks): Debian's unmodified strongSwan as the VPN gateway, the x-HA in the
//! DMZ, the nftables border firewall, the outside segments. Root; each test builds its
//! own lab with a fresh prefix. Without root they fail, unless MIPSEC_SKIP_LAB=1.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use lab::enterprise::{self, fw_counters, GwAuth, MN_XHOME, PROBE_XHOME, XHA_ADDR, XHA_INNER};
use lab::gateway;
use lab::mip::{self, Request, FLAG_T, PROBE_HOA, PROBE_KEY, PROBE_SPI};
use lab::netns;
use lab::testing::{count, exe, lab_lock_needing, tshark, FLAGGED, PKI, STRONGSWAN};
use lab::topo::{Lab, Segment, HA_ADDR};
use serde_json::Value;

/// One test at a time (charon and the daemons are heavy on 2 cores); None after a loud
/// SKIP when the lab cannot run. strongSwan is required, not optional.
fn lab_lock(test: &str) -> Option<MutexGuard<'static, ()>> {
    let mut needs = STRONGSWAN.to_vec();
    needs.push(PKI);
    lab_lock_needing(test, &needs)
}

/// A request signed with the lab's probe key, asking for reverse tunnelling.
fn request(hoa: Ipv4Addr, ha: Ipv4Addr, coa: Ipv4Addr, lifetime: u16) -> Vec<u8> {
    request_flags(FLAG_T, hoa, ha, coa, lifetime)
}

fn request_flags(flags: u8, hoa: Ipv4Addr, ha: Ipv4Addr, coa: Ipv4Addr, lifetime: u16) -> Vec<u8> {
    let r = Request {
        flags,
        lifetime,
        home_address: hoa,
        home_agent: ha,
        care_of: coa,
        identification: mip::timestamp_id(),
    };
    mip::encode_request(&r, PROBE_SPI, &mip::key_bytes(PROBE_KEY))
}

/// Sends `msg` from namespace `ns` (bound to `src`, or any address) to `dst` port 434
/// and returns the reply code, if a reply came within `timeout`.
fn send_rrq(
    ns: &str,
    src: Option<Ipv4Addr>,
    dst: Ipv4Addr,
    msg: Vec<u8>,
    timeout: Duration,
) -> Option<u8> {
    let h = netns::spawn_in(ns, move || {
        let s = UdpSocket::bind((src.unwrap_or(Ipv4Addr::UNSPECIFIED), 0))?;
        s.set_read_timeout(Some(timeout))?;
        s.send_to(&msg, SocketAddrV4::new(dst, 434))?;
        let mut buf = [0u8; 1500];
        Ok(s.recv(&mut buf)
            .ok()
            .and_then(|n| mip::reply_code(buf.get(..n).unwrap_or(&[]))))
    });
    h.join().unwrap().unwrap()
}

fn diff(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0)))
        .collect()
}

/// Frames tshark flags as malformed or with an expert warning.
fn flagged(f: &Path) -> String {
    tshark(f, &["-Y", FLAGGED])
}

fn agent_status(lab: &Lab, sock: &str) -> Value {
    mip::status(&lab.exe, &lab.dir.join(sock)).unwrap()
}

/// VPN-1 and the border firewall. The MN on ext-a runs `mipsec vpn` against the
/// unmodified strongSwan gateway (PSK), gets a TIA from the pool, and a registration
/// request sent from the TIA through the tunnel gets the i-HA's reply (accepted: the
/// TIA pool is an internal subnet the i-HA trusts). The same request sent in plaintext
/// from ext-a is dropped by the firewall (its `denied` counter counts it, no reply).
/// The firewall's counters show that only IKE/ESP to the gateway crossed into the
/// enterprise; the outside captures decode in tshark with no malformed packet and show
/// IKE and ESP-in-UDP, and no Mobile IP in the clear towards the i-HA.
#[test]
fn vpn_carries_registration_to_iha_and_firewall_blocks_plaintext() {
    let Some(_g) = lab_lock("vpn_carries_registration_to_iha_and_firewall_blocks_plaintext") else {
        return;
    };
    let t_test = Instant::now();
    let mut lab = lab::enterprise::build(&exe()).unwrap();
    let pcap = lab.dir.join("pcap");
    enterprise::start_captures(&mut lab, &pcap).unwrap();
    enterprise::start_agents(&mut lab).unwrap();
    let gw_up = gateway::start_gateway(&mut lab, GwAuth::Psk).unwrap();
    lab.move_mn(Segment::ExtA).unwrap();
    let mn = lab.ns("mn");
    let ext_a = Segment::ExtA.mn_addr();
    let before = fw_counters(&lab).unwrap();

    // Plaintext from ext-a to the i-HA: the firewall drops it.
    let plain = send_rrq(
        &mn,
        None,
        HA_ADDR,
        request(PROBE_HOA, HA_ADDR, ext_a, 30),
        Duration::from_millis(700),
    );
    assert_eq!(
        plain, None,
        "a plaintext request from ext-a reached the i-HA"
    );
    let after_plain = fw_counters(&lab).unwrap();
    assert_eq!(
        diff(&before, &after_plain)["denied"],
        1,
        "firewall counters: {after_plain:?}"
    );

    let (tia, vpn_up) = gateway::start_vpn(&mut lab).unwrap();
    assert!(
        ipnet_contains("10.99.0.0/24", tia),
        "TIA {tia} not from the pool"
    );
    // Through the tunnel: the i-HA answers, and accepts (code 0) a request from the TIA.
    let t0 = Instant::now();
    let code = send_rrq(
        &mn,
        Some(tia),
        HA_ADDR,
        request(PROBE_HOA, HA_ADDR, tia, 30),
        Duration::from_secs(3),
    );
    let rrq_rtt = t0.elapsed();
    assert_eq!(
        code,
        Some(0),
        "no accepted reply through the VPN\n{}",
        lab.log_tail("iha", 20)
    );
    let iha = agent_status(&lab, "iha.sock");
    let binding = iha["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["home_address"] == PROBE_HOA.to_string())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(binding["care_of"], tia.to_string(), "{iha}");

    // Outside VPN-1 (UDP to another port of the i-HA, from the TIA): it never reaches
    // the home network (checked in home.pcap below).
    let h = netns::spawn_in(&mn, move || {
        let s = UdpSocket::bind((tia, 0))?;
        for _ in 0..3 {
            s.send_to(b"not in the policy", SocketAddrV4::new(HA_ADDR, 435))?;
        }
        Ok(())
    });
    h.join().unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let sas = gateway::swanctl(&lab, &["--list-sas"]).unwrap();
    assert!(
        sas.contains("ESTABLISHED") && sas.contains(&tia.to_string()),
        "{sas}"
    );
    assert!(sas.contains("[udp/434]"), "VPN-1 policy: {sas}");

    let after = fw_counters(&lab).unwrap();
    let d = diff(&before, &after);
    enterprise::stop_captures(&mut lab);
    eprintln!(
        "gateway up {gw_up:?}, TIA {tia} after {vpn_up:?}, registration through the VPN {rrq_rtt:?}, firewall {d:?}"
    );
    // Only IKE (500 -> 4500) and ESP in UDP to the gateway came in; the one plaintext
    // request is the only denied packet; nothing reached the x-HA.
    assert_eq!(d["denied"], 1, "{d:?}");
    assert!(d["ike_to_gw"] >= 1 && d["natt_to_gw"] >= 2, "{d:?}");
    assert_eq!(d["mip_to_xha"] + d["ipip_to_xha"], 0, "{d:?}");

    // Captures: every outside one decodes cleanly; ext-a shows IKE and UDP-encapsulated
    // ESP and exactly one Mobile IP request (the plaintext one), never a reply.
    for seg in enterprise::OUTSIDE {
        let f = pcap.join(format!("{seg}.pcap"));
        // Nothing happens on ext-nat in this test; the others carry traffic.
        assert!(
            seg == "ext-nat" || count(&f, "frame") > 0,
            "{seg}.pcap is empty"
        );
        let bad = flagged(&f);
        assert!(bad.trim().is_empty(), "{seg}.pcap: {bad}");
    }
    // The x-FA advertises on ext-b (ICMP router advertisements with the mobility
    // agent extension), and tshark decoded them above.
    assert!(
        count(
            &pcap.join("ext-b.pcap"),
            "icmp.type == 9 && icmp.mip.f == 1"
        ) >= 1
    );
    let exta = pcap.join("ext-a.pcap");
    assert!(count(&exta, "isakmp") >= 2, "no IKE on ext-a");
    assert!(
        count(&exta, "esp && udp.port == 4500") >= 2,
        "no ESP in UDP on ext-a"
    );
    assert_eq!(count(&exta, "mip"), 1, "Mobile IP in the clear on ext-a");
    // The plaintext request got as far as the firewall (core) and no further; the one
    // through the VPN shows up on the home network from the TIA, with its reply.
    assert_eq!(count(&pcap.join("core.pcap"), "mip"), 1);
    let from_exta = format!("ip.src == {ext_a} && !(udp.dstport == 500) && !(udp.dstport == 4500)");
    for seg in ["dmz", "home", "gwin"] {
        assert_eq!(
            count(&pcap.join(format!("{seg}.pcap")), &from_exta),
            0,
            "{seg}"
        );
    }
    let home = pcap.join("home.pcap");
    assert_eq!(
        count(&home, "udp.dstport == 435"),
        0,
        "VPN-1 let UDP 435 in"
    );
    assert!(count(&home, &format!("mip.type == 1 && ip.src == {tia}")) >= 1);
    assert!(count(&home, &format!("mip.type == 3 && ip.dst == {tia}")) >= 1);

    // Negative control: the same check flags a truncated registration request sent
    // from ext-a to the x-HA (captured on its own file), so it can see a bad packet.
    let neg = pcap.join("negative-control.pcap");
    let nf = neg.display().to_string();
    lab.spawn_prog(
        "sw",
        "capture-neg",
        "tcpdump".as_ref(),
        &[
            "-i",
            "br-exta",
            "-n",
            "--immediate-mode",
            "-U",
            "-w",
            &nf,
            "udp port 434",
        ],
    )
    .unwrap();
    let t0 = Instant::now();
    while !std::fs::read_to_string(lab.log_path("capture-neg"))
        .is_ok_and(|s| s.contains("listening"))
    {
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut cut = request(PROBE_XHOME, XHA_ADDR, ext_a, 30);
    cut.truncate(10);
    assert_eq!(
        send_rrq(&mn, None, XHA_ADDR, cut, Duration::from_millis(300)),
        None
    );
    lab.stop("capture-neg", libc::SIGINT);
    assert_eq!(
        flagged(&neg).lines().count(),
        1,
        "the check cannot see a bad packet"
    );
    let dur = t_test.elapsed();
    eprintln!("test took {dur:?}");
}

fn ipnet_contains(net: &str, a: Ipv4Addr) -> bool {
    let (n, l) = net.split_once('/').unwrap();
    let n: Ipv4Addr = n.parse().unwrap();
    let l: u32 = l.parse().unwrap();
    let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
    u32::from(n) & mask == u32::from(a) & mask
}

/// The x-HA in the DMZ: a request from ext-a (co-located care-of address) for an x-home
/// address is accepted, with no Trusted Networks Configured extension (it trusts
/// nobody); the same kind of request from the intranet (the CN, routed to the x-HA's
/// intranet leg) is dropped and counted (HA-5). The firewall let the outside request in
/// as DMZ traffic (`mip_to_xha`) and denied nothing.
#[test]
fn xha_accepts_outside_and_drops_intranet_side() {
    let Some(_g) = lab_lock("xha_accepts_outside_and_drops_intranet_side") else {
        return;
    };
    let t_test = Instant::now();
    let mut lab = lab::enterprise::build(&exe()).unwrap();
    enterprise::start_agents(&mut lab).unwrap();
    lab.move_mn(Segment::ExtA).unwrap();
    let before = fw_counters(&lab).unwrap();
    let ext_a = Segment::ExtA.mn_addr();
    let code = send_rrq(
        &lab.ns("mn"),
        None,
        XHA_ADDR,
        request(PROBE_XHOME, XHA_ADDR, ext_a, 30),
        Duration::from_secs(3),
    );
    assert_eq!(code, Some(0), "{}", lab.log_tail("xha", 20));
    let xha = agent_status(&lab, "xha.sock");
    let binding = xha["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["home_address"] == PROBE_XHOME.to_string())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(binding["care_of"], ext_a.to_string(), "{xha}");

    // From the intranet: arrives on the x-HA's eth1 (10.50.0.2 side), dropped (HA-5).
    let code = send_rrq(
        &lab.ns("cn"),
        None,
        XHA_ADDR,
        request(MN_XHOME, XHA_ADDR, lab::topo::CN_ADDR, 30),
        Duration::from_millis(700),
    );
    assert_eq!(code, None, "x-HA answered a request from the intranet");
    let xha = agent_status(&lab, "xha.sock");
    assert_eq!(
        mip::get_u64(
            &xha,
            &[
                "counters",
                "drops",
                "request on the internal interface (HA-5)"
            ]
        ),
        1,
        "{xha}"
    );
    // The intranet's path to the x-HA is its inner leg, not the firewall.
    let route = netns::run(
        "ip",
        &["-n", &lab.ns("rt"), "route", "get", &XHA_ADDR.to_string()],
    )
    .unwrap();
    assert!(route.contains(&XHA_INNER.to_string()), "{route}");
    // ... and the x-HA has no way back into the intranet on that leg.
    let back = netns::run("ip", &["-n", &lab.ns("xha"), "route", "get", "10.10.0.1"]).unwrap();
    assert!(
        back.contains("192.0.2.254") && !back.contains("eth1"),
        "{back}"
    );

    // From ext-nat, behind the internet core's masquerade: the x-HA answers through
    // the NAT (the request's source is the NAT's address, not the care-of address).
    lab.move_mn(Segment::ExtNat).unwrap();
    let nat_coa = Segment::ExtNat.mn_addr();
    let code = send_rrq(
        &lab.ns("mn"),
        None,
        XHA_ADDR,
        request(PROBE_XHOME, XHA_ADDR, nat_coa, 30),
        Duration::from_secs(3),
    );
    assert!(
        code.is_some(),
        "no reply through the NAT\n{}",
        lab.log_tail("xha", 10)
    );
    let ct = netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.ns("inet"),
            "conntrack",
            "-L",
            "-p",
            "udp",
        ],
    )
    .unwrap_or_default();
    assert!(
        ct.contains("dport=434") && ct.contains("src=192.168.100.50"),
        "{ct}"
    );

    // On ext-b, through the x-FA (no address for the MN there): the visitor sends from
    // its x-home address to the agent; the agent relays the request to the x-HA and
    // the reply back, and the x-HA binds the x-home address to the agent's care-of.
    lab.move_mn(Segment::ExtB).unwrap();
    let mn = lab.ns("mn");
    let xfa = Segment::ExtB.mn_addr();
    for args in [
        vec!["addr", "add", "100.64.0.101/32", "dev", "eth0"],
        vec!["route", "add", "203.0.113.1/32", "dev", "eth0"],
    ] {
        let mut a = vec!["-n", mn.as_str()];
        a.extend(args);
        netns::run("ip", &a).unwrap();
    }
    // No reverse tunnelling asked of the agent.
    let via_fa = request_flags(0, PROBE_XHOME, XHA_ADDR, xfa, 30);
    let code = send_rrq(&mn, Some(PROBE_XHOME), xfa, via_fa, Duration::from_secs(3));
    assert_eq!(
        code,
        Some(0),
        "{}\n{}",
        lab.log_tail("xfa", 10),
        lab.log_tail("xha", 10)
    );
    let xha = agent_status(&lab, "xha.sock");
    let binding = xha["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["home_address"] == PROBE_XHOME.to_string())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(binding["care_of"], xfa.to_string(), "{xha}");

    let d = diff(&before, &fw_counters(&lab).unwrap());
    assert_eq!(d["mip_to_xha"], 3, "{d:?}");
    assert_eq!(d["denied"], 0, "{d:?}");
    eprintln!(
        "x-HA reply code through the NAT {code:?}; firewall {d:?}; test took {:?}",
        t_test.elapsed()
    );
}

/// The certificate variant of the gateway, as an administrator writes it: a lab CA and
/// the gateway's certificate made with strongSwan's `pki` (ECDSA P-256, PEM) in
/// swanctl's `x509ca/`, `x509/` and `private/` directories, DN identities. charon loads
/// it with `swanctl --load-all`: the connection shows the gateway's DN, the certificate
/// is listed with its subject and has its private key, and the CA key is not there.
///
/// The client here is strongSwan's own charon in the MN namespace on ext-a, with the
/// MN's DN and PEM files, as an independent reference for the admin's config (the test
/// below runs `mipsec vpn` against the same gateway): the gateway authenticates it by
/// certificate, hands it a TIA, and a registration request from that TIA reaches the
/// i-HA through the tunnel (VPN-1).
#[test]
fn certificate_gateway_as_admin_writes_it() {
    let Some(_g) = lab_lock("certificate_gateway_as_admin_writes_it") else {
        return;
    };
    let t_test = Instant::now();
    let mut lab = lab::enterprise::build(&exe()).unwrap();
    let up = gateway::start_gateway(&mut lab, GwAuth::Cert).unwrap();
    let conns = gateway::swanctl(&lab, &["--list-conns"]).unwrap();
    assert!(conns.contains(enterprise::GW_DN), "{conns}");
    assert!(conns.contains("[udp/434]"), "{conns}");
    let certs = gateway::swanctl(&lab, &["--list-certs"]).unwrap();
    assert!(
        certs.contains("CN=vpn.example.com") && certs.contains("has private key"),
        "{certs}"
    );
    assert!(certs.contains("CN=mipsec lab Root CA"), "{certs}");
    let sw = gateway::gw_dir(&lab).join("swanctl");
    let on_gw = netns::run(
        "find",
        &[
            &gateway::gw_dir(&lab).display().to_string(),
            "-name",
            "*.pem",
        ],
    )
    .unwrap();
    assert!(
        !on_gw.contains("caKey") && !on_gw.contains("mnKey"),
        "{on_gw}"
    );
    assert!(sw.join("private/vpnKey.pem").exists() && sw.join("x509/vpnCert.pem").exists());

    let (c, s) = enterprise::write_iha_config(&lab).unwrap();
    enterprise::start_daemon(&mut lab, "ha", "iha", "ha", &c, &s).unwrap();
    lab.move_mn(Segment::ExtA).unwrap();
    let child_up = gateway::start_strongswan_client(&mut lab).unwrap();
    let sas = gateway::swanctl(&lab, &["--list-sas"]).unwrap();
    assert!(
        sas.contains("ESTABLISHED") && sas.contains(enterprise::MN_DN),
        "{sas}"
    );
    let tia: Ipv4Addr = sas
        .split('[')
        .filter_map(|p| p.split(']').next())
        .filter_map(|a| a.parse().ok())
        .find(|a| ipnet_contains("10.99.0.0/24", *a))
        .unwrap_or_else(|| panic!("no TIA in {sas}"));
    let code = send_rrq(
        &lab.ns("mn"),
        Some(tia),
        HA_ADDR,
        request(PROBE_HOA, HA_ADDR, tia, 30),
        Duration::from_secs(3),
    );
    assert_eq!(code, Some(0), "{}", lab.log_tail("iha", 10));
    eprintln!(
        "certificate gateway loaded in {up:?}; strongSwan client CHILD_SA up in {child_up:?}, TIA {tia}; test took {:?}",
        t_test.elapsed()
    );
}

/// i-HA binding of `hoa` (JSON), or Null.
fn iha_binding(lab: &Lab, hoa: Ipv4Addr) -> Value {
    let iha = agent_status(lab, "iha.sock");
    iha["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["home_address"] == hoa.to_string())
        .cloned()
        .unwrap_or(Value::Null)
}

/// The certificate variant with OUR client: `mipsec vpn` on ext-a, configured as the
/// MN's user would for the gateway admin's config above (`local_id`/`remote_id` the DN
/// strings, `cert`/`key`/`ca` the PEM files `pki` made). The gateway authenticates it by
/// its ECDSA certificate (its log says so, for the MN's DN), lists the IKE SA with the
/// MN's DN, hands out a TIA, and a registration request from the TIA through the tunnel
/// is accepted by the i-HA, which binds the probe's home address to the TIA.
#[test]
fn certificate_gateway_accepts_mipsec_vpn_with_dn_and_pem() {
    let Some(_g) = lab_lock("certificate_gateway_accepts_mipsec_vpn_with_dn_and_pem") else {
        return;
    };
    let t_test = Instant::now();
    let mut lab = lab::enterprise::build(&exe()).unwrap();
    let (c, s) = enterprise::write_iha_config(&lab).unwrap();
    enterprise::start_daemon(&mut lab, "ha", "iha", "ha", &c, &s).unwrap();
    let gw_up = gateway::start_gateway(&mut lab, GwAuth::Cert).unwrap();
    lab.move_mn(Segment::ExtA).unwrap();

    // The client's config holds DN identities and PEM file names, nothing else.
    let (cfg, sock) = gateway::vpn_config(&lab, GwAuth::Cert).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains(&format!("local_id = \"{}\"", enterprise::MN_DN))
            && text.contains(&format!("remote_id = \"{}\"", enterprise::GW_DN))
            && !text.contains("psk"),
        "{text}"
    );
    for f in ["mnCert.pem", "mnKey.pem", "caCert.pem"] {
        let p = gateway::mn_pki_dir(&gateway::gw_dir(&lab)).join(f);
        let pem = std::fs::read_to_string(&p).unwrap();
        assert!(pem.starts_with("-----BEGIN "), "{f} is not PEM");
        assert!(text.contains(&p.display().to_string()), "{text}");
    }

    let (tia, vpn_up) = gateway::start_vpn_auth(&mut lab, GwAuth::Cert).unwrap();
    assert!(
        ipnet_contains(enterprise::TIA_POOL, tia),
        "TIA {tia} not from the pool"
    );
    let st = gateway::vpn_status(&sock).unwrap();
    assert_eq!(st["tia"], tia.to_string(), "{st}");
    let sas = gateway::swanctl(&lab, &["--list-sas"]).unwrap();
    assert!(
        sas.contains("ESTABLISHED")
            && sas.contains(&format!("'{}'", enterprise::MN_DN))
            && sas.contains(&tia.to_string()),
        "{sas}"
    );
    // Certificate authentication, as the gateway saw it.
    let log = std::fs::read_to_string(gateway::gw_dir(&lab).join("charon.log")).unwrap();
    let auth_line = log
        .lines()
        .find(|l| {
            l.contains(&format!("authentication of '{}' with", enterprise::MN_DN))
                && l.contains("ECDSA")
                && l.contains("successful")
        })
        .unwrap_or_else(|| panic!("no certificate authentication of the MN in charon.log"));

    let t0 = Instant::now();
    let code = send_rrq(
        &lab.ns("mn"),
        Some(tia),
        HA_ADDR,
        request(PROBE_HOA, HA_ADDR, tia, 30),
        Duration::from_secs(3),
    );
    let rrq_rtt = t0.elapsed();
    assert_eq!(code, Some(0), "{}", lab.log_tail("iha", 10));
    let b = iha_binding(&lab, PROBE_HOA);
    assert_eq!(b["care_of"], tia.to_string(), "{b}");
    let dur = t_test.elapsed();
    eprintln!(
        "certificate gateway loaded in {gw_up:?}; mipsec vpn (DN + PEM) TIA {tia} after {vpn_up:?}; \
         gateway: {}; registration through the VPN {rrq_rtt:?}; test took {dur:?}",
        auth_line.trim()
    );
    assert!(dur < Duration::from_secs(20), "test took {dur:?}");
}

/// `mipsec vpn` from ext-nat, behind the internet core's masquerade (a hotel network):
/// the client sees the NAT and puts ESP in UDP 4500, gets a TIA, and a registration from
/// the TIA through the tunnel is accepted by the i-HA. The ext-nat and core captures
/// show ESP only inside UDP 4500 (no ESP as IP protocol 50; on the core, from the NAT's
/// address), no Mobile IP and no packet to or from an intranet address (10.0.0.0/8);
/// the gateway sees the client at the NAT's address on port 4500. Negative control: one
/// plaintext packet to the i-HA sent before the client starts (a "leak canary") is seen
/// by that same intranet-address filter on both segments, and is the only one.
#[test]
fn mipsec_vpn_behind_nat_rides_udp_4500() {
    let Some(_g) = lab_lock("mipsec_vpn_behind_nat_rides_udp_4500") else {
        return;
    };
    let t_test = Instant::now();
    let mut lab = lab::enterprise::build(&exe()).unwrap();
    let pcap = lab.dir.join("pcap");
    enterprise::start_captures(&mut lab, &pcap).unwrap();
    let (c, s) = enterprise::write_iha_config(&lab).unwrap();
    enterprise::start_daemon(&mut lab, "ha", "iha", "ha", &c, &s).unwrap();
    gateway::start_gateway(&mut lab, GwAuth::Psk).unwrap();
    lab.move_mn(Segment::ExtNat).unwrap();
    let mn = lab.ns("mn");
    let before = fw_counters(&lab).unwrap();

    // The canary: plaintext to the i-HA, through the NAT, stopped at the firewall.
    let h = netns::spawn_in(&mn, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.send_to(b"leak canary", SocketAddrV4::new(HA_ADDR, 9))?;
        Ok(())
    });
    h.join().unwrap().unwrap();

    let (tia, vpn_up) = gateway::start_vpn(&mut lab).unwrap();
    assert!(ipnet_contains(enterprise::TIA_POOL, tia), "TIA {tia}");
    let st = gateway::vpn_status(&lab.dir.join("vpn.sock")).unwrap();
    assert_eq!(st["behind_nat"], true, "{st}");
    assert_eq!(st["udp_encap"], true, "{st}");
    let t0 = Instant::now();
    let code = send_rrq(
        &mn,
        Some(tia),
        HA_ADDR,
        request(PROBE_HOA, HA_ADDR, tia, 30),
        Duration::from_secs(3),
    );
    let rrq_rtt = t0.elapsed();
    assert_eq!(code, Some(0), "{}", lab.log_tail("iha", 10));
    let b = iha_binding(&lab, PROBE_HOA);
    assert_eq!(b["care_of"], tia.to_string(), "{b}");
    let sas = gateway::swanctl(&lab, &["--list-sas"]).unwrap();
    // The NAT's core address (inet's eth0) is the client's address for the gateway.
    assert!(
        sas.contains("ESTABLISHED") && sas.contains("198.18.0.254[4500]"),
        "{sas}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let d = diff(&before, &fw_counters(&lab).unwrap());
    enterprise::stop_captures(&mut lab);
    assert_eq!(d["denied"], 1, "only the canary is denied: {d:?}");
    assert_eq!(d["esp_to_gw"], 0, "raw ESP through the NAT: {d:?}");
    assert!(d["natt_to_gw"] >= 2, "{d:?}");

    let mut figures = Vec::new();
    for seg in ["ext-nat", "core"] {
        let f = pcap.join(format!("{seg}.pcap"));
        let bad = flagged(&f);
        assert!(bad.trim().is_empty(), "{seg}.pcap: {bad}");
        let esp_udp = count(&f, "esp && udp.port == 4500");
        assert!(esp_udp >= 2, "{seg}: {esp_udp} ESP-in-UDP frames");
        assert_eq!(count(&f, "ip.proto == 50"), 0, "{seg}: raw ESP");
        assert_eq!(count(&f, "esp && !(udp.port == 4500)"), 0, "{seg}");
        assert_eq!(count(&f, "mip || udp.port == 434"), 0, "{seg}: Mobile IP");
        let intranet = count(&f, "ip.addr == 10.0.0.0/8");
        let canary = count(
            &f,
            "ip.addr == 10.0.0.0/8 && frame contains \"leak canary\"",
        );
        assert_eq!(
            (intranet, canary),
            (1, 1),
            "{seg}: intranet-address frames (all, canary)"
        );
        figures.push(format!(
            "{seg}: {} frames, {esp_udp} ESP in UDP 4500, {intranet} intranet (the canary)",
            count(&f, "frame")
        ));
    }
    let core = pcap.join("core.pcap");
    assert_eq!(
        count(&core, "ip.addr == 192.168.100.0/24"),
        0,
        "the hotel's private addresses got past the NAT"
    );
    // Upstream ESP on the core comes from the NAT's address.
    assert!(
        count(&core, "esp && udp.port == 4500 && ip.src == 198.18.0.254") >= 1,
        "no ESP in UDP from the NAT on the core"
    );
    let dur = t_test.elapsed();
    eprintln!(
        "behind NAT: TIA {tia} after {vpn_up:?}, registration {rrq_rtt:?}; firewall {d:?}; {}; test took {dur:?}",
        figures.join("; ")
    );
    assert!(dur < Duration::from_secs(20), "test took {dur:?}");
}
