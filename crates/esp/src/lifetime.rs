//! SA lifetimes (RFC 4301 section 4.4.2.1): soft limits ask IKE to rekey, hard limits end
//! the SA. Both are counted in seconds since the SA was installed and in payload octets.

use std::time::{Duration, Instant};

use crate::error::{ConfigError, EspError};

/// Lifetime limits of one SA; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifetime {
    pub soft_time: Option<Duration>,
    pub hard_time: Option<Duration>,
    /// Octets of inner (payload) data, excluding ESP overhead.
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
}

impl Lifetime {
    /// No limits.
    pub const UNLIMITED: Lifetime = Lifetime {
        soft_time: None,
        hard_time: None,
        soft_bytes: None,
        hard_bytes: None,
    };

    /// Soft and hard limits in seconds.
    pub fn secs(mut self, soft: u64, hard: u64) -> Self {
        self.soft_time = Some(Duration::from_secs(soft));
        self.hard_time = Some(Duration::from_secs(hard));
        self
    }

    /// Soft and hard limits in payload octets.
    pub fn bytes(mut self, soft: u64, hard: u64) -> Self {
        self.soft_bytes = Some(soft);
        self.hard_bytes = Some(hard);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad_t = matches!((self.soft_time, self.hard_time), (Some(s), Some(h)) if s >= h);
        let bad_b = matches!((self.soft_bytes, self.hard_bytes), (Some(s), Some(h)) if s >= h);
        if bad_t || bad_b {
            Err(ConfigError::Lifetime)
        } else {
            Ok(())
        }
    }
}

/// Which limit fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Time,
    Bytes,
    /// Outbound only: the sequence number space is nearly used up (soft) or used up (hard).
    SeqNumber,
}

/// Which side of the pair an SA is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Effects for the IKE layer, drained with `poll_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaEvent {
    /// Rekey now; the SA still works until its hard limit.
    SoftExpired {
        spi: u32,
        direction: Direction,
        trigger: Trigger,
    },
    /// The SA refuses all packets from now on; delete it.
    HardExpired {
        spi: u32,
        direction: Direction,
        trigger: Trigger,
    },
}

/// Lifetime accounting shared by inbound and outbound SAs. Each event fires once.
#[derive(Debug, Clone)]
pub(crate) struct LifeState {
    spi: u32,
    direction: Direction,
    limits: Lifetime,
    installed: Instant,
    bytes: u64,
    soft: Option<Trigger>,
    hard: Option<Trigger>,
    soft_reported: bool,
    hard_reported: bool,
}

impl LifeState {
    pub(crate) fn new(spi: u32, direction: Direction, limits: Lifetime, now: Instant) -> Self {
        LifeState {
            spi,
            direction,
            limits,
            installed: now,
            bytes: 0,
            soft: None,
            hard: None,
            soft_reported: false,
            hard_reported: false,
        }
    }

    fn deadline(&self, d: Option<Duration>) -> Option<Instant> {
        d.and_then(|d| self.installed.checked_add(d))
    }

    /// Applies the time limits at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.soft.is_none()
            && self
                .deadline(self.limits.soft_time)
                .is_some_and(|t| now >= t)
        {
            self.soft = Some(Trigger::Time);
        }
        if self.hard.is_none()
            && self
                .deadline(self.limits.hard_time)
                .is_some_and(|t| now >= t)
        {
            self.hard = Some(Trigger::Time);
        }
    }

    /// Refuses the packet if the hard lifetime is over at `now`.
    pub(crate) fn check(&mut self, now: Instant) -> Result<(), EspError> {
        self.handle_timeout(now);
        if self.hard.is_some() {
            Err(EspError::HardExpired)
        } else {
            Ok(())
        }
    }

    /// Books `n` payload octets of a packet that was just processed.
    pub(crate) fn add_bytes(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n as u64);
        if self.soft.is_none() && self.limits.soft_bytes.is_some_and(|l| self.bytes >= l) {
            self.soft = Some(Trigger::Bytes);
        }
        if self.hard.is_none() && self.limits.hard_bytes.is_some_and(|l| self.bytes >= l) {
            self.hard = Some(Trigger::Bytes);
        }
    }

    pub(crate) fn set_soft(&mut self, t: Trigger) {
        self.soft.get_or_insert(t);
    }

    pub(crate) fn set_hard(&mut self, t: Trigger) {
        self.hard.get_or_insert(t);
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn is_soft_expired(&self) -> bool {
        self.soft.is_some() || self.hard.is_some()
    }

    pub(crate) fn is_hard_expired(&self) -> bool {
        self.hard.is_some()
    }

    /// The next time limit not yet reached.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let soft = self
            .soft
            .is_none()
            .then(|| self.deadline(self.limits.soft_time))
            .flatten();
        let hard = self
            .hard
            .is_none()
            .then(|| self.deadline(self.limits.hard_time))
            .flatten();
        match (soft, hard) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn poll_event(&mut self) -> Option<SaEvent> {
        let (spi, direction) = (self.spi, self.direction);
        if !self.soft_reported {
            if let Some(trigger) = self.soft.or(self.hard) {
                self.soft_reported = true;
                return Some(SaEvent::SoftExpired {
                    spi,
                    direction,
                    trigger,
                });
            }
        }
        if !self.hard_reported {
            if let Some(trigger) = self.hard {
                self.hard_reported = true;
                return Some(SaEvent::HardExpired {
                    spi,
                    direction,
                    trigger,
                });
            }
        }
        None
    }
}
