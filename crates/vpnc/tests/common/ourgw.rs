//! A minimal gateway made of our own pieces (`ikev2::Responder` + `esp` + a TUN), run in the
//! gateway namespace instead of charon. It exists to measure our client's ceiling with our
//! ESP at both ends, and to exercise plain ESP (IP protocol 50), which strongSwan 5.9.8's
//! libipsec never uses.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use esp::{InboundSa, OutboundSa, SaConfig, Sad, Suite, UdpInbound};
use ikev2::crypto::Encr;
use ikev2::wire::{Identification, TrafficSelector};
use ikev2::{ChildSaInfo, Config, EspProposal, Event, Responder};
use netio::{RawIp, RawIpOptions, Tun, TunOptions};
use tokio::net::UdpSocket;

use super::{sh, PSK};

pub struct OurGateway {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for OurGateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start our gateway in namespace `ns` on 192.0.2.2 (device `dev`), pool 10.99.0.0/24,
/// protecting 10.1.0.0/16.
pub fn spawn(ns: &str, dev: &str) -> OurGateway {
    let stop = Arc::new(AtomicBool::new(false));
    let (ns, dev, st) = (ns.to_string(), dev.to_string(), stop.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let f = File::open(format!("/run/netns/{ns}")).unwrap();
        // SAFETY: plain syscall on a valid fd; only this thread changes namespace.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(ns, dev, st, ready_tx));
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("our gateway did not start");
    OurGateway {
        stop,
        thread: Some(thread),
    }
}

fn install(sad: &mut Sad, c: &ChildSaInfo, now: Instant) -> Option<(OutboundSa, ChildSaInfo)> {
    let suite = match c.encr {
        Encr::AesGcm16 { key: 16 } => Suite::AesGcm128,
        Encr::AesGcm16 { key: 32 } => Suite::AesGcm256,
        _ => return None,
    };
    sad.insert(InboundSa::new(SaConfig::new(c.spi_in, suite), &c.encr_key_in, &[], now).ok()?);
    let out = OutboundSa::new(SaConfig::new(c.spi_out, suite), &c.encr_key_out, &[], now).ok()?;
    Some((out, c.clone()))
}

async fn run(ns: String, dev: String, stop: Arc<AtomicBool>, ready: std::sync::mpsc::Sender<()>) {
    // With TUN offloads, as the client: what it opens is merged into TCP super-packets
    // before the TUN (one write for many segments), and super-packets read from the TUN
    // are cut before sealing.
    let tun = Tun::open_with_offload(
        "ourgw0",
        &TunOptions {
            multi_queue: false,
            mtu: Some(1400),
            up: true,
        },
        netio::tun::TUN_F_CSUM | netio::tun::TUN_F_TSO4,
    )
    .unwrap();
    let mut dp = netio::datapath::DataPath::new(true);
    sh(&[
        "ip",
        "-n",
        &ns,
        "route",
        "add",
        "10.99.0.0/24",
        "dev",
        "ourgw0",
    ])
    .unwrap();
    let gw = Ipv4Addr::new(192, 0, 2, 2);
    let s500 = UdpSocket::bind(SocketAddrV4::new(gw, 500)).await.unwrap();
    let s4500 = UdpSocket::bind(SocketAddrV4::new(gw, 4500)).await.unwrap();
    for s in [&s500, &s4500] {
        let r = socket2::SockRef::from(s);
        let _ = r.set_recv_buffer_size(4 << 20);
        let _ = r.set_send_buffer_size(4 << 20);
    }
    // A burst of ESP in UDP in one receive (a GSO send crosses the veth whole).
    netio::udp::set_gro(&s4500, true).unwrap();
    let raw = RawIp::open_with(
        netio::raw::IPPROTO_ESP,
        &RawIpOptions {
            device: Some(dev),
            ..RawIpOptions::default()
        },
    )
    .unwrap();
    let mut cfg = Config::psk(PSK.as_bytes(), Identification::fqdn("gw.example"));
    cfg.remote_id = Some(Identification::fqdn("client.example"));
    cfg.vip_pool = Some((Ipv4Addr::new(10, 99, 0, 1), 200));
    cfg.dns = vec![Ipv4Addr::new(10, 99, 0, 1)];
    cfg.ts_local = vec![TrafficSelector::ipv4_range(
        Ipv4Addr::new(10, 1, 0, 0),
        Ipv4Addr::new(10, 1, 255, 255),
    )];
    let gcm = |key| EspProposal {
        encr: Encr::AesGcm16 { key },
        integ: None,
        esn: false,
        pfs: None,
    };
    cfg.esp_proposals = vec![gcm(32), gcm(16)];
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&std::process::id().to_be_bytes());
    let mut ike = Responder::new(cfg, seed);
    let mut sad = Sad::new();
    let mut out: Option<(OutboundSa, ChildSaInfo)> = None;
    let (mut b500, mut b4500, mut braw, mut btun) = (
        vec![0u8; 65536],
        vec![0u8; 65536],
        vec![0u8; 65536],
        vec![0u8; 65536 + netio::offload::VNET_HDR_LEN],
    );
    let mut sealed = Vec::with_capacity(65536);
    let mut gso = netio::udp::GsoBatch::new();
    let _ = ready.send(());
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let deadline = ike
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(100))
            .min(now + Duration::from_millis(100));
        tokio::select! {
            r = s500.recv_from(&mut b500) => if let Ok((n, from)) = r {
                ike.handle_datagram(now, from, SocketAddr::V4(SocketAddrV4::new(gw, 500)), &b500[..n]);
            },
            r = netio::udp::recv_with_meta(&s4500, &mut b4500) => if let Ok(mut m) = r {
                // A burst: up to 64 receives per wake-up, each with one or (GRO) more
                // datagrams of one flow.
                for _ in 0..64 {
                    let from = SocketAddr::V4(m.src);
                    for (at, d) in m.datagrams() {
                        let b = &mut b4500[at..at + d.len];
                        match sad.open_udp(now, b) {
                            Ok(UdpInbound::Ike(_)) => ike.handle_datagram(now, from, SocketAddr::V4(SocketAddrV4::new(gw, 4500)), b),
                            Ok(UdpInbound::Esp(o)) => { let _ = dp.write_tun(&tun, &b[o.payload]).await; }
                            _ => {}
                        }
                    }
                    match netio::udp::try_recv_with_meta(&s4500, &mut b4500) {
                        Ok(next) => m = next,
                        Err(_) => break,
                    }
                }
            },
            r = raw.recv_from(&mut braw) => if let Ok((mut n, _)) = r {
                // A burst: up to 64 datagrams per wake-up.
                for _ in 0..64 {
                    let ihl = usize::from(braw[0] & 0x0f) * 4;
                    if ihl >= 20 && ihl < n {
                        if let Ok(o) = sad.open(now, &mut braw[ihl..n]) {
                            let _ = dp.write_tun(&tun, &braw[ihl..n][o.payload]).await;
                        }
                    }
                    match raw.try_recv_from(&mut braw) {
                        Ok((m, _)) => n = m,
                        Err(_) => break,
                    }
                }
            },
            r = tun.recv(&mut btun) => if let Ok(n) = r {
                if let (Some((sa, c)), Ok(())) = (out.as_mut(), dp.take_tun_read(&btun[..n])) {
                    let SocketAddr::V4(peer) = c.remote else { continue };
                    // ESP in UDP of one read leaves in GSO sends, as our client's does.
                    for p in dp.packets().iter() {
                        if sa.seal(now, esp::NEXT_HEADER_IPV4, p, &mut sealed).is_ok() {
                            if c.udp_encap {
                                if !gso.push(&[], &sealed) {
                                    gso.send(&s4500, peer, None, true).await;
                                    gso.push(&[], &sealed);
                                }
                            } else {
                                let _ = raw.send_to(&sealed, *peer.ip()).await;
                            }
                        }
                    }
                    if !gso.is_empty() {
                        gso.send(&s4500, peer, None, true).await;
                    }
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                if ike.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                    ike.handle_timeout(Instant::now());
                }
            }
        }
        let _ = dp.flush_tun(&tun).await;
        while let Some(t) = ike.poll_transmit() {
            let s = if t.src.port() == 500 { &s500 } else { &s4500 };
            let _ = s.send_to(&t.payload, t.dst).await;
        }
        while let Some(ev) = ike.poll_event() {
            match ev {
                Event::ChildSaUp(c) | Event::ChildSaRekeyed { new: c, .. } => {
                    out = install(&mut sad, &c, Instant::now()).or(out);
                }
                Event::ChildSaDown { spi_in, .. } => {
                    sad.remove(spi_in);
                }
                Event::AddressesUpdated { .. } => {
                    if let Some(c) = ike.child_sas().into_iter().last() {
                        if let Some((_, info)) = out.as_mut() {
                            info.remote = c.remote;
                            info.udp_encap = c.udp_encap;
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
