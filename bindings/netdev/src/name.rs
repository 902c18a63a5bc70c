//! Validation of the names this crate hands to the kernel or puts in paths.

use std::ffi::c_char;
use std::io;

/// Longest interface name, in bytes, without the terminating NUL (`IFNAMSIZ - 1`).
pub(crate) const IFNAME_MAX: usize = libc::IFNAMSIZ - 1;

/// Checks an interface name: non-empty, at most 15 bytes, no '/' and no NUL (what the kernel
/// needs to copy it into `ifr_name` and what `/proc/sys/net/ipv6/conf/NAME` needs to stay one
/// path component). The kernel may still refuse it (':', whitespace, "." or "..").
pub(crate) fn check_ifname(name: &str) -> io::Result<()> {
    if name.len() > IFNAME_MAX {
        return Err(invalid(format!(
            "interface name {name:?} is longer than {IFNAME_MAX} bytes"
        )));
    }
    check_component("interface name", name)
}

/// Checks that `value` is usable as one path component: non-empty, not "." or "..", no '/'
/// and no NUL. `what` names it in the error.
pub(crate) fn check_component(what: &str, value: &str) -> io::Result<()> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(invalid(format!(
            "{what} {value:?} is empty, \".\" or \"..\""
        )));
    }
    if value.contains(['/', '\0']) {
        return Err(invalid(format!("{what} {value:?} contains '/' or NUL")));
    }
    Ok(())
}

/// An already checked interface name as `ifr_name`: NUL-padded to `IFNAMSIZ`.
pub(crate) fn to_ifr_name(name: &str) -> [c_char; libc::IFNAMSIZ] {
    debug_assert!(name.len() <= IFNAME_MAX);
    let mut out = [0 as c_char; libc::IFNAMSIZ];
    for (dst, &src) in out.iter_mut().zip(name.as_bytes()) {
        *dst = src as c_char;
    }
    out
}

/// The name the kernel wrote back into `ifr_name` (up to the first NUL).
pub(crate) fn from_ifr_name(raw: &[c_char; libc::IFNAMSIZ]) -> io::Result<String> {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("interface name: {e}")))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["tap0", "vlb-client", "a", "exactly15bytes_", "vlb%d"] {
            check_ifname(name).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names_as_invalid_input() {
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "nul\0",
            "sixteen-bytes-xx",
            "ééééééééé",
        ] {
            let err = check_ifname(name).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}: {err}");
        }
    }

    #[test]
    fn components() {
        check_component("key", "accept_dad").unwrap();
        check_component("netns", "vlbt-nd-1-2").unwrap();
        for bad in ["", "..", "../x", "x/y", "a\0"] {
            let err = check_component("key", bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn ifr_name_round_trip() {
        let raw = to_ifr_name("exactly15bytes_");
        assert_eq!(raw[15], 0, "always NUL-terminated");
        assert_eq!(from_ifr_name(&raw).unwrap(), "exactly15bytes_");
        assert_eq!(from_ifr_name(&to_ifr_name("tap0")).unwrap(), "tap0");
    }
}
