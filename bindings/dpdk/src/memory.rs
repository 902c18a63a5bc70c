//! Paging advice for large tables the workers allocate themselves (not from DPDK's memory).

/// Asks the kernel to back `[addr, addr + bytes)` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`), for memory that has been reserved but not touched yet, so its
/// first-touch faults map 2 MB pages. The range is narrowed to whole 4 KB pages. Returns false
/// when the kernel refuses (THP disabled, an old kernel); the memory works the same either way,
/// only with more TLB misses.
pub fn advise_huge_pages(addr: usize, bytes: usize) -> bool {
    const PAGE: usize = 4096;
    let start = addr.next_multiple_of(PAGE);
    let end = (addr + bytes) & !(PAGE - 1);
    if end <= start {
        return false;
    }
    // SAFETY: madvise with MADV_HUGEPAGE only changes the kernel's paging policy for the
    // range; it neither reads nor writes the memory nor changes its mapping's validity, and the
    // kernel rejects (EINVAL/ENOMEM) any range that is not mapped.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_on_fresh_memory_and_on_nothing() {
        let mut v: Vec<u8> = Vec::with_capacity(8 << 20);
        let addr = v.spare_capacity_mut().as_ptr() as usize;
        // The answer depends on the kernel's THP setting; it must not fail on a real range
        // where THP is available, and never touch the memory.
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| !s.contains("[never]"));
        assert_eq!(advise_huge_pages(addr, 8 << 20), thp);
        assert!(!advise_huge_pages(addr, 100), "less than a page");
        v.push(1);
        assert_eq!(v[0], 1);
    }
}
