//! vpnlb control plane: configuration loading and validation, and the replay driver.

pub mod config;
pub mod replay;
