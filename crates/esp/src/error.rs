//! Errors of the data path and of SA construction, and the drop counters.

use core::fmt;

/// Why a packet was not sealed or opened.
///
/// Every inbound failure maps to a [`DropReason`] (see [`EspError::drop_reason`]) and is
/// counted by the SA (or the [`crate::Sad`]) before it is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EspError {
    /// The packet is shorter than the ESP header, IV, trailer and ICV need.
    #[error("packet too short: {len} octets, need at least {min}")]
    TooShort { len: usize, min: usize },
    /// The ciphertext length does not fit the cipher's block size.
    #[error("ciphertext length {len} is not a multiple of {block}")]
    BadLength { len: usize, block: usize },
    /// No inbound SA has this SPI.
    #[error("unknown SPI {0:#010x}")]
    UnknownSpi(u32),
    /// The sequence number was already received, or is left of the window.
    #[error("replayed or too old sequence number {seq}")]
    Replay { seq: u64 },
    /// The ICV did not verify; nothing was committed.
    #[error("integrity check failed")]
    AuthFailed,
    /// Authenticated, but the padding or pad length is not what RFC 4303 section 2.4 says.
    #[error("bad padding")]
    BadPadding,
    /// The SA's hard lifetime (time or bytes) is over; it must not be used any more.
    #[error("SA hard lifetime expired")]
    HardExpired,
    /// Sealing would make the sequence number wrap; the SA has to be rekeyed.
    #[error("sequence number space exhausted; rekey")]
    SeqOverflow,
    /// The IV source failed (for example the random number generator).
    #[error("IV source failed")]
    IvSource,
    /// The inner packet is too large to be carried in one ESP packet.
    #[error("payload of {len} octets is too large")]
    TooLong { len: usize },
    /// The headroom given to `seal_in_place` is smaller than the ESP header and IV.
    #[error("headroom {have} is smaller than the {need} octets of ESP header and IV")]
    Headroom { have: usize, need: usize },
}

impl EspError {
    /// The counter an inbound failure is booked under (`None` for outbound-only errors).
    pub fn drop_reason(&self) -> Option<DropReason> {
        Some(match self {
            EspError::TooShort { .. } | EspError::BadLength { .. } => DropReason::TooShort,
            EspError::UnknownSpi(_) => DropReason::UnknownSpi,
            EspError::Replay { .. } => DropReason::Replay,
            EspError::AuthFailed => DropReason::AuthFailed,
            EspError::BadPadding => DropReason::BadPadding,
            EspError::HardExpired => DropReason::HardExpired,
            EspError::SeqOverflow
            | EspError::IvSource
            | EspError::TooLong { .. }
            | EspError::Headroom { .. } => return None,
        })
    }
}

/// Errors when building an SA from negotiated parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{what} key is {got} octets, the suite needs {expected}")]
    KeyLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("replay window {0} is outside 64..=65536")]
    ReplayWindow(u32),
    #[error("SPI {0} is reserved (0..=255)")]
    ReservedSpi(u32),
    #[error("this suite needs an unpredictable IV source (use OutboundSa::with_iv_source)")]
    IvSourceRequired,
    #[error("soft lifetime must be below the hard lifetime")]
    Lifetime,
}

/// Reasons an inbound packet is dropped; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    AuthFailed,
    Replay,
    TooShort,
    BadPadding,
    UnknownSpi,
    HardExpired,
}

impl DropReason {
    /// All reasons, in counter order.
    pub const ALL: [DropReason; 6] = [
        DropReason::AuthFailed,
        DropReason::Replay,
        DropReason::TooShort,
        DropReason::BadPadding,
        DropReason::UnknownSpi,
        DropReason::HardExpired,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// A short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replay => "replay",
            DropReason::TooShort => "too_short",
            DropReason::BadPadding => "bad_padding",
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::HardExpired => "hard_expired",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Drop counters, one per [`DropReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounters([u64; 6]);

impl DropCounters {
    /// How many packets were dropped for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0.get(reason.index()).copied().unwrap_or(0)
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub(crate) fn count(&mut self, reason: DropReason) {
        if let Some(c) = self.0.get_mut(reason.index()) {
            *c = c.saturating_add(1);
        }
    }

    /// Adds `other` into `self` (used to aggregate over a [`crate::Sad`]).
    pub fn add(&mut self, other: &DropCounters) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    pub(crate) fn count_error(&mut self, e: &EspError) {
        if let Some(r) = e.drop_reason() {
            self.count(r);
        }
    }
}
