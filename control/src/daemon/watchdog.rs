//! The watchdog: the control thread watches every worker's and the health checker's progress.
//!
//! Each watched thread bumps its [`Heartbeat`] once per loop pass (a plain relaxed store: the
//! thread is its only writer). Every [`CHECK_EVERY`] the control thread reads them
//! ([`Watchdog::observe`]); a counter that has not moved for longer than the bound
//! (`[dataplane] watchdog`) marks its thread stalled, and one that moves again clears it. While
//! any thread is stalled the appliance steps down from VRRP master (`Ha::watchdog`): a worker
//! that no longer polls black-holes its share of clients, and a stalled health checker leaves
//! the gateways' health stale.
//!
//! Only time the control thread itself watched counts: when its own checks are further apart
//! than half the bound (it was descheduled, or the whole process was stopped), every window
//! starts again ([`Watchdog::begin`]), so a process resumed after SIGSTOP does not find its
//! workers "stalled" before they had a chance to run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

/// How often the control thread reads the heartbeats.
pub const CHECK_EVERY: Duration = Duration::from_millis(2);

/// A counter on a cache line of its own: the worker writes it on every pass, the control
/// thread reads it every [`CHECK_EVERY`].
#[repr(align(64))]
#[derive(Debug, Default)]
struct Padded(AtomicU64);

/// A thread's progress counter. One thread beats it; any may read it.
#[derive(Clone, Debug, Default)]
pub struct Heartbeat(Arc<Padded>);

impl Heartbeat {
    pub fn new() -> Heartbeat {
        Heartbeat::default()
    }

    /// One more loop pass. Only the owning thread calls this, so a load and a store (no
    /// read-modify-write, no lock prefix) are enough.
    #[inline]
    pub fn beat(&self) {
        let v = self.0 .0.load(Ordering::Relaxed);
        self.0 .0.store(v.wrapping_add(1), Ordering::Relaxed);
    }

    /// The passes so far.
    pub fn read(&self) -> u64 {
        self.0 .0.load(Ordering::Relaxed)
    }
}

/// A watched thread: a worker by index, or the health checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thread {
    Worker(usize),
    HealthChecker,
}

impl Thread {
    /// `worker0`, `worker1`, ..., `health-checker`: the `thread` label of the metrics.
    pub fn label(self) -> String {
        match self {
            Thread::Worker(i) => format!("worker{i}"),
            Thread::HealthChecker => "health-checker".to_string(),
        }
    }
}

/// A change of one thread's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// No progress for `stalled_ms` (just over the bound).
    Stalled { stalled_ms: u64 },
    /// Progress again after `stalled_ms` without any.
    Recovered { stalled_ms: u64 },
}

/// One thread's watch.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Watch {
    /// The counter as last read.
    pub progress: u64,
    /// Whether the thread is stalled now.
    pub stalled: bool,
    /// Stalls so far.
    pub stalls: u64,
    /// How long the current stall has lasted (0 when none), or the last one lasted.
    pub stalled_ms: u64,
    /// The longest stall so far.
    pub longest_ms: u64,
    /// When `progress` was first read with its value (or the window restarted).
    #[serde(skip)]
    since: Instant,
}

impl Watch {
    fn new(now: Instant) -> Watch {
        Watch {
            progress: 0,
            stalled: false,
            stalls: 0,
            stalled_ms: 0,
            longest_ms: 0,
            since: now,
        }
    }
}

/// The watches of every worker (by index) and of the health checker, and the bound.
#[derive(Clone, Debug)]
pub struct Watchdog {
    bound: Duration,
    workers: Vec<Watch>,
    checker: Watch,
    /// The last [`begin`](Self::begin).
    last_check: Option<Instant>,
    /// Checks that came too late to judge anything (every window restarted).
    gaps: u64,
    /// Times the appliance went from no thread stalled to one stalled.
    step_downs: u64,
}

impl Watchdog {
    /// Watches `workers` workers and the health checker; none is stalled yet.
    pub fn new(bound: Duration, workers: usize, now: Instant) -> Watchdog {
        Watchdog {
            bound,
            workers: vec![Watch::new(now); workers],
            checker: Watch::new(now),
            last_check: None,
            gaps: 0,
            step_downs: 0,
        }
    }

    /// The bound: longer than this without progress is a stall.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// Starts a check at `now`. When the last one was more than half the bound ago (or there
    /// was none), the control thread was not watching meanwhile: every window of a thread that
    /// is not stalled starts again here, so only watched time counts. Returns whether it did.
    pub fn begin(&mut self, now: Instant) -> bool {
        let late = self
            .last_check
            .is_none_or(|t| now.saturating_duration_since(t) > self.bound / 2);
        self.last_check = Some(now);
        if late {
            self.gaps += 1;
            for w in self.workers.iter_mut().chain([&mut self.checker]) {
                if !w.stalled {
                    w.since = now;
                }
            }
        }
        late
    }

    /// Reads `thread`'s counter `progress` at `now`; says when the thread stalls or recovers.
    pub fn observe(&mut self, thread: Thread, progress: u64, now: Instant) -> Option<Transition> {
        let bound = self.bound;
        let any_before = self.any_stalled();
        let w = self.watch_mut(thread)?;
        let waited_ms = crate::units::millis(now.saturating_duration_since(w.since));
        let t = if progress != w.progress {
            w.progress = progress;
            w.since = now;
            if w.stalled {
                w.stalled = false;
                w.stalled_ms = waited_ms;
                w.longest_ms = w.longest_ms.max(waited_ms);
                Some(Transition::Recovered {
                    stalled_ms: waited_ms,
                })
            } else {
                None
            }
        } else if w.stalled {
            w.stalled_ms = waited_ms;
            w.longest_ms = w.longest_ms.max(waited_ms);
            None
        } else if now.saturating_duration_since(w.since) > bound {
            w.stalled = true;
            w.stalls += 1;
            w.stalled_ms = waited_ms;
            w.longest_ms = w.longest_ms.max(waited_ms);
            Some(Transition::Stalled {
                stalled_ms: waited_ms,
            })
        } else {
            None
        };
        if !any_before && self.any_stalled() {
            self.step_downs += 1;
        }
        t
    }

    /// `thread` is not running and not expected to (no health checks configured, or a reload
    /// removed them): not stalled; its window starts again when it is watched again.
    pub fn absent(&mut self, thread: Thread, now: Instant) -> Option<Transition> {
        let w = self.watch_mut(thread)?;
        let was = w.stalled;
        let stalled_ms = crate::units::millis(now.saturating_duration_since(w.since));
        w.stalled = false;
        w.since = now;
        was.then_some(Transition::Recovered { stalled_ms })
    }

    /// Whether any watched thread is stalled now.
    pub fn any_stalled(&self) -> bool {
        self.checker.stalled || self.workers.iter().any(|w| w.stalled)
    }

    /// Worker `i`'s watch.
    pub fn worker(&self, i: usize) -> Option<&Watch> {
        self.workers.get(i)
    }

    /// Every watch, with its thread.
    pub fn watches(&self) -> impl Iterator<Item = (Thread, &Watch)> {
        (0..)
            .map(Thread::Worker)
            .zip(&self.workers)
            .chain([(Thread::HealthChecker, &self.checker)])
    }

    /// Times the appliance stepped down (went from no thread stalled to one stalled).
    pub fn step_downs(&self) -> u64 {
        self.step_downs
    }

    /// `show stats`' `watchdog`.
    pub fn status(&self) -> Value {
        let threads: Vec<Value> = self
            .watches()
            .map(|(t, w)| {
                let mut v = json!(w);
                v["thread"] = json!(t.label());
                v
            })
            .collect();
        json!({
            "bound_ms": crate::units::millis(self.bound),
            "stalled": self.any_stalled(),
            "step_downs": self.step_downs,
            "gaps": self.gaps,
            "threads": threads,
        })
    }

    fn watch_mut(&mut self, thread: Thread) -> Option<&mut Watch> {
        match thread {
            Thread::Worker(i) => self.workers.get_mut(i),
            Thread::HealthChecker => Some(&mut self.checker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W0: Thread = Thread::Worker(0);
    const W1: Thread = Thread::Worker(1);

    /// A watchdog with a 500 ms bound over two workers, and its clock.
    fn dog() -> (Watchdog, impl Fn(u64) -> Instant) {
        let t0 = Instant::now();
        let at = move |ms: u64| t0 + Duration::from_millis(ms);
        (Watchdog::new(Duration::from_millis(500), 2, t0), at)
    }

    /// Checks every 10 ms from `from` to `to` (exclusive), worker 0 at `w0(ms)`, worker 1
    /// always moving; the transitions of worker 0 with their times.
    fn run(
        d: &mut Watchdog,
        at: &impl Fn(u64) -> Instant,
        from: u64,
        to: u64,
        w0: impl Fn(u64) -> u64,
    ) -> Vec<(u64, Transition)> {
        let mut out = Vec::new();
        for ms in (from..to).step_by(10) {
            d.begin(at(ms));
            if let Some(t) = d.observe(W0, w0(ms), at(ms)) {
                out.push((ms, t));
            }
            assert_eq!(d.observe(W1, ms, at(ms)), None, "worker 1 keeps moving");
        }
        out
    }

    #[test]
    fn a_moving_counter_never_stalls() {
        let (mut d, at) = dog();
        assert!(run(&mut d, &at, 0, 5_000, |ms| ms / 10).is_empty());
        assert!(!d.any_stalled());
        assert_eq!(d.step_downs(), 0);
    }

    #[test]
    fn a_counter_still_for_longer_than_the_bound_stalls_then_recovers() {
        let (mut d, at) = dog();
        // Moves until 1000 ms, stands still until 2500 ms, moves again.
        let w0 = |ms: u64| {
            if ms < 1000 {
                ms
            } else if ms < 2500 {
                1000
            } else {
                ms
            }
        };
        let t = run(&mut d, &at, 0, 3000, w0);
        // Last moved at 1000 ms: stalled at the first check more than 500 ms later.
        assert_eq!(
            t,
            vec![
                (1510, Transition::Stalled { stalled_ms: 510 }),
                (2500, Transition::Recovered { stalled_ms: 1500 }),
            ]
        );
        assert!(!d.any_stalled());
        let w = d.worker(0).unwrap();
        assert_eq!((w.stalls, w.longest_ms, w.stalled), (1, 1500, false));
        assert_eq!(d.step_downs(), 1);
        assert_eq!(d.worker(1).unwrap().stalls, 0);
    }

    #[test]
    fn exactly_the_bound_is_not_a_stall() {
        let (mut d, at) = dog();
        let t = run(&mut d, &at, 0, 510, |_| 7);
        // Read first at 0 ms (a change from 0), still at 500 ms: not more than the bound.
        assert!(t.is_empty(), "{t:?}");
        assert_eq!(
            run(&mut d, &at, 510, 520, |_| 7),
            vec![(510, Transition::Stalled { stalled_ms: 510 })]
        );
    }

    #[test]
    fn a_stall_lasts_while_the_counter_stands_still_and_is_counted_once() {
        let (mut d, at) = dog();
        let t = run(&mut d, &at, 0, 10_000, |ms| ms.min(100));
        assert_eq!(t, vec![(610, Transition::Stalled { stalled_ms: 510 })]);
        assert!(d.any_stalled());
        let w = d.worker(0).unwrap();
        assert_eq!((w.stalls, w.stalled_ms), (1, 9890));
        assert_eq!(d.step_downs(), 1);
    }

    #[test]
    fn the_control_threads_own_gap_restarts_the_windows() {
        let (mut d, at) = dog();
        run(&mut d, &at, 0, 1000, |ms| ms);
        // The whole process stopped (SIGSTOP) for 5 s: at the first check after it, the
        // workers have not run yet. Not a stall: the control thread was not watching.
        assert!(d.begin(at(6000)));
        assert_eq!(d.observe(W0, 990, at(6000)), None);
        assert!(!d.any_stalled());
        // Still standing 500 ms of watched time later is one.
        let t = run(&mut d, &at, 6010, 6600, |_| 990);
        assert_eq!(t, vec![(6510, Transition::Stalled { stalled_ms: 510 })]);
        // Gaps up to half the bound are watched time.
        let (mut d, at) = dog();
        d.begin(at(0));
        d.observe(W0, 1, at(0));
        assert!(!d.begin(at(250)));
        assert_eq!(d.observe(W0, 1, at(250)), None);
        assert!(!d.begin(at(500)));
        assert_eq!(d.observe(W0, 1, at(500)), None);
        assert!(!d.begin(at(501)));
        assert_eq!(
            d.observe(W0, 1, at(501)),
            Some(Transition::Stalled { stalled_ms: 501 })
        );
    }

    #[test]
    fn a_gap_does_not_clear_a_stall() {
        let (mut d, at) = dog();
        run(&mut d, &at, 0, 1000, |ms| ms.min(100));
        assert!(d.any_stalled());
        assert!(d.begin(at(3000)));
        assert_eq!(d.observe(W0, 100, at(3000)), None);
        assert!(d.any_stalled(), "a gap in watching is no progress");
        assert_eq!(
            d.observe(W0, 101, at(3010)),
            Some(Transition::Recovered { stalled_ms: 2910 })
        );
    }

    #[test]
    fn two_threads_stalled_are_one_step_down() {
        let (mut d, at) = dog();
        for ms in (0..2000).step_by(10) {
            d.begin(at(ms));
            d.observe(W0, ms.min(100), at(ms));
            d.observe(W1, ms.min(300), at(ms));
            d.observe(Thread::HealthChecker, ms.min(1200), at(ms));
        }
        assert!(d.any_stalled());
        assert_eq!(d.step_downs(), 1);
        assert!(d.watches().all(|(_, w)| w.stalls == 1));
        // One recovers: still stepped down while another is stalled.
        d.begin(at(2000));
        d.observe(W0, 5000, at(2000));
        assert!(d.any_stalled());
        d.observe(W1, 5000, at(2000));
        d.observe(Thread::HealthChecker, 5000, at(2000));
        assert!(!d.any_stalled());
    }

    #[test]
    fn an_absent_checker_is_not_stalled() {
        let (mut d, at) = dog();
        for ms in (0..1000).step_by(10) {
            d.begin(at(ms));
            d.observe(Thread::HealthChecker, 3, at(ms));
        }
        assert!(d.any_stalled());
        assert_eq!(
            d.absent(Thread::HealthChecker, at(1000)),
            Some(Transition::Recovered { stalled_ms: 1000 })
        );
        assert!(!d.any_stalled());
        assert_eq!(d.absent(Thread::HealthChecker, at(1010)), None);
        // A worker index past the end is no thread.
        assert_eq!(d.observe(Thread::Worker(9), 1, at(1010)), None);
    }

    #[test]
    fn heartbeat_counts_and_status_shows_every_thread() {
        let h = Heartbeat::new();
        let r = h.clone();
        h.beat();
        h.beat();
        assert_eq!(r.read(), 2);
        let (d, _) = dog();
        let s = d.status();
        assert_eq!(s["bound_ms"], 500);
        let labels: Vec<&str> = s["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["thread"].as_str().unwrap())
            .collect();
        assert_eq!(labels, ["worker0", "worker1", "health-checker"]);
    }
}
