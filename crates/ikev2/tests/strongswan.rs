#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
//! Interoperability with an unmodified strongSwan 5.9.8 (charon) gateway.
//!
//! Runs charon in a fresh network namespace (root needed), our initiator with real UDP
//! sockets in a second namespace joined by a veth pair, and checks that both ends agree:
//! SA up, CP address, CHILD_SA SPIs and keys equal to what charon installed in XFRM, rekeying
//! from both sides, liveness, delete. Fails when it cannot run unless MIPSEC_SKIP_LAB=1.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ikev2::wire::{DhId, Identification};
use ikev2::{Config, Event, IkeProposal, Initiator};

const CL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const PSK: &str = "correct horse battery staple";

use testsupport::{fresh_prefix, in_ns, sh, Charon, Inside, Topology};

/// charon in `<prefix>gw`, our initiator in `<prefix>cl` (see `testsupport::Topology`).
struct Lab {
    dir: std::path::PathBuf,
    charon: Option<Charon>,
    topo: Topology,
}

impl Drop for Lab {
    fn drop(&mut self) {
        // charon goes first, then the namespaces (`topo`, dropped after this).
        drop(self.charon.take());
        // Keep charon's log when the test failed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Lab {
    fn cl(&self) -> String {
        self.topo.cl()
    }
    fn charon(&self) -> &Charon {
        self.charon.as_ref().expect("charon runs")
    }
    fn swanctl(&self, args: &[&str]) -> String {
        self.charon().swanctl(args).unwrap()
    }
    /// swanctl commands that wait for an exchange (terminate) run in the background while
    /// the client keeps answering.
    fn swanctl_bg(&self, args: &[&str]) -> std::process::Child {
        self.charon().swanctl_bg(args).unwrap()
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }

    /// `tag` keeps parallel tests apart; with `nat` the client sits behind a masquerading
    /// router namespace.
    fn up(tag: &str, swanctl_conf: &str, charon_extra: &str, nat: bool) -> Result<Lab, String> {
        Self::up_with(tag, swanctl_conf, charon_extra, nat, &[])
    }

    /// As `up`, with extra files (path relative to the swanctl.conf directory, contents),
    /// e.g. private keys in `pkcs8/`.
    fn up_with(
        tag: &str,
        swanctl_conf: &str,
        charon_extra: &str,
        nat: bool,
        files: &[(&str, Vec<u8>)],
    ) -> Result<Lab, String> {
        let dir =
            std::env::temp_dir().join(format!("ikev2-strongswan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let topo = Topology::build(&fresh_prefix("ik", tag), nat, Inside::Loopback)?;
        let mut lab = Lab {
            dir: dir.clone(),
            charon: None,
            topo,
        };
        let d = dir.display();
        let conf = format!(
            "charon {{\n install_routes = no\n retransmit_timeout = 1.0\n {charon_extra}\n plugins {{ vici {{ socket = unix://{d}/charon.vici }}\n forecast {{ load = no }}\n farp {{ load = no }}\n bypass-lan {{ load = no }}\n dhcp {{ load = no }}\n tpm {{ load = no }} }}\n \
             filelog {{ log {{ path = {d}/charon.log\n flush_line = yes\n default = 1\n ike = 2\n cfg = 1\n chd = 4 }} }}\n syslog {{ daemon {{ default = -1 }} }}\n}}\n"
        );
        std::fs::write(dir.join("strongswan.conf"), conf).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("swanctl.conf"), swanctl_conf).map_err(|e| e.to_string())?;
        for (rel, data) in files {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(path, data).map_err(|e| e.to_string())?;
        }
        lab.charon = Some(Charon::start(&lab.topo.gw(), &dir)?);
        Ok(lab)
    }
}

/// Bind a UDP socket inside network namespace `ns` (a thread joins it for the bind).
fn bind_in(ns: &str, addr: SocketAddr) -> UdpSocket {
    in_ns(ns, move || UdpSocket::bind(addr).unwrap())
        .join()
        .unwrap()
}

struct Client {
    ike: Initiator,
    socks: Vec<UdpSocket>,
    events: Vec<Event>,
}

impl Client {
    /// Run the real-time loop until `done` holds for the collected events, or `limit` passes.
    fn drive(&mut self, limit: Duration, done: impl Fn(&[Event]) -> bool) {
        let end = Instant::now() + limit;
        let mut buf = [0u8; 65536];
        while Instant::now() < end {
            while let Some(t) = self.ike.poll_transmit() {
                let s = self
                    .socks
                    .iter()
                    .find(|s| s.local_addr().ok() == Some(t.src))
                    .unwrap_or_else(|| panic!("no socket for {}", t.src));
                s.send_to(&t.payload, t.dst).unwrap();
            }
            while let Some(e) = self.ike.poll_event() {
                self.events.push(e);
            }
            if done(&self.events) {
                return;
            }
            for s in &self.socks {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let to = s.local_addr().unwrap();
                    self.ike
                        .handle_datagram(Instant::now(), from, to, &buf[..n]);
                }
            }
            if self.ike.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                self.ike.handle_timeout(Instant::now());
            }
        }
    }
}

fn need_lab() -> bool {
    if testsupport::is_root() && std::path::Path::new("/usr/lib/ipsec/charon").exists() {
        return true;
    }
    if std::env::var("MIPSEC_SKIP_LAB").as_deref() == Ok("1") {
        eprintln!(
            "SKIP: strongSwan interop needs root and /usr/lib/ipsec/charon (MIPSEC_SKIP_LAB=1)"
        );
        return false;
    }
    panic!("strongSwan interop needs root and charon (scripts/install-deps.sh); MIPSEC_SKIP_LAB=1 skips");
}

fn client_config() -> Config {
    let mut cfg = Config::psk(PSK.as_bytes(), Identification::fqdn("client.example"));
    cfg.remote_id = Some(Identification::fqdn("gw.example"));
    cfg.request_vip = true;
    cfg.ike_proposals = vec![IkeProposal::aes_gcm_256(&[
        DhId::CURVE25519,
        DhId::ECP_256,
        DhId::MODP_2048,
    ])];
    cfg.retransmit.base = Duration::from_millis(500);
    cfg
}

impl Client {
    fn start(lab: &Lab, cfg: Config, ip: Ipv4Addr) -> Client {
        let socks: Vec<UdpSocket> = [500, 4500]
            .into_iter()
            .map(|port| bind_in(&lab.cl(), SocketAddr::new(ip.into(), port)))
            .collect();
        for s in &socks {
            s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        }
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&std::process::id().to_be_bytes());
        seed[4] = ip.octets()[3];
        let ike = Initiator::new(
            cfg,
            SocketAddr::new(ip.into(), 500),
            SocketAddr::new(GW.into(), 500),
            seed,
            Instant::now(),
        );
        Client {
            ike,
            socks,
            events: Vec::new(),
        }
    }

    fn add_socket(&mut self, lab: &Lab, addr: SocketAddr) {
        let s = bind_in(&lab.cl(), addr);
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        self.socks.push(s);
    }

    fn child(&self) -> Option<ikev2::ChildSaInfo> {
        self.events.iter().find_map(|e| match e {
            Event::ChildSaUp(ci) => Some(ci.clone()),
            _ => None,
        })
    }
}

fn has(events: &[Event], f: impl Fn(&Event) -> bool) -> bool {
    events.iter().any(f)
}

const GW_CONF: &str = r#"
connections {
  rw {
    local_addrs = 192.0.2.2
    pools = p4
    dpd_delay = 2s
    local { auth = psk
            id = gw.example }
    remote { auth = psk
             id = client.example }
    children { net { local_ts = 10.1.0.0/16
                     esp_proposals = aes128gcm16,aes256gcm16,aes128-sha256 } }
  }
}
pools { p4 { addrs = 10.99.0.0/24
             dns = 10.99.0.1 } }
secrets { ike-a { id-a = client.example
                  id-b = gw.example
                  secret = "correct horse battery staple" } }
"#;

#[test]
fn strongswan_598_gateway_interop() {
    if !testsupport::is_root() || !std::path::Path::new("/usr/lib/ipsec/charon").exists() {
        if std::env::var("MIPSEC_SKIP_LAB").as_deref() == Ok("1") {
            eprintln!(
                "SKIP: strongSwan interop needs root and /usr/lib/ipsec/charon (MIPSEC_SKIP_LAB=1)"
            );
            return;
        }
        panic!("strongSwan interop needs root and charon (scripts/install-deps.sh); MIPSEC_SKIP_LAB=1 skips");
    }
    let lab = Lab::up("a", GW_CONF, "", false).unwrap();
    let mut c = Client::start(&lab, client_config(), CL);
    // 1. IKE_SA_INIT (+ INVALID_KE if charon prefers another group) and IKE_AUTH.
    c.drive(Duration::from_secs(10), |e| {
        has(e, |x| {
            matches!(x, Event::ChildSaUp(_) | Event::IkeSaDown { .. })
        })
    });
    let child = c
        .events
        .iter()
        .find_map(|e| match e {
            Event::ChildSaUp(ci) => Some(ci.clone()),
            _ => None,
        })
        .unwrap_or_else(|| {
            panic!(
                "no CHILD_SA: {:?} {:?}\n{}",
                c.events,
                c.ike.stats(),
                lab.log()
            )
        });
    let sas = lab.swanctl(&["--list-sas"]);
    assert!(sas.contains("ESTABLISHED"), "{sas}");
    let (spi_i, _) = c.ike.spis();
    assert!(sas.contains(&format!("{spi_i:016x}")), "{sas}");
    assert_eq!(child.tia, Some(Ipv4Addr::new(10, 99, 0, 1)), "{sas}");
    assert!(sas.contains("10.99.0.1"), "{sas}");
    assert_eq!(child.dns, vec![Ipv4Addr::new(10, 99, 0, 1)]);
    assert_eq!(
        child.ts_remote,
        vec![ikev2::wire::TrafficSelector::ipv4_range(
            Ipv4Addr::new(10, 1, 0, 0),
            Ipv4Addr::new(10, 1, 255, 255)
        )]
    );
    // charon derived the same CHILD_SA: SPIs and KEYMAT (key | salt for AES-GCM) from its
    // CHD level-4 log (the sandbox kernel has no XFRM crypto, so charon runs libipsec).
    let log = lab.log();
    assert!(
        log.contains(&format!(
            "established with SPIs {:08x}_i {:08x}_o",
            child.spi_out, child.spi_in
        )),
        "{log}"
    );
    assert_eq!(
        logged_key(&log, "encryption initiator key"),
        child.encr_key_out
    );
    assert_eq!(
        logged_key(&log, "encryption responder key"),
        child.encr_key_in
    );

    // 2. We rekey the CHILD_SA.
    c.ike.rekey_child(Instant::now(), child.spi_in);
    c.drive(Duration::from_secs(10), |e| {
        has(
            e,
            |x| matches!(x, Event::ChildSaDown { spi_in, .. } if *spi_in == child.spi_in),
        )
    });
    assert!(
        has(
            &c.events,
            |x| matches!(x, Event::ChildSaRekeyed { old_spi_in, .. } if *old_spi_in == child.spi_in)
        ),
        "{:?}\n{}",
        c.events,
        lab.log()
    );
    // 3. strongSwan rekeys the CHILD_SA.
    c.events.clear();
    lab.swanctl(&["--rekey", "--child", "net"]);
    c.drive(Duration::from_secs(10), |e| {
        has(e, |x| matches!(x, Event::ChildSaDown { .. }))
    });
    assert!(
        has(&c.events, |x| matches!(x, Event::ChildSaRekeyed { .. })),
        "{:?}\n{}",
        c.events,
        lab.log()
    );
    // 4. We rekey the IKE SA, then strongSwan does.
    c.events.clear();
    c.ike.rekey_ike(Instant::now());
    c.drive(Duration::from_secs(10), |e| {
        has(e, |x| matches!(x, Event::IkeSaRekeyed { .. }))
    });
    assert!(
        has(&c.events, |x| matches!(x, Event::IkeSaRekeyed { .. })),
        "{:?}\n{}",
        c.events,
        lab.log()
    );
    c.drive(Duration::from_secs(1), |_| false);
    let (new_i, _) = c.ike.spis();
    let sas = lab.swanctl(&["--list-sas"]);
    assert!(
        sas.contains(&format!("{new_i:016x}")) && !sas.contains(&format!("{spi_i:016x}")),
        "{sas}"
    );
    c.events.clear();
    lab.swanctl(&["--rekey", "--ike", "rw"]);
    c.drive(Duration::from_secs(10), |e| {
        has(e, |x| matches!(x, Event::IkeSaRekeyed { .. }))
    });
    assert!(
        has(&c.events, |x| matches!(x, Event::IkeSaRekeyed { .. })),
        "{:?}\n{}",
        c.events,
        lab.log()
    );
    // 5. charon's DPD (2 s) and ours are answered; the SA survives a few seconds.
    c.events.clear();
    c.ike.check_liveness(Instant::now());
    c.drive(Duration::from_secs(5), |_| false);
    assert!(
        !has(&c.events, |x| matches!(x, Event::IkeSaDown { .. })),
        "{:?}\n{}",
        c.events,
        lab.log()
    );
    let log = lab.log();
    assert!(
        !log.contains("retransmit"),
        "charon had to retransmit:\n{log}"
    );
    // 6. Delete.
    c.ike.close(Instant::now());
    c.drive(Duration::from_secs(5), |e| {
        has(e, |x| matches!(x, Event::IkeSaDown { .. }))
    });
    assert!(
        has(&c.events, |x| matches!(
            x,
            Event::IkeSaDown { error: None, .. }
        )),
        "{:?}",
        c.events
    );
    std::thread::sleep(Duration::from_millis(300));
    let sas = lab.swanctl(&["--list-sas"]);
    assert!(!sas.contains("ESTABLISHED"), "{sas}");
    assert_eq!(
        c.ike.stats().dropped_integrity + c.ike.stats().dropped_malformed,
        0,
        "{:?}",
        c.ike.stats()
    );
}

/// The first hex dump charon logged under `label` ("... => N bytes @ 0x..", then lines of
/// "  offset: XX XX ..").
fn logged_key(log: &str, label: &str) -> Vec<u8> {
    let mut lines = log
        .lines()
        .skip_while(|l| !l.contains(&format!("{label} =>")));
    let head = lines.next().unwrap_or_else(|| panic!("{label} not logged"));
    let n: usize = head
        .split("=> ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut out = Vec::new();
    for l in lines {
        let Some((_, dump)) = l.split_once(": ") else {
            break;
        };
        for h in dump.split_whitespace().take(16) {
            if out.len() < n && h.len() == 2 {
                if let Ok(b) = u8::from_str_radix(h, 16) {
                    out.push(b);
                }
            }
        }
        if out.len() >= n {
            break;
        }
    }
    assert_eq!(out.len(), n, "{label}");
    out
}

const GW_CONF_CBC_MODP: &str = r#"
connections {
  rw {
    local_addrs = 192.0.2.2
    pools = p4
    fragmentation = yes
    proposals = aes128-sha256-modp2048
    local { auth = psk
            id = gw.example }
    remote { auth = psk
             id = client.example }
    children { net { local_ts = 10.1.0.0/16
                     esp_proposals = aes128-sha256-modp2048 } }
  }
}
pools { p4 { addrs = 10.99.0.0/24 } }
secrets { ike-a { id-a = client.example
                  id-b = gw.example
                  secret = "correct horse battery staple" } }
"#;

/// Behind a real (nft masquerade) NAT, with charon insisting on AES-CBC/SHA-256/MODP-2048
/// (our X25519 KE is refused with INVALID_KE_PAYLOAD) and both sides fragmenting.
#[test]
fn strongswan_nat_invalid_ke_cbc_fragmentation() {
    if !need_lab() {
        return;
    }
    let lab = Lab::up("n", GW_CONF_CBC_MODP, "fragment_size = 300", true).unwrap();
    let mut cfg = client_config();
    cfg.ike_proposals = vec![
        IkeProposal::aes_gcm_256(&[DhId::CURVE25519]),
        IkeProposal::aes_cbc_128_sha256(&[DhId::CURVE25519, DhId::MODP_2048]),
    ];
    // PFS: we offer groups 19 then 14 with a group-19 KE; charon wants 14 ->
    // INVALID_KE_PAYLOAD on our rekey, then we retry with 14.
    let mut esp19 = ikev2::EspProposal::aes_cbc_128_sha256();
    esp19.pfs = Some(DhId::ECP_256);
    let mut esp14 = esp19.clone();
    esp14.pfs = Some(DhId::MODP_2048);
    cfg.esp_proposals = vec![esp19, esp14];
    cfg.fragment_size = 200;
    let mut c = Client::start(&lab, cfg, Ipv4Addr::new(192, 168, 1, 2));
    c.drive(Duration::from_secs(15), |e| {
        has(e, |x| {
            matches!(x, Event::ChildSaUp(_) | Event::IkeSaDown { .. })
        })
    });
    let log = lab.log();
    let child = c.child().unwrap_or_else(|| panic!("{:?}\n{log}", c.events));
    assert!(
        log.contains(
            "selected proposal: IKE:AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048"
        ),
        "{log}"
    );
    assert!(
        log.contains("received fragment #1"),
        "charon reassembled our IKE_AUTH:\n{log}"
    );
    match &c.events[0] {
        Event::IkeSaUp {
            local_nat, local, ..
        } => assert!(*local_nat && local.port() == 4500, "{:?}", c.events),
        e => panic!("{e:?}"),
    }
    assert!(child.udp_encap);
    assert_eq!(child.encr_key_in.len(), 16);
    assert_eq!(child.integ_key_in.len(), 32);
    assert_eq!(
        logged_key(&log, "encryption initiator key"),
        child.encr_key_out
    );
    assert_eq!(
        logged_key(&log, "integrity responder key"),
        child.integ_key_in
    );
    // the gateway sees us at the router's address
    let sas = lab.swanctl(&["--list-sas"]);
    assert!(sas.contains("@ 192.0.2.1[4500]"), "{sas}");
    c.ike.rekey_child(Instant::now(), child.spi_in);
    c.drive(Duration::from_secs(10), |e| {
        has(e, |x| matches!(x, Event::ChildSaDown { .. }))
    });
    assert!(
        has(&c.events, |x| matches!(x, Event::ChildSaRekeyed { .. })),
        "{:?}\n{}",
        c.events,
        lab.log()
    );
    let log = lab.log();
    assert!(
        log.contains("INVALID_KE_PAYLOAD") || log.contains("N(INVAL_KE)"),
        "{log}"
    );
    // charon rekeys with PFS (KE group 14) and we answer.
    c.events.clear();
    lab.swanctl(&["--rekey", "--child", "net"]);
    c.drive(Duration::from_secs(10), |e| {
        has(e, |x| matches!(x, Event::ChildSaDown { .. }))
    });
    assert!(
        has(&c.events, |x| matches!(x, Event::ChildSaRekeyed { .. })),
        "{:?}\n{}",
        c.events,
        lab.log()
    );
    assert!(
        lab.log()
            .contains("parsed CREATE_CHILD_SA response 3 [ SA No KE TSi TSr ]")
            || lab.log().contains("[ SA No KE TSi TSr ]"),
        "{}",
        lab.log()
    );
    c.ike.close(Instant::now());
    c.drive(Duration::from_secs(5), |e| {
        has(e, |x| matches!(x, Event::IkeSaDown { .. }))
    });
    assert!(
        has(&c.events, |x| matches!(
            x,
            Event::IkeSaDown { error: None, .. }
        )),
        "{:?}",
        c.events
    );
}

/// MOBIKE: the client moves to a new address; charon follows (RFC 4555 UPDATE_SA_ADDRESSES).
#[test]
fn strongswan_mobike_address_change() {
    if !need_lab() {
        return;
    }
    let lab = Lab::up("m", GW_CONF, "", false).unwrap();
    let mut c = Client::start(&lab, client_config(), CL);
    c.drive(Duration::from_secs(10), |e| {
        has(e, |x| {
            matches!(x, Event::ChildSaUp(_) | Event::IkeSaDown { .. })
        })
    });
    assert!(c.child().is_some(), "{:?}\n{}", c.events, lab.log());
    sh(&[
        "ip",
        "-n",
        &lab.cl(),
        "addr",
        "add",
        "192.0.2.3/24",
        "dev",
        &format!("{}a", lab.topo.prefix),
    ])
    .unwrap();
    std::thread::sleep(Duration::from_millis(300)); // DAD-free for IPv4, but let the address settle
    let new_local = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 3).into(), 4500);
    c.add_socket(&lab, new_local);
    assert!(c.ike.update_addresses(Instant::now(), new_local, None));
    c.drive(Duration::from_secs(10), |e| {
        has(e, |x| matches!(x, Event::AddressesUpdated { .. }))
    });
    assert!(
        has(
            &c.events,
            |x| matches!(x, Event::AddressesUpdated { local, .. } if *local == new_local)
        ),
        "{:?}\n{}",
        c.events,
        lab.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let sas = lab.swanctl(&["--list-sas"]);
    assert!(sas.contains("@ 192.0.2.3[4500]"), "{sas}\n{}", lab.log());
    // still alive on the new path
    c.ike.check_liveness(Instant::now());
    c.drive(Duration::from_secs(3), |_| false);
    assert!(
        !has(&c.events, |x| matches!(x, Event::IkeSaDown { .. })),
        "{:?}",
        c.events
    );
    // The gateway deletes the CHILD_SA, then the IKE SA.
    c.events.clear();
    let spis: Vec<u32> = c.ike.child_sas().iter().map(|x| x.spi_in).collect();
    assert_eq!(spis.len(), 1, "{:?}", c.ike.child_sas());
    let mut cmd = lab.swanctl_bg(&["--terminate", "--child", "net"]);
    c.drive(Duration::from_secs(5), |e| {
        has(e, |x| matches!(x, Event::ChildSaDown { .. }))
    });
    assert!(
        has(
            &c.events,
            |x| matches!(x, Event::ChildSaDown { spi_in, .. } if *spi_in == spis[0])
        ),
        "{:?}\n{}",
        c.events,
        lab.log()
    );
    assert!(c.ike.child_sas().is_empty());
    c.drive(Duration::from_millis(500), |_| false);
    assert!(cmd.wait().unwrap().success());
    let mut cmd = lab.swanctl_bg(&["--terminate", "--ike", "rw"]);
    c.drive(Duration::from_secs(5), |e| {
        has(e, |x| matches!(x, Event::IkeSaDown { .. }))
    });
    assert!(
        has(&c.events, |x| matches!(
            x,
            Event::IkeSaDown { error: None, .. }
        )),
        "{:?}\n{}",
        c.events,
        lab.log()
    );
    assert!(c.ike.is_closed());
    assert!(cmd.wait().unwrap().success());
    assert!(!lab.log().contains("retransmit"), "{}", lab.log());
}

#[test]
fn strongswan_rejects_wrong_psk() {
    if !need_lab() {
        return;
    }
    let lab = Lab::up("w", GW_CONF, "", false).unwrap();
    let mut cfg = client_config();
    cfg.psk = b"not the secret".to_vec();
    let mut c = Client::start(&lab, cfg, CL);
    c.drive(Duration::from_secs(10), |e| {
        has(e, |x| matches!(x, Event::IkeSaDown { .. }))
    });
    assert!(
        has(&c.events, |x| matches!(
            x,
            Event::IkeSaDown {
                error: Some(ikev2::IkeError::PeerNotify(
                    ikev2::wire::NotifyType::AUTHENTICATION_FAILED
                )),
                ..
            }
        )),
        "{:?}\n{}",
        c.events,
        lab.log()
    );
}

/// Certificates both ways: charon signs with an ECDSA P-256 certificate, we sign with RSA
/// (RFC 7427 digital signatures, negotiated with SIGNATURE_HASH_ALGORITHMS).
#[test]
fn strongswan_certificate_authentication() {
    if !need_lab() {
        return;
    }
    let d = format!("{}/tests/data", env!("CARGO_MANIFEST_DIR"));
    let conf = format!(
        r#"
connections {{
  rw {{
    local_addrs = 192.0.2.2
    pools = p4
    local {{ auth = pubkey
            certs = {d}/gw.der }}
    remote {{ auth = pubkey
             id = client.example }}
    children {{ net {{ local_ts = 10.1.0.0/16 }} }}
  }}
}}
authorities {{ testca {{ cacert = {d}/ca.der }} }}
pools {{ p4 {{ addrs = 10.99.0.0/24 }} }}
"#
    );
    let key = std::fs::read(format!("{d}/gw.key.p8")).unwrap();
    let lab = Lab::up_with("c", &conf, "", false, &[("pkcs8/gw.key.p8", key)]).unwrap();
    let mut cfg = client_config();
    cfg.psk.clear();
    cfg.local_cert = Some(ikev2::crypto::cert::LocalCert {
        cert_der: std::fs::read(format!("{d}/client.der")).unwrap(),
        key_pkcs8: std::fs::read(format!("{d}/client.key.p8")).unwrap(),
    });
    cfg.trust_anchors = vec![std::fs::read(format!("{d}/ca.der")).unwrap()];
    // charon identifies itself by its certificate's subject DN (no id configured); we accept
    // whatever identity the trusted certificate proves.
    cfg.remote_id = None;
    let mut c = Client::start(&lab, cfg, CL);
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    c.ike.set_unix_time(unix);
    c.drive(Duration::from_secs(10), |e| {
        has(e, |x| {
            matches!(x, Event::ChildSaUp(_) | Event::IkeSaDown { .. })
        })
    });
    let log = lab.log();
    assert!(c.child().is_some(), "{:?}\n{log}", c.events);
    assert!(
        log.contains("authentication of 'client.example' with RSA_EMSA_PKCS1_SHA2_256 successful"),
        "{log}"
    );
    assert!(
        log.contains("authentication of 'O=mipsec test, CN=gw.example' (myself) with ECDSA_WITH_SHA256_DER successful"),
        "{log}"
    );
}
