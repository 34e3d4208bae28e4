//! IP-in-IP encapsulation in the kernel, as a cache of the daemon's decisions.
//!
//! A userspace tunnel cannot send an IP-in-IP GSO packet: a raw socket takes one
//! 1.5 KB segment per skb, and the kernel then walks every segment through the
//! stack alone (see the crate README). The kernel itself can carry one, flagged
//! `SKB_GSO_IPXIP4`, and cuts it at the last moment (`ipip_gso_segment` is built
//! into every IPv4 kernel); what builds such a packet without the `ipip` module
//! is `bpf_skb_adjust_room(.., BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)` in a tc program.
//!
//! [`IpipEncap`] attaches such a program to the egress of a TUN device (a `tcx`
//! link, Linux 6.6). For each packet the kernel routes into the device it looks
//! the inner destination (a home agent's tunnel) or source (a foreign agent's
//! reverse tunnel, [`EncapKey`]) up in a hash map the daemon fills: an entry says "tunnel
//! to this care-of address from this source, out of this interface, until this
//! moment" (`CLOCK_MONOTONIC`, the clock of [`std::time::Instant`]). With a live
//! entry it prepends the outer header (RFC 2003: TOS copied, its ECN field
//! Not-ECT as [`crate::raw::outer_tos`] says why; TTL 64, a random
//! identification; a GSO packet keeps its segment size, and each segment later gets
//! its own identification and lengths), and sends the packet
//! out of that interface with `bpf_redirect_neigh`, which resolves the next hop
//! as the kernel's own output does. Anything else (no entry, an expired one, not
//! IPv4, more than 65,515 octets, any helper failing before the packet changed)
//! goes on into the device, where the daemon reads it as before and decides.
//!
//! DF is clear in the outer header, as on the agents' raw sockets
//! (`IP_PMTUDISC_DONT`): a path with less room than the agent's link (a VPN
//! gateway's ESP, on the way to a node outside) fragments the tunnel packet, which
//! the tunnel exit reassembles, where a set DF would have it dropped with a
//! "fragmentation needed" that no inner sender hears.
//!
//! So the daemon stays the only place where a binding is decided: it adds an
//! entry when its core would forward to that care-of address alone over IP-in-IP
//! and removes it when that stops being so, and an entry that outlives a missed
//! removal expires with the binding's lifetime. The link belongs to this object's
//! fd, so the program is detached when the process exits, however it exits.
//!
//! Counted per CPU: packets handed to the interface (a GSO packet once, however
//! many segments it becomes) and inner octets ([`IpipEncap::counters`]).
//!
//! The other direction ([`IpipEncap::decap_on`]): a second program on the ingress
//! of an Ethernet device takes the IP-in-IP packets that the same entries describe
//! the other way round (outer source the entry's care-of address, outer destination
//! its source, the inner source, or destination, the key, arriving on the entry's
//! interface, before its expiry), strips the outer header and hands the inner packet
//! to the TUN device as if the daemon had written it there, so that the kernel
//! routes or delivers it exactly as before. The packet must be whole (no fragment),
//! addressed to this host at the link layer, with a 20-octet outer header whose
//! checksum and length hold; anything else goes on up the stack to the daemon's raw
//! socket, which checks it as before. A packet that GRO merged stays one
//! packet (`FIXED_GSO`). Counted as packets and inner octets
//! ([`IpipEncap::decap_counters`]).
//!
//! An RFC 3519 entry ([`IpipEncap::set_udp`]) is taken back the same way when the
//! packet is its tunnel's Tunnel Data: UDP from the entry's peer address and port to
//! its source address and port, the Tunnel Data header of IPv4 (type 4, next header
//! 4), no UDP checksum (as the program sends; a checksummed datagram is the socket's
//! to verify), and the inner packet filling the datagram. The last rule keeps a
//! UDP GRO train (several messages, merged for a `UDP_GRO` socket; its first inner
//! length is one message's) away from the program: the socket takes it whole.
//! Registration messages and keepalives (other types) always go to the socket.
//! Because the kernel merges no such datagrams, an XDP program can strip them before
//! GRO ([`IpipEncap::xdp_on`], `ipip_xdp`): the tc program then takes the merged
//! inner packets by their mark.

use crate::bpf::{self, Asm, ADD, AND, B, DW, FP, H, JEQ, JGE, JGT, JLT, JNE, LSH, MOV, OR};
use crate::bpf::{R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, W, XOR};
use crate::error::{Error, Result};
use crate::ipip_steps::{Steps, KTIME_GET_NS, MAP_LOOKUP_ELEM, SKB_LEN};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

// Helper ids (`enum bpf_func_id`).
const GET_PRANDOM_U32: i32 = 7;
const SKB_STORE_BYTES: i32 = 9;
const SKB_CHANGE_HEAD: i32 = 43;
const SKB_ADJUST_ROOM: i32 = 50;
const REDIRECT_NEIGH: i32 = 152;
const REDIRECT: i32 = 23;
/// `BPF_F_INGRESS`: `bpf_redirect` into the device's receive path.
const F_INGRESS: i32 = 1;
/// `BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_DECAP_L3_IPV4`.
const ADJ_DECAP_IPIP: i32 = 0x81;
/// An Ethernet header, before the outer IP header at a tc ingress hook.
const ETH_LEN: i32 = 14;
/// `PACKET_HOST`: addressed to this host at the link layer.
const PACKET_HOST: i32 = 0;

/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
const MAP_PERCPU_ARRAY: u32 = 6;
/// `BPF_ADJ_ROOM_MAC`.
const ADJ_ROOM_MAC: i32 = 1;
/// `BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4`: the inner segment
/// size stays (the device's MTU already leaves room for the outer header).
const ADJ_ENCAP_IPIP: i32 = 0b11;
/// `BPF_F_ADJ_ROOM_FIXED_GSO | ENCAP_L3_IPV4 | ENCAP_L4_UDP`; with
/// `BPF_F_ADJ_ROOM_ENCAP_L2(4)` (the Tunnel Data header, bits 56-63) added in the
/// program: `SKB_GSO_UDP_TUNNEL`, each segment behind a copy of the 32 octets.
const ADJ_ENCAP_UDP: i32 = 0b1_0011;
/// tcx verdicts: go on to the next program (or into the device), drop.
const TCX_NEXT: i32 = -1;
const TCX_DROP: i32 = 2;
/// `__sk_buff` fields.
const SKB_PKT_TYPE: i16 = 4;
const SKB_IFINDEX: i16 = 40;
const SKB_PROTOCOL: i16 = 16;
const SKB_GSO_SIZE: i16 = 176;
const SKB_DATA: i16 = 76;
const SKB_DATA_META: i16 = 140;
/// The largest inner packet that still fits an IPv4 total length with the outer
/// header.
pub const MAX_INNER: u32 = 65_535 - 20;
/// The same with RFC 3519 UDP tunnelling (IPv4, UDP and Tunnel Data headers).
pub const MAX_INNER_UDP: u32 = 65_535 - 32;
/// TTL of the outer header (the kernel's default).
const OUTER_TTL: i32 = 64;

/// Value layout: outer source, outer destination (network order), out ifindex,
/// the UDP destination and source ports of an RFC 3519 entry (network order; 0: an
/// IP-in-IP entry), expiry in `CLOCK_MONOTONIC` nanoseconds, flags ([`INBOUND_ONLY`]),
/// 4 octets of padding.
const VALUE_LEN: usize = 32;
/// An entry for the way back only: the egress program leaves its packets to the
/// device ([`IpipEncap::set_udp_inbound`]).
const INBOUND_ONLY: u32 = 1;

/// Encapsulating egress program on one TUN device, and its map.
pub struct IpipEncap {
    map: OwnedFd,
    stats: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    key: EncapKey,
    tun_ifindex: u32,
    /// The interfaces asked for decapsulation: (ifindex, its program and link, or
    /// `None` where attaching failed: not tried again).
    decaps: AttachList,
    /// The same for the XDP half of RFC 3519's way back ([`IpipEncap::xdp_on`]).
    xdps: AttachList,
    /// The difference between `CLOCK_MONOTONIC` and this process's [`Instant`]s,
    /// taken once.
    base: (Instant, Duration),
}

/// An attached program: its fd and its link's.
type Attached = (OwnedFd, OwnedFd);

/// What the program sent, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EncapCounters {
    /// Packets handed to the interface (a GSO packet counts once).
    pub sends: u64,
    /// Inner octets sent.
    pub bytes: u64,
}

fn monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Which inner address an entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapKey {
    /// Packets to a home address (a home agent's tunnel to a care-of address).
    Destination,
    /// Packets from a home address (a foreign agent's reverse tunnel to the home
    /// agent, RFC 3024).
    Source,
}

impl EncapKey {
    /// Where the key is in the inner header of a packet coming back through the
    /// tunnel: the other address (a home agent's entries are by destination, its
    /// reverse tunnel brings packets from that home address).
    fn back_offset(self) -> i16 {
        match self {
            EncapKey::Destination => 12,
            EncapKey::Source => 16,
        }
    }
}

/// The program: see the module documentation.
fn program(map: &OwnedFd, stats: &OwnedFd, key: EncapKey) -> Result<Vec<bpf::Insn>> {
    let key_at = match key {
        EncapKey::Source => 12,
        EncapKey::Destination => 16,
    };
    // Stack: the outer headers at fp-32 (32 zeroed: IPv4, and for RFC 3519 UDP and
    // the Tunnel Data header), the inner header copy at fp-56 (20), the counters key
    // at fp-60. r7: the entry, r8: its interface, r9: the outer headers' length.
    const OUTER: i16 = -32;
    const INNER: i16 = -56;
    let mut a = Asm::default();
    a.alu_reg(MOV, R6, R1)
        .load(W, R2, R6, SKB_PROTOCOL)
        .jump_imm(JNE, R2, i32::from(0x0800u16.to_be()), "next")
        .load(W, R2, R6, SKB_LEN)
        .jump_imm(JGT, R2, MAX_INNER as i32, "next")
        // The inner header.
        .load_packet(0, INNER, 20, "next")
        // GSO of TCP only: a merged UDP train would reach a local receiver whole.
        .load(W, R1, R6, SKB_GSO_SIZE)
        .jump_imm(JEQ, R1, 0, "key")
        .load(B, R1, FP, INNER + 9)
        .jump_imm(JNE, R1, 6, "next")
        .label("key")
        // Its destination (or source) is the key.
        .load_map(R1, map)
        .frame_ptr(R2, INNER + key_at)
        .call(MAP_LOOKUP_ELEM)
        .jump_imm(JEQ, R0, 0, "next")
        .alu_reg(MOV, R7, R0)
        .call(KTIME_GET_NS)
        .load(DW, R1, R7, 16)
        .jump_reg(JGE, R0, R1, "next")
        // Not an entry for the way back only.
        .load(W, R1, R7, 24)
        .jump_imm(JNE, R1, 0, "next")
        // The outer header.
        .store_imm(DW, FP, OUTER, 0)
        .store_imm(DW, FP, OUTER + 8, 0)
        .store_imm(DW, FP, OUTER + 16, 0)
        .store_imm(DW, FP, OUTER + 24, 0)
        .store_imm(B, FP, OUTER, 0x45)
        // The inner DSCP, ECN Not-ECT (`raw::outer_tos`: RFC 6040's compatibility
        // mode, as no exit of ours copies a congestion mark inwards).
        .load(B, R1, FP, INNER + 1)
        .alu_imm(AND, R1, 0xfc)
        .store(B, FP, OUTER + 1, R1)
        .call(GET_PRANDOM_U32)
        .store(H, FP, OUTER + 4, R0)
        // Flags and fragment offset stay 0: DF clear (see the module documentation).
        .store_imm(B, FP, OUTER + 8, OUTER_TTL)
        .load(W, R1, R7, 0)
        .store(W, FP, OUTER + 12, R1)
        .load(W, R1, R7, 4)
        .store(W, FP, OUTER + 16, R1)
        .alu_imm(MOV, R9, 20)
        .store_imm(B, FP, OUTER + 9, 4)
        // An RFC 3519 entry (a UDP destination port): UDP from the entry's port, no
        // UDP checksum, and the Tunnel Data header (type 4, next header IPv4).
        .load(H, R1, R7, 12)
        .jump_imm(JEQ, R1, 0, "length")
        .load(W, R2, R6, SKB_LEN)
        .jump_imm(JGT, R2, MAX_INNER_UDP as i32, "next")
        .store_imm(B, FP, OUTER + 9, 17)
        .load(H, R2, R7, 14)
        .store(H, FP, OUTER + 20, R2)
        .store(H, FP, OUTER + 22, R1)
        .load(W, R2, R6, SKB_LEN)
        .alu_imm(ADD, R2, 12)
        .be16(R2)
        .store(H, FP, OUTER + 24, R2)
        .store_imm(B, FP, OUTER + 28, 4)
        .store_imm(B, FP, OUTER + 29, 4)
        .alu_imm(MOV, R9, 32)
        .label("length")
        .load(W, R1, R6, SKB_LEN)
        .alu_reg(ADD, R1, R9)
        .be16(R1)
        .store(H, FP, OUTER + 2, R1)
        // Its checksum: the one's complement of the 20 octets' sum.
        .header_sum(OUTER)
        .alu_imm(XOR, R0, 0xffff)
        .store(H, FP, OUTER + 10, R0)
        .load(W, R8, R7, 8)
        // Count before the packet changes: sends and inner octets.
        .count(stats, 0, -60, 0, "room")
        // Room for the outer headers, flagged for GSO: IP-in-IP, or a UDP tunnel
        // whose 4 octets of Tunnel Data header every segment repeats.
        .alu_imm(MOV, R4, ADJ_ENCAP_IPIP)
        .jump_imm(JEQ, R9, 20, "grow")
        .alu_imm(MOV, R4, 4)
        .alu_imm(LSH, R4, 56)
        .alu_imm(OR, R4, ADJ_ENCAP_UDP)
        .label("grow")
        .alu_reg(MOV, R1, R6)
        .alu_reg(MOV, R2, R9)
        .alu_imm(MOV, R3, ADJ_ROOM_MAC)
        .call(SKB_ADJUST_ROOM)
        .jump_imm(JNE, R0, 0, "next")
        .alu_reg(MOV, R1, R6)
        .alu_imm(MOV, R2, 0)
        .frame_ptr(R3, OUTER)
        .alu_reg(MOV, R4, R9)
        .alu_imm(MOV, R5, 0)
        .call(SKB_STORE_BYTES)
        .jump_imm(JNE, R0, 0, "drop")
        // A link-layer header for `bpf_redirect_neigh` to replace (a TUN has none).
        .alu_reg(MOV, R1, R6)
        .alu_imm(MOV, R2, 14)
        .alu_imm(MOV, R3, 0)
        .call(SKB_CHANGE_HEAD)
        .jump_imm(JNE, R0, 0, "drop")
        .alu_reg(MOV, R1, R8)
        .alu_imm(MOV, R2, 0)
        .alu_imm(MOV, R3, 0)
        .alu_imm(MOV, R4, 0)
        .call(REDIRECT_NEIGH)
        .exit()
        .label("next")
        .alu_imm(MOV, R0, TCX_NEXT)
        .exit()
        .label("drop")
        .alu_imm(MOV, R0, TCX_DROP)
        .exit();
    a.finish()
}

impl IpipEncap {
    /// Loads the program with room for `capacity` entries, keyed by the inner
    /// destination, and attaches it to the egress of `tun_ifindex`. Needs `CAP_BPF`
    /// and `CAP_NET_ADMIN` and Linux 6.6 (tcx); the error says which step failed.
    pub fn attach(tun_ifindex: u32, capacity: u32) -> Result<Self> {
        Self::attach_keyed(tun_ifindex, capacity, EncapKey::Destination)
    }

    /// [`IpipEncap::attach`] with the entries keyed by `key`.
    pub fn attach_keyed(tun_ifindex: u32, capacity: u32, key: EncapKey) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::InvalidArgument("encapsulation map of no entries"));
        }
        let map = bpf::map_create(
            bpf::MAP_HASH,
            4,
            VALUE_LEN as u32,
            capacity,
            bpf::F_NO_PREALLOC,
            "mipsec_ipip",
        )?;
        // Three counters: [0] encapsulated, [1] decapsulated, [2] stripped by XDP.
        let stats = bpf::map_create(MAP_PERCPU_ARRAY, 4, 16, 3, 0, "mipsec_ipip_n")?;
        let insns = program(&map, &stats, key)?;
        let prog = bpf::prog_load(
            bpf::PROG_SCHED_CLS,
            &insns,
            "Apache-2.0",
            "mipsec_ipip",
            bpf::TCX_EGRESS,
        )?;
        let link = bpf::link_create(&prog, tun_ifindex, bpf::TCX_EGRESS)?;
        Ok(IpipEncap {
            map,
            stats,
            _prog: prog,
            _link: link,
            key,
            tun_ifindex,
            decaps: Mutex::new(Vec::new()),
            xdps: Mutex::new(Vec::new()),
            base: (Instant::now(), monotonic()),
        })
    }

    /// `CLOCK_MONOTONIC` at `t`.
    fn mono(&self, t: Instant) -> u64 {
        let (i0, m0) = self.base;
        let m = match t.checked_duration_since(i0) {
            Some(d) => m0 + d,
            None => m0.saturating_sub(i0 - t),
        };
        u64::try_from(m.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Packets to `inner_dst` (from it, when keyed by source) go to `care_of` from
    /// `source`, out of `ifindex`, until `until`.
    pub fn set(
        &self,
        inner_dst: Ipv4Addr,
        source: Ipv4Addr,
        care_of: Ipv4Addr,
        ifindex: u32,
        until: Instant,
    ) -> Result<()> {
        let mut v = [0u8; VALUE_LEN];
        v[0..4].copy_from_slice(&source.octets());
        v[4..8].copy_from_slice(&care_of.octets());
        v[8..12].copy_from_slice(&ifindex.to_ne_bytes());
        v[16..24].copy_from_slice(&self.mono(until).to_ne_bytes());
        bpf::map_update(&self.map, &inner_dst.octets(), &v)
    }

    /// [`IpipEncap::set`] for an RFC 3519 UDP tunnel: packets to `inner_dst` go as
    /// Tunnel Data in UDP from `source` to `peer` (the node's NAT), out of `ifindex`,
    /// until `until`. The UDP checksum is zero (allowed over IPv4, RFC 768), and a TCP
    /// super-packet stays one `SKB_GSO_UDP_TUNNEL` packet until the interface cuts it
    /// into datagrams of one Tunnel Data message each. The way back
    /// ([`IpipEncap::decap_on`]) takes Tunnel Data from `peer` to `source` with no UDP
    /// checksum, one message filling the datagram; the rest (registrations,
    /// keepalives, checksummed or merged datagrams) goes to the daemon's socket.
    pub fn set_udp(
        &self,
        inner_dst: Ipv4Addr,
        source: SocketAddrV4,
        peer: SocketAddrV4,
        ifindex: u32,
        until: Instant,
    ) -> Result<()> {
        self.set_udp_flags(inner_dst, source, peer, ifindex, until, 0)
    }

    /// [`IpipEncap::set_udp`] for the way back only: the kernel takes `peer`'s Tunnel
    /// Data back, and the packets the entry is keyed by go into the device, for the
    /// daemon to send (with UDP checksums, which the other end's GRO needs to merge
    /// them; the kernel's own Tunnel Data has none).
    pub fn set_udp_inbound(
        &self,
        inner: Ipv4Addr,
        source: SocketAddrV4,
        peer: SocketAddrV4,
        ifindex: u32,
        until: Instant,
    ) -> Result<()> {
        self.set_udp_flags(inner, source, peer, ifindex, until, INBOUND_ONLY)
    }

    fn set_udp_flags(
        &self,
        inner_dst: Ipv4Addr,
        source: SocketAddrV4,
        peer: SocketAddrV4,
        ifindex: u32,
        until: Instant,
        flags: u32,
    ) -> Result<()> {
        if peer.port() == 0 {
            return Err(Error::InvalidArgument("UDP tunnel to port 0"));
        }
        let mut v = [0u8; VALUE_LEN];
        v[0..4].copy_from_slice(&source.ip().octets());
        v[4..8].copy_from_slice(&peer.ip().octets());
        v[8..12].copy_from_slice(&ifindex.to_ne_bytes());
        v[12..14].copy_from_slice(&peer.port().to_be_bytes());
        v[14..16].copy_from_slice(&source.port().to_be_bytes());
        v[16..24].copy_from_slice(&self.mono(until).to_ne_bytes());
        v[24..28].copy_from_slice(&flags.to_ne_bytes());
        bpf::map_update(&self.map, &inner_dst.octets(), &v)
    }

    /// Packets to `inner_dst` go back to the device; `false` if there was no entry.
    pub fn remove(&self, inner_dst: Ipv4Addr) -> Result<bool> {
        bpf::map_delete(&self.map, &inner_dst.octets())
    }

    /// The entry for `inner_dst`: (source, care-of address, ifindex).
    pub fn get(&self, inner_dst: Ipv4Addr) -> Result<Option<(Ipv4Addr, Ipv4Addr, u32)>> {
        let mut v = [0u8; VALUE_LEN];
        if !bpf::map_lookup(&self.map, &inner_dst.octets(), &mut v)? {
            return Ok(None);
        }
        let ip = |o: usize| Ipv4Addr::new(v[o], v[o + 1], v[o + 2], v[o + 3]);
        let idx = u32::from_ne_bytes([v[8], v[9], v[10], v[11]]);
        Ok(Some((ip(0), ip(4), idx)))
    }

    /// Attaches the decapsulating program (see the module documentation) to the
    /// ingress of `ifindex`, an Ethernet device, unless it was asked for already;
    /// `true` when it was attached now. It stays until this object is dropped. A
    /// failure is returned once; later calls for that interface return `false`.
    pub fn decap_on(&self, ifindex: u32) -> Result<bool> {
        attach_once(&self.decaps, ifindex, || self.attach_decap(ifindex))
    }

    /// Attaches the XDP half of RFC 3519's way back (`ipip_xdp`: the Tunnel Data
    /// headers stripped before GRO, so that the inner segments merge) to `ifindex`,
    /// in its driver only (a driver without XDP refuses; the generic hook would run
    /// after GRO and copy every packet), unless it was asked for already; `true` when
    /// it was attached now. The tc program ([`IpipEncap::decap_on`]) must be on the
    /// same interface: it hands the marked packets to the TUN. Some drivers reset the
    /// link to attach XDP. A failure is returned once.
    pub fn xdp_on(&self, ifindex: u32) -> Result<bool> {
        attach_once(&self.xdps, ifindex, || {
            // Never without the tc program that takes the stripped packets: they
            // would reach the stack as if they had come in bare.
            if !self.decap_interfaces().contains(&ifindex) {
                return Err(Error::InvalidArgument(
                    "XDP stripping needs the decapsulating tc program on the interface",
                ));
            }
            let insns = crate::ipip_xdp::program(&self.map, &self.stats, self.key.back_offset())?;
            let prog = bpf::prog_load(
                bpf::PROG_XDP,
                &insns,
                "Apache-2.0",
                "mipsec_udp_xdp",
                bpf::XDP,
            )?;
            let link = bpf::link_create_flags(&prog, ifindex, bpf::XDP, bpf::XDP_FLAGS_DRV_MODE)?;
            Ok((prog, link))
        })
    }

    /// What the XDP programs stripped so far (packets before GRO, inner octets).
    pub fn xdp_counters(&self) -> Result<EncapCounters> {
        self.counter(2)
    }

    /// The interfaces where the XDP program is attached.
    pub fn xdp_interfaces(&self) -> Vec<u32> {
        attached(&self.xdps)
    }

    fn attach_decap(&self, ifindex: u32) -> Result<Attached> {
        if !is_ethernet(ifindex) {
            return Err(Error::InvalidArgument(
                "kernel decapsulation needs an Ethernet device",
            ));
        }
        let insns = decap_program(&self.map, &self.stats, self.key, self.tun_ifindex)?;
        let prog = bpf::prog_load(
            bpf::PROG_SCHED_CLS,
            &insns,
            "Apache-2.0",
            "mipsec_ipip_rx",
            bpf::TCX_INGRESS,
        )?;
        let link = bpf::link_create(&prog, ifindex, bpf::TCX_INGRESS)?;
        Ok((prog, link))
    }

    /// The interfaces where the decapsulating program is attached.
    pub fn decap_interfaces(&self) -> Vec<u32> {
        attached(&self.decaps)
    }

    /// What the program sent so far.
    pub fn counters(&self) -> Result<EncapCounters> {
        self.counter(0)
    }

    /// What the decapsulating programs handed to the TUN so far (`sends`: packets,
    /// a merged one once; `bytes`: inner octets).
    pub fn decap_counters(&self) -> Result<EncapCounters> {
        self.counter(1)
    }

    fn counter(&self, index: u32) -> Result<EncapCounters> {
        // A per-CPU value comes as one 8-aligned copy per possible CPU.
        let cpus = possible_cpus();
        let mut v = vec![0u8; 16 * cpus];
        if !bpf::map_lookup(&self.stats, &index.to_ne_bytes(), &mut v)? {
            return Ok(EncapCounters::default());
        }
        let mut c = EncapCounters::default();
        for cpu in v.chunks_exact(16) {
            let word = |o: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&cpu[o..o + 8]);
                u64::from_ne_bytes(b)
            };
            c.sends += word(0);
            c.bytes += word(8);
        }
        Ok(c)
    }
}

/// The programs attached per interface: (ifindex, its program and link, or `None`
/// where attaching failed).
type AttachList = Mutex<Vec<(u32, Option<Attached>)>>;

/// Attaches with `attach` on `ifindex` unless it was asked for already: `true` when
/// it was attached now, a failure once (then `false`, not tried again).
fn attach_once(
    list: &AttachList,
    ifindex: u32,
    attach: impl FnOnce() -> Result<Attached>,
) -> Result<bool> {
    let mut list = list
        .lock()
        .map_err(|_| Error::InvalidArgument("attachment list poisoned"))?;
    if list.iter().any(|d| d.0 == ifindex) {
        return Ok(false);
    }
    let (kept, result) = match attach() {
        Ok(fds) => (Some(fds), Ok(true)),
        Err(e) => (None, Err(e)),
    };
    list.push((ifindex, kept));
    result
}

/// The interfaces of `list` where the program is attached.
fn attached(list: &AttachList) -> Vec<u32> {
    list.lock()
        .map(|d| d.iter().filter(|d| d.1.is_some()).map(|d| d.0).collect())
        .unwrap_or_default()
}

/// Whether `ifindex` is an Ethernet device (`ARPHRD_ETHER`): 14 octets of link
/// layer before the IP header at ingress. Asked of the calling thread's network
/// namespace (`SIOCGIFNAME`, `SIOCGIFHWADDR`), which `/sys` need not show.
fn is_ethernet(ifindex: u32) -> bool {
    let Ok(index) = libc::c_int::try_from(ifindex) else {
        return false;
    };
    // SAFETY: a plain datagram socket, closed by the OwnedFd below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: `ifreq` is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_ifru.ifru_ifindex = index;
    // SAFETY: SIOCGIFNAME reads the index and writes the name into `req`.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFNAME, &mut req) } < 0 {
        return false;
    }
    // SAFETY: SIOCGIFHWADDR reads the name and writes the hardware address.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return false;
    }
    // SAFETY: the kernel filled the `ifru_hwaddr` member.
    let family = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    family == libc::ARPHRD_ETHER
}

/// The decapsulating program: see the module documentation. `key` is the
/// encapsulation's: the entry of a packet coming back is found by the other
/// address (a home agent's entries are by destination, its reverse tunnel brings
/// packets from that home address).
fn decap_program(
    map: &OwnedFd,
    stats: &OwnedFd,
    key: EncapKey,
    tun_ifindex: u32,
) -> Result<Vec<bpf::Insn>> {
    let key_at = key.back_offset();
    let tun = i32::try_from(tun_ifindex).map_err(|_| Error::InvalidArgument("ifindex"))?;
    // Stack: the headers at fp-64 (52: the outer IPv4 header, then the inner one, or
    // UDP, Tunnel Data and the inner one), the counters key at fp-68. r9 points at
    // the inner header, r8 is minus the length of the outer ones.
    const OUTER: i16 = -64;
    let mut a = Asm::default();
    a.alu_reg(MOV, R6, R1)
        .load(W, R2, R6, SKB_PROTOCOL)
        .jump_imm(JNE, R2, i32::from(0x0800u16.to_be()), "pass")
        // Marked by the XDP half (`ipip_xdp`): already stripped, maybe merged since.
        // Its entry must still hold; if not, it is dropped (never left to the stack).
        .load(W, R2, R6, SKB_DATA_META)
        .load(W, R3, R6, SKB_DATA)
        .alu_reg(MOV, R4, R2)
        .alu_imm(ADD, R4, 4)
        .jump_reg(JGT, R4, R3, "outer")
        .load(W, R1, R2, 0)
        .jump_imm(JNE, R1, crate::ipip_xdp::META_MARK, "outer")
        .load_packet(ETH_LEN, OUTER, 20, "drop")
        .load(B, R1, FP, OUTER)
        .alu_imm(AND, R1, 0xf0)
        .jump_imm(JNE, R1, 0x40, "drop")
        .frame_ptr(R2, OUTER + key_at)
        .live_entry(map, "drop")
        .load(W, R1, R6, SKB_IFINDEX)
        .load(W, R2, R7, 8)
        .jump_reg(JNE, R1, R2, "drop")
        .load(H, R1, R7, 12)
        .jump_imm(JEQ, R1, 0, "drop")
        .jump_imm(JNE, R1, 0, "deliver")
        .label("outer")
        .load(W, R2, R6, SKB_PKT_TYPE)
        .jump_imm(JNE, R2, PACKET_HOST, "pass")
        .load(W, R2, R6, SKB_LEN)
        .jump_imm(JLT, R2, ETH_LEN + 40, "pass")
        .load_packet(ETH_LEN, OUTER, 40, "pass")
        // A 20-octet IPv4 header, not a fragment (MF, offset).
        .load(B, R1, FP, OUTER)
        .jump_imm(JNE, R1, 0x45, "pass")
        .load(H, R1, FP, OUTER + 6)
        .alu_imm(AND, R1, i32::from(0x3fffu16.to_be()))
        .jump_imm(JNE, R1, 0, "pass")
        // Its total length: an inner header at least, within the frame.
        .load(H, R7, FP, OUTER + 2)
        .be16(R7)
        .jump_imm(JLT, R7, 40, "pass")
        .load(W, R2, R6, SKB_LEN)
        .alu_imm(ADD, R2, -ETH_LEN)
        .jump_reg(JGT, R7, R2, "pass")
        // Its checksum.
        .header_sum(OUTER)
        .jump_imm(JNE, R0, 0xffff, "pass")
        // IP-in-IP: the inner header right behind.
        .frame_ptr(R9, OUTER + 20)
        .alu_imm(MOV, R8, -20)
        .load(B, R1, FP, OUTER + 9)
        .jump_imm(JEQ, R1, 4, "inner")
        // RFC 3519 Tunnel Data in UDP, taken only as one message that fills the
        // frame: no UDP checksum (one would be the socket's to verify), UDP's length
        // the datagram's, the Tunnel Data header of IPv4 (type 4, next header 4,
        // reserved 0), and the inner packet's length the rest. A UDP GRO train of
        // several messages (the inner length that of the first) goes to the socket.
        .jump_imm(JNE, R1, 17, "pass")
        .load(W, R2, R6, SKB_LEN)
        .alu_imm(ADD, R2, -ETH_LEN)
        .jump_reg(JNE, R7, R2, "pass")
        .jump_imm(JLT, R7, 52, "pass")
        .load_packet(ETH_LEN + 40, OUTER + 40, 12, "pass")
        .tunnel_data(OUTER, "pass")
        .frame_ptr(R9, OUTER + 32)
        .alu_imm(MOV, R8, -32)
        .label("inner")
        // IPv4 inside.
        .load(B, R1, R9, 0)
        .alu_imm(AND, R1, 0xf0)
        .jump_imm(JNE, R1, 0x40, "pass")
        // The entry, live, and the packet is its tunnel's, on its interface.
        .alu_reg(MOV, R2, R9)
        .alu_imm(ADD, R2, i32::from(key_at))
        .live_entry(map, "pass")
        .came_back(OUTER, SKB_IFINDEX, "pass")
        // The entry's kind of tunnel: IP-in-IP (no port), or UDP between its ports
        // (from the peer's port to the source's).
        .jump_imm(JEQ, R8, -20, "ipip")
        .udp_ports(OUTER, "pass")
        .jump_imm(JEQ, R8, -32, "strip")
        .label("ipip")
        .load(H, R1, R7, 12)
        .jump_imm(JNE, R1, 0, "pass")
        .label("strip")
        // Strip the outer headers (a merged packet stays one).
        .alu_reg(MOV, R1, R6)
        .alu_reg(MOV, R2, R8)
        .alu_imm(MOV, R3, ADJ_ROOM_MAC)
        .alu_imm(MOV, R4, ADJ_DECAP_IPIP)
        .call(SKB_ADJUST_ROOM)
        .jump_imm(JNE, R0, 0, "pass")
        // Count: packets and inner octets.
        .label("deliver")
        .count(stats, 1, -68, -ETH_LEN, "hand")
        // Into the TUN, as if the daemon had written it.
        .alu_imm(MOV, R1, tun)
        .alu_imm(MOV, R2, F_INGRESS)
        .call(REDIRECT)
        .exit()
        .label("pass")
        .alu_imm(MOV, R0, TCX_NEXT)
        .exit()
        .label("drop")
        .alu_imm(MOV, R0, TCX_DROP)
        .exit();
    a.finish()
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`, "0-N").
fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let mut n = 0;
    for part in text.trim().split(',') {
        let mut ends = part.split('-').map(|s| s.parse::<usize>().ok());
        match (ends.next().flatten(), ends.next().flatten()) {
            (Some(a), Some(b)) if b >= a => n += b - a + 1,
            (Some(_), None) => n += 1,
            _ => {}
        }
    }
    n.max(1)
}
