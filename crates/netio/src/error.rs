//! The crate's error type.

use std::io;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while setting up or driving Linux I/O.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/net/tun` does not exist.
    #[error(
        "{path} is missing: this kernel has no TUN support or the device node was never \
         created (try `modprobe tun`, or `mkdir -p /dev/net && mknod /dev/net/tun c 10 200`)"
    )]
    TunMissing {
        /// The path that was tried.
        path: String,
    },
    /// An interface name that Linux would reject (empty, too long, or with a NUL).
    #[error("invalid interface name {0:?}: must be 1 to 15 bytes without NUL")]
    BadIfName(String),
    /// No interface has that name or index.
    #[error("no such network interface: {0}")]
    NoSuchLink(String),
    /// A system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a netlink request, or the netlink connection broke.
    #[error("netlink {op}: {source}")]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// The error reported by rtnetlink.
        #[source]
        source: rtnetlink::Error,
    },
    /// The caller asked for something that does not fit the object's configuration.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

impl Error {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, source }
    }

    pub(crate) fn netlink(op: &'static str) -> impl FnOnce(rtnetlink::Error) -> Error {
        move |source| Error::Netlink { op, source }
    }

    /// The raw OS error number, when the error came from a system call or from the kernel
    /// answering a netlink request (for example `libc::EEXIST` on a duplicate route).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Netlink {
                source: rtnetlink::Error::NetlinkError(msg),
                ..
            } => msg.raw_code().checked_neg(),
            _ => None,
        }
    }
}
