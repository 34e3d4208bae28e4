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
//! entry it prepends the outer header (RFC 2003: TOS copied, TTL 64, a random
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

use crate::bpf::{self, Asm, ADD, B, DW, FP, H, JEQ, JGE, JGT, JNE, MOV, R0, R1};
use crate::bpf::{R2, R3, R4, R5, R6, R7, R8, W, XOR};
use crate::error::{Error, Result};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

// Helper ids (`enum bpf_func_id`).
const MAP_LOOKUP_ELEM: i32 = 1;
const KTIME_GET_NS: i32 = 5;
const GET_PRANDOM_U32: i32 = 7;
const SKB_STORE_BYTES: i32 = 9;
const SKB_LOAD_BYTES: i32 = 26;
const CSUM_DIFF: i32 = 28;
const SKB_CHANGE_HEAD: i32 = 43;
const SKB_ADJUST_ROOM: i32 = 50;
const REDIRECT_NEIGH: i32 = 152;

/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
const MAP_PERCPU_ARRAY: u32 = 6;
/// `BPF_ADJ_ROOM_MAC`.
const ADJ_ROOM_MAC: i32 = 1;
/// `BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4`: the inner segment
/// size stays (the device's MTU already leaves room for the outer header).
const ADJ_ENCAP_IPIP: i32 = 0b11;
/// tcx verdicts: go on to the next program (or into the device), drop.
const TCX_NEXT: i32 = -1;
const TCX_DROP: i32 = 2;
/// `__sk_buff` fields.
const SKB_LEN: i16 = 0;
const SKB_PROTOCOL: i16 = 16;
const SKB_GSO_SIZE: i16 = 176;
/// The largest inner packet that still fits an IPv4 total length with the outer
/// header.
pub const MAX_INNER: u32 = 65_535 - 20;
/// TTL of the outer header (the kernel's default).
const OUTER_TTL: i32 = 64;

/// Value layout: outer source, outer destination (network order), out ifindex,
/// padding, expiry in `CLOCK_MONOTONIC` nanoseconds.
const VALUE_LEN: usize = 24;

/// Encapsulating egress program on one TUN device, and its map.
pub struct IpipEncap {
    map: OwnedFd,
    stats: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    /// The difference between `CLOCK_MONOTONIC` and this process's [`Instant`]s,
    /// taken once.
    base: (Instant, Duration),
}

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

/// The program: see the module documentation.
fn program(map: &OwnedFd, stats: &OwnedFd, key: EncapKey) -> Result<Vec<bpf::Insn>> {
    let key_at = match key {
        EncapKey::Source => 12,
        EncapKey::Destination => 16,
    };
    // Stack: inner header copy at fp-48 (20), outer header at fp-24 (20, in 24
    // zeroed), the counters key at fp-52.
    const INNER: i16 = -48;
    const OUTER: i16 = -24;
    let mut a = Asm::default();
    a.alu_reg(MOV, R6, R1)
        .load(W, R2, R6, SKB_PROTOCOL)
        .jump_imm(JNE, R2, i32::from(0x0800u16.to_be()), "next")
        .load(W, R2, R6, SKB_LEN)
        .jump_imm(JGT, R2, MAX_INNER as i32, "next")
        // The inner header.
        .alu_reg(MOV, R1, R6)
        .alu_imm(MOV, R2, 0)
        .frame_ptr(R3, INNER)
        .alu_imm(MOV, R4, 20)
        .call(SKB_LOAD_BYTES)
        .jump_imm(JNE, R0, 0, "next")
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
        // The outer header.
        .store_imm(DW, FP, OUTER, 0)
        .store_imm(DW, FP, OUTER + 8, 0)
        .store_imm(DW, FP, OUTER + 16, 0)
        .store_imm(B, FP, OUTER, 0x45)
        .load(B, R1, FP, INNER + 1)
        .store(B, FP, OUTER + 1, R1)
        .load(W, R1, R6, SKB_LEN)
        .alu_imm(ADD, R1, 20)
        .be16(R1)
        .store(H, FP, OUTER + 2, R1)
        .call(GET_PRANDOM_U32)
        .store(H, FP, OUTER + 4, R0)
        // Flags and fragment offset stay 0: DF clear (see the module documentation).
        .store_imm(B, FP, OUTER + 8, OUTER_TTL)
        .store_imm(B, FP, OUTER + 9, 4)
        .load(W, R1, R7, 0)
        .store(W, FP, OUTER + 12, R1)
        .load(W, R1, R7, 4)
        .store(W, FP, OUTER + 16, R1)
        // Its checksum: the one's complement sum of the 20 octets, folded.
        .alu_imm(MOV, R1, 0)
        .alu_imm(MOV, R2, 0)
        .frame_ptr(R3, OUTER)
        .alu_imm(MOV, R4, 20)
        .alu_imm(MOV, R5, 0)
        .call(CSUM_DIFF)
        .fold(R0, R1)
        .fold(R0, R1)
        .alu_imm(XOR, R0, 0xffff)
        .store(H, FP, OUTER + 10, R0)
        .load(W, R8, R7, 8)
        // Count before the packet changes: sends and inner octets.
        .store_imm(W, FP, -52, 0)
        .load_map(R1, stats)
        .frame_ptr(R2, -52)
        .call(MAP_LOOKUP_ELEM)
        .jump_imm(JEQ, R0, 0, "room")
        .load(DW, R2, R0, 0)
        .alu_imm(ADD, R2, 1)
        .store(DW, R0, 0, R2)
        .load(W, R1, R6, SKB_LEN)
        .load(DW, R2, R0, 8)
        .alu_reg(ADD, R2, R1)
        .store(DW, R0, 8, R2)
        // Room for the outer header, flagged as IP-in-IP for GSO.
        .label("room")
        .alu_reg(MOV, R1, R6)
        .alu_imm(MOV, R2, 20)
        .alu_imm(MOV, R3, ADJ_ROOM_MAC)
        .alu_imm(MOV, R4, ADJ_ENCAP_IPIP)
        .call(SKB_ADJUST_ROOM)
        .jump_imm(JNE, R0, 0, "next")
        .alu_reg(MOV, R1, R6)
        .alu_imm(MOV, R2, 0)
        .frame_ptr(R3, OUTER)
        .alu_imm(MOV, R4, 20)
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
        let stats = bpf::map_create(MAP_PERCPU_ARRAY, 4, 16, 1, 0, "mipsec_ipip_n")?;
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

    /// What the program sent so far.
    pub fn counters(&self) -> Result<EncapCounters> {
        // A per-CPU value comes as one 8-aligned copy per possible CPU.
        let cpus = possible_cpus();
        let mut v = vec![0u8; 16 * cpus];
        if !bpf::map_lookup(&self.stats, &0u32.to_ne_bytes(), &mut v)? {
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
