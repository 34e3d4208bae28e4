//! The hot path allocates nothing: once the output buffer has grown, seal and open of
//! further packets make zero heap allocations, for every suite.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use esp::{InboundSa, OutboundSa, RandomIv, SaConfig, Suite};
use rand::SeedableRng;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Only this test's thread is counted: the harness allocates on its own threads.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.with(Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn seal_and_open_do_not_allocate() {
    let now = Instant::now();
    for suite in Suite::ALL {
        let cfg = SaConfig::new(0x1000, suite).with_esn(true);
        let enc = vec![9u8; suite.enc_key_len()];
        let integ = vec![8u8; suite.integ_key_len()];
        let mut tx = if suite.is_aead() {
            OutboundSa::new(cfg, &enc, &integ, now).unwrap()
        } else {
            let rng = rand::rngs::StdRng::seed_from_u64(1);
            OutboundSa::with_iv_source(cfg, &enc, &integ, now, Box::new(RandomIv(rng))).unwrap()
        };
        let mut rx = InboundSa::new(cfg, &enc, &integ, now).unwrap();
        let inner = vec![0x45u8; 1400];
        let mut out = Vec::with_capacity(2048);
        let mut headroom_buf = Vec::with_capacity(2048);

        let before = ALLOCS.load(Ordering::Relaxed);
        COUNTING.with(|c| c.set(true));
        for _ in 0..1000 {
            tx.seal(now, 4, &inner, &mut out).unwrap();
            let o = rx.open(now, &mut out).unwrap();
            assert_eq!(o.payload.len(), inner.len());

            headroom_buf.clear();
            headroom_buf.resize(64, 0);
            headroom_buf.extend_from_slice(&inner);
            let r = tx.seal_in_place(now, 4, &mut headroom_buf, 64).unwrap();
            rx.open(now, &mut headroom_buf[r]).unwrap();
        }
        COUNTING.with(|c| c.set(false));
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(
            allocs, 0,
            "{suite:?}: {allocs} allocations in 2000 seal+open"
        );
    }
}
