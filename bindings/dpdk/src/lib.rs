//! vpnlb's thin safe layer over DPDK 22.11 (`dpdk-sys`).
//!
//! Everything unsafe of the project lives here and in `dpdk-sys`, each block with a
//! `// SAFETY:` note. The pieces:
//!
//! * [`Eal`]: `rte_eal_init`, once per process ([`EalArgs`] builds the arguments);
//! * [`lcore`]: lcore id, thread registration, TSC;
//! * [`Mempool`], [`Mbuf`] (a [`frame::Frame`]), [`Burst`] (32 mbufs, no
//!   allocation), [`FreeBatch`] (mbufs freed together);
//! * [`Port`] (info, configure with RSS / checksum offloads, start/stop, stats) and its
//!   [`RxQueue`] / [`TxQueue`];
//! * [`Ring`] for hand-off between workers.
//!
//! Ownership is Rust's throughout: an mbuf is freed exactly once, by whoever holds it last;
//! a partial TX or ring enqueue leaves the mbufs not taken in the caller's [`Burst`].

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::cast_possible_truncation))]

mod burst;
mod eal;
mod error;
pub mod lcore;
mod mbuf;
pub mod memory;
mod mempool;
mod port;
mod ring;

pub use burst::{Burst, Drain, FreeBatch, BURST_SIZE};
pub use eal::{Eal, EalArgs};
pub use error::{DpdkError, Result};
pub use mbuf::{L4Checksum, Mbuf, RxChecksum, TxChecksum};
pub use mempool::{Mempool, DEFAULT_DATA_ROOM, MBUF_HEADROOM, SOCKET_ANY};
pub use port::{
    ChecksumOffloads, DescLimits, Link, Port, PortConfig, PortInfo, PortSetup, PortStats, RssMode,
    RssStatus, RssSupport, RssUnavailable, RxQueue, TxQueue, DEFAULT_RSS_KEY, RSS_KEY_LEN,
};
pub use ring::{Ring, RingConsumer, RingProducer};
