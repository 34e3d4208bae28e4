//! Cache prefetch hints behind a safe API. The prefetch intrinsic takes a raw pointer
//! and is `unsafe` to call although it never faults; this crate holds that one call,
//! so that the sans-IO crates that want the hint (the home agent's batch lookup in
//! `mip4`) can `forbid(unsafe_code)`. No dependencies, no I/O.
//!
//! Measured (`cargo bench -p mip4 --bench ha_register`, batches of 32 requests over
//! 1 M nodes): 679-751 ns per registration with this hint (two runs), 845 ns with plain
//! loads of a few fields instead (safe code in mip4), 1.3-1.5 us one at a time.

#![deny(unsafe_code)]

/// Asks the CPU to start loading the memory of `v` into the cache, one hint per
/// 64-octet line; it never faults and changes nothing else. On other targets than
/// x86_64 it does nothing.
#[inline]
pub fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (v as *const T).cast::<i8>();
        for off in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: a prefetch is a hint that never faults, whatever the address;
            // this one lies within `v` anyway.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off))
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

#[cfg(test)]
mod tests {
    use super::prefetch;

    #[test]
    fn hints_change_nothing() {
        let big = vec![[7u8; 4096]; 4];
        for b in &big {
            prefetch(b);
        }
        prefetch(&());
        prefetch(&big);
        assert!(big.iter().all(|b| b.iter().all(|x| *x == 7)));
    }
}
