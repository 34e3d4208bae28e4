//! The RFC 5265 mobile node outside the enterprise, end to end in the enterprise lab
//! (issue 12): `mipsec mn` with x-MIP to the x-HA, the VPN to the unmodified strongSwan
//! gateway from the x-home address, and the i-HA registration of the TIA through it.
//! Root; each test builds its own lab with a fresh prefix.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use lab::enterprise::{self, MN_XHOME};
use lab::gateway::GwAuth;
use lab::mip;
use lab::roam::Outside;
use lab::scenario::MipLab;
use lab::testing::{exe, lab_lock_needing, STRONGSWAN};
use lab::topo::{Segment, MN_HOME};

fn tshark(file: &Path, extra: &[&str]) -> String {
    let out = std::process::Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(file)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count(file: &Path, filter: &str) -> usize {
    tshark(file, &["-Y", filter]).lines().count()
}

/// A UDP echo of `len` payload octets from the home address to the CN's echo port.
fn big_echo_ok(ml: &MipLab, len: usize) -> bool {
    let h = lab::netns::spawn_in(&ml.lab.ns("mn"), move || {
        let s = std::net::UdpSocket::bind((MN_HOME, 0))?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        let to = std::net::SocketAddrV4::new(lab::topo::CN_ADDR, lab::traffic::UDP_PORT);
        let mut buf = vec![0u8; 4096];
        for _ in 0..15 {
            let _ = s.send_to(&vec![0x5a; len], to);
            if let Ok(n) = s.recv(&mut buf) {
                return Ok(n == len);
            }
        }
        Ok(false)
    });
    matches!(h.join(), Ok(Ok(true)))
}

/// Item 2 of issue 12: one process and one TUN (the home address's) in the node's
/// namespace while it is open through the VPN, no other TUN between the layers, and
/// the TIA on no device (it is not a kernel address). Returns the TUN lines.
fn one_tun_and_no_tia_device(ml: &MipLab, tia: &str) -> Vec<String> {
    let ns = ml.lab.ns("mn");
    let links = lab::netns::ip(&["-n", &ns, "-d", "-o", "link", "show"]).unwrap();
    let tuns: Vec<String> = links
        .lines()
        .filter(|l| l.contains(" tun type tun "))
        .map(str::to_string)
        .collect();
    assert_eq!(tuns.len(), 1, "one TUN in the node's namespace:\n{links}");
    let addrs = lab::netns::ip(&["-n", &ns, "-o", "addr", "show"]).unwrap();
    assert!(
        !addrs.contains(&format!("inet {tia}/")),
        "the TIA {tia} is on no device:\n{addrs}"
    );
    tuns
}

fn gate(v: &serde_json::Value) -> &str {
    v["interfaces"][0]["gate"].as_str().unwrap_or("")
}

/// Mode cvc: on ext-a the node registers its co-located care-of address with the
/// x-HA, runs IKE to the gateway from its x-home address through that x-MIP tunnel,
/// registers the TIA with the i-HA through the VPN, and user data flows both ways
/// through all three layers. Back inside (int-a) the i-HA's TNC reply drops the VPN
/// and user data goes directly.
#[test]
fn cvc_on_ext_a_then_back_inside() {
    let Some(_g) = lab_lock_needing("cvc_on_ext_a_then_back_inside", STRONGSWAN) else {
        return;
    };
    let mut ml = MipLab::start_enterprise(&exe(), GwAuth::Psk, Outside::Xmip).unwrap();
    let pcaps = ml.lab.dir.join("pcap");
    enterprise::start_captures(&mut ml.lab, &pcaps).unwrap();
    ml.lab.move_mn(Segment::ExtA).unwrap();
    let (st, took) = ml
        .wait_mn(Duration::from_secs(20), |v| gate(v) == "open-vpn")
        .unwrap();
    eprintln!(
        "ext-a: open through the VPN after {took:?}: {}",
        st["interfaces"][0]
    );
    assert_eq!(st["interfaces"][0]["mode"], "cvc", "{st}");
    let tia = st["tia"].as_str().unwrap().to_string();
    assert!(tia.starts_with("10.99.0."), "TIA from the pool: {st}");
    // Both home agents hold the right care-of address.
    let x = ml.xha_status().unwrap();
    assert!(
        x.to_string().contains(&Segment::ExtA.mn_addr().to_string())
            && x.to_string().contains(&MN_XHOME.to_string()),
        "x-HA binding: {x}"
    );
    let i = ml.ha_status().unwrap();
    assert!(i.to_string().contains(&tia), "i-HA binding to the TIA: {i}");
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)),
        "user data through x-MIP + ESP + i-MIP:\n{}",
        ml.lab.log_tail("mn", 30)
    );
    let tuns = one_tun_and_no_tia_device(&ml, &tia);
    eprintln!("ext-a: the node's only TUN: {}", tuns[0]);
    assert_eq!(
        st["vpn"]["state"], "established",
        "the session in process: {st}"
    );
    let st = ml.mn_status().unwrap();
    assert!(mip::get_u64(&st, &["counters", "tx_packets"]) > 0, "{st}");
    assert!(mip::get_u64(&st, &["counters", "rx_packets"]) > 0, "{st}");
    // A full-size datagram (1380 octets at the home address's MTU) crosses all three
    // layers without a fragment anywhere (the MTU arithmetic in mn_vpn.rs).
    assert!(
        big_echo_ok(&ml, 1380 - 28),
        "a 1380-octet datagram through cvc"
    );
    // On the wire outside: x-MIP to the x-HA carrying ESP, and not one packet with an
    // intranet address in the clear at any layer (tshark decodes IP-in-IP).
    std::thread::sleep(Duration::from_millis(300));
    enterprise::stop_captures(&mut ml.lab);
    let ext_a = pcaps.join("ext-a.pcap");
    let esp_in_xmip = count(&ext_a, "ip.proto == 4 && esp");
    // MN-6: the one plaintext message that names the intranet is the detection
    // request to the i-HA itself (authenticated; the border firewall drops it).
    let leak =
        "ip.addr == 10.0.0.0/8 && !(ip.dst == 10.10.0.1 && udp.dstport == 434 && mip.type == 1)";
    let clear = count(&ext_a, leak);
    let bad = tshark(
        &ext_a,
        &["-Y", "_ws.malformed || _ws.expert.severity >= \"Warning\""],
    );
    eprintln!("ext-a capture: {esp_in_xmip} ESP frames inside x-MIP, {clear} with an intranet address in the clear");
    assert!(esp_in_xmip > 0, "no ESP inside x-MIP on ext-a");
    assert_eq!(
        clear,
        0,
        "intranet addresses in the clear on ext-a:\n{}",
        tshark(&ext_a, &["-Y", leak, "-V"])
    );
    assert!(bad.trim().is_empty(), "tshark flags frames:\n{bad}");
    // With the key log of the VPN client, tshark decrypts the ESP inside x-MIP and
    // finds the i-MIP IP-in-IP from the TIA to the i-HA with the user's datagrams
    // (home address to the CN) inside: the three layers, as an independent decoder
    // sees them.
    let mut opts = lab::roam::tshark_esp_opts(&ml.lab);
    assert!(opts.len() > 2, "no ESP keys logged");
    opts.extend(["-Y".to_string(), format!("esp && ip.src == {tia} && ip.dst == 10.10.0.1 && ip.addr == 10.10.0.100 && ip.addr == 10.40.0.10")]);
    let args: Vec<&str> = opts.iter().map(String::as_str).collect();
    let decrypted = tshark(&ext_a, &args).lines().count();
    eprintln!("ext-a: {decrypted} user frames found inside ESP inside x-MIP after decryption");
    assert!(
        decrypted > 0,
        "tshark found no i-MIP/user packet inside the ESP"
    );
    let frags = count(&ext_a, "ip.flags.mf == 1 || ip.frag_offset > 0");
    assert_eq!(frags, 0, "fragments on ext-a");
    let biggest = tshark(&ext_a, &["-T", "fields", "-e", "frame.len"])
        .lines()
        .filter_map(|l| l.trim().parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    // RFC 5265 section 5.2, for the negotiated suite (AES-GCM: 8-octet IV, 16-octet
    // ICV, 4-octet alignment): i-MIP 20 + ESP (IP 20, SPI+sequence+IV 16, padding
    // 2 + pad length and next header 2, ICV 16) + x-MIP 20, plus 8 for ESP in UDP
    // when the client uses port 4500. The 1380-octet datagram is the largest frame.
    let esp = 20 + 16 + 2 + 2 + 16;
    let overhead = biggest - 14 - 1380;
    eprintln!("ext-a: largest frame {biggest} octets: cvc overhead {overhead} octets per packet");
    assert!(
        overhead == 20 + esp + 20 || overhead == 20 + esp + 8 + 20,
        "cvc overhead {overhead} octets (largest frame {biggest})"
    );

    // Back inside: the i-HA proves int-a, the VPN goes, data flows directly.
    ml.lab.move_mn(Segment::IntA).unwrap();
    let (st, took) = ml
        .wait_mn(Duration::from_secs(10), |v| {
            gate(v) == "open-inside" && v["vpn_running"] == false
        })
        .unwrap();
    eprintln!("int-a: inside after {took:?}");
    assert_eq!(st["interfaces"][0]["mode"], "c", "{st}");
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)));
}

/// MN-11 and RFC 3519 on the outer layer: from ext-a to ext-nat (a hotel NAT) and
/// back, the VPN keeps its IKE SA (one x-HA re-registration per move, no IKE), x-MIP
/// goes over UDP behind the NAT, and user data flows after each move.
#[test]
fn cvc_moves_between_outside_networks_without_ike() {
    let Some(_g) = lab_lock_needing("cvc_moves_between_outside_networks_without_ike", STRONGSWAN)
    else {
        return;
    };
    let mut ml = MipLab::start_enterprise(&exe(), GwAuth::Psk, Outside::Xmip).unwrap();
    ml.lab.move_mn(Segment::ExtA).unwrap();
    let (st, _) = ml
        .wait_mn(Duration::from_secs(20), |v| gate(v) == "open-vpn")
        .unwrap();
    let tia = st["tia"].clone();
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)));
    for seg in [Segment::ExtNat, Segment::ExtA, Segment::ExtNat] {
        ml.lab.move_mn(seg).unwrap();
        let (st, took) = ml
            .wait_mn(Duration::from_secs(20), |v| {
                gate(v) == "open-vpn" && v["care_of"] == seg.mn_addr().to_string()
            })
            .unwrap();
        eprintln!(
            "{}: open through the VPN {took:?} after the move: x-MIP over {}",
            seg.name(),
            if st["interfaces"][0]["last_change"].is_string() {
                "the new care-of address"
            } else {
                "?"
            }
        );
        assert_eq!(
            st["counters"]["vpn_starts"], 1,
            "no new IKE after a move outside: {st}"
        );
        assert_eq!(st["tia"], tia, "the TIA is kept: {st}");
        assert!(
            ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)),
            "user data after the move to {}:\n{}",
            seg.name(),
            ml.lab.log_tail("mn", 30)
        );
    }
    let x = ml.xha_status().unwrap();
    assert!(
        x.to_string().contains("\"tunnel\":\"udp\""),
        "behind the NAT the x-HA tunnels over UDP: {x}"
    );
}

/// Mode mc (RFC 5266): no x-HA; IKE from the care-of address, the TIA registered
/// with the i-HA through the tunnel, and on a move between outside networks one
/// MOBIKE update (no new IKE) with user data flowing after it.
#[test]
fn mc_with_mobike_across_outside_networks() {
    let Some(_g) = lab_lock_needing("mc_with_mobike_across_outside_networks", STRONGSWAN) else {
        return;
    };
    let mut ml = MipLab::start_enterprise(&exe(), GwAuth::Psk, Outside::Mobike).unwrap();
    ml.lab.move_mn(Segment::ExtA).unwrap();
    let (st, took) = ml
        .wait_mn(Duration::from_secs(20), |v| gate(v) == "open-vpn")
        .unwrap();
    eprintln!("ext-a: mc open after {took:?}");
    assert_eq!(st["interfaces"][0]["mode"], "mc", "{st}");
    let tia = st["tia"].clone();
    one_tun_and_no_tia_device(&ml, tia.as_str().unwrap());
    // (In mc the node may start IKE at once, in parallel with the i-HA request,
    // and keep the IKE SA inside: count from here.)
    let starts = st["counters"]["vpn_starts"].clone();
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)));
    ml.lab.move_mn(Segment::ExtNat).unwrap();
    let (st, took) = ml
        .wait_mn(Duration::from_secs(20), |v| {
            gate(v) == "open-vpn" && v["care_of"] == Segment::ExtNat.mn_addr().to_string()
        })
        .unwrap();
    eprintln!("ext-nat: mc open after {took:?} (MOBIKE)");
    assert_eq!(
        st["counters"]["vpn_starts"],
        starts,
        "MOBIKE, not a new IKE: {st}\n{}",
        ml.lab.log_tail("mn", 60)
    );
    assert_eq!(st["tia"], tia, "{st}");
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)),
        "{}",
        ml.lab.log_tail("mn", 30)
    );
    // Back inside: the i-HA proves int-a and user data goes directly.
    ml.lab.move_mn(Segment::IntA).unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| gate(v) == "open-inside")
        .unwrap();
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)));
}

/// Mode fvc: on ext-b (no addresses, only the x-FA) the node registers with the
/// x-HA through the x-FA, which reverse-tunnels the VPN's packets from the x-home
/// address; user data flows through the VPN, and moving from ext-a (cvc) to ext-b
/// and back costs no IKE.
#[test]
fn fvc_through_the_external_foreign_agent() {
    let Some(_g) = lab_lock_needing("fvc_through_the_external_foreign_agent", STRONGSWAN) else {
        return;
    };
    let mut ml = MipLab::start_enterprise(&exe(), GwAuth::Psk, Outside::Xmip).unwrap();
    ml.lab.move_mn(Segment::ExtA).unwrap();
    let (st, _) = ml
        .wait_mn(Duration::from_secs(20), |v| gate(v) == "open-vpn")
        .unwrap();
    let starts = st["counters"]["vpn_starts"].clone();
    for (seg, mode) in [(Segment::ExtB, "fvc"), (Segment::ExtA, "cvc")] {
        ml.lab.move_mn(seg).unwrap();
        let (st, took) = ml
            .wait_mn(Duration::from_secs(20), |v| {
                gate(v) == "open-vpn" && v["interfaces"][0]["mode"] == mode
            })
            .unwrap_or_else(|e| {
                panic!(
                    "{e}\n{}\nx-FA: {:?}\nx-HA: {:?}\n{}",
                    ml.lab.log_tail("mn", 40),
                    mip::status(&ml.lab.exe, &ml.lab.dir.join("xfa.sock")),
                    ml.xha_status(),
                    ml.lab.log_tail("xfa", 20)
                )
            });
        eprintln!("{}: {mode} open {took:?} after the move", seg.name());
        assert_eq!(st["counters"]["vpn_starts"], starts, "no new IKE: {st}");
        assert!(
            ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)),
            "user data in {mode}:\n{}",
            ml.lab.log_tail("mn", 40)
        );
    }
}

/// Inside through a foreign agent (int-b, mode f) with an outside flavour configured:
/// the i-HA's reply relayed by the agent proves the link, and user data flows
/// natively through the agent; then back out (ext-a, cvc).
#[test]
fn mode_f_inside_with_xmip_configured() {
    let Some(_g) = lab_lock_needing("mode_f_inside_with_xmip_configured", STRONGSWAN) else {
        return;
    };
    let mut ml = MipLab::start_enterprise(&exe(), GwAuth::Psk, Outside::Xmip).unwrap();
    ml.lab.move_mn(Segment::IntB).unwrap();
    let (_, took) = ml
        .wait_mn(Duration::from_secs(10), |v| {
            gate(v) == "open-inside" && v["interfaces"][0]["mode"] == "f"
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", ml.lab.log_tail("mn", 40)));
    eprintln!("int-b: mode f open {took:?} after the move");
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)));
    ml.lab.move_mn(Segment::ExtA).unwrap();
    ml.wait_mn(Duration::from_secs(20), |v| gate(v) == "open-vpn")
        .unwrap();
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)));
}

/// The node's executable is replaced while it runs (a package upgrade: the old file
/// is unlinked, a new one put in its place). When the VPN ran as a child process the
/// node spawned the path, which then named a deleted file, and every start outside
/// failed with ENOENT (27 failed starts and an unrecovered move in a soak whose binary
/// was rebuilt under it). The session now runs in process; this keeps the outside
/// start independent of the file on disk.
#[test]
fn vpn_client_starts_after_the_executable_was_replaced() {
    let Some(_g) = lab_lock_needing(
        "vpn_client_starts_after_the_executable_was_replaced",
        STRONGSWAN,
    ) else {
        return;
    };
    let mut ml = lab::transit::start_lab(
        &exe(),
        GwAuth::Psk,
        Outside::Xmip,
        lab::transit::Start::Home,
        "",
    )
    .unwrap();
    let copy = ml.lab.dir.join("mipsec-lab-old");
    std::fs::copy(exe(), &copy).unwrap();
    ml.lab.exe = copy.clone();
    ml.start_mn().unwrap();
    ml.lab.exe = exe();
    std::fs::remove_file(&copy).unwrap();
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(10)));
    ml.lab.move_mn(Segment::ExtA).unwrap();
    let (st, took) = ml
        .wait_mn(Duration::from_secs(20), |v| gate(v) == "open-vpn")
        .unwrap_or_else(|e| panic!("no VPN after the upgrade: {e}"));
    eprintln!(
        "open through the VPN after {took:?}: {}",
        st["interfaces"][0]
    );
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)));
}
