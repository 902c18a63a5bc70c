//! Generates the DPDK bindings and compiles the C shim.
//!
//! Both bindgen and the C compiler get exactly what `pkg-config --cflags libdpdk` prints: it
//! carries `-include rte_config.h` and a `-march=` that the headers' inline functions need. The
//! crate links to the shared libraries `pkg-config --libs libdpdk` names; the EAL loads the PMDs
//! (net_pcap, net_ring, PCI drivers, ...) from its plugin directory at init, so none is linked.

use std::env;
use std::path::PathBuf;
use std::process::{exit, Command};

const MIN_VERSION: &str = "22.11";

fn fail(msg: &str) -> ! {
    eprintln!("error: dpdk-sys: {msg}");
    exit(1);
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");

    // Version check and link lines (shared libraries, as `--libs` says).
    let lib = pkg_config::Config::new()
        .atleast_version(MIN_VERSION)
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            fail(&format!(
                "libdpdk >= {MIN_VERSION} not found through pkg-config ({e}); \
                 install DPDK's development files: run scripts/setup.sh \
                 (Debian: apt-get install dpdk-dev libdpdk-dev libclang-dev)"
            ))
        });

    let cflags = pkg_config_cflags();
    println!("cargo:version={}", lib.version);

    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR not set")));

    let bindings = bindgen::Builder::default()
        .header("shim.h")
        .clang_args(&cflags)
        .allowlist_function("rte_.*")
        .allowlist_function("vpnlb_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("rte_.*")
        .allowlist_var("VPNLB_.*")
        // Packed and aligned at once: Rust cannot express that layout.
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_arp_hdr")
        // Packed, holding an aligned union (L2TPv2 flow item); not used here.
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .derive_default(true)
        .derive_debug(false)
        // DPDK's Doxygen comments hold indented C that rustdoc would run as doctests.
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen over DPDK headers failed: {e}")));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .unwrap_or_else(|e| fail(&format!("writing bindings.rs: {e}")));

    let mut build = cc::Build::new();
    build.file("shim.c").include(".");
    for f in &cflags {
        build.flag(f);
    }
    build.compile("vpnlb_dpdk_shim");
}

/// `pkg-config --cflags libdpdk`, split into arguments (the pkg-config crate only exposes the
/// include paths and defines, not `-include` and `-march`).
fn pkg_config_cflags() -> Vec<String> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let output = Command::new(&pkg_config)
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|e| fail(&format!("running {pkg_config}: {e}; run scripts/setup.sh")));
    if !output.status.success() {
        fail(&format!(
            "`{pkg_config} --cflags libdpdk` failed: {}; run scripts/setup.sh",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}
