//! The few eBPF pieces the kernel encapsulator needs, by hand: an instruction
//! encoder with labels, and the `bpf(2)` commands to create a hash map, load a
//! `SCHED_CLS` program (with the verifier's log on refusal), attach it as a `tcx`
//! link, and update, look up and delete map entries.
//!
//! No loader crate: the one program is a few dozen instructions built in Rust,
//! so there is no ELF object, no BTF and no C toolchain at build time. Every fd
//! is an [`OwnedFd`]; a link dies with its fd, so a killed process leaves no
//! program attached.

use crate::error::{Error, Result};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;

/// `BPF_MAP_TYPE_HASH`.
pub(crate) const MAP_HASH: u32 = 1;
/// `BPF_F_NO_PREALLOC`: entries are allocated when added.
pub(crate) const F_NO_PREALLOC: u32 = 1;
/// `BPF_PROG_TYPE_SOCKET_FILTER` (a TUN's queue steering program is one).
pub(crate) const PROG_SOCKET_FILTER: u32 = 1;
/// `BPF_PROG_TYPE_SCHED_CLS`.
pub(crate) const PROG_SCHED_CLS: u32 = 3;
/// `BPF_PROG_TYPE_XDP`, and `BPF_XDP`, its attach type.
pub(crate) const PROG_XDP: u32 = 6;
pub(crate) const XDP: u32 = 37;
/// `XDP_FLAGS_DRV_MODE`: in the driver, before GRO (never the generic hook).
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 4;
/// `BPF_TCX_INGRESS`, `BPF_TCX_EGRESS` (Linux 6.6).
pub(crate) const TCX_INGRESS: u32 = 46;
pub(crate) const TCX_EGRESS: u32 = 47;

/// One instruction, as `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// Registers.
pub(crate) const R0: u8 = 0;
pub(crate) const R1: u8 = 1;
pub(crate) const R2: u8 = 2;
pub(crate) const R3: u8 = 3;
pub(crate) const R4: u8 = 4;
pub(crate) const R5: u8 = 5;
pub(crate) const R6: u8 = 6;
pub(crate) const R7: u8 = 7;
pub(crate) const R8: u8 = 8;
pub(crate) const R9: u8 = 9;
/// The frame pointer (read only).
pub(crate) const FP: u8 = 10;

// Instruction classes, sizes, modes, operations.
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
const ALU: u8 = 0x04;
const MEM: u8 = 0x60;
const IMM: u8 = 0x00;
const K: u8 = 0x00;
const X: u8 = 0x08;
/// Access sizes.
pub(crate) const W: u8 = 0x00;
pub(crate) const H: u8 = 0x08;
pub(crate) const B: u8 = 0x10;
pub(crate) const DW: u8 = 0x18;
/// ALU operations.
pub(crate) const ADD: u8 = 0x00;
pub(crate) const OR: u8 = 0x40;
pub(crate) const AND: u8 = 0x50;
pub(crate) const LSH: u8 = 0x60;
pub(crate) const RSH: u8 = 0x70;
pub(crate) const XOR: u8 = 0xa0;
pub(crate) const MOV: u8 = 0xb0;
const END: u8 = 0xd0;
const TO_BE: u8 = 0x08;
/// Jump conditions.
pub(crate) const JEQ: u8 = 0x10;
pub(crate) const JGT: u8 = 0x20;
pub(crate) const JGE: u8 = 0x30;
pub(crate) const JNE: u8 = 0x50;
pub(crate) const JLT: u8 = 0xa0;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
/// `BPF_PSEUDO_MAP_FD`: the 64-bit immediate is a map fd.
const PSEUDO_MAP_FD: u8 = 1;

/// A program under construction; jumps name labels that are placed later.
#[derive(Default)]
pub(crate) struct Asm {
    insns: Vec<Insn>,
    /// (instruction index, label) of each jump still to patch.
    fixups: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn push(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Self {
        self.insns.push(Insn {
            code,
            regs: (dst & 0x0f) | (src << 4),
            off,
            imm,
        });
        self
    }

    /// `dst op= imm` (64-bit).
    pub(crate) fn alu_imm(&mut self, op: u8, dst: u8, imm: i32) -> &mut Self {
        self.push(ALU64 | op | K, dst, 0, 0, imm)
    }

    /// `dst op= src` (64-bit).
    pub(crate) fn alu_reg(&mut self, op: u8, dst: u8, src: u8) -> &mut Self {
        self.push(ALU64 | op | X, dst, src, 0, 0)
    }

    /// `dst = fp + off`: a pointer into the stack frame.
    pub(crate) fn frame_ptr(&mut self, dst: u8, off: i16) -> &mut Self {
        self.alu_reg(MOV, dst, FP).alu_imm(ADD, dst, i32::from(off))
    }

    /// One fold of a one's complement sum: `dst = (dst & 0xffff) + (dst >> 16)`,
    /// with `tmp` clobbered.
    pub(crate) fn fold(&mut self, dst: u8, tmp: u8) -> &mut Self {
        self.alu_reg(MOV, tmp, dst)
            .alu_imm(RSH, tmp, 16)
            .alu_imm(AND, dst, 0xffff)
            .alu_reg(ADD, dst, tmp)
    }

    /// `dst = htons(dst)` (the low 16 bits to network order).
    pub(crate) fn be16(&mut self, dst: u8) -> &mut Self {
        self.push(ALU | END | TO_BE, dst, 0, 0, 16)
    }

    /// `dst = *(size *)(src + off)`.
    pub(crate) fn load(&mut self, size: u8, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(LDX | MEM | size, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`.
    pub(crate) fn store(&mut self, size: u8, dst: u8, off: i16, src: u8) -> &mut Self {
        self.push(STX | MEM | size, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`.
    pub(crate) fn store_imm(&mut self, size: u8, dst: u8, off: i16, imm: i32) -> &mut Self {
        self.push(ST | MEM | size, dst, 0, off, imm)
    }

    /// `dst = map` (the two-slot 64-bit immediate with a map fd).
    pub(crate) fn load_map(&mut self, dst: u8, map: &OwnedFd) -> &mut Self {
        self.push(LD | IMM | DW, dst, PSEUDO_MAP_FD, 0, map.as_raw_fd());
        self.push(0, 0, 0, 0, 0)
    }

    /// `if dst op imm goto label`.
    pub(crate) fn jump_imm(&mut self, op: u8, dst: u8, imm: i32, label: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), label));
        self.push(JMP | op | K, dst, 0, 0, imm)
    }

    /// `if dst op src goto label`.
    pub(crate) fn jump_reg(&mut self, op: u8, dst: u8, src: u8, label: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), label));
        self.push(JMP | op | X, dst, src, 0, 0)
    }

    /// Calls helper `id`: arguments in r1-r5, result in r0, r1-r5 clobbered.
    pub(crate) fn call(&mut self, id: i32) -> &mut Self {
        self.push(JMP | CALL, 0, 0, 0, id)
    }

    pub(crate) fn exit(&mut self) -> &mut Self {
        self.push(JMP | EXIT, 0, 0, 0, 0)
    }

    /// Places `label` at the next instruction.
    pub(crate) fn label(&mut self, label: &'static str) -> &mut Self {
        self.labels.push((label, self.insns.len()));
        self
    }

    /// The instructions, every jump resolved.
    pub(crate) fn finish(mut self) -> Result<Vec<Insn>> {
        for &(at, name) in &self.fixups {
            let to = self
                .labels
                .iter()
                .find(|(l, _)| *l == name)
                .map(|&(_, i)| i)
                .ok_or(Error::InvalidArgument("eBPF jump to a missing label"))?;
            let off = i16::try_from(to as i64 - at as i64 - 1)
                .map_err(|_| Error::InvalidArgument("eBPF jump too far"))?;
            self.insns[at].off = off;
        }
        Ok(self.insns)
    }
}

/// `bpf(cmd, attr, size)`, returning the non-negative result.
fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, zero-padded `union bpf_attr` prefix of its length;
    // the kernel reads at most that many octets and writes only into fields of it.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A `union bpf_attr` being filled in, field by field at its offset.
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }

    fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn name(&mut self, at: usize, name: &str) -> &mut Self {
        for (d, s) in self.0[at..at + 15].iter_mut().zip(name.bytes()) {
            *d = s;
        }
        self
    }
}

fn fd_of(r: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(r).map_err(|_| io::Error::other("bpf returned no fd"))?;
    // SAFETY: the kernel just returned this fd to us, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn raw_fd(fd: &OwnedFd) -> Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| Error::InvalidArgument("bad fd"))
}

/// Creates a map.
pub(crate) fn map_create(
    kind: u32,
    key: u32,
    value: u32,
    max: u32,
    flags: u32,
    name: &str,
) -> Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, kind)
        .u32(4, key)
        .u32(8, value)
        .u32(12, max)
        .u32(16, flags)
        .name(28, name);
    bpf(BPF_MAP_CREATE, &mut attr)
        .and_then(fd_of)
        .map_err(Error::io("bpf map create"))
}

/// Loads a program; on refusal the error carries the verifier's log.
pub(crate) fn prog_load(
    kind: u32,
    insns: &[Insn],
    license: &str,
    name: &str,
    attach: u32,
) -> Result<OwnedFd> {
    let lic = std::ffi::CString::new(license)
        .map_err(|_| Error::InvalidArgument("license with a NUL"))?;
    let mut log = vec![0u8; 64 * 1024];
    let count =
        u32::try_from(insns.len()).map_err(|_| Error::InvalidArgument("program too long"))?;
    let load = |log_level: u32, log: &mut [u8]| {
        let (size, buf) = match log_level {
            0 => (0, 0),
            _ => (
                u32::try_from(log.len()).unwrap_or(0),
                log.as_mut_ptr() as u64,
            ),
        };
        let mut attr = Attr::new();
        attr.u32(0, kind)
            .u32(4, count)
            .u64(8, insns.as_ptr() as u64)
            .u64(16, lic.as_ptr() as u64)
            .u32(24, log_level)
            .u32(28, size)
            .u64(32, buf)
            .name(48, name)
            .u32(68, attach);
        bpf(BPF_PROG_LOAD, &mut attr).and_then(fd_of)
    };
    match load(0, &mut log) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            // Again with the log, to say why.
            let _ = load(1, &mut log);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: String = text
                .lines()
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            Err(Error::Io {
                op: "bpf program load",
                source: io::Error::new(first.kind(), format!("{first}; verifier: {tail}")),
            })
        }
    }
}

/// Attaches `prog` to `ifindex` at `attach` (a `tcx` hook) as a link: it stays
/// attached while the returned fd is open.
pub(crate) fn link_create(prog: &OwnedFd, ifindex: u32, attach: u32) -> Result<OwnedFd> {
    link_create_flags(prog, ifindex, attach, 0)
}

/// [`link_create`] with the link's `flags` (an XDP link's mode).
pub(crate) fn link_create_flags(
    prog: &OwnedFd,
    ifindex: u32,
    attach: u32,
    flags: u32,
) -> Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, raw_fd(prog)?)
        .u32(4, ifindex)
        .u32(8, attach)
        .u32(12, flags);
    bpf(BPF_LINK_CREATE, &mut attr)
        .and_then(fd_of)
        .map_err(Error::io("bpf link"))
}

fn elem(map: &OwnedFd, key: &[u8], value: u64) -> Result<Attr> {
    let mut attr = Attr::new();
    attr.u32(0, raw_fd(map)?)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value);
    Ok(attr)
}

/// Adds or replaces an entry.
pub(crate) fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> Result<()> {
    let mut attr = elem(map, key, value.as_ptr() as u64)?;
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
        .map(drop)
        .map_err(Error::io("bpf map update"))
}

/// Removes an entry; `false` if there was none.
pub(crate) fn map_delete(map: &OwnedFd, key: &[u8]) -> Result<bool> {
    let mut attr = elem(map, key, 0)?;
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(Error::io("bpf map delete")(e)),
    }
}

/// Reads an entry into `value`; `false` if there is none.
pub(crate) fn map_lookup(map: &OwnedFd, key: &[u8], value: &mut [u8]) -> Result<bool> {
    let mut attr = elem(map, key, value.as_mut_ptr() as u64)?;
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(Error::io("bpf map lookup")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(i: &[Insn]) -> Vec<[u8; 8]> {
        i.iter()
            .map(|i| {
                let mut b = [0u8; 8];
                b[0] = i.code;
                b[1] = i.regs;
                b[2..4].copy_from_slice(&i.off.to_le_bytes());
                b[4..8].copy_from_slice(&i.imm.to_le_bytes());
                b
            })
            .collect()
    }

    #[test]
    fn encodes_as_the_kernel_documents_and_resolves_labels() {
        let mut a = Asm::default();
        a.alu_reg(MOV, R6, R1)
            .load(W, R2, R6, 16)
            .jump_imm(JNE, R2, 8, "out")
            .call(1)
            .store_imm(B, FP, -24, 0x45)
            .be16(R1)
            .label("out")
            .alu_imm(MOV, R0, -1)
            .exit();
        let got = bytes(&a.finish().unwrap());
        // As `llvm-objdump -d` prints the same instructions.
        assert_eq!(got[0], [0xbf, 0x16, 0, 0, 0, 0, 0, 0]); // r6 = r1
        assert_eq!(got[1], [0x61, 0x62, 16, 0, 0, 0, 0, 0]); // r2 = *(u32 *)(r6 + 16)
        assert_eq!(got[2], [0x55, 0x02, 3, 0, 8, 0, 0, 0]); // if r2 != 8 goto +3
        assert_eq!(got[3], [0x85, 0, 0, 0, 1, 0, 0, 0]); // call 1
        assert_eq!(got[4], [0x72, 0x0a, 0xe8, 0xff, 0x45, 0, 0, 0]); // *(u8 *)(r10 - 24) = 0x45
        assert_eq!(got[5], [0xdc, 0x01, 0, 0, 16, 0, 0, 0]); // r1 = be16 r1
        assert_eq!(got[6], [0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]); // r0 = -1
        assert_eq!(got[7], [0x95, 0, 0, 0, 0, 0, 0, 0]); // exit
    }

    #[test]
    fn a_jump_to_a_missing_label_is_an_error() {
        let mut a = Asm::default();
        a.jump_imm(JEQ, R0, 0, "nowhere").exit();
        assert!(a.finish().is_err());
    }
}
