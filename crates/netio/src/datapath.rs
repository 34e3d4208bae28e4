//! The tunnel data path the daemons share: a tunnel device with TUN offloads when the
//! kernel allows them, segmentation of its super-packets right before encapsulation,
//! `sendmmsg` batches on a raw socket, UDP GSO sends, and merging of TCP segments
//! before they are written into the TUN (see [`crate::offload`], [`crate::coalesce`]).
//!
//! Without offload the TUN moves one plain packet per read and write; the sends are
//! still batched. Used by the mipsec agents and mobile node, and by the VPN client.

use crate::coalesce::Coalescer;
use crate::ipip_gro::GsoTap;
use crate::offload::{segment, OffloadError, PacketList, VnetHdr};
use crate::raw::RawIp;
use crate::raw_batch::{RawSendBatch, MAX_BATCH};
use crate::tun::Tun;
use crate::udp::{GsoBatch, GsoOutcome};
use std::net::Ipv4Addr;
use tracing::{debug, warn};

/// Buffers of the data path, reused for every packet, and its counters.
pub struct DataPath {
    /// Whether the tunnel device runs with offloads (a virtio header on every packet).
    pub offload: bool,
    /// Packets of the last TUN read (the segments of a super-packet).
    segs: PacketList,
    /// IP-in-IP payloads waiting for the next `sendmmsg`.
    out: RawSendBatch,
    /// Packets waiting for the TUN (offload only).
    co: Coalescer,
    /// TUN reads that were super-packets, and the segments they gave.
    pub super_packets: u64,
    pub segments: u64,
    /// RFC 3519 Tunnel Data goes out with UDP GSO (until the kernel refuses it).
    pub udp_gso: bool,
    /// GSO sends, and the datagrams they carried.
    pub udp_gso_sends: u64,
    pub udp_gso_datagrams: u64,
    /// Whether the tunnel's UDP socket has UDP GRO on ([`crate::udp::set_gro`]).
    pub udp_gro: bool,
    /// Receives that held several datagrams (merged by GRO), and how many they held.
    pub udp_gro_receives: u64,
    pub udp_gro_datagrams: u64,
    /// Where GRO-merged IP-in-IP learns its segment size ([`crate::ipip_gro`]).
    gso_tap: Option<GsoTap>,
    /// Merged IP-in-IP packets received, and those cut at the fallback size.
    pub ipip_merged: u64,
    pub ipip_merged_guessed: u64,
    /// IP-in-IP packets whose inner checksum the sender left to the device (a
    /// virtual link), completed here.
    pub ipip_partial: u64,
    /// Segments of merged packets cut here (TUN without offload).
    merged_segs: PacketList,
}

impl Default for DataPath {
    fn default() -> Self {
        DataPath::new(false)
    }
}

impl DataPath {
    /// Buffers for a TUN opened with offloads (`offload`: a virtio header on every
    /// packet) or without.
    pub fn new(offload: bool) -> DataPath {
        DataPath {
            offload,
            segs: PacketList::new(),
            out: RawSendBatch::new(),
            co: Coalescer::new(),
            super_packets: 0,
            segments: 0,
            udp_gso: true,
            udp_gso_sends: 0,
            udp_gso_datagrams: 0,
            udp_gro: false,
            udp_gro_receives: 0,
            udp_gro_datagrams: 0,
            gso_tap: None,
            ipip_merged: 0,
            ipip_merged_guessed: 0,
            ipip_partial: 0,
            merged_segs: PacketList::new(),
        }
    }

    /// Opens the tap that tells the segment size of GRO-merged IP-in-IP (for a daemon
    /// that decapsulates it from a raw socket; see [`crate::ipip_gro`]). On error the
    /// data path goes on without it (merged packets are cut at the fallback size).
    pub fn open_gso_tap(&mut self) -> crate::Result<()> {
        self.gso_tap = Some(GsoTap::open()?);
        Ok(())
    }

    /// Whether [`DataPath::open_gso_tap`] succeeded.
    pub fn has_gso_tap(&self) -> bool {
        self.gso_tap.is_some()
    }

    /// Counts one UDP receive that the kernel merged from several datagrams (GRO).
    pub fn count_gro(&mut self, meta: &crate::udp::RecvMeta) {
        let seg = usize::from(meta.segment);
        if seg != 0 && meta.len > seg {
            self.udp_gro_receives += 1;
            self.udp_gro_datagrams += meta.len.div_ceil(seg) as u64;
        }
    }

    /// Takes one TUN read (`buf`, with its virtio header when offloading) apart into
    /// wire-ready packets ([`DataPath::packets`]). The error is why the read is dropped.
    pub fn take_tun_read(&mut self, buf: &[u8]) -> Result<(), OffloadError> {
        self.segs.clear();
        if !self.offload {
            self.segs.push(buf);
            return Ok(());
        }
        let (h, p) = VnetHdr::parse(buf)?;
        match segment(&h, p, &mut self.segs) {
            Ok(n) => {
                if n > 1 {
                    self.super_packets += 1;
                    self.segments += n as u64;
                }
                Ok(())
            }
            Err(e) => {
                debug!("tun packet: {e}");
                Err(e)
            }
        }
    }

    /// The packets of the last [`DataPath::take_tun_read`].
    pub fn packets(&self) -> &PacketList {
        &self.segs
    }

    /// Lends the packets of the last read to a caller that handles them one at a
    /// time with the daemon borrowed; [`DataPath::restore_packets`] gives the
    /// buffer back for the next read.
    pub fn lend_packets(&mut self) -> PacketList {
        std::mem::take(&mut self.segs)
    }

    pub fn restore_packets(&mut self, p: PacketList) {
        self.segs = p;
    }

    /// Queues every packet of the last TUN read for `dst` (IP-in-IP, kernel header).
    pub fn queue_packets(&mut self, dst: Ipv4Addr) {
        for s in self.segs.iter() {
            self.out.push(s, dst);
        }
    }

    /// Queues one packet for `dst`.
    pub fn queue(&mut self, pkt: &[u8], dst: Ipv4Addr) {
        self.out.push(pkt, dst);
    }

    /// Queues one packet for `dst` with `tos` as its header's TOS octet (ESP, whose
    /// own bytes cannot say it).
    pub fn queue_tos(&mut self, pkt: &[u8], dst: Ipv4Addr, tos: u8) {
        self.out.push_tos(pkt, dst, tos);
    }

    /// Whether enough is queued to send now rather than at the end of the wake-up.
    pub fn out_full(&self) -> bool {
        self.out.len() >= MAX_BATCH
    }

    /// Sends what is queued on `raw`; returns packets and payload octets sent, and
    /// calls `on_error` for each refused one.
    pub async fn flush_out(
        &mut self,
        raw: &RawIp,
        on_error: impl FnMut(Ipv4Addr, std::io::Error),
    ) -> (usize, usize) {
        if self.out.is_empty() {
            return (0, 0);
        }
        self.out.flush(raw, on_error).await
    }

    /// A packet for the TUN: written at once, or (offload) queued for
    /// [`DataPath::flush_tun`].
    pub async fn write_tun(&mut self, tun: &Tun, pkt: &[u8]) -> std::io::Result<()> {
        if self.offload {
            self.co.push(pkt);
            return Ok(());
        }
        tun.send(pkt).await.map(|_| ())
    }

    /// A packet decapsulated from IP-in-IP for the TUN, as [`DataPath::write_tun`]; one
    /// the kernel's GRO merged on the way in ([`crate::ipip_gro::merged_tcp`]) goes in
    /// as a super-packet of the sender's segment size (offload) or cut into those
    /// segments here, never whole (no link would carry it).
    pub async fn write_tun_ipip(&mut self, tun: &Tun, pkt: &[u8]) -> std::io::Result<()> {
        let Some(hdr) = self.merged_header(pkt) else {
            return self.write_tun(tun, pkt).await;
        };
        if self.offload {
            self.co.push_gso(pkt, hdr);
            return Ok(());
        }
        self.merged_segs.clear();
        segment(&hdr, pkt, &mut self.merged_segs)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        for s in self.merged_segs.iter() {
            tun.send(s).await?;
        }
        Ok(())
    }

    /// A packet decapsulated from IP-in-IP to be sent on in IP-in-IP to `dst` (a
    /// foreign agent's reverse tunnel, encapsulating delivery style): a GRO-merged one
    /// is queued as the sender's segments.
    pub fn queue_ipip(&mut self, pkt: &[u8], dst: Ipv4Addr) -> Result<(), OffloadError> {
        let Some(hdr) = self.merged_header(pkt) else {
            self.out.push(pkt, dst);
            return Ok(());
        };
        self.merged_segs.clear();
        segment(&hdr, pkt, &mut self.merged_segs)?;
        for s in self.merged_segs.iter() {
            self.out.push(s, dst);
        }
        Ok(())
    }

    /// The GSO header of a GRO-merged packet (counted), with the sender's segment size
    /// from the tap or the fallback; a header without GSO for a lone packet whose
    /// checksum the sender left to the device (counted); `None` for an ordinary packet.
    fn merged_header(&mut self, pkt: &[u8]) -> Option<VnetHdr> {
        let Some((mut hdr, certain)) = crate::ipip_gro::merged_tcp(pkt) else {
            let hdr = crate::ipip_gro::partial_single(pkt)?;
            self.ipip_partial += 1;
            return Some(hdr);
        };
        hdr.gso_size = match self.gso_tap.as_mut().and_then(|t| t.gso_size(pkt)) {
            // The tap saw it as one segment: only its checksum is to be completed.
            Some(0) => return Some(self.partial(hdr)),
            Some(size) => size,
            // A verifying checksum, unknown to the tap, one frame long: ordinary.
            None if !certain && pkt.len() <= crate::ipip_gro::ONE_FRAME => return None,
            // A failing one, one frame long: a lone segment as a virtual link hands it
            // over (or two small ones merged), complete as it is.
            None if pkt.len() <= crate::ipip_gro::ONE_FRAME => return Some(self.partial(hdr)),
            None => {
                self.ipip_merged_guessed += 1;
                crate::ipip_gro::FALLBACK_GSO_SIZE
            }
        };
        self.ipip_merged += 1;
        Some(hdr)
    }

    fn partial(&mut self, mut hdr: VnetHdr) -> VnetHdr {
        self.ipip_partial += 1;
        hdr.gso_type = crate::offload::GSO_NONE;
        hdr.hdr_len = 0;
        hdr.gso_size = 0;
        hdr
    }

    /// Writes what [`DataPath::write_tun`] queued (merged TCP segments, one write each);
    /// returns how many writes failed.
    pub async fn flush_tun(&mut self, tun: &Tun) -> u64 {
        if self.co.is_empty() {
            return 0;
        }
        let mut failed = 0;
        for buf in self.co.finish() {
            if let Err(e) = tun.send_raw(buf).await {
                debug!("tun send: {e}");
                failed += 1;
            }
        }
        self.co.clear();
        failed
    }

    /// Sends UDP datagrams gathered for one destination: one GSO send while the kernel
    /// takes them (turned off, logged once, when it refuses), else one by one.
    pub async fn send_udp(
        &mut self,
        b: &mut GsoBatch,
        sock: &tokio::net::UdpSocket,
        dst: std::net::SocketAddrV4,
        src: Option<Ipv4Addr>,
    ) -> GsoOutcome {
        let out = b.send(sock, dst, src, self.udp_gso).await;
        if out.gso {
            self.udp_gso_sends += 1;
            self.udp_gso_datagrams += out.sent as u64;
        }
        if let Some(e) = &out.gso_refused {
            warn!("UDP GSO refused by the kernel ({e}): Tunnel Data goes one datagram at a time");
            self.udp_gso = false;
        }
        out
    }

    /// Segments merged into super-packets before entering the TUN.
    pub fn coalesced(&self) -> u64 {
        self.co.merged
    }
}
