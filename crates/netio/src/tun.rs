//! TUN devices: layer-3 virtual interfaces whose packets a process reads and writes.
//!
//! [`Tun`] opens `/dev/net/tun` with `IFF_TUN | IFF_NO_PI`, so every `read` returns one
//! whole IP packet and every `write` injects one, with no 4-byte packet-information prefix.
//! The descriptor is non-blocking and registered with tokio through `AsyncFd`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::sys::{self, IfReq};
use crate::{Error, Result};

/// Where the TUN clone device lives on Linux.
pub const TUN_PATH: &str = "/dev/net/tun";

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 203, int)`.
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `_IOW('T', 216, int)`.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// `_IOR('T', 224, int)`: the queue steering program (Linux 4.16).
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;
/// `TUN_F_*` offload flags for `TUNSETOFFLOAD`.
pub const TUN_F_CSUM: libc::c_uint = 0x01;
pub const TUN_F_TSO4: libc::c_uint = 0x02;

/// How to open a TUN device.
#[derive(Debug, Clone, Default)]
pub struct TunOptions {
    /// Set `IFF_MULTI_QUEUE`, so several [`Tun`]s can attach to the same device
    /// (one per thread). Off by default: one queue is what a single event loop needs.
    pub multi_queue: bool,
    /// MTU to set right after creation.
    pub mtu: Option<u32>,
    /// Bring the interface up (`IFF_UP`) right after creation.
    pub up: bool,
}

/// An attached TUN device; dropping it detaches (and, unless persistent, deletes) it.
#[derive(Debug)]
pub struct Tun {
    fd: AsyncFd<OwnedFd>,
    name: String,
    vnet_hdr: bool,
    /// The queue spec, for [`Tun::queue_spec`]: opened with `IFF_MULTI_QUEUE`, and the
    /// offloads asked for.
    multi_queue: bool,
    offload: Option<libc::c_uint>,
}

/// What another queue of a multi-queue [`Tun`] is opened with ([`Tun::queue_spec`]);
/// `Send`, so a worker thread opens its queue inside its own runtime.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    name: String,
    offload: Option<libc::c_uint>,
}

impl QueueSpec {
    /// Attaches one more queue to the device (its own descriptor: reads and writes on
    /// it are independent of the other queues'). Must be called inside a tokio
    /// runtime, the one that will poll the queue.
    pub fn open(&self) -> Result<Tun> {
        let opts = TunOptions {
            multi_queue: true,
            ..TunOptions::default()
        };
        Tun::open_at(Path::new(TUN_PATH), &self.name, &opts, self.offload)
    }
}

impl Tun {
    /// Create, or attach to, the TUN device `name` (a `%d` pattern such as `tun%d` lets the
    /// kernel choose). Must be called inside a tokio runtime.
    pub fn open(name: &str) -> Result<Tun> {
        Tun::open_with(name, &TunOptions::default())
    }

    /// [`Tun::open`] with options.
    pub fn open_with(name: &str, opts: &TunOptions) -> Result<Tun> {
        Tun::open_at(Path::new(TUN_PATH), name, opts, None)
    }

    /// [`Tun::open_with`] and `IFF_VNET_HDR`: every packet read or written is prefixed
    /// with a 10-octet `virtio_net_hdr` ([`crate::offload`]), and the kernel is asked
    /// (`TUNSETOFFLOAD`) for the `TUN_F_*` offloads in `offload`, e.g.
    /// `TUN_F_CSUM | TUN_F_TSO4` for TCP super-packets. An error if it refuses.
    pub fn open_with_offload(name: &str, opts: &TunOptions, offload: libc::c_uint) -> Result<Tun> {
        Tun::open_at(Path::new(TUN_PATH), name, opts, Some(offload))
    }

    pub(crate) fn open_at(
        path: &Path,
        name: &str,
        opts: &TunOptions,
        offload: Option<libc::c_uint>,
    ) -> Result<Tun> {
        let mut ifr = IfReq::new(name)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::TunMissing {
                    path: path.display().to_string(),
                },
                _ => Error::Io {
                    op: "open /dev/net/tun",
                    source: e,
                },
            })?;
        let fd: OwnedFd = file.into();
        let mut flags = IFF_TUN | IFF_NO_PI;
        if opts.multi_queue {
            flags |= IFF_MULTI_QUEUE;
        }
        if offload.is_some() {
            flags |= IFF_VNET_HDR;
        }
        ifr.set_short(flags);
        sys::ioctl_ifreq(fd.as_raw_fd(), TUNSETIFF, &mut ifr).map_err(Error::io("TUNSETIFF"))?;
        if let Some(off) = offload {
            let sz = crate::offload::VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer, which is valid.
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ as _, &sz) };
            if rc < 0 {
                return Err(Error::io("TUNSETVNETHDRSZ")(io::Error::last_os_error()));
            }
            // SAFETY: TUNSETOFFLOAD takes its argument by value; the descriptor is ours.
            let rc = unsafe {
                libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD as _, libc::c_ulong::from(off))
            };
            if rc < 0 {
                return Err(Error::io("TUNSETOFFLOAD")(io::Error::last_os_error()));
            }
        } else {
            // A persistent device keeps the offloads an earlier owner asked for: with
            // them the kernel would hand this reader, which has no virtio header to
            // describe them, unsegmented super-packets. Best effort: a kernel without
            // TUNSETOFFLOAD never offered them.
            // SAFETY: TUNSETOFFLOAD takes its argument by value; the descriptor is ours.
            let _ = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD as _, 0 as libc::c_ulong) };
        }
        sys::set_nonblocking(fd.as_raw_fd()).map_err(Error::io("O_NONBLOCK on tun"))?;
        let name = ifr.name();
        if let Some(mtu) = opts.mtu {
            sys::set_mtu(&name, mtu)?;
        }
        if opts.up {
            sys::set_up(&name, true)?;
        }
        let fd = sys::async_fd(fd, Interest::READABLE | Interest::WRITABLE)
            .map_err(Error::io("register tun with tokio"))?;
        tracing::debug!(%name, ?offload, "tun attached");
        Ok(Tun {
            fd,
            name,
            vnet_hdr: offload.is_some(),
            multi_queue: opts.multi_queue,
            offload,
        })
    }

    /// How to attach another queue to this device, if it was opened with
    /// [`TunOptions::multi_queue`].
    pub fn queue_spec(&self) -> Option<QueueSpec> {
        self.multi_queue.then(|| QueueSpec {
            name: self.name.clone(),
            offload: self.offload,
        })
    }

    /// Sends every packet the kernel routes into the device to the first queue
    /// (`TUNSETSTEERINGEBPF` with a two-instruction program that returns 0), instead
    /// of spreading flows over the queues by hash: the other queues are then for
    /// writing only, and whoever holds them never has to read. The device keeps the
    /// program until it is deleted or another one is set.
    pub fn steer_to_first_queue(&self) -> Result<()> {
        use crate::bpf::{Asm, MOV, R0};
        let mut a = Asm::default();
        a.alu_imm(MOV, R0, 0).exit();
        let insns = a.finish()?;
        let prog = crate::bpf::prog_load(
            crate::bpf::PROG_SOCKET_FILTER,
            &insns,
            "Apache-2.0",
            "mipsec_tunq0",
            0,
        )?;
        let fd: libc::c_int = prog.as_raw_fd();
        // SAFETY: TUNSETSTEERINGEBPF reads an int (the program's fd) through the
        // pointer, which is valid; the device takes its own reference to the program.
        let rc =
            unsafe { libc::ioctl(self.fd.get_ref().as_raw_fd(), TUNSETSTEERINGEBPF as _, &fd) };
        if rc < 0 {
            return Err(Error::io("TUNSETSTEERINGEBPF")(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Wrap an already configured TUN descriptor (for example one passed in by a parent).
    ///
    /// # Safety
    /// `raw` must be an open TUN descriptor, configured with `IFF_TUN | IFF_NO_PI`, that
    /// nothing else owns.
    pub unsafe fn from_raw_fd(raw: std::os::fd::RawFd, name: String) -> Result<Tun> {
        // SAFETY: the caller promises exclusive ownership of an open descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        sys::set_nonblocking(fd.as_raw_fd()).map_err(Error::io("O_NONBLOCK on tun"))?;
        let fd = sys::async_fd(fd, Interest::READABLE | Interest::WRITABLE)
            .map_err(Error::io("register tun with tokio"))?;
        Ok(Tun {
            fd,
            name,
            vnet_hdr: false,
            multi_queue: false,
            offload: None,
        })
    }

    /// Whether packets carry a `virtio_net_hdr` (opened with [`Tun::open_with_offload`]).
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// The interface name the kernel assigned.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn ifindex(&self) -> Result<u32> {
        sys::ifindex(&self.name)
    }

    /// Set the MTU (`SIOCSIFMTU`).
    pub fn set_mtu(&self, mtu: u32) -> Result<()> {
        sys::set_mtu(&self.name, mtu)
    }

    /// The current MTU (`SIOCGIFMTU`).
    pub fn mtu(&self) -> Result<u32> {
        sys::mtu(&self.name)
    }

    /// Keep the device (and the routes through it) after the last descriptor closes
    /// (`TUNSETPERSIST`). A daemon that fails closed through its TUN sets this, so that
    /// a crash leaves routes into a device nobody reads (packets dropped) instead of no
    /// routes (packets sent in the clear); a clean stop clears it.
    pub fn set_persistent(&self, on: bool) -> Result<()> {
        // SAFETY: TUNSETPERSIST takes its argument by value; the descriptor is ours.
        let rc = unsafe {
            libc::ioctl(
                self.fd.get_ref().as_raw_fd(),
                TUNSETPERSIST as _,
                libc::c_ulong::from(on),
            )
        };
        if rc < 0 {
            return Err(Error::Io {
                op: "TUNSETPERSIST",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Set or clear `IFF_UP`. [`crate::Netlink::set_link_up`] does the same over netlink.
    pub fn set_up(&self, up: bool) -> Result<()> {
        sys::set_up(&self.name, up)
    }

    /// Read one IP packet into `buf` and return its length. A packet longer than `buf` is
    /// truncated by the kernel, so size `buf` to the MTU. With [`Tun::vnet_hdr`], `buf`
    /// starts with the 10-octet header, and a TCP super-packet can be 64 KiB long.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::READABLE, |fd| {
                // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                sys::cvt_len(n)
            })
            .await
    }

    /// Write one whole IP packet. Returns the number of bytes written (all of them).
    /// With [`Tun::vnet_hdr`] an all-zero header (no offload) is written before it.
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        if self.vnet_hdr {
            let hdr = [0u8; crate::offload::VNET_HDR_LEN];
            return self
                .fd
                .async_io(Interest::WRITABLE, |fd| {
                    let iov = [
                        libc::iovec {
                            iov_base: hdr.as_ptr() as *mut libc::c_void,
                            iov_len: hdr.len(),
                        },
                        libc::iovec {
                            iov_base: packet.as_ptr() as *mut libc::c_void,
                            iov_len: packet.len(),
                        },
                    ];
                    // SAFETY: both iovecs point at live buffers of the stated lengths.
                    let n = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), 2) };
                    sys::cvt_len(n).map(|n| n.saturating_sub(hdr.len()))
                })
                .await;
        }
        self.send_raw(packet).await
    }

    /// Write `buf` as it is: with [`Tun::vnet_hdr`], a header followed by the packet
    /// (what [`crate::coalesce::Coalescer::finish`] yields).
    pub async fn send_raw(&self, buf: &[u8]) -> io::Result<usize> {
        let packet = buf;
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                // SAFETY: `packet` is valid for reads of `packet.len()` bytes.
                let n =
                    unsafe { libc::write(fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
                sys::cvt_len(n)
            })
            .await
    }

    /// Non-blocking read: `Err(WouldBlock)` when no packet is queued.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd.try_io(Interest::READABLE, |fd| {
            // SAFETY: as in `recv`.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            sys::cvt_len(n)
        })
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_clone_device_is_a_clear_error() {
        let err = Tun::open_at(
            Path::new("/nonexistent/net/tun"),
            "mtun0",
            &TunOptions::default(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, Error::TunMissing { .. }), "{err:?}");
        assert!(err.to_string().contains("mknod"), "{err}");
    }

    #[tokio::test]
    async fn bad_name_is_rejected_before_any_syscall() {
        let err = Tun::open("this-name-is-too-long").unwrap_err();
        assert!(matches!(err, Error::BadIfName(_)), "{err:?}");
    }
}
