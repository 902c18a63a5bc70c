//! Log lines that bad input causes, at most one a second per kind: a flood of forged frames
//! must not turn into a flood of log lines. The counters have every one.

use std::time::{Duration, Instant};

/// One kind of log line, rate-limited.
#[derive(Debug, Default)]
pub struct LogLimit {
    next: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// Whether a line may be written at `now`: `Some(lines suppressed since the last one)` at
    /// most once a second, else `None` (and the line is counted as suppressed).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|t| now < t) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + Duration::from_secs(1));
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_what_it_suppressed() {
        let t = Instant::now();
        let mut l = LogLimit::default();
        assert_eq!(l.allow(t), Some(0));
        for ms in 1..1000 {
            assert_eq!(l.allow(t + Duration::from_millis(ms)), None);
        }
        assert_eq!(l.allow(t + Duration::from_secs(1)), Some(999));
        assert_eq!(l.allow(t + Duration::from_secs(3)), Some(0));
    }
}
