//! The one thing the pipeline needs from a packet buffer: a crate of its own, so that the DPDK
//! layer (`bindings/dpdk`, whose mbufs are frames) does not depend on the whole dataplane.
//!
//! The daemon implements [`Frame`] for DPDK mbufs (`rte_pktmbuf_prepend` / `rte_pktmbuf_adj`);
//! replay and tests use [`VecFrame`]. Forwarding between interfaces with different VLAN tagging
//! grows or shrinks the frame at the front, so a frame needs headroom.

#![forbid(unsafe_code)]
#![deny(clippy::cast_possible_truncation)]

/// A packet buffer whose front can move.
pub trait Frame {
    /// The frame's bytes, starting at the Ethernet header.
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Grows the frame by `n` bytes at the front (uninitialised contents). False when the
    /// headroom is too small; the frame is then unchanged.
    fn push_front(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front. False when the frame is shorter; the frame is then
    /// unchanged.
    fn pull_front(&mut self, n: usize) -> bool;
    /// Shortens the frame to its first `len` bytes (an answer written over a longer request).
    /// False when it cannot (`len` exceeds the frame, or the frame is chained); the frame is
    /// then unchanged.
    fn truncate(&mut self, len: usize) -> bool;

    /// True when the receiving NIC verified the frame's IPv4 header checksum and found it
    /// good, so the pipeline may skip checking it in software. False in every other case: not
    /// IPv4, no offload (virtual devices report nothing), not checked, not filled in, or bad;
    /// the software check is the fallback then. It speaks of the frame as received: after a
    /// rewrite of the header it says nothing about the new checksum.
    #[inline]
    fn rx_ipv4_checksum_good(&self) -> bool {
        false
    }
}

/// Headroom `VecFrame::new` leaves: room for two VLAN tags and then some, as an mbuf has.
pub const DEFAULT_HEADROOM: usize = 64;

/// A heap-backed frame with headroom, for replay and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecFrame {
    buf: Vec<u8>,
    start: usize,
}

impl VecFrame {
    pub fn new(data: &[u8]) -> Self {
        Self::with_headroom(data, DEFAULT_HEADROOM)
    }

    pub fn with_headroom(data: &[u8], headroom: usize) -> Self {
        let mut buf = vec![0; headroom + data.len()];
        buf[headroom..].copy_from_slice(data);
        VecFrame {
            buf,
            start: headroom,
        }
    }

    /// Reuses this frame's allocation for new contents.
    pub fn reset(&mut self, data: &[u8], headroom: usize) {
        self.buf.clear();
        self.buf.resize(headroom, 0);
        self.buf.extend_from_slice(data);
        self.start = headroom;
    }

    pub fn headroom(&self) -> usize {
        self.start
    }
}

impl Frame for VecFrame {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }

    fn push_front(&mut self, n: usize) -> bool {
        match self.start.checked_sub(n) {
            Some(s) => {
                self.start = s;
                true
            }
            None => false,
        }
    }

    fn pull_front(&mut self, n: usize) -> bool {
        if n <= self.buf.len() - self.start {
            self.start += n;
            true
        } else {
            false
        }
    }

    fn truncate(&mut self, len: usize) -> bool {
        if len <= self.buf.len() - self.start {
            self.buf.truncate(self.start + len);
            true
        } else {
            false
        }
    }
}
