//! Gateway health checks: probe messages, non-blocking probes, and the checker thread that turns
//! their outcomes into gateway states with rise and fall counts.

pub mod checker;
pub mod message;
pub mod probe;
