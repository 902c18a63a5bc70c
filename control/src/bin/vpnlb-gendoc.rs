//! vpnlb-gendoc: writes the man pages and shell completions of vpnlbd and vpnlbctl, generated
//! from their clap definitions (`control::cli`), into a directory.
//!
//! `vpnlb-gendoc DIR` creates DIR if needed and writes `vpnlbd.8`, `vpnlbctl.8`, and for each
//! program `NAME.bash`, `_NAME` (zsh) and `NAME.fish`; it prints the paths written.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "vpnlb-gendoc",
    version,
    about = "Write the man pages (vpnlbd.8, vpnlbctl.8) and the bash, zsh and fish completions \
             of vpnlbd and vpnlbctl into DIR"
)]
struct Args {
    /// The directory to write into (created if missing).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = std::fs::create_dir_all(&args.dir) {
        eprintln!("vpnlb-gendoc: {}: {e}", args.dir.display());
        return ExitCode::FAILURE;
    }
    match control::cli::docs::write_all(&args.dir) {
        Ok(paths) => {
            for path in paths {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vpnlb-gendoc: {}: {e}", args.dir.display());
            ExitCode::FAILURE
        }
    }
}
