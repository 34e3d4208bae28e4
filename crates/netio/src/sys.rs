//! Small unsafe helpers over libc: interface-name handling, `struct ifreq` ioctls and
//! `AF_PACKET` sockets (create, bind, attach a classic BPF filter).
//!
//! Every `unsafe` block in the crate that is not a plain syscall wrapper lives here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::{Error, Result};

/// `IFNAMSIZ`: interface names are at most 15 bytes plus the NUL.
pub(crate) const IFNAMSIZ: usize = 16;

/// `struct ifreq` with the union viewed as raw bytes (the union is 24 bytes on Linux).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct IfReq {
    pub name: [u8; IFNAMSIZ],
    pub data: [u8; 24],
}

impl IfReq {
    /// An `ifreq` carrying `name`, checked the way the kernel checks it.
    pub(crate) fn new(name: &str) -> Result<Self> {
        Ok(IfReq {
            name: ifname_bytes(name)?,
            data: [0; 24],
        })
    }

    /// The name the kernel wrote back (TUNSETIFF fills it in when a `%d` pattern was used).
    pub(crate) fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(self.name.get(..end).unwrap_or_default()).into_owned()
    }

    pub(crate) fn set_short(&mut self, v: libc::c_short) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }

    pub(crate) fn short(&self) -> libc::c_short {
        libc::c_short::from_ne_bytes([self.data[0], self.data[1]])
    }

    pub(crate) fn set_int(&mut self, v: libc::c_int) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }

    pub(crate) fn int(&self) -> libc::c_int {
        libc::c_int::from_ne_bytes([self.data[0], self.data[1], self.data[2], self.data[3]])
    }
}

/// Validate an interface name and return it NUL-padded.
pub(crate) fn ifname_bytes(name: &str) -> Result<[u8; IFNAMSIZ]> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= IFNAMSIZ || b.contains(&0) || b.contains(&b'/') {
        return Err(Error::BadIfName(name.to_owned()));
    }
    let mut out = [0u8; IFNAMSIZ];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

/// `ioctl(fd, req, &mut ifreq)`.
pub(crate) fn ioctl_ifreq(fd: RawFd, req: libc::c_ulong, ifr: &mut IfReq) -> io::Result<()> {
    // SAFETY: `ifr` is a valid, writable, correctly sized `struct ifreq` for the whole call;
    // every request used with this helper reads or writes only within that struct.
    let rc = unsafe { libc::ioctl(fd, req as _, ifr as *mut IfReq) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An `AF_INET` datagram socket, the conventional handle for `SIOC*IF*` ioctls.
pub(crate) fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned descriptor is checked and then owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Set the MTU of interface `name` (`SIOCSIFMTU`).
pub(crate) fn set_mtu(name: &str, mtu: u32) -> Result<()> {
    let mtu = libc::c_int::try_from(mtu).map_err(|_| Error::InvalidArgument("MTU out of range"))?;
    let sock = control_socket().map_err(Error::io("socket for SIOCSIFMTU"))?;
    let mut ifr = IfReq::new(name)?;
    ifr.set_int(mtu);
    ioctl_ifreq(sock.as_raw_fd(), libc::SIOCSIFMTU, &mut ifr).map_err(Error::io("SIOCSIFMTU"))
}

/// Read the MTU of interface `name` (`SIOCGIFMTU`).
pub(crate) fn mtu(name: &str) -> Result<u32> {
    let sock = control_socket().map_err(Error::io("socket for SIOCGIFMTU"))?;
    let mut ifr = IfReq::new(name)?;
    ioctl_ifreq(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr).map_err(Error::io("SIOCGIFMTU"))?;
    u32::try_from(ifr.int()).map_err(|_| Error::InvalidArgument("kernel returned a negative MTU"))
}

/// Set or clear `IFF_UP` on interface `name` (`SIOCGIFFLAGS` + `SIOCSIFFLAGS`).
pub(crate) fn set_up(name: &str, up: bool) -> Result<()> {
    let sock = control_socket().map_err(Error::io("socket for SIOCSIFFLAGS"))?;
    let mut ifr = IfReq::new(name)?;
    ioctl_ifreq(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr)
        .map_err(Error::io("SIOCGIFFLAGS"))?;
    let flags = ifr.short();
    let up_flag = libc::IFF_UP as libc::c_short;
    ifr.set_short(if up {
        flags | up_flag
    } else {
        flags & !up_flag
    });
    ioctl_ifreq(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut ifr).map_err(Error::io("SIOCSIFFLAGS"))
}

/// `if_nametoindex(3)`.
pub(crate) fn ifindex(name: &str) -> Result<u32> {
    let bytes = ifname_bytes(name)?;
    // SAFETY: `bytes` is NUL-terminated (ifname_bytes guarantees a trailing NUL).
    let idx = unsafe { libc::if_nametoindex(bytes.as_ptr().cast()) };
    if idx == 0 {
        Err(Error::NoSuchLink(name.to_owned()))
    } else {
        Ok(idx)
    }
}

/// Put a descriptor into non-blocking mode (needed for tokio's `AsyncFd`).
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we hold; no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Register an owned descriptor with tokio's reactor.
pub(crate) fn async_fd<T: AsRawFd>(
    inner: T,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: every `T` used here (`OwnedFd`, `socket2::Socket`) owns its descriptor, keeps
    // it open until dropped, and always returns the same one from `as_raw_fd`.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(inner, interest) }
        .map_err(|e| e.into_parts().1)
}

/// Turn a `ssize_t` syscall result into `io::Result<usize>`.
pub(crate) fn cvt_len(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `setsockopt(fd, level, name, value)`, the failure named after `op`.
pub(crate) fn setsockopt<T>(
    fd: i32,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
    op: &'static str,
) -> Result<()> {
    // SAFETY: `value` is a valid, initialised T for the duration of the call, and the
    // length passed is its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(Error::Io {
            op,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Ethertypes (`linux/if_ether.h`): IPv4, and every protocol (for a tap).
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_ALL: u16 = 0x0003;
/// Classic BPF's ancillary load of `skb->protocol`.
pub(crate) const SKF_AD_PROTOCOL: u32 = 0xffff_f000;

/// A non-blocking `AF_PACKET` socket of `sock_type` (`SOCK_RAW`: frames from the
/// link-layer header on; `SOCK_DGRAM`: from the network header) for `protocol` (host
/// order; 0 receives nothing until bound).
pub(crate) fn packet_socket(sock_type: libc::c_int, protocol: u16) -> Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is checked, then owned.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            sock_type | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::c_int::from(protocol.to_be()),
        )
    };
    if fd < 0 {
        return Err(Error::io("socket(AF_PACKET)")(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is fresh and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds an `AF_PACKET` socket to `protocol` (host order; `ETH_P_ALL` for every one)
/// on `ifindex` (0: every interface of the namespace).
pub(crate) fn bind_packet(fd: &OwnedFd, protocol: u16, ifindex: u32) -> Result<()> {
    let ifx =
        libc::c_int::try_from(ifindex).map_err(|_| Error::InvalidArgument("ifindex too large"))?;
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifx;
    // SAFETY: `sll` is a valid sockaddr_ll of the length passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(Error::io("bind(AF_PACKET)")(io::Error::last_os_error()));
    }
    Ok(())
}

/// Attaches a classic BPF socket filter (`SO_ATTACH_FILTER`).
pub(crate) fn attach_filter(fd: &OwnedFd, prog: &[libc::sock_filter]) -> Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len())
            .map_err(|_| Error::InvalidArgument("BPF program too long"))?,
        filter: prog.as_ptr().cast_mut(),
    };
    setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        &fprog,
        "SO_ATTACH_FILTER",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_validation() {
        assert!(ifname_bytes("eth0").is_ok());
        assert!(ifname_bytes("abcdefghijklmno").is_ok()); // 15 bytes
        assert!(matches!(
            ifname_bytes("abcdefghijklmnop"),
            Err(Error::BadIfName(_))
        ));
        assert!(matches!(ifname_bytes(""), Err(Error::BadIfName(_))));
        assert!(matches!(ifname_bytes("a\0b"), Err(Error::BadIfName(_))));
        assert!(matches!(ifname_bytes("a/b"), Err(Error::BadIfName(_))));
        let r = IfReq::new("tun7").unwrap();
        assert_eq!(r.name(), "tun7");
    }

    #[test]
    fn ifreq_layout_matches_kernel() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn loopback_has_index_and_mtu() {
        // Every network namespace has `lo`, so this runs without root.
        assert!(ifindex("lo").unwrap() >= 1);
        assert!(mtu("lo").unwrap() >= 1280);
        assert!(matches!(ifindex("no-such-if0"), Err(Error::NoSuchLink(_))));
    }
}
