//! What every daemon's I/O shell shares: the tunnel device, socket tuning,
//! sysctls, seeds, and the single-threaded runtime they run on.

use netio::tun::{Tun, TunOptions};
use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{debug, warn};

/// MTU of the tunnel devices: 1500 minus the largest encapsulation in use, the
/// RFC 3519 UDP tunnel (outer IPv4 20, UDP 8, Tunnel Data header 4). IP-in-IP
/// alone would allow 1480, but a node that moves behind a NAT would then send
/// packets that need fragmenting on every hop of the tunnel.
pub const TUNNEL_MTU: u32 = 1500 - 32;
/// Transmit queue of the tunnel devices, packets.
pub(crate) const TUN_QUEUE: i32 = 4000;

/// Protocol ids marking the neighbour entries and routes each daemon installs
/// (`ip neigh show proto 241`, `ip route show table all proto 242`), so that a new
/// instance removes what one killed by SIGKILL left behind.
pub(crate) const PROTO_FA: u8 = 241;
pub(crate) const PROTO_HA: u8 = 242;
/// Packets handled per wakeup before the event loop looks at other inputs.
pub(crate) const BATCH: usize = 64;
/// Socket buffer for the data-path sockets: absorbs bursts while the loop is busy.
pub(crate) const SOCKET_BUFFER: i32 = 4 << 20;

/// Sets a device's transmit queue length (`ip link set DEV txqueuelen N`). The
/// tunnel device's queue is where packets wait for the daemon; the default 500
/// overflows under a TCP burst and every overflow costs the sender a retransmission.
pub(crate) fn set_txqueuelen(dev: &str, len: i32) {
    #[repr(C)]
    struct IfReqQlen {
        name: [libc::c_char; libc::IFNAMSIZ],
        qlen: libc::c_int,
        _pad: [u8; 20],
    }
    let mut req = IfReqQlen {
        name: [0; libc::IFNAMSIZ],
        qlen: len,
        _pad: [0; 20],
    };
    for (d, s) in req
        .name
        .iter_mut()
        .zip(dev.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    // SAFETY: a throwaway datagram socket, closed below; `req` is a valid ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return;
        }
        if libc::ioctl(fd, libc::SIOCSIFTXQLEN as _, &mut req) != 0 {
            debug!("txqueuelen of {dev}: {}", std::io::Error::last_os_error());
        }
        libc::close(fd);
    }
}

/// Lets the kernel fragment the packets a tunnel socket sends (IP_PMTUDISC_DONT).
/// A visitor of a foreign agent sends full 1500-octet packets on its link; the
/// agent's IP-in-IP copy is 20 octets longer and would otherwise be refused with
/// EMSGSIZE and lost. The tunnel exit's raw socket gets them reassembled.
pub(crate) fn allow_fragmentation(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = libc::IP_PMTUDISC_DONT;
    // SAFETY: a valid socket fd, and a pointer to a c_int with its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        debug!("IP_MTU_DISCOVER: {}", std::io::Error::last_os_error());
    }
}

/// Enlarges a socket's buffers beyond `rmem_max`/`wmem_max` (needs CAP_NET_ADMIN).
pub(crate) fn enlarge_buffers(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        let v: libc::c_int = SOCKET_BUFFER;
        // SAFETY: a valid socket fd, and a pointer to a c_int with its size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            debug!("socket buffer: {}", std::io::Error::last_os_error());
        }
    }
}

/// A system resource a daemon could not set up: what it was for, and why.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A socket, device, netlink or interface query of `netio` failed.
    #[error("{what}: {source}")]
    Net {
        /// What the resource was for ("UDP port 434", "tunnel device", ...).
        what: &'static str,
        /// What `netio` reported.
        #[source]
        source: netio::Error,
    },
    /// Any other system call failed.
    #[error("{what}: {source}")]
    Os {
        /// What the resource was for ("tokio runtime", "signal handler", ...).
        what: &'static str,
        /// What the system reported.
        #[source]
        source: std::io::Error,
    },
}

/// Maps a netio error to a [`SetupError`] naming what failed.
pub(crate) fn io_err(what: &'static str) -> impl Fn(netio::Error) -> SetupError {
    move |source| SetupError::Net { what, source }
}

/// Maps an I/O error to a [`SetupError`] naming what failed.
pub(crate) fn os_err(what: &'static str) -> impl Fn(std::io::Error) -> SetupError {
    move |source| SetupError::Os { what, source }
}

/// Writes a sysctl, warning (not failing) when it cannot.
pub(crate) fn write_sysctl(path: &str, value: &str) {
    if let Err(e) = std::fs::write(path, value) {
        warn!("cannot set {path} = {value}: {e}");
    }
}

/// Creates a daemon's tunnel device: up, MTU [`TUNNEL_MTU`], a queue of
/// [`TUN_QUEUE`] packets, no reverse-path filter (it carries other hosts'
/// addresses) and no IPv6. Returns the device and its interface index.
/// `multi_queue`: several queues may attach (`IFF_MULTI_QUEUE`).
pub(crate) fn open_tunnel(name: &str, multi_queue: bool) -> Result<(Tun, u32), SetupError> {
    open_tunnel_with(name, None, multi_queue)
}

/// [`open_tunnel`] with TUN offloads (`IFF_VNET_HDR` and these `TUN_F_*` flags, see
/// `netio::offload`); an error when the kernel refuses them.
pub(crate) fn open_tunnel_with(
    name: &str,
    offload: Option<libc::c_uint>,
    multi_queue: bool,
) -> Result<(Tun, u32), SetupError> {
    // Up only once IPv6 is off on it: up first, the kernel's IPv6 would send its
    // router solicitation or MLD report into the device, which the daemon reads
    // and counts as a drop.
    let opts = TunOptions {
        mtu: Some(TUNNEL_MTU),
        up: false,
        multi_queue,
    };
    let tun = match offload {
        Some(o) => Tun::open_with_offload(name, &opts, o),
        None => Tun::open_with(name, &opts),
    }
    .map_err(io_err("tunnel device"))?;
    let ifindex = tun.ifindex().map_err(io_err("tunnel device"))?;
    set_txqueuelen(name, TUN_QUEUE);
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "0");
    write_sysctl(&format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    tun.set_up(true).map_err(io_err("tunnel device"))?;
    Ok((tun, ifindex))
}

/// Runs a daemon on a single-threaded tokio runtime.
pub(crate) fn block_on<E: From<SetupError>>(
    f: impl Future<Output = Result<(), E>>,
) -> Result<(), E> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(os_err("tokio runtime"))?
        .block_on(f)
}

/// Seeds for nonces: from the kernel's random source.
pub(crate) fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(buf).is_ok() {
            return;
        }
    }
    // Fall back to time-derived bytes (nonces only need to be unpredictable enough).
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (t >> ((i % 16) * 8)) as u8;
    }
}
