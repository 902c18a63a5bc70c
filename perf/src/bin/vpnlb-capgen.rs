//! `vpnlb-capgen`: writes the lab's reference captures.
//!
//! ```text
//! vpnlb-capgen --out-dir DIR [--clients 20] [--ipv6-clients 5] [--tls-clients 5]
//!              [--fragment-every 4] [--seed 1] [--duration-s 60] [--fuzz-corpus DIR]
//! ```
//!
//! Produces `DIR/client.pcap`, `DIR/backend.pcap` and `DIR/clients.csv`; gateways are
//! predicted with the appliance's default Maglev table over gw1..gw3.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vpnlb_perf::lab::{self, LabConfig};

/// Generate the lab's client-port and backend-port captures.
#[derive(Debug, Parser)]
#[command(name = "vpnlb-capgen", version)]
struct Args {
    /// Directory for client.pcap, backend.pcap and clients.csv (created if needed).
    #[arg(long)]
    out_dir: PathBuf,
    /// IPv4 IKEv2 clients (198.18.64.0/18).
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// IPv6 IKEv2 clients (2001:2:0:64::/64).
    #[arg(long, default_value_t = 5)]
    ipv6_clients: usize,
    /// IPv4 TLS/DTLS clients.
    #[arg(long, default_value_t = 5)]
    tls_clients: usize,
    /// Every n-th IKE client's IKE_AUTH is IP-fragmented (certificates); 0 = none.
    #[arg(long, default_value_t = 4)]
    fragment_every: usize,
    /// PRNG seed: the same seed gives identical captures.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Capture length in seconds.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Also write every frame as a seed for the `pipeline` fuzz target: one file per frame,
    /// its first byte the port (0 client, 1 backend), as that target reads its input.
    #[arg(long)]
    fuzz_corpus: Option<PathBuf>,
}

fn write_corpus(dir: &std::path::Path, caps: &lab::LabCaptures) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut n = 0;
    for (port, frames) in [(0u8, &caps.client_port), (1, &caps.backend_port)] {
        for (i, f) in frames.iter().enumerate() {
            let mut seed = Vec::with_capacity(1 + f.data.len());
            seed.push(port);
            seed.extend_from_slice(&f.data);
            std::fs::write(dir.join(format!("lab-{port}-{i:05}")), seed)?;
            n += 1;
        }
    }
    Ok(n)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = LabConfig {
        clients: args.clients,
        ipv6_clients: args.ipv6_clients,
        tls_clients: args.tls_clients,
        fragment_every: args.fragment_every,
        seed: args.seed,
        duration_s: args.duration_s,
        ..LabConfig::default()
    };
    let gateway_for = match lab::maglev_gateway_for() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vpnlb-capgen: cannot build the Maglev table: {e:?}");
            return ExitCode::FAILURE;
        }
    };
    match lab::generate_into(&args.out_dir, &cfg, &gateway_for) {
        Ok(caps) => {
            let dir = args.out_dir.display();
            println!(
                "{dir}/client.pcap: {} frames, {dir}/backend.pcap: {} frames, \
                 {dir}/clients.csv: {} clients",
                caps.client_port.len(),
                caps.backend_port.len(),
                caps.clients.len()
            );
            if let Some(corpus) = &args.fuzz_corpus {
                match write_corpus(corpus, &caps) {
                    Ok(n) => println!("{}: {n} fuzz seeds", corpus.display()),
                    Err(e) => {
                        eprintln!("vpnlb-capgen: {}: {e}", corpus.display());
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vpnlb-capgen: {e}");
            ExitCode::FAILURE
        }
    }
}
