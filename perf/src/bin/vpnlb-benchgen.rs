//! `vpnlb-benchgen`: the captures `scripts/bench.sh` replays (see `vpnlb_perf::bench`).
//!
//! ```text
//! vpnlb-benchgen --out-dir DIR --clients N [--packets P] [--backend-packets B]
//!                [--size 64|512|1400|imix] [--mix lab|esp|ike|tls|new-clients|redirect] [--family 4|6]
//! ```
//!
//! Writes `DIR/client.pcap` and `DIR/backend.pcap` and prints one JSON line: frames written.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dataplane::io::pcap::Resolution;
use vpnlb_perf::bench::{self, BenchTraffic, Mix, Size};

/// Write the benchmark's client-port and backend-port captures.
#[derive(Debug, Parser)]
#[command(name = "vpnlb-benchgen", version)]
struct Args {
    /// Directory for client.pcap and backend.pcap (created if needed).
    #[arg(long)]
    out_dir: PathBuf,
    /// Distinct clients; the client capture visits each once before it repeats any.
    #[arg(long)]
    clients: u64,
    /// Client-port frames (at least `clients`, except for new-clients: one per client).
    #[arg(long)]
    packets: Option<u64>,
    /// Backend-port frames (gateways' return traffic); default: a quarter of the client frames,
    /// at least 4096 and at most 262144.
    #[arg(long)]
    backend_packets: Option<u64>,
    /// Frame size in bytes, FCS included as RFC 2544 counts (64-1518), or imix (100/576/1400
    /// at 40/30/30 %).
    #[arg(long, default_value = "imix", value_parser = parse_size)]
    size: Size,
    /// lab, esp, ike, tls, new-clients or redirect.
    #[arg(long, default_value = "lab", value_parser = parse_mix)]
    mix: Mix,
    /// Client address family: 4 (198.18.64.0/18, up to 16384 clients) or 6 (2001:2:0:64::/64).
    #[arg(long, default_value_t = 6)]
    family: u8,
    /// Microsecond timestamps (the original pcap format, which pktgen-DPDK needs) instead of
    /// nanosecond ones.
    #[arg(long)]
    microseconds: bool,
    /// PRNG seed: the same seed gives identical captures.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_size(s: &str) -> Result<Size, String> {
    Size::parse(s).ok_or_else(|| format!("`{s}`: a size of 64-1518 bytes or imix"))
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    Mix::parse(s).ok_or_else(|| format!("`{s}`: lab, esp, ike, tls, new-clients or redirect"))
}

fn main() -> ExitCode {
    let a = Args::parse();
    let packets = a.packets.unwrap_or(a.clients).max(a.clients);
    let t = BenchTraffic {
        clients: a.clients,
        packets,
        backend_packets: a
            .backend_packets
            .unwrap_or((packets / 4).clamp(4096, 262_144)),
        size: a.size,
        mix: a.mix,
        family: a.family,
        seed: a.seed,
    };
    let resolution = if a.microseconds {
        Resolution::Microseconds
    } else {
        Resolution::Nanoseconds
    };
    match bench::write_with(&a.out_dir, &t, resolution) {
        Ok((client, backend)) => {
            println!(
                "{{\"client_frames\": {client}, \"backend_frames\": {backend}, \"clients\": {}}}",
                a.clients
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vpnlb-benchgen: {e}");
            ExitCode::from(2)
        }
    }
}
