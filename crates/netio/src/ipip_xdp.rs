//! The XDP half of an RFC 3519 entry's way back (`IpipEncap::xdp_on` in `ipip_encap`).
//!
//! The kernel merges nothing of a UDP tunnel without a checksum (UDP GRO wants one,
//! and only the kernel's own tunnel drivers merge what is inside), so the tc program
//! behind GRO sees every Tunnel Data datagram alone: one inner segment each, routed
//! or delivered one at a time. This program runs before GRO, in the driver: it takes
//! the same datagrams the tc program would (the same checks, the same entry), strips
//! the 32 octets of IPv4, UDP and Tunnel Data headers behind the Ethernet header, and
//! marks the frame with 4 octets of XDP metadata. GRO then merges the inner TCP
//! segments as it would on any link, and the tc program hands each merged packet that
//! carries the mark (metadata only an XDP program can write) to the TUN, after checking
//! its entry again.
//!
//! A frame that fails any check passes untouched; one that fails after it was changed
//! is dropped, so that no stripped packet ever reaches the stack without the mark.

use crate::bpf::{self, Asm, ADD, AND, B, DW, FP, H, JEQ, JGT, JLT, JNE, MOV, W};
use crate::bpf::{R0, R1, R2, R3, R4, R6, R7, R8};
use crate::error::Result;
use crate::ipip_steps::{Steps, MAP_LOOKUP_ELEM};
use std::os::fd::OwnedFd;

/// The mark in the metadata of a frame this program stripped ("mipx").
pub(crate) const META_MARK: i32 = i32::from_ne_bytes(*b"mipx");

// Helper ids (`enum bpf_func_id`).
const XDP_ADJUST_HEAD: i32 = 44;
const XDP_ADJUST_META: i32 = 54;
const XDP_LOAD_BYTES: i32 = 189;
const XDP_STORE_BYTES: i32 = 190;
/// `struct xdp_md` fields.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_DATA_META: i16 = 8;
const MD_IFINDEX: i16 = 12;
/// Verdicts.
const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;
/// Octets stripped: IPv4, UDP, Tunnel Data.
const STRIP: i32 = 32;

/// The program; counts what it stripped in `stats[2]` (packets, inner octets).
/// `key_at`: where the entry's key is in the inner header (see
/// `EncapKey::back_offset`).
pub(crate) fn program(map: &OwnedFd, stats: &OwnedFd, key_at: i16) -> Result<Vec<bpf::Insn>> {
    // Stack: the frame's first 66 octets from fp-78 (Ethernet, then the outer IPv4
    // header 4-aligned at -64, UDP at -44, Tunnel Data at -36, the inner header at
    // -32), the counters key at -84. r7: the outer length, then the entry; r8: the
    // inner length.
    const ETH: i16 = -78;
    const OUTER: i16 = -64;
    const INNER: i16 = -32;
    let mut a = Asm::default();
    a.alu_reg(MOV, R6, R1)
        .alu_reg(MOV, R1, R6)
        .alu_imm(MOV, R2, 0)
        .frame_ptr(R3, ETH)
        .alu_imm(MOV, R4, 14 + 52)
        .call(XDP_LOAD_BYTES)
        .jump_imm(JNE, R0, 0, "pass")
        // Unicast IPv4.
        .load(B, R1, FP, ETH)
        .alu_imm(AND, R1, 1)
        .jump_imm(JNE, R1, 0, "pass")
        .load(H, R1, FP, ETH + 12)
        .jump_imm(JNE, R1, i32::from(0x0800u16.to_be()), "pass")
        // A 20-octet header of UDP, not a fragment, whose length is the frame's.
        .load(B, R1, FP, OUTER)
        .jump_imm(JNE, R1, 0x45, "pass")
        .load(B, R1, FP, OUTER + 9)
        .jump_imm(JNE, R1, 17, "pass")
        .load(H, R1, FP, OUTER + 6)
        .alu_imm(AND, R1, i32::from(0x3fffu16.to_be()))
        .jump_imm(JNE, R1, 0, "pass")
        .load(H, R7, FP, OUTER + 2)
        .be16(R7)
        .alu_imm(AND, R7, 0xffff)
        .jump_imm(JLT, R7, 52, "pass")
        .load(W, R2, R6, MD_DATA)
        .load(W, R3, R6, MD_DATA_END)
        .alu_imm(ADD, R2, 14)
        .alu_reg(ADD, R2, R7)
        .jump_reg(JGT, R2, R3, "pass")
        .jump_reg(JLT, R2, R3, "pass")
        // Its checksum.
        .header_sum(OUTER)
        .jump_imm(JNE, R0, 0xffff, "pass")
        // No UDP checksum, UDP's length the datagram's, Tunnel Data of IPv4, the inner
        // packet's length the rest: one message (see the tc program).
        .tunnel_data(OUTER, "pass")
        .load(B, R1, FP, INNER)
        .alu_imm(AND, R1, 0xf0)
        .jump_imm(JNE, R1, 0x40, "pass")
        // The entry: live, its tunnel's addresses and ports, its interface.
        .alu_reg(MOV, R8, R7)
        .alu_imm(ADD, R8, -STRIP)
        .frame_ptr(R2, INNER + key_at)
        .live_entry(map, "pass")
        .came_back(OUTER, MD_IFINDEX, "pass")
        .udp_ports(OUTER, "pass")
        // Room for the mark first (nothing changed yet if it fails).
        .alu_reg(MOV, R1, R6)
        .alu_imm(MOV, R2, -4)
        .call(XDP_ADJUST_META)
        .jump_imm(JNE, R0, 0, "pass")
        // The Ethernet header moves up over the 32 octets, which are then dropped.
        .alu_reg(MOV, R1, R6)
        .alu_imm(MOV, R2, STRIP)
        .frame_ptr(R3, ETH)
        .alu_imm(MOV, R4, 14)
        .call(XDP_STORE_BYTES)
        .jump_imm(JNE, R0, 0, "drop")
        .alu_reg(MOV, R1, R6)
        .alu_imm(MOV, R2, STRIP)
        .call(XDP_ADJUST_HEAD)
        .jump_imm(JNE, R0, 0, "drop")
        // The mark, in the 4 octets before the frame.
        .load(W, R2, R6, MD_DATA_META)
        .load(W, R3, R6, MD_DATA)
        .alu_reg(MOV, R4, R2)
        .alu_imm(ADD, R4, 4)
        .jump_reg(JGT, R4, R3, "drop")
        .store_imm(W, R2, 0, META_MARK)
        // Count: packets and inner octets (the frame's length is 14 + the inner's).
        .store_imm(W, FP, -84, 2)
        .load_map(R1, stats)
        .frame_ptr(R2, -84)
        .call(MAP_LOOKUP_ELEM)
        .jump_imm(JEQ, R0, 0, "done")
        .load(DW, R2, R0, 0)
        .alu_imm(ADD, R2, 1)
        .store(DW, R0, 0, R2)
        .load(DW, R2, R0, 8)
        .alu_reg(ADD, R2, R8)
        .store(DW, R0, 8, R2)
        .label("done")
        .alu_imm(MOV, R0, XDP_PASS)
        .exit()
        .label("pass")
        .alu_imm(MOV, R0, XDP_PASS)
        .exit()
        .label("drop")
        .alu_imm(MOV, R0, XDP_DROP)
        .exit();
    a.finish()
}
