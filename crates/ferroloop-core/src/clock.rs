//! The loop clock.
//!
//! asyncio's `BaseEventLoop.time()` is `time.monotonic()`, which on Linux reads `CLOCK_MONOTONIC`.
//! Programs compare `loop.time()` with `time.monotonic()`, so we read the very same clock rather
//! than `std::time::Instant` (whose epoch is opaque).

/// Seconds on `CLOCK_MONOTONIC`, as `time.monotonic()` returns them.
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC is always supported on Linux,
    // so clock_gettime only writes into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The resolution of [`monotonic`] in seconds (asyncio's `_clock_resolution`).
pub fn resolution() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as in `monotonic`, the kernel only writes into the valid timespec.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 1e-9;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let mut last = monotonic();
        for _ in 0..1000 {
            let now = monotonic();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn resolution_is_fine_grained() {
        let r = resolution();
        assert!(r > 0.0 && r <= 1e-3, "resolution {r}");
    }
}
