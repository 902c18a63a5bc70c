//! Packet buffers: the [`Frame`] trait and [`VecFrame`], defined in the `vpnlb-frame` crate
//! (so that `bindings/dpdk` needs no more of the dataplane than this) and re-exported here.

pub use frame::{Frame, VecFrame, DEFAULT_HEADROOM};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_pull_move_the_front() {
        let mut f = VecFrame::with_headroom(&[1, 2, 3], 4);
        assert!(f.push_front(4));
        assert_eq!(f.bytes().len(), 7);
        assert!(!f.push_front(1));
        assert!(f.pull_front(5));
        assert_eq!(f.bytes(), &[2, 3]);
        assert!(!f.pull_front(3));
        assert_eq!(f.bytes(), &[2, 3]);
        assert!(f.pull_front(2));
        assert!(f.bytes().is_empty());
    }

    #[test]
    fn software_frames_claim_no_checked_checksum() {
        use crate::testkit::{self, lab, Ipv4Opts, L2, L4};
        // A valid header still says false: nothing verified it on receive.
        let f = VecFrame::new(&testkit::ipv4(
            &L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC),
            std::net::Ipv4Addr::new(198, 18, 1, 1),
            lab::VIP_V4,
            &Ipv4Opts::default(),
            &L4::Udp {
                src: 500,
                dst: 500,
                payload: &[0; 8],
            },
        ));
        assert!(!f.rx_ipv4_checksum_good());
    }
}
