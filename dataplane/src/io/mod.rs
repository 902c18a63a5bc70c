//! I/O used by `vpnlbd replay` and tests: capture files. DPDK ports live in the daemon.

pub mod pcap;
