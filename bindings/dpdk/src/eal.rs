//! The Environment Abstraction Layer: initialised once per process.
//!
//! DPDK refuses a second `rte_eal_init` in a process (EALREADY), even after `rte_eal_cleanup`,
//! so [`Eal::init`] runs it at most once and hands every later caller the first outcome.

use std::ffi::{c_char, c_int, CString};
use std::sync::OnceLock;

use crate::error::{DpdkError, Result};

/// The program name put in front of the EAL arguments (`argv[0]`).
const PROGRAM: &str = "vpnlb";

static EAL: OnceLock<Result<Eal>> = OnceLock::new();

/// Proof that the EAL is initialised; lives for the rest of the process.
#[derive(Debug)]
pub struct Eal {
    args: Vec<String>,
    main_lcore: u32,
}

impl Eal {
    /// Initialises the EAL with `args` (EAL options only, without a program name).
    ///
    /// Runs `rte_eal_init` at most once per process: later calls, from any thread and with
    /// any arguments, return the first call's result (a successful EAL, or the error it failed
    /// with). The calling thread becomes the main lcore. A later call with other arguments is
    /// logged as a warning, since those arguments are not applied.
    pub fn init(args: &[String]) -> Result<&'static Eal> {
        let result = EAL.get_or_init(|| Self::init_once(args));
        if let Ok(eal) = result {
            if eal.args != args {
                tracing::warn!(
                    first = ?eal.args,
                    ignored = ?args,
                    "EAL already initialised; later arguments ignored"
                );
            }
        }
        result.as_ref().map_err(Clone::clone)
    }

    /// The EAL, if [`Eal::init`] succeeded.
    pub fn get() -> Option<&'static Eal> {
        EAL.get().and_then(|r| r.as_ref().ok())
    }

    /// [`Eal::get`] as a `Result`, for the crate's entry points.
    pub(crate) fn require() -> Result<&'static Eal> {
        Self::get().ok_or(DpdkError::EalNotInitialised)
    }

    /// The arguments the EAL was initialised with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The main lcore (the thread that ran [`Eal::init`]).
    pub fn main_lcore(&self) -> u32 {
        self.main_lcore
    }

    /// How many lcores the EAL runs (`-l` list), not counting registered threads.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: the EAL is initialised (self exists); reads its configuration.
        unsafe { dpdk_sys::rte_lcore_count() }
    }

    fn init_once(args: &[String]) -> Result<Eal> {
        let mut owned = Vec::with_capacity(args.len() + 1);
        for a in std::iter::once(PROGRAM).chain(args.iter().map(String::as_str)) {
            let c = CString::new(a)
                .map_err(|_| DpdkError::invalid("EAL argument", format!("{a:?} contains NUL")))?;
            owned.push(c);
        }
        let argc = c_int::try_from(owned.len())
            .map_err(|_| DpdkError::invalid("EAL arguments", "too many"))?;
        // The EAL keeps pointers into argv (argv[0] goes to openlog, getopt permutes the
        // array), so strings and array live for the rest of the process: leaked on purpose,
        // once per process.
        let argv: Vec<*mut c_char> = owned.into_iter().map(CString::into_raw).collect();
        let argv: &'static mut [*mut c_char] = Box::leak(argv.into_boxed_slice());
        // SAFETY: argc matches argv's length; every entry is a valid NUL-terminated string that
        // is never freed; OnceLock guarantees this runs once per process.
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(DpdkError::last("rte_eal_init"));
        }
        // SAFETY: the EAL is initialised.
        let main_lcore = unsafe { dpdk_sys::rte_get_main_lcore() };
        tracing::info!(args = ?args, main_lcore, "DPDK EAL initialised");
        Ok(Eal {
            args: args.to_vec(),
            main_lcore,
        })
    }
}

/// Builds EAL arguments for [`Eal::init`].
///
/// ```
/// let args = dpdk::EalArgs::new()
///     .cores("0")
///     .memory_mb(256)
///     .no_huge(true)
///     .vdev("net_ring0")
///     .log_level("error")
///     .to_args();
/// assert_eq!(
///     args,
///     ["-l", "0", "-m", "256", "--no-huge", "--no-shconf", "--vdev", "net_ring0", "--log-level", "error"]
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EalArgs {
    cores: Option<String>,
    main_lcore: Option<u32>,
    memory_mb: Option<u32>,
    no_huge: bool,
    no_pci: bool,
    no_telemetry: bool,
    vdevs: Vec<String>,
    allow: Vec<String>,
    file_prefix: Option<String>,
    log_level: Option<String>,
    extra: Vec<String>,
}

impl EalArgs {
    /// No options: DPDK's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lcores to run, as an `-l` list ("0", "0-3", "1,3").
    pub fn cores(mut self, list: &str) -> Self {
        self.cores = Some(list.to_string());
        self
    }

    /// The main lcore (`--main-lcore`), when it is not the first of [`EalArgs::cores`].
    pub fn main_lcore(mut self, lcore: u32) -> Self {
        self.main_lcore = Some(lcore);
        self
    }

    /// Memory to reserve at start, in MB (`-m`).
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = Some(mb);
        self
    }

    /// Run without hugepages: `--no-huge --no-shconf`. Without `--no-shconf` two such
    /// processes collide on the shared config file; `--in-memory` is not accepted with
    /// `--no-huge` by DPDK 22.11.
    pub fn no_huge(mut self, on: bool) -> Self {
        self.no_huge = on;
        self
    }

    /// Skip the PCI bus scan (`--no-pci`): virtual devices only.
    pub fn no_pci(mut self, on: bool) -> Self {
        self.no_pci = on;
        self
    }

    /// No telemetry socket (`--no-telemetry`).
    pub fn no_telemetry(mut self, on: bool) -> Self {
        self.no_telemetry = on;
        self
    }

    /// A virtual device (`--vdev`), e.g. `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`.
    pub fn vdev(mut self, devargs: &str) -> Self {
        self.vdevs.push(devargs.to_string());
        self
    }

    /// A PCI device to use (`-a`, allow-list); when any is given, only those are probed.
    pub fn allow(mut self, pci: &str) -> Self {
        self.allow.push(pci.to_string());
        self
    }

    /// Runtime file prefix (`--file-prefix`), to run several primaries on one host.
    pub fn file_prefix(mut self, prefix: &str) -> Self {
        self.file_prefix = Some(prefix.to_string());
        self
    }

    /// Log level (`--log-level`), e.g. "error", "notice", "pmd.net.pcap:debug".
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = Some(level.to_string());
        self
    }

    /// Any other EAL option, passed through as is.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.to_string());
        self
    }

    /// The argument list, without a program name.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut opt = |k: &str, v: &str| {
            a.push(k.to_string());
            a.push(v.to_string());
        };
        if let Some(c) = &self.cores {
            opt("-l", c);
        }
        if let Some(m) = self.main_lcore {
            opt("--main-lcore", &m.to_string());
        }
        if let Some(m) = self.memory_mb {
            opt("-m", &m.to_string());
        }
        if let Some(p) = &self.file_prefix {
            opt("--file-prefix", p);
        }
        for d in &self.allow {
            opt("-a", d);
        }
        if self.no_huge {
            a.push("--no-huge".to_string());
            a.push("--no-shconf".to_string());
        }
        if self.no_pci {
            a.push("--no-pci".to_string());
        }
        if self.no_telemetry {
            a.push("--no-telemetry".to_string());
        }
        for v in &self.vdevs {
            a.push("--vdev".to_string());
            a.push(v.clone());
        }
        if let Some(l) = &self.log_level {
            a.push("--log-level".to_string());
            a.push(l.clone());
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_in_order_with_every_option() {
        let a = EalArgs::new()
            .cores("0-1")
            .main_lcore(1)
            .memory_mb(512)
            .file_prefix("lb1")
            .allow("0000:01:00.0")
            .allow("0000:01:00.1")
            .no_huge(true)
            .no_pci(true)
            .no_telemetry(true)
            .vdev("net_ring0")
            .log_level("error")
            .arg("--huge-unlink")
            .to_args();
        assert_eq!(
            a,
            [
                "-l",
                "0-1",
                "--main-lcore",
                "1",
                "-m",
                "512",
                "--file-prefix",
                "lb1",
                "-a",
                "0000:01:00.0",
                "-a",
                "0000:01:00.1",
                "--no-huge",
                "--no-shconf",
                "--no-pci",
                "--no-telemetry",
                "--vdev",
                "net_ring0",
                "--log-level",
                "error",
                "--huge-unlink"
            ]
        );
    }

    #[test]
    fn defaults_are_empty() {
        assert!(EalArgs::new().to_args().is_empty());
    }

    #[test]
    fn nothing_works_before_init() {
        // Unit tests never initialise the EAL (integration tests do, one per binary).
        assert!(Eal::get().is_none());
        assert_eq!(Eal::require().unwrap_err(), DpdkError::EalNotInitialised);
    }
}
