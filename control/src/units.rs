//! Durations as the integer counts that reports, logs and settings carry.

use std::time::Duration;

/// Whole milliseconds in `d`, saturating at `u64::MAX` (some 584 million years): what
/// `d.as_millis() as u64` meant, without the silent wrap.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whole microseconds in `d`, saturating at `u64::MAX`.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_are_whole_and_saturate() {
        assert_eq!(millis(Duration::from_micros(2_999)), 2);
        assert_eq!(millis(Duration::from_secs(3_600)), 3_600_000);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
