//! A cache prefetch hint, for loops that know which memory they will touch a few steps ahead
//! (hash-table slots and filter blocks): the line arrives while other work runs, instead of
//! stalling the load that needs it. A hint only: it never changes a result.

/// Starts loading the cache line that holds `value`, without waiting for it.
#[inline(always)]
#[allow(unsafe_code)]
pub fn prefetch<T>(value: &T) {
    let p: *const T = value;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint — it never faults (the address comes from a reference
    // anyway), reads nothing a program can observe and writes no register, flag or memory. SSE,
    // which PREFETCHT0 needs, is part of every x86-64 CPU.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM is a hint as above: no fault, no observable read, no register, flag or
    // memory written (`readonly`, `preserves_flags`, `nostack`).
    unsafe {
        core::arch::asm!(
            "prfm pldl1keep, [{0}]",
            in(reg) p,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}
