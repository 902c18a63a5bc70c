//! The slow path: everything that is not established client <-> gateway traffic.

pub(super) mod answer;
pub(super) mod icmp;
pub(super) mod redirect;
pub(super) mod routed;
pub(super) mod translate;
