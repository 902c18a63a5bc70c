//! Owned packet buffers.

use std::fmt;
use std::ptr::NonNull;

use dpdk_sys::rte_mbuf;
use frame::Frame;

use crate::error::{DpdkError, Result};
use crate::mempool::Mempool;

/// An owned DPDK packet buffer (`struct rte_mbuf`); dropping it frees it back to its pool.
///
/// As a [`Frame`], an mbuf is its **first segment**: `bytes()` is that segment's data. RX
/// ports are configured so that frames fit one segment (see [`crate::PortConfig`]), and every
/// mbuf this crate allocates has one segment; [`Mbuf::is_contiguous`] tells when a frame has
/// more (the pipeline then sees only the start of the packet).
///
/// The per-packet accessors (data pointer, lengths, headroom, port, offload flags) and the
/// front moves of [`Frame`] read and write the bindgen `rte_mbuf` fields directly, as DPDK's
/// inline functions do, rather than calling a C shim function per access; the integration
/// tests check them against the shim's (that is, DPDK's own) results.
#[repr(transparent)]
pub struct Mbuf(NonNull<rte_mbuf>);

// SAFETY: an Mbuf owns its buffer exclusively; freeing it from any thread is allowed (mempool
// put is multi-producer safe).
unsafe impl Send for Mbuf {}

/// Checksum verdict the NIC attached on receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxChecksum {
    /// The device said nothing (no offload, or it could not check).
    Unknown,
    /// The device checked it: wrong.
    Bad,
    /// The device checked it: right.
    Good,
    /// The checksum is not filled in the packet, but its data is valid (e.g. a virtual
    /// device that received it from the host stack).
    NotComputed,
}

impl RxChecksum {
    fn from_flags(flags: u64, mask: u64, good: u64, bad: u64) -> Self {
        let f = flags & mask;
        if f == mask {
            RxChecksum::NotComputed
        } else if f == good {
            RxChecksum::Good
        } else if f == bad {
            RxChecksum::Bad
        } else {
            RxChecksum::Unknown
        }
    }
}

/// Which checksum a transmitted frame asks the NIC to fill in (when the port enabled that TX
/// offload: see [`crate::ChecksumOffloads`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxChecksum {
    /// Length of the Ethernet header (VLAN tags included); at most 127.
    pub l2_len: u8,
    /// Length of the IP header (options / extension headers included); at most 511.
    pub l3_len: u16,
    /// The packet is IPv4 (false: IPv6).
    pub ipv4: bool,
    /// Compute the IPv4 header checksum (the field must hold 0).
    pub ip_header: bool,
    /// Compute the TCP or UDP checksum. The field must hold the pseudo-header checksum, as
    /// DPDK's `rte_ipv4_phdr_cksum` / `rte_ipv6_phdr_cksum` compute it.
    pub l4: Option<L4Checksum>,
}

/// The transport whose checksum [`TxChecksum`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Checksum {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Mbuf {
    /// Takes an empty mbuf from `pool`; `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: the pool is valid for the process's lifetime; the result is either NULL or
        // a freshly reset mbuf we now own.
        let p = unsafe { dpdk_sys::vpnlb_pktmbuf_alloc(pool.as_ptr()) };
        NonNull::new(p).map(Mbuf)
    }

    /// An mbuf from `pool` holding a copy of `data`.
    pub fn from_bytes(pool: &Mempool, data: &[u8]) -> Result<Mbuf> {
        let mut m = Mbuf::alloc(pool).ok_or(DpdkError::PoolExhausted)?;
        let room = usize::from(m.tailroom());
        let n = u16::try_from(data.len())
            .ok()
            .filter(|&n| usize::from(n) <= room)
            .ok_or(DpdkError::TooLong {
                len: data.len(),
                room,
            })?;
        match m.append(n) {
            Some(buf) => {
                buf.copy_from_slice(data);
                Ok(m)
            }
            None => Err(DpdkError::TooLong {
                len: data.len(),
                room,
            }),
        }
    }

    /// Gives up ownership without freeing, e.g. to hand the mbuf to C code or a ring.
    #[inline]
    pub fn into_raw(self) -> NonNull<rte_mbuf> {
        let p = self.0;
        std::mem::forget(self);
        p
    }

    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `ptr` must be a valid mbuf that nothing else owns or will free (e.g. one returned by
    /// [`Mbuf::into_raw`], or received from a DPDK burst call), with a reference count of 1
    /// and direct (not attached to another mbuf's data), since [`Frame::bytes_mut`] writes to
    /// its data.
    #[inline]
    pub unsafe fn from_raw(ptr: NonNull<rte_mbuf>) -> Mbuf {
        Mbuf(ptr)
    }

    /// The raw mbuf, still owned by `self`.
    #[inline]
    pub fn as_ptr(&self) -> *mut rte_mbuf {
        self.0.as_ptr()
    }

    /// The mbuf's header (the first segment's), for reading its fields.
    #[inline]
    fn hdr(&self) -> &rte_mbuf {
        // SAFETY: self owns a valid, initialised mbuf; nothing else writes it while self is
        // borrowed (it is ours alone, refcount 1: see from_raw).
        unsafe { self.0.as_ref() }
    }

    /// The mbuf's header, for writing its fields.
    #[inline]
    fn hdr_mut(&mut self) -> &mut rte_mbuf {
        // SAFETY: as in hdr(); &mut self makes the access exclusive.
        unsafe { self.0.as_mut() }
    }

    /// Start of the first segment's data: `rte_pktmbuf_mtod`, `buf_addr + data_off`.
    #[inline]
    fn data_ptr(&self) -> *mut u8 {
        let h = self.hdr();
        // wrapping_add: plain address arithmetic, as the C macro does; the pointer is only
        // dereferenced within data_len bytes (see bytes()).
        h.buf_addr
            .cast::<u8>()
            .wrapping_add(usize::from(h.data_off))
    }

    /// Bytes of data in the first segment.
    #[inline]
    pub fn data_len(&self) -> u16 {
        self.hdr().data_len
    }

    /// Bytes of data in all segments.
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.hdr().pkt_len
    }

    /// Free bytes in front of the data (`rte_pktmbuf_headroom`: `data_off`).
    #[inline]
    pub fn headroom(&self) -> u16 {
        self.hdr().data_off
    }

    /// Free bytes after the first segment's data (`rte_pktmbuf_tailroom`:
    /// `buf_len - data_off - data_len`).
    #[inline]
    pub fn tailroom(&self) -> u16 {
        let h = self.hdr();
        h.buf_len.wrapping_sub(h.data_off).wrapping_sub(h.data_len)
    }

    /// Number of segments.
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        self.hdr().nb_segs
    }

    /// True when the whole packet is in the first segment (what [`Frame::bytes`] shows).
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.nb_segs() == 1
    }

    /// The port the mbuf was received on (as the PMD set it).
    #[inline]
    pub fn port(&self) -> u16 {
        self.hdr().port
    }

    /// Records the port the frame belongs to, so that a worker handing it to another one
    /// passes the RX port along (some PMDs, e.g. net_ring, leave the field unset).
    #[inline]
    pub fn set_port(&mut self, port: u16) {
        self.hdr_mut().port = port;
    }

    /// The raw offload flags (`ol_flags`).
    #[inline]
    pub fn ol_flags(&self) -> u64 {
        self.hdr().ol_flags
    }

    /// The RSS hash the NIC computed, when it did.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        if self.ol_flags() & dpdk_sys::VPNLB_MBUF_F_RX_RSS_HASH == 0 {
            return None;
        }
        // SAFETY: self owns a valid mbuf; the flag says the hash field holds the RSS hash.
        Some(unsafe { dpdk_sys::vpnlb_pktmbuf_rss_hash(self.as_ptr()) })
    }

    /// The NIC's IPv4 header checksum verdict.
    #[inline]
    pub fn rx_ip_checksum(&self) -> RxChecksum {
        RxChecksum::from_flags(
            self.ol_flags(),
            dpdk_sys::VPNLB_MBUF_F_RX_IP_CKSUM_MASK,
            dpdk_sys::VPNLB_MBUF_F_RX_IP_CKSUM_GOOD,
            dpdk_sys::VPNLB_MBUF_F_RX_IP_CKSUM_BAD,
        )
    }

    /// The NIC's TCP/UDP checksum verdict.
    #[inline]
    pub fn rx_l4_checksum(&self) -> RxChecksum {
        RxChecksum::from_flags(
            self.ol_flags(),
            dpdk_sys::VPNLB_MBUF_F_RX_L4_CKSUM_MASK,
            dpdk_sys::VPNLB_MBUF_F_RX_L4_CKSUM_GOOD,
            dpdk_sys::VPNLB_MBUF_F_RX_L4_CKSUM_BAD,
        )
    }

    /// Asks the NIC to fill in checksums on transmit. False (and nothing changed) when the
    /// lengths do not fit the mbuf's fields.
    pub fn request_tx_checksum(&mut self, req: TxChecksum) -> bool {
        if req.l2_len > 127 || req.l3_len > 511 {
            return false;
        }
        let mut flags = if req.ipv4 {
            dpdk_sys::VPNLB_MBUF_F_TX_IPV4
        } else {
            dpdk_sys::VPNLB_MBUF_F_TX_IPV6
        };
        if req.ipv4 && req.ip_header {
            flags |= dpdk_sys::VPNLB_MBUF_F_TX_IP_CKSUM;
        }
        match req.l4 {
            Some(L4Checksum::Tcp) => flags |= dpdk_sys::VPNLB_MBUF_F_TX_TCP_CKSUM,
            Some(L4Checksum::Udp) => flags |= dpdk_sys::VPNLB_MBUF_F_TX_UDP_CKSUM,
            None => {}
        }
        // SAFETY: self owns a valid mbuf exclusively; the lengths fit the 7- and 9-bit fields.
        unsafe {
            dpdk_sys::vpnlb_pktmbuf_set_tx_offload(
                self.as_ptr(),
                flags,
                u16::from(req.l2_len),
                req.l3_len,
            )
        };
        true
    }

    /// Grows the data at the end by `n` bytes and returns them (their contents are whatever
    /// the buffer held before). `None` when the tailroom is too small; nothing changes then.
    pub fn append(&mut self, n: u16) -> Option<&mut [u8]> {
        // SAFETY: self owns a valid, single-segment-or-more mbuf; append returns NULL when
        // there is no room and changes nothing then.
        let p = unsafe { dpdk_sys::vpnlb_pktmbuf_append(self.as_ptr(), n) };
        let p = NonNull::new(p.cast::<u8>())?;
        // SAFETY: DPDK just reserved n bytes at p inside this mbuf's buffer (memory DPDK
        // allocated and initialised when it created the pool), exclusively ours through
        // &mut self.
        Some(unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), usize::from(n)) })
    }

    /// Removes `n` bytes from the end. False when the last segment is shorter; nothing
    /// changes then.
    pub fn trim(&mut self, n: u16) -> bool {
        // SAFETY: self owns a valid mbuf; trim fails without change when n is too large.
        unsafe { dpdk_sys::vpnlb_pktmbuf_trim(self.as_ptr(), n) == 0 }
    }

    /// Prefetches the data's first cache line.
    #[inline]
    pub fn prefetch(&self) {
        // SAFETY: a prefetch hint on an address inside the mbuf's buffer; no access happens.
        unsafe { dpdk_sys::vpnlb_prefetch0(self.data_ptr().cast_const().cast()) }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: self owns the mbuf (and its chained segments); it is not used afterwards.
        unsafe { dpdk_sys::vpnlb_pktmbuf_free(self.as_ptr()) }
    }
}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf")
            .field("ptr", &self.0)
            .field("data_len", &self.data_len())
            .field("pkt_len", &self.pkt_len())
            .field("headroom", &self.headroom())
            .field("nb_segs", &self.nb_segs())
            .finish()
    }
}

impl Frame for Mbuf {
    /// The first segment's data.
    #[inline]
    fn bytes(&self) -> &[u8] {
        // SAFETY: buf_addr + data_off starts data_len initialised bytes inside the first
        // segment's buffer (DPDK keeps data_off + data_len <= buf_len), which self owns; the
        // slice borrows self, so the mbuf outlives it.
        unsafe { std::slice::from_raw_parts(self.data_ptr(), usize::from(self.data_len())) }
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.data_len());
        // SAFETY: as in bytes(); &mut self makes the access exclusive (the mbuf is direct with
        // refcount 1: see from_raw), and the data buffer does not overlap the header.
        unsafe { std::slice::from_raw_parts_mut(self.data_ptr(), len) }
    }

    /// `rte_pktmbuf_prepend`: false when the headroom is smaller than `n`.
    #[inline]
    fn push_front(&mut self, n: usize) -> bool {
        let h = self.hdr_mut();
        match u16::try_from(n) {
            // DPDK 22.11's inline rte_pktmbuf_prepend, field for field (wrapping as C's
            // unsigned arithmetic; data_off + data_len <= buf_len keeps it from wrapping).
            Ok(n) if n <= h.data_off => {
                h.data_off -= n;
                h.data_len = h.data_len.wrapping_add(n);
                h.pkt_len = h.pkt_len.wrapping_add(u32::from(n));
                true
            }
            _ => false,
        }
    }

    /// `rte_pktmbuf_adj`: false when the first segment holds fewer than `n` bytes.
    #[inline]
    fn pull_front(&mut self, n: usize) -> bool {
        let h = self.hdr_mut();
        match u16::try_from(n) {
            // DPDK 22.11's inline rte_pktmbuf_adj, field for field.
            Ok(n) if n <= h.data_len => {
                h.data_len -= n;
                h.data_off = h.data_off.wrapping_add(n);
                h.pkt_len = h.pkt_len.wrapping_sub(u32::from(n));
                true
            }
            _ => false,
        }
    }

    /// `rte_pktmbuf_trim` of a single-segment mbuf: false for a chained one (the bytes to cut
    /// would not all be in the last segment) or when `len` exceeds the data.
    #[inline]
    fn truncate(&mut self, len: usize) -> bool {
        let h = self.hdr_mut();
        if h.nb_segs != 1 || len > usize::from(h.data_len) {
            return false;
        }
        // With one segment, the last segment is this one: rte_pktmbuf_trim's two updates.
        // Per-packet path: the check above bounds len by data_len, a u16, so it fits one.
        debug_assert!(len <= usize::from(h.data_len));
        #[allow(clippy::cast_possible_truncation)] // len <= data_len <= u16::MAX (checked above)
        let cut = h.data_len - len as u16;
        h.data_len -= cut;
        h.pkt_len = h.pkt_len.wrapping_sub(u32::from(cut));
        true
    }

    /// The NIC's IPv4 header checksum verdict is [`RxChecksum::Good`].
    #[inline]
    fn rx_ipv4_checksum_good(&self) -> bool {
        ipv4_checksum_good(self.ol_flags())
    }
}

/// What [`Frame::rx_ipv4_checksum_good`] says for an mbuf's `ol_flags`: only a verified good
/// checksum counts; unknown, bad and not-computed leave the software check to run.
#[inline]
fn ipv4_checksum_good(ol_flags: u64) -> bool {
    ol_flags & dpdk_sys::VPNLB_MBUF_F_RX_IP_CKSUM_MASK == dpdk_sys::VPNLB_MBUF_F_RX_IP_CKSUM_GOOD
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpdk_sys as sys;

    #[test]
    fn rx_checksum_flags_decode() {
        let ip = |f| {
            RxChecksum::from_flags(
                f,
                sys::VPNLB_MBUF_F_RX_IP_CKSUM_MASK,
                sys::VPNLB_MBUF_F_RX_IP_CKSUM_GOOD,
                sys::VPNLB_MBUF_F_RX_IP_CKSUM_BAD,
            )
        };
        assert_eq!(ip(0), RxChecksum::Unknown);
        assert_eq!(ip(1 << 7), RxChecksum::Good);
        assert_eq!(ip(1 << 4), RxChecksum::Bad);
        assert_eq!(ip((1 << 4) | (1 << 7)), RxChecksum::NotComputed);
        // Other flags do not disturb the verdict.
        assert_eq!(ip((1 << 7) | (1 << 8) | 2), RxChecksum::Good);
        let l4 = |f| {
            RxChecksum::from_flags(
                f,
                sys::VPNLB_MBUF_F_RX_L4_CKSUM_MASK,
                sys::VPNLB_MBUF_F_RX_L4_CKSUM_GOOD,
                sys::VPNLB_MBUF_F_RX_L4_CKSUM_BAD,
            )
        };
        assert_eq!(l4(1 << 8), RxChecksum::Good);
        assert_eq!(l4(1 << 3), RxChecksum::Bad);
        assert_eq!(l4(1 << 7), RxChecksum::Unknown);
    }

    #[test]
    fn only_a_good_ipv4_checksum_lets_software_skip_its_check() {
        for flags in 0..1u64 << 12 {
            let verdict = RxChecksum::from_flags(
                flags,
                sys::VPNLB_MBUF_F_RX_IP_CKSUM_MASK,
                sys::VPNLB_MBUF_F_RX_IP_CKSUM_GOOD,
                sys::VPNLB_MBUF_F_RX_IP_CKSUM_BAD,
            );
            assert_eq!(
                ipv4_checksum_good(flags),
                verdict == RxChecksum::Good,
                "{flags:#x}"
            );
        }
        assert!(ipv4_checksum_good(sys::VPNLB_MBUF_F_RX_IP_CKSUM_GOOD));
        // The L4 verdict and other flags do not count.
        assert!(ipv4_checksum_good(
            sys::VPNLB_MBUF_F_RX_IP_CKSUM_GOOD
                | sys::VPNLB_MBUF_F_RX_L4_CKSUM_BAD
                | sys::VPNLB_MBUF_F_RX_RSS_HASH
        ));
        assert!(!ipv4_checksum_good(0));
        assert!(!ipv4_checksum_good(sys::VPNLB_MBUF_F_RX_L4_CKSUM_GOOD));
        assert!(!ipv4_checksum_good(sys::VPNLB_MBUF_F_RX_IP_CKSUM_BAD));
        assert!(!ipv4_checksum_good(sys::VPNLB_MBUF_F_RX_IP_CKSUM_MASK));
    }
}
