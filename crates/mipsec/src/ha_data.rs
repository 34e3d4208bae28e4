//! The home agent's data path: packets between the tunnel device and the tunnels,
//! on the shared [`crate::datapath::DataPath`].
//!
//! With `offload` (the default) the kernel hands the HA TCP super-packets for away
//! nodes; each is cut into the segments the kernel would have sent, and a wake-up's
//! worth goes to the raw IP-in-IP socket in `sendmmsg` batches (RFC 3519 UDP tunnels
//! send each segment as its own Tunnel Data message). The other way, IP-in-IP packets
//! are taken with `recvmmsg`, checked (RFC 3024), and consecutive TCP segments of a
//! flow are merged so that the kernel takes them in one TUN write.

use super::Daemon;
use crate::drops::DropReason;
use mip4::ha::ForwardTo;
use mip4::wire::tunnel::TunnelData;
use netio::raw::outer_tos;
use netio::raw_batch::RawRecvBatch;
use netio::udp::GsoBatch;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;
use tokio::net::UdpSocket;
use tracing::debug;

/// The header of an RFC 3519 Tunnel Data message carrying IPv4 (type 4, next header 4,
/// reserved), before each segment.
pub(crate) const TD_HEADER: [u8; 4] = TunnelData::header(4);

/// Sends the Tunnel Data messages gathered for one peer (`DataPath::send_udp`) and
/// counts them.
async fn send_udp_batch(
    b: &mut GsoBatch,
    udp: &UdpSocket,
    dp: &mut crate::datapath::DataPath,
    counters: &mut super::Counters,
    peer: SocketAddrV4,
    local: Ipv4Addr,
) {
    let n = b.len();
    let inner = b.bytes().saturating_sub(n * TD_HEADER.len());
    let out = dp.send_udp(b, udp, peer, Some(local)).await;
    if out.failed == 0 {
        counters.tx_packets += out.sent as u64;
        counters.tx_bytes += inner as u64;
    } else {
        debug!("tunnel send to {peer}: {:?}", out.error);
        counters.tx_packets += out.sent as u64;
        for _ in 0..out.failed {
            counters.drop(DropReason::TunnelSendFailed);
        }
    }
}

/// RFC 3519 Tunnel Data from a mobile node behind a NAT: the inner packet, if it is
/// IPv4 and came from the address and port its home address registered from (RFC 3519
/// section 6.1; the core of the home address's shard decides). Every worker that
/// delivers Tunnel Data asks here.
pub(super) fn admit_tunnel_data<'a>(
    shards: &super::shards::Shards,
    now: Instant,
    from: SocketAddrV4,
    payload: &'a [u8],
) -> Result<&'a [u8], DropReason> {
    let td = TunnelData::parse(payload).map_err(|_| DropReason::MalformedTunnelData)?;
    if td.next_header != 4 {
        return Err(DropReason::TunnelDataNotIpv4);
    }
    let (src, _) = wire::ipv4::addresses(td.packet).ok_or(DropReason::MalformedInner)?;
    shards
        .lock_addr(src)
        .admit_udp_tunnel(now, from, src)
        .map_err(DropReason::Refused)?;
    Ok(td.packet)
}

/// Writes a decapsulated packet into a queue of the tunnel device (queued for merging
/// when offloading: `DataPath::flush_tun` writes it); `ipip`: it came from the raw
/// socket, where the kernel's GRO may have merged it.
pub(super) async fn write_inner(
    dp: &mut crate::datapath::DataPath,
    tun: &netio::Tun,
    inner: &[u8],
    ipip: bool,
) -> Result<(), DropReason> {
    if wire::ipv4::Ipv4Header::parse(inner).is_err() {
        return Err(DropReason::MalformedInner);
    }
    let written = if ipip {
        dp.write_tun_ipip(tun, inner).await
    } else {
        dp.write_tun(tun, inner).await
    };
    written.map_err(|e| {
        debug!("tun send: {e}");
        DropReason::TunWriteFailed
    })
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
        match admit_tunnel_data(&self.shards, now, from, payload) {
            Ok(inner) => {
                if self.deliver(inner, false).await {
                    // Worker 0's share, as the other workers count theirs.
                    let st = &self.plane.stats;
                    super::shards::WorkerStats::add(&st.tunnel_rx_packets, 1);
                    super::shards::WorkerStats::add(&st.tunnel_rx_bytes, inner.len() as u64);
                }
            }
            Err(why) => self.counters.drop(why),
        }
    }

    /// IP-in-IP received on the raw socket (outer header included).
    async fn on_raw(&mut self, now: Instant, outer_src: Ipv4Addr, packet: &[u8]) {
        let Ok((_, inner)) = wire::ipv4::Ipv4Header::split(packet) else {
            return self.counters.drop(DropReason::MalformedOuter);
        };
        let Some((src, _)) = wire::ipv4::addresses(inner) else {
            return self.counters.drop(DropReason::MalformedInner);
        };
        // RFC 3024: only a home address from the care-of address it is bound to.
        let admitted = self
            .shards
            .lock_addr(src)
            .admit_reverse(now, outer_src, src);
        if let Err(why) = admitted {
            return self.counters.drop(DropReason::Refused(why));
        }
        self.deliver(inner, true).await;
    }

    /// A decapsulated packet from a mobile node into the home network (queued when
    /// offloading: [`Daemon::flush_delivered`] writes it); `ipip`: it came from the raw
    /// socket, where the kernel's GRO may have merged it. Whether it was taken.
    async fn deliver(&mut self, inner: &[u8], ipip: bool) -> bool {
        match write_inner(&mut self.dp, &self.tun, inner, ipip).await {
            Ok(()) => {
                self.counters.rx_packets += 1;
                self.counters.rx_bytes += inner.len() as u64;
                true
            }
            Err(why) => {
                self.counters.drop(why);
                false
            }
        }
    }

    /// Writes what [`Daemon::deliver`] queued.
    pub(super) async fn flush_delivered(&mut self) {
        for _ in 0..self.dp.flush_tun(&self.tun).await {
            self.counters.drop(DropReason::TunWriteFailed);
        }
    }

    /// One read from the tunnel device: a packet, or a super-packet, for away mobile
    /// nodes; its segments are queued for every care-of address.
    pub(super) async fn on_tun(&mut self, now: Instant, buf: &[u8]) {
        if self.dp.take_tun_read(buf).is_err() {
            return self
                .counters
                .drop(crate::drops::DropReason::BadOffloadPacket);
        }
        let Some((_, dst)) = self.dp.packets().get(0).and_then(wire::ipv4::addresses) else {
            return self.counters.drop(DropReason::NotIpv4FromTun);
        };
        // Where it goes, copied out of the shard (its lock is not held while sending).
        let mut fwd = std::mem::take(&mut self.fwd);
        fwd.clear();
        fwd.extend(self.shards.lock_addr(dst).forward(now, dst));
        let sent = fwd.len();
        for &to in &fwd {
            match to {
                ForwardTo::IpInIp { care_of, .. } => self.dp.queue_packets(care_of),
                ForwardTo::Udp { peer, local } => {
                    // The segments of one read as Tunnel Data messages of one size (the
                    // last may be shorter): one UDP GSO send each batch.
                    let segs = self.dp.lend_packets();
                    let mut rest = segs.iter().peekable();
                    while let Some(first) = rest.next() {
                        if !self
                            .udp_gso
                            .push_with_tos(&TD_HEADER, first, outer_tos(first))
                        {
                            // Not even alone in a batch: too large for one datagram.
                            self.counters.drop(DropReason::TunnelSendFailed);
                            continue;
                        }
                        while rest
                            .next_if(|s| self.udp_gso.push_with_tos(&TD_HEADER, s, outer_tos(s)))
                            .is_some()
                        {}
                        send_udp_batch(
                            &mut self.udp_gso,
                            &self.udp,
                            &mut self.dp,
                            &mut self.counters,
                            peer,
                            local,
                        )
                        .await;
                    }
                    drop(rest);
                    self.dp.restore_packets(segs);
                }
            }
        }
        self.fwd = fwd;
        if sent == 0 {
            return self.counters.drop(DropReason::NoBinding);
        }
        if self.dp.out_full() {
            self.flush_tunnel().await;
        }
    }

    /// Sends the queued IP-in-IP packets (`sendmmsg`).
    pub(super) async fn flush_tunnel(&mut self) {
        let c = &mut self.counters;
        let (n, bytes) = self
            .dp
            .flush_out(&self.raw, |dst, e| {
                debug!("tunnel send to {dst}: {e}");
                c.drop(DropReason::TunnelSendFailed);
            })
            .await;
        c.tx_packets += n as u64;
        c.tx_bytes += bytes as u64;
    }
}
