//! Random words for what must not be guessed from outside: the affinity hash key, HA session
//! nonces. From the kernel (`/dev/urandom`); should that fail (no `/dev` in a container, say),
//! from std's `RandomState`, whose keys come from the OS's random source too, with the time,
//! the pid and the word's index mixed in. Read at start and reload, never per packet.

use std::hash::{BuildHasher, Hasher};
use std::io::Read;

use tracing::warn;

/// `N` random words; `what` names the use in the warning when the kernel's source fails.
pub fn words<const N: usize>(what: &str) -> [u64; N] {
    let mut bytes = vec![0u8; 8 * N];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    let mut out = [0u64; N];
    match read {
        Ok(()) => {
            for (w, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                *w = u64::from_ne_bytes(b);
            }
        }
        Err(e) => {
            warn!(error = %e, what, "/dev/urandom unreadable; random words from RandomState");
            let state = std::collections::hash_map::RandomState::new();
            for (i, w) in (0u64..).zip(out.iter_mut()) {
                let mut h = state.build_hasher();
                h.write_u128(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos()),
                );
                h.write_u32(std::process::id());
                h.write_u64(i);
                *w = h.finish();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_differ_between_calls_and_within_one() {
        let a: [u64; 4] = words("test");
        let b: [u64; 4] = words("test");
        assert_ne!(a, b);
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() == 4);
    }
}
