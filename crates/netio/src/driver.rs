//! Glue for driving a sans-IO core from tokio with exactly one timer.
//!
//! A core (home agent, IKE SA, ...) never reads the clock. It exposes one deadline,
//! [`Core::poll_timeout`], and reacts to [`Core::handle_timeout`]. The shell owns a single
//! [`Timer`], armed from that deadline, and follows one rule:
//!
//! **after every input (datagram, packet, netlink event, timer expiry) drain the core's
//! outputs, then re-arm the timer from `poll_timeout()`.**
//!
//! [`Driver`] packages that rule. A typical loop:
//!
//! ```ignore
//! let mut drv = Driver::new(home_agent);
//! loop {
//!     tokio::select! {
//!         now = drv.timer_expired() => drv.fire(now),
//!         r = recv_with_meta(&sock, &mut buf) => {
//!             let m = r?;
//!             drv.input(|ha, now| ha.handle_datagram(now, m.src, m.dst, &buf[..m.len]));
//!         }
//!     }
//!     // Drain every output the input produced before waiting again.
//!     while let Some(t) = drv.core_mut().poll_transmit() { send(t).await?; }
//!     while let Some(e) = drv.core_mut().poll_event() { apply(e).await?; }
//!     drv.rearm(); // the drained outputs may have moved the deadline
//! }
//! ```
//!
//! Time comes from `tokio::time::Instant::now()`, converted to `std::time::Instant`, so a
//! test with tokio's paused clock (`start_paused = true`) drives a core on virtual time.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use tokio::time::Sleep;

/// The timer half of a sans-IO core.
pub trait Core {
    /// Called when the deadline from [`Core::poll_timeout`] has passed.
    fn handle_timeout(&mut self, now: Instant);
    /// The earliest instant at which the core wants [`Core::handle_timeout`]; `None` when it
    /// waits for input only.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// The current time on tokio's clock (virtual when the clock is paused).
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A single re-armable deadline. Resetting is skipped when the deadline did not change,
/// so a busy loop does not touch tokio's timer wheel on every packet.
#[derive(Debug)]
pub struct Timer {
    sleep: Pin<Box<Sleep>>,
    deadline: Option<Instant>,
    resets: u64,
}

impl Default for Timer {
    fn default() -> Self {
        Timer::new()
    }
}

impl Timer {
    /// A disarmed timer. Needs a tokio runtime with time enabled.
    pub fn new() -> Self {
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            deadline: None,
            resets: 0,
        }
    }

    /// Arm for `deadline`, or disarm with `None`. No-op when the deadline is unchanged.
    pub fn arm(&mut self, deadline: Option<Instant>) {
        if deadline == self.deadline {
            return;
        }
        self.deadline = deadline;
        if let Some(d) = deadline {
            self.sleep.as_mut().reset(tokio::time::Instant::from_std(d));
            self.resets += 1;
        }
    }

    /// The armed deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How many times the underlying tokio timer was actually reset (for tests and metrics).
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Wait until the armed deadline, then disarm and return the current time. Pending
    /// forever while disarmed. Cancel-safe: dropping the future leaves the timer armed.
    pub async fn expired(&mut self) -> Instant {
        if self.deadline.is_none() {
            std::future::pending::<()>().await;
        }
        self.sleep.as_mut().await;
        self.deadline = None;
        now()
    }
}

/// A core plus its timer, enforcing "input, then re-arm".
#[derive(Debug)]
pub struct Driver<C> {
    core: C,
    timer: Timer,
}

impl<C: Core> Driver<C> {
    /// Wrap `core` and arm the timer from its current deadline.
    pub fn new(core: C) -> Self {
        let mut d = Driver {
            core,
            timer: Timer::new(),
        };
        d.rearm();
        d
    }

    /// The core.
    pub fn core(&self) -> &C {
        &self.core
    }

    /// The core, mutably (for draining `poll_*` outputs). Call [`Driver::rearm`] afterwards
    /// if anything done here can move the deadline.
    pub fn core_mut(&mut self) -> &mut C {
        &mut self.core
    }

    /// The timer (to inspect the deadline or the reset count).
    pub fn timer(&self) -> &Timer {
        &self.timer
    }

    /// Unwrap the core.
    pub fn into_core(self) -> C {
        self.core
    }

    /// Re-arm the timer from `poll_timeout()`.
    pub fn rearm(&mut self) {
        self.timer.arm(self.core.poll_timeout());
    }

    /// Resolves when the core's deadline passes; feed the result to [`Driver::fire`].
    /// Cancel-safe, so it can sit in a `tokio::select!` with the I/O futures.
    pub fn timer_expired(&mut self) -> impl Future<Output = Instant> + '_ {
        self.timer.expired()
    }

    /// Deliver a timer expiry: `handle_timeout(now)`, then re-arm.
    pub fn fire(&mut self, now: Instant) {
        self.core.handle_timeout(now);
        self.rearm();
    }

    /// Deliver one input: call `f(core, now)`, then re-arm. Returns what `f` returned.
    pub fn input<R>(&mut self, f: impl FnOnce(&mut C, Instant) -> R) -> R {
        let r = f(&mut self.core, now());
        self.rearm();
        r
    }

    /// Run only the timer until the core reports no deadline or `until` passes, calling
    /// `drain` after each expiry. Handy for tests and for cores with no I/O of their own.
    pub async fn run_timers(&mut self, until: Instant, mut drain: impl FnMut(&mut C)) {
        while let Some(d) = self.timer.deadline() {
            if d > until {
                break;
            }
            let now = self.timer.expired().await;
            self.core.handle_timeout(now);
            drain(&mut self.core);
            self.rearm();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A retransmitting core: sends at t0, then every `period` until `max` sends.
    struct Retx {
        next: Option<Instant>,
        period: Duration,
        sent: Vec<Instant>,
        outbox: Vec<Instant>,
        max: usize,
    }

    impl Core for Retx {
        fn handle_timeout(&mut self, now: Instant) {
            if let Some(n) = self.next {
                if now >= n {
                    self.sent.push(now);
                    self.outbox.push(now);
                    self.next = (self.sent.len() < self.max).then(|| now + self.period);
                }
            }
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.next
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timer_fires_on_virtual_time_and_drains() {
        let t0 = now();
        let core = Retx {
            next: Some(t0 + Duration::from_secs(1)),
            period: Duration::from_secs(2),
            sent: vec![],
            outbox: vec![],
            max: 3,
        };
        let mut drv = Driver::new(core);
        let mut drained = 0;
        drv.run_timers(t0 + Duration::from_secs(60), |c| {
            drained += c.outbox.len();
            c.outbox.clear();
        })
        .await;
        let offs: Vec<u64> = drv
            .core()
            .sent
            .iter()
            .map(|t| (*t - t0).as_secs())
            .collect();
        assert_eq!(offs, vec![1, 3, 5]);
        assert_eq!(drained, 3);
        assert_eq!(drv.timer().deadline(), None);
    }

    struct Fixed(Option<Instant>);
    impl Core for Fixed {
        fn handle_timeout(&mut self, _now: Instant) {}
        fn poll_timeout(&self) -> Option<Instant> {
            self.0
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rearm_only_when_deadline_changes() {
        let d = now() + Duration::from_secs(5);
        let mut drv = Driver::new(Fixed(Some(d)));
        assert_eq!(drv.timer().resets(), 1);
        for _ in 0..100 {
            drv.input(|_, _| ());
        }
        assert_eq!(drv.timer().resets(), 1, "unchanged deadline must not reset");
        drv.input(|c, now| c.0 = Some(now + Duration::from_secs(1)));
        assert_eq!(drv.timer().resets(), 2);
        drv.input(|c, _| c.0 = None);
        assert_eq!(drv.timer().deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn disarmed_timer_never_fires_and_select_sees_input() {
        let mut drv = Driver::new(Fixed(None));
        let fired = tokio::select! {
            _ = drv.timer_expired() => true,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => false,
        };
        assert!(!fired);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_wait_keeps_deadline() {
        let t0 = now();
        let mut drv = Driver::new(Fixed(Some(t0 + Duration::from_secs(10))));
        // An input arrives first; the timer future is dropped by select.
        tokio::select! {
            _ = drv.timer_expired() => panic!("fired early"),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let fired_at = drv.timer_expired().await;
        assert_eq!((fired_at - t0).as_secs(), 10);
    }
}
