//! Frames waiting for their next hop's MAC (the kernel's `unres_qlen` queue).
//!
//! The pipeline finishes such a frame (translated, Ethernet header and VLAN tags written, the
//! destination MAC left zero) and gives it [`Verdict::AwaitNeighbor`]; the worker keeps it
//! here, a few frames per neighbor and a bounded number of neighbors, while the control thread
//! resolves the neighbor. Once a snapshot knows the MAC, the frames go out in arrival order
//! with [`fill_destination`]; frames held longer than resolution takes, or beyond the bounds,
//! are freed. Everything is allocated once, at creation: holding a frame allocates nothing.
//! Generic over the frame type, so the daemon keeps mbufs here and tests keep `VecFrame`s.
//!
//! [`Verdict::AwaitNeighbor`]: crate::pipeline::Verdict::AwaitNeighbor

use std::net::IpAddr;

use crate::frame::Frame;
use crate::wire::ethernet::EthernetAddress;

/// Frames held per neighbor (Linux's default `unres_qlen` is 101 packets; an appliance whose
/// first packets are IKE_SA_INITs, retransmitted after a second, needs the first few).
pub const HOLD_PER_NEIGHBOR: usize = 3;
/// Neighbors a worker holds frames for at once.
pub const HOLD_NEIGHBORS: usize = 64;
/// How long frames wait: the control thread's resolution (3 probes, 1 s apart) and no more.
pub const HOLD_MS: u64 = 3_000;

/// The destination MAC of a frame given [`Verdict::AwaitNeighbor`] before it is resolved.
///
/// [`Verdict::AwaitNeighbor`]: crate::pipeline::Verdict::AwaitNeighbor
pub const UNRESOLVED_MAC: EthernetAddress = EthernetAddress([0; 6]);

/// Writes `mac` as the destination of a frame the pipeline finished for an unresolved
/// neighbor: everything else of its Ethernet header (source, VLAN tags, EtherType) was written
/// then. False when the frame is too short to hold a destination.
pub fn fill_destination<F: Frame>(frame: &mut F, mac: EthernetAddress) -> bool {
    match frame.bytes_mut().first_chunk_mut::<6>() {
        Some(dst) => {
            *dst = mac.0;
            true
        }
        None => false,
    }
}

/// One neighbor's queue: where its frames leave, and since when they wait.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    /// (egress port, neighbor); `None`: the slot is free.
    key: Option<(u16, IpAddr)>,
    /// When its first frame was held: all of them go at `since_ms + hold_ms`.
    since_ms: u64,
    /// Frames held, at the front of its slice of `frames`.
    len: usize,
}

const FREE: Waiting = Waiting {
    key: None,
    since_ms: 0,
    len: 0,
};

/// Frames per unresolved neighbor, fixed capacity.
#[derive(Debug)]
pub struct HoldQueue<F> {
    waiting: Vec<Waiting>,
    /// `per_neighbor` slots per entry of `waiting`, in the same order.
    frames: Vec<Option<F>>,
    per_neighbor: usize,
    hold_ms: u64,
    /// Frames held in all.
    held: usize,
    /// The earliest time a queue times out (`u64::MAX` when none waits).
    next_deadline_ms: u64,
}

/// Room for nothing (allocates nothing): what a queue leaves behind while taken out.
impl<F> Default for HoldQueue<F> {
    fn default() -> Self {
        Self::new(0, 0, HOLD_MS)
    }
}

impl<F> HoldQueue<F> {
    /// Room for `per_neighbor` frames for each of `neighbors` neighbors, each kept `hold_ms`
    /// at most.
    pub fn new(neighbors: usize, per_neighbor: usize, hold_ms: u64) -> Self {
        HoldQueue {
            waiting: vec![FREE; neighbors],
            frames: (0..neighbors * per_neighbor).map(|_| None).collect(),
            per_neighbor,
            hold_ms,
            held: 0,
            next_deadline_ms: u64::MAX,
        }
    }

    /// The worker's bounds: [`HOLD_NEIGHBORS`], [`HOLD_PER_NEIGHBOR`], [`HOLD_MS`].
    pub fn with_defaults() -> Self {
        Self::new(HOLD_NEIGHBORS, HOLD_PER_NEIGHBOR, HOLD_MS)
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.held
    }

    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Neighbors frames wait for.
    pub fn neighbors(&self) -> usize {
        self.waiting.iter().filter(|w| w.key.is_some()).count()
    }

    /// Keeps `frame`, to leave by `port` once `neighbor` resolves, behind the frames already
    /// waiting for it. Refused (the frame comes back) when the neighbor's queue is full, or
    /// when no neighbor slot is free: frames already held are never pushed out, so the first
    /// packets of a flow (the IKE_SA_INIT) are the ones that go.
    pub fn hold(&mut self, port: u16, neighbor: IpAddr, frame: F, now_ms: u64) -> Result<(), F> {
        let key = Some((port, neighbor));
        let i = match self.waiting.iter().position(|w| w.key == key) {
            Some(i) => i,
            None => match self.waiting.iter().position(|w| w.key.is_none()) {
                Some(i) => {
                    self.waiting[i] = Waiting {
                        key,
                        since_ms: now_ms,
                        len: 0,
                    };
                    let deadline = now_ms.saturating_add(self.hold_ms);
                    self.next_deadline_ms = self.next_deadline_ms.min(deadline);
                    i
                }
                None => return Err(frame),
            },
        };
        let w = &mut self.waiting[i];
        if w.len >= self.per_neighbor {
            return Err(frame);
        }
        self.frames[i * self.per_neighbor + w.len] = Some(frame);
        w.len += 1;
        self.held += 1;
        Ok(())
    }

    /// Hands every queue whose neighbor `mac_of` now knows to `send(port, frame, mac)`, in
    /// the order its frames came, and frees its slot. Returns how many frames went.
    pub fn release(
        &mut self,
        mut mac_of: impl FnMut(IpAddr) -> Option<EthernetAddress>,
        mut send: impl FnMut(u16, F, EthernetAddress),
    ) -> usize {
        if self.held == 0 {
            return 0;
        }
        let mut sent = 0;
        for i in 0..self.waiting.len() {
            let Some((port, neighbor)) = self.waiting[i].key else {
                continue;
            };
            let Some(mac) = mac_of(neighbor) else {
                continue;
            };
            sent += self.take(i, |f| send(port, f, mac));
        }
        sent
    }

    /// Hands the frames of every queue held `hold_ms` or longer to `free`, and frees their
    /// slots. Returns how many frames went. Costs one compare until the earliest deadline.
    pub fn expire(&mut self, now_ms: u64, mut free: impl FnMut(F)) -> usize {
        if now_ms < self.next_deadline_ms {
            return 0;
        }
        let mut freed = 0;
        let mut next = u64::MAX;
        for i in 0..self.waiting.len() {
            let w = self.waiting[i];
            if w.key.is_none() {
                continue;
            }
            let deadline = w.since_ms.saturating_add(self.hold_ms);
            if now_ms >= deadline {
                freed += self.take(i, &mut free);
            } else {
                next = next.min(deadline);
            }
        }
        self.next_deadline_ms = next;
        freed
    }

    /// Every frame held, to `free` (at shutdown).
    pub fn clear(&mut self, mut free: impl FnMut(F)) -> usize {
        let mut freed = 0;
        for i in 0..self.waiting.len() {
            freed += self.take(i, &mut free);
        }
        self.next_deadline_ms = u64::MAX;
        freed
    }

    /// Queue `i`'s frames, oldest first, to `f`; the slot becomes free.
    fn take(&mut self, i: usize, mut f: impl FnMut(F)) -> usize {
        let n = std::mem::replace(&mut self.waiting[i], FREE).len;
        let start = i * self.per_neighbor;
        for slot in &mut self.frames[start..start + n] {
            if let Some(frame) = slot.take() {
                f(frame);
            }
        }
        self.held -= n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::VecFrame;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn frame(tag: u8) -> VecFrame {
        let mut b = vec![0u8; 60];
        b[6..12].copy_from_slice(&[2, 0, 0, 0, 1, 1]);
        b[20] = tag;
        VecFrame::new(&b)
    }

    const MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 2, 0x0b]);

    #[test]
    fn frames_go_in_order_once_their_neighbor_resolves_with_the_destination_filled_in() {
        let mut q = HoldQueue::new(4, 3, 3_000);
        let (a, b) = (ip("198.18.0.20"), ip("2001:2:0:1::20"));
        for tag in 1..=3 {
            q.hold(0, a, frame(tag), 10).unwrap();
        }
        q.hold(0, b, frame(9), 10).unwrap();
        assert_eq!((q.len(), q.neighbors()), (4, 2));
        // Nothing known yet: nothing goes.
        assert_eq!(q.release(|_| None, |_, _, _| panic!("sent")), 0);
        let mut out = Vec::new();
        let sent = q.release(
            |n| (n == a).then_some(MAC),
            |port, mut f, mac| {
                assert!(fill_destination(&mut f, mac));
                out.push((port, f.bytes().to_vec()));
            },
        );
        assert_eq!(sent, 3);
        assert_eq!(
            out.iter().map(|(_, b)| b[20]).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        for (port, b) in &out {
            assert_eq!(*port, 0);
            assert_eq!(&b[0..6], &MAC.0, "destination filled in");
            assert_eq!(&b[6..12], &[2, 0, 0, 0, 1, 1], "source untouched");
        }
        assert_eq!((q.len(), q.neighbors()), (1, 1));
    }

    #[test]
    fn frames_held_past_the_resolution_time_are_freed() {
        let mut q = HoldQueue::new(4, 3, 3_000);
        q.hold(0, ip("198.18.0.20"), frame(1), 1_000).unwrap();
        q.hold(0, ip("198.18.0.21"), frame(2), 2_500).unwrap();
        // A later frame for the first neighbor leaves with the queue it joined.
        q.hold(0, ip("198.18.0.20"), frame(3), 3_900).unwrap();
        let mut freed = Vec::new();
        assert_eq!(q.expire(3_999, |f| freed.push(f.bytes()[20])), 0);
        assert_eq!(q.expire(4_000, |f| freed.push(f.bytes()[20])), 2);
        assert_eq!(freed, [1, 3]);
        assert_eq!(q.expire(5_499, |_| panic!("early")), 0);
        assert_eq!(q.expire(5_500, |_| {}), 1);
        assert!(q.is_empty());
        assert_eq!(q.neighbors(), 0);
    }

    #[test]
    fn a_flood_of_distinct_neighbors_stays_within_the_bounds() {
        let mut q = HoldQueue::new(HOLD_NEIGHBORS, HOLD_PER_NEIGHBOR, HOLD_MS);
        let (mut held, mut refused) = (0, 0);
        for i in 0..10_000u32 {
            let n = IpAddr::V4((0xc612_0000 + i % 1000).into());
            match q.hold(0, n, frame(0), 0) {
                Ok(()) => held += 1,
                Err(_) => refused += 1,
            }
        }
        assert_eq!(held, HOLD_NEIGHBORS * HOLD_PER_NEIGHBOR);
        assert_eq!(refused, 10_000 - held);
        assert_eq!(q.neighbors(), HOLD_NEIGHBORS);
        // The frames first held are the ones kept.
        let mut kept = 0;
        q.release(|_| Some(MAC), |_, _, _| kept += 1);
        assert_eq!(kept, held);
        // Slots free again once released.
        assert!(q.hold(0, ip("198.18.0.99"), frame(0), 0).is_ok());
    }

    #[test]
    fn one_neighbor_on_two_ports_waits_in_two_queues() {
        let mut q = HoldQueue::new(4, 1, 3_000);
        let n = ip("198.18.0.20");
        q.hold(0, n, frame(1), 0).unwrap();
        q.hold(1, n, frame(2), 0).unwrap();
        assert!(q.hold(1, n, frame(3), 0).is_err());
        let mut ports = Vec::new();
        q.release(|_| Some(MAC), |p, _, _| ports.push(p));
        assert_eq!(ports, [0, 1]);
        assert_eq!(q.clear(|_| {}), 0);
    }
}
