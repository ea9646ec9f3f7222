//! Executable memory for compiled blocks: one mapping, bump-allocated, reset as a whole.
//!
//! The mapping is never writable and executable at once: it is made writable to copy a block
//! in and executable again before any block runs (single-threaded use: no block executes while
//! `alloc` runs).

use crate::JitError;

pub(crate) struct Arena {
    base: *mut u8,
    size: usize,
    used: usize,
}

const PAGE: usize = 4096;

impl Arena {
    pub fn new(size: usize) -> Result<Arena, JitError> {
        let size = size.div_ceil(PAGE) * PAGE;
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(JitError::NoCodeMemory(size));
        }
        Ok(Arena { base: p.cast(), size, used: 0 })
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn capacity(&self) -> usize {
        self.size
    }

    /// Copy `code` in; None when the arena is full (the caller flushes and retries).
    pub fn alloc(&mut self, code: &[u8]) -> Option<*const u8> {
        let start = self.used.div_ceil(16) * 16;
        let end = start.checked_add(code.len())?;
        if end > self.size {
            return None;
        }
        let first = start / PAGE * PAGE;
        let last = end.div_ceil(PAGE) * PAGE;
        // SAFETY: [first, last) lies inside the mapping; no compiled code runs during this call,
        // so making these pages temporarily non-executable cannot fault a running block.
        unsafe {
            let p = self.base.add(first).cast();
            if libc::mprotect(p, last - first, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                return None;
            }
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.base.add(start), code.len());
            if libc::mprotect(p, last - first, libc::PROT_READ | libc::PROT_EXEC) != 0 {
                return None;
            }
        }
        self.used = end;
        // SAFETY: start < size.
        Some(unsafe { self.base.add(start) })
    }

    /// Forget every block (their code pointers must no longer be used).
    pub fn reset(&mut self) {
        self.used = 0;
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; no pointer into it is used after the drop (the
        // owner drops its block table first).
        unsafe {
            libc::munmap(self.base.cast(), self.size);
        }
    }
}
