//! The steps the kernel tunnel's programs share (`ipip_encap`'s tc programs and
//! `ipip_xdp`), written once: loading and checking headers on the stack, finding a
//! live entry, matching a packet to the tunnel its entry describes, counting.

use crate::bpf::{Asm, ADD, DW, FP, H, JEQ, JGE, JNE, MOV, W};
use crate::bpf::{R0, R1, R2, R3, R4, R5, R6, R7};
use std::os::fd::OwnedFd;

// Helper ids (`enum bpf_func_id`).
pub(crate) const MAP_LOOKUP_ELEM: i32 = 1;
pub(crate) const KTIME_GET_NS: i32 = 5;
const SKB_LOAD_BYTES: i32 = 26;
const CSUM_DIFF: i32 = 28;
/// `__sk_buff.len`.
pub(crate) const SKB_LEN: i16 = 0;

/// The programs' common steps; the packet's context is in r6.
pub(crate) trait Steps {
    /// Copies `len` octets of the packet from `offset` to the stack at `at`, or
    /// jumps to `fail`. Clobbers r0-r5.
    fn load_packet(&mut self, offset: i32, at: i16, len: i32, fail: &'static str) -> &mut Self;
    /// The one's complement sum of the 20-octet header on the stack at `at`, folded
    /// to 16 bits, in r0 (0xffff when its checksum holds). Clobbers r1-r5.
    fn header_sum(&mut self, at: i16) -> &mut Self;
    /// With the outer IPv4, UDP and Tunnel Data headers and the inner header on the
    /// stack at `outer` and the outer total length in r7: one RFC 3519 message of
    /// IPv4 with no UDP checksum filling the datagram, or jumps to `fail`. Clobbers r1.
    fn tunnel_data(&mut self, outer: i16, fail: &'static str) -> &mut Self;
    /// Looks the key r2 points at up in `map`: the entry in r7 if it is live, or
    /// jumps to `fail`. Clobbers r0-r5.
    fn live_entry(&mut self, map: &OwnedFd, fail: &'static str) -> &mut Self;
    /// The packet whose outer header is on the stack at `outer` comes back through
    /// r7's entry: from its destination to its source, on its interface (the context
    /// field `ifindex`), or jumps to `fail`. Clobbers r1, r2.
    fn came_back(&mut self, outer: i16, ifindex: i16, fail: &'static str) -> &mut Self;
    /// r7's entry is an RFC 3519 one, and the UDP header at `outer + 20` goes from
    /// its peer's port to its source's, or jumps to `fail`. Clobbers r1, r2.
    fn udp_ports(&mut self, outer: i16, fail: &'static str) -> &mut Self;
    /// Adds one packet and its length plus `adjust` octets to counter `index` of
    /// `stats` (its key written at `key` on the stack), then goes on at `next` (a
    /// label placed right after). Clobbers r0-r2.
    fn count(
        &mut self,
        stats: &OwnedFd,
        index: i32,
        key: i16,
        adjust: i32,
        next: &'static str,
    ) -> &mut Self;
}

impl Steps for Asm {
    fn load_packet(&mut self, offset: i32, at: i16, len: i32, fail: &'static str) -> &mut Self {
        self.alu_reg(MOV, R1, R6)
            .alu_imm(MOV, R2, offset)
            .frame_ptr(R3, at)
            .alu_imm(MOV, R4, len)
            .call(SKB_LOAD_BYTES)
            .jump_imm(JNE, R0, 0, fail)
    }

    fn header_sum(&mut self, at: i16) -> &mut Self {
        self.alu_imm(MOV, R1, 0)
            .alu_imm(MOV, R2, 0)
            .frame_ptr(R3, at)
            .alu_imm(MOV, R4, 20)
            .alu_imm(MOV, R5, 0)
            .call(CSUM_DIFF)
            .fold(R0, R1)
            .fold(R0, R1)
    }

    fn tunnel_data(&mut self, outer: i16, fail: &'static str) -> &mut Self {
        self.load(H, R1, FP, outer + 26)
            .jump_imm(JNE, R1, 0, fail)
            .load(H, R1, FP, outer + 24)
            .be16(R1)
            .alu_imm(ADD, R1, 20)
            .jump_reg(JNE, R1, R7, fail)
            .load(W, R1, FP, outer + 28)
            .jump_imm(JNE, R1, i32::from_ne_bytes([4, 4, 0, 0]), fail)
            .load(H, R1, FP, outer + 34)
            .be16(R1)
            .alu_imm(ADD, R1, 32)
            .jump_reg(JNE, R1, R7, fail)
    }

    fn live_entry(&mut self, map: &OwnedFd, fail: &'static str) -> &mut Self {
        self.load_map(R1, map)
            .call(MAP_LOOKUP_ELEM)
            .jump_imm(JEQ, R0, 0, fail)
            .alu_reg(MOV, R7, R0)
            .call(KTIME_GET_NS)
            .load(DW, R1, R7, 16)
            .jump_reg(JGE, R0, R1, fail)
    }

    fn came_back(&mut self, outer: i16, ifindex: i16, fail: &'static str) -> &mut Self {
        self.load(W, R1, FP, outer + 12)
            .load(W, R2, R7, 4)
            .jump_reg(JNE, R1, R2, fail)
            .load(W, R1, FP, outer + 16)
            .load(W, R2, R7, 0)
            .jump_reg(JNE, R1, R2, fail)
            .load(W, R1, R6, ifindex)
            .load(W, R2, R7, 8)
            .jump_reg(JNE, R1, R2, fail)
    }

    fn udp_ports(&mut self, outer: i16, fail: &'static str) -> &mut Self {
        self.load(H, R1, R7, 12)
            .jump_imm(JEQ, R1, 0, fail)
            .load(H, R2, FP, outer + 20)
            .jump_reg(JNE, R1, R2, fail)
            .load(H, R1, R7, 14)
            .load(H, R2, FP, outer + 22)
            .jump_reg(JNE, R1, R2, fail)
    }

    fn count(
        &mut self,
        stats: &OwnedFd,
        index: i32,
        key: i16,
        adjust: i32,
        next: &'static str,
    ) -> &mut Self {
        self.store_imm(W, FP, key, index)
            .load_map(R1, stats)
            .frame_ptr(R2, key)
            .call(MAP_LOOKUP_ELEM)
            .jump_imm(JEQ, R0, 0, next)
            .load(DW, R2, R0, 0)
            .alu_imm(ADD, R2, 1)
            .store(DW, R0, 0, R2)
            .load(W, R1, R6, SKB_LEN);
        if adjust != 0 {
            self.alu_imm(ADD, R1, adjust);
        }
        self.load(DW, R2, R0, 8)
            .alu_reg(ADD, R2, R1)
            .store(DW, R0, 8, R2)
            .label(next)
    }
}
