//! The vpnlb packet path, in pure Rust over byte buffers.
//!
//! Nothing in this crate knows about DPDK: the daemon's I/O layer hands bursts of frames to
//! [`pipeline`], and `vpnlbd replay` hands it frames read from capture files. Both run exactly
//! the same code.

pub mod affinity;
pub mod changes;
pub mod classify;
pub mod counters;
pub mod craft;
pub mod exception;
pub mod frame;
pub mod io;
pub mod model;
pub mod nat;
pub mod neighbor;
pub mod pipeline;
pub mod redirect;
pub mod schedule;
pub mod steer;
pub mod wire;
