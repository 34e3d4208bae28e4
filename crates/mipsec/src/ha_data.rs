//! The home agent's data path: packets between the tunnel device and the tunnels.
//!
//! With `offload` (the default) the tunnel device is opened with `IFF_VNET_HDR` and
//! `TUN_F_CSUM | TUN_F_TSO4`, so the kernel hands over TCP super-packets of up to
//! 64 KiB. Each is cut here into the segments the kernel would have sent
//! (`netio::offload::segment`), and all segments of a wake-up go to the raw IP-in-IP
//! socket in `sendmmsg` batches. The other way, IP-in-IP packets are taken with
//! `recvmmsg`, checked (RFC 3024), and consecutive TCP segments of a flow are merged
//! (`netio::coalesce`) so that the kernel takes them in one TUN write.
//!
//! If the kernel refuses the offload, the device is opened as before and packets move
//! one at a time through the TUN (still batched on the raw socket); that is logged once,
//! at start, and `status` shows `"offload": false`.

use super::Daemon;
use crate::shell::{open_tunnel, open_tunnel_with};
use mip4::ha::ForwardTo;
use mip4::wire::tunnel::TunnelData;
use netio::coalesce::Coalescer;
use netio::offload::{segment, PacketList, VnetHdr};
use netio::raw_batch::{RawRecvBatch, RawSendBatch, MAX_BATCH};
use netio::tun::{Tun, TUN_F_CSUM, TUN_F_TSO4};
use netio::udp::send_from;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;
use tracing::{debug, warn};

/// Buffers of the data path, reused for every packet.
pub(super) struct DataPath {
    /// Whether the tunnel device runs with offloads (a virtio header on every packet).
    pub offload: bool,
    /// Segments of the packet just read from the TUN.
    segs: PacketList,
    /// IP-in-IP packets waiting for the next `sendmmsg`.
    out: RawSendBatch,
    /// Decapsulated packets waiting for the TUN (offload only).
    co: Coalescer,
    /// TUN reads that were super-packets, and the segments they gave.
    pub super_packets: u64,
    pub segments: u64,
}

/// Opens the tunnel device, with offloads when `offload` and the kernel agrees.
pub(super) fn open(name: &str, offload: bool) -> Result<(Tun, u32, DataPath), String> {
    let opened = if offload {
        match open_tunnel_with(name, Some(TUN_F_CSUM | TUN_F_TSO4)) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(
                    "{name}: the kernel refused TUN offloads ({e}); moving packets one at a time"
                );
                None
            }
        }
    } else {
        None
    };
    let on = opened.is_some();
    let (tun, ifindex) = match opened {
        Some(t) => t,
        None => open_tunnel(name)?,
    };
    Ok((
        tun,
        ifindex,
        DataPath {
            offload: on,
            segs: PacketList::new(),
            out: RawSendBatch::new(),
            co: Coalescer::new(),
            super_packets: 0,
            segments: 0,
        },
    ))
}

/// Receive buffers for the event loop (owned by it, outside the daemon, so that a
/// pending receive does not borrow the daemon).
pub(super) fn buffers() -> (RawRecvBatch, Vec<u8>) {
    (
        RawRecvBatch::new(super::BATCH, 65536),
        vec![0u8; netio::offload::VNET_HDR_LEN + 65536],
    )
}

impl DataPath {
    /// Segments merged into super-packets before entering the TUN.
    pub fn co_merged(&self) -> u64 {
        self.co.merged
    }
}

impl Daemon {
    /// A batch of IP-in-IP packets (outer header included) from the raw socket.
    pub(super) async fn on_raw_batch(&mut self, rb: &RawRecvBatch, n: usize) {
        let now = Instant::now();
        for i in 0..n {
            if let Some((pkt, src)) = rb.get(i) {
                self.on_raw(now, src, pkt).await;
            }
        }
        self.flush_delivered().await;
    }

    /// RFC 3519 Tunnel Data from a mobile node behind a NAT.
    pub(super) async fn on_tunnel_data(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        payload: &[u8],
    ) {
        let Ok(td) = TunnelData::parse(payload) else {
            return self.counters.drop("malformed tunnel data");
        };
        if td.next_header != 4 {
            return self.counters.drop("tunnel data not IPv4");
        }
        let Some((src, _)) = wire::ipv4::addresses(td.packet) else {
            return self.counters.drop("malformed inner packet");
        };
        // Only from the address and port the node registered from (RFC 3519 section 6.1).
        if let Err(why) = self.core.admit_udp_tunnel(now, from, src) {
            return self.counters.drop(why.label());
        }
        self.deliver(td.packet).await;
    }

    /// IP-in-IP received on the raw socket (outer header included).
    async fn on_raw(&mut self, now: Instant, outer_src: Ipv4Addr, packet: &[u8]) {
        let Ok(outer) = wire::ipv4::Ipv4Header::parse(packet) else {
            return self.counters.drop("malformed outer header");
        };
        let inner = &packet[outer.header_len..usize::from(outer.total_len)];
        let Some((src, _)) = wire::ipv4::addresses(inner) else {
            return self.counters.drop("malformed inner packet");
        };
        // RFC 3024: only a home address from the care-of address it is bound to.
        if let Err(why) = self.core.admit_reverse(now, outer_src, src) {
            return self.counters.drop(why.label());
        }
        self.deliver(inner).await;
    }

    /// A decapsulated packet from a mobile node into the home network: written at
    /// once, or (offload) queued for [`Daemon::flush_delivered`].
    async fn deliver(&mut self, inner: &[u8]) {
        if wire::ipv4::Ipv4Header::parse(inner).is_err() {
            return self.counters.drop("malformed inner packet");
        }
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += inner.len() as u64;
        if self.dp.offload {
            self.dp.co.push(inner);
            return;
        }
        if let Err(e) = self.tun.send(inner).await {
            warn!("tun send: {e}");
            self.counters.drop("tun write failed");
        }
    }

    /// Writes what [`Daemon::deliver`] queued: merged TCP segments, one write each.
    pub(super) async fn flush_delivered(&mut self) {
        if self.dp.co.is_empty() {
            return;
        }
        for buf in self.dp.co.finish() {
            if let Err(e) = self.tun.send_raw(buf).await {
                debug!("tun send: {e}");
                self.counters.drop("tun write failed");
            }
        }
        self.dp.co.clear();
    }

    /// One read from the tunnel device (`buf`, with its virtio header when offloading):
    /// a packet, or a super-packet, for away mobile nodes; queued for every care-of
    /// address.
    pub(super) async fn on_tun(&mut self, now: Instant, buf: &[u8]) {
        self.dp.segs.clear();
        if self.dp.offload {
            let r = VnetHdr::parse(buf).and_then(|(h, p)| segment(&h, p, &mut self.dp.segs));
            match r {
                Ok(n) => {
                    if n > 1 {
                        self.dp.super_packets += 1;
                        self.dp.segments += n as u64;
                    }
                }
                Err(e) => {
                    debug!("tun packet: {e}");
                    return self.counters.drop("bad offload packet from tun");
                }
            }
        } else {
            self.dp.segs.push(buf);
        }
        let Some((_, dst)) = self.dp.segs.get(0).and_then(wire::ipv4::addresses) else {
            return self.counters.drop("not an IPv4 packet (from tun)");
        };
        let mut sent = 0;
        // Borrows the core's bindings while queueing: no copy of them per packet.
        for to in self.core.forward(now, dst) {
            sent += 1;
            match to {
                ForwardTo::IpInIp { care_of, .. } => {
                    for s in self.dp.segs.iter() {
                        self.dp.out.push(s, care_of);
                    }
                }
                ForwardTo::Udp { peer, local } => {
                    for s in self.dp.segs.iter() {
                        self.udp_out.clear();
                        TunnelData {
                            next_header: 4,
                            packet: s,
                        }
                        .emit(&mut self.udp_out);
                        match send_from(&self.udp, &self.udp_out, peer, local).await {
                            Ok(_) => {
                                self.counters.tx_packets += 1;
                                self.counters.tx_bytes += s.len() as u64;
                            }
                            Err(e) => {
                                debug!("tunnel send to {peer}: {e}");
                                self.counters.drop("tunnel send failed");
                            }
                        }
                    }
                }
            }
        }
        if sent == 0 {
            return self.counters.drop("no binding for destination");
        }
        if self.dp.out.len() >= MAX_BATCH {
            self.flush_tunnel().await;
        }
    }

    /// Sends the queued IP-in-IP packets (`sendmmsg`).
    pub(super) async fn flush_tunnel(&mut self) {
        if self.dp.out.is_empty() {
            return;
        }
        let c = &mut self.counters;
        let (n, bytes) = self
            .dp
            .out
            .flush(&self.raw, |dst, e| {
                debug!("tunnel send to {dst}: {e}");
                c.drop("tunnel send failed");
            })
            .await;
        c.tx_packets += n as u64;
        c.tx_bytes += bytes as u64;
    }
}
