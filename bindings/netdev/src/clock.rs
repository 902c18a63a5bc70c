//! `CLOCK_MONOTONIC` as a number, for protocols that carry it (systemd's `MONOTONIC_USEC`);
//! `std::time::Instant` reads the same clock but does not say its value.

/// Microseconds of `CLOCK_MONOTONIC`.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one struct timespec, which `ts` is; CLOCK_MONOTONIC always
    // exists on Linux, so it cannot fail (and a failure would leave zeros).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000 + nanos / 1000
}

#[cfg(test)]
mod tests {
    #[test]
    fn it_moves_forward() {
        let a = super::monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::monotonic_usec();
        assert!(a > 0 && b >= a + 2000, "{a} {b}");
    }
}
