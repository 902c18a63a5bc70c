//! vpnlb control plane: configuration, the replay driver, and the daemon (DPDK I/O, workers,
//! control thread).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::cast_possible_truncation))]

pub mod cli;
pub mod config;
pub mod ctlsock;
pub mod daemon;
pub mod exposition;
pub mod health;
pub mod loads;
pub mod logging;
pub mod notify;
mod random;
pub mod replay;
pub mod sync;
mod units;
pub mod vrrp;
