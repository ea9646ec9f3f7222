//! Harness shared by the differential tests against the host CPU (`host_diff.rs`, 32-bit integer
//! instructions; `host_diff64.rs`, 64-bit integer instructions; `host_diff_sse.rs`, MMX/SSE):
//! a Platform without devices, fixed host mappings that the guest sees at the same addresses, an
//! executable page for the host stubs, and the host's CPU vendor (CI runs on AMD and on Intel).

#![allow(dead_code)] // Each test binary uses a different subset.

use ailuro_x86::{Platform, ProgramPoint};

/// A Platform with no devices: reads give all-ones, writes vanish, time stands still.
pub struct NoDevices;

impl Platform for NoDevices {
    fn io_read(&mut self, _: ProgramPoint, _: u16, _: u8) -> u32 {
        u32::MAX
    }
    fn io_write(&mut self, _: ProgramPoint, _: u16, _: u8, _: u32) {}
    fn mmio_read(&mut self, _: ProgramPoint, _: u64, _: u8) -> u64 {
        u64::MAX
    }
    fn mmio_write(&mut self, _: ProgramPoint, _: u64, _: u8, _: u64) {}
    fn read_timestamp(&mut self, _: ProgramPoint) -> u64 {
        0
    }
    fn interrupt_ack(&mut self, _: ProgramPoint) -> u32 {
        0
    }
}

/// Map `len` bytes of private anonymous memory at host address `addr` with protection `prot`.
/// MAP_FIXED_NOREPLACE refuses (and the assertion fails) if anything is mapped there already.
pub fn map_fixed(addr: u64, len: u64, prot: libc::c_int) -> *mut u8 {
    // SAFETY: a fixed private anonymous mapping at an address the test binary does not use;
    // the kernel refuses rather than replacing an existing mapping.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len as usize,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(p as u64, addr, "cannot map {len:#x} bytes at {addr:#x}");
    p as *mut u8
}

/// A read-write mapping at `addr` as a byte slice that lives as long as the process.
pub fn map_buffer(addr: u64, len: u64) -> &'static mut [u8] {
    let p = map_fixed(addr, len, libc::PROT_READ | libc::PROT_WRITE);
    // SAFETY: just mapped, exclusively ours for the life of the process.
    unsafe { std::slice::from_raw_parts_mut(p, len as usize) }
}

/// One executable page (anywhere) for host stubs that take a pointer to a `#[repr(C)]` block.
pub struct HostCode {
    page: *mut u8,
}

impl HostCode {
    pub fn new() -> HostCode {
        // SAFETY: anonymous private mapping, checked for failure.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED);
        HostCode { page: page as *mut u8 }
    }

    /// Copy `code` to the page and call it with a pointer to `block`.
    ///
    /// # Safety
    /// `code` must be a SysV-ABI function (callee-saved registers preserved, DF clear on return)
    /// that only accesses `block`, the test's fixed buffers and its own stack. `block` is passed
    /// as is: give the block itself (`&mut *boxed`), not a `Box` or reference holding it — there
    /// is no deref coercion through the generic parameter.
    pub unsafe fn run<T>(&self, code: &[u8], block: &mut T) {
        assert!(code.len() <= 4096);
        // SAFETY: the page is RWX and 4096 bytes; the caller vouches for the code.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.page, code.len());
            let f: extern "C" fn(*mut T) = std::mem::transmute(self.page);
            f(block as *mut T);
        }
    }
}

/// The host's CPUID vendor string.
pub fn host_vendor() -> [u8; 12] {
    let r = std::arch::x86_64::__cpuid(0);
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..].copy_from_slice(&r.ecx.to_le_bytes());
    v
}

/// The host is an AMD CPU.
pub fn host_is_amd() -> bool {
    &host_vendor() == b"AuthenticAMD"
}

/// The host is an Intel CPU.
pub fn host_is_intel() -> bool {
    &host_vendor() == b"GenuineIntel"
}
