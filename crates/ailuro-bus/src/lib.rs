//! Guest RAM and the one seam between a CPU core and everything outside CPU+RAM.
//!
//! Ailuro draws a line around the CPU and guest RAM (see `docs/DESIGN-NOTES.md`). RAM is inside the
//! line and is accessed directly on the hot path through [`GuestRam`]. Everything else — port I/O,
//! MMIO, time-stamp reads, interrupt acknowledge — is reached only through the [`Platform`] trait.
//! A live board, a recorder wrapping it, and a replayer with no devices at all implement it; the CPU
//! cannot tell them apart. This crate knows nothing about any particular architecture.

use std::fmt;

pub mod observe;
pub use observe::{CpuObserver, CpuView, InterruptEvent, MemAccess, NoObserver};

/// Where in the guest's execution something happens: the number of instructions retired so far and
/// the program counter of the instruction being executed (or about to be executed, between
/// instructions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct ProgramPoint {
    /// Guest instructions retired before this point (see `docs/FORMATS.md` for the counting rule).
    pub icount: u64,
    /// Program counter (x86: linear address of the instruction, i.e. CS.base + EIP).
    pub pc: u64,
}

impl fmt::Display for ProgramPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "instruction {} (pc {:#x})", self.icount, self.pc)
    }
}

/// The CPU's only window on the world outside CPU+RAM.
///
/// Every method that returns a value is a crossing *into* CPU+RAM and is therefore recorded by the
/// recording implementation and supplied from the log by the replaying one. Writes go outward and
/// are not recorded (a replay has no devices to receive them).
///
/// `at` is the program point of the instruction performing the access; devices ignore it, the
/// recorder and replayer key log entries by it.
pub trait Platform {
    /// Port input (x86 `in`/`ins`). `size` is 1, 2 or 4; the result is zero-extended.
    fn io_read(&mut self, at: ProgramPoint, port: u16, size: u8) -> u32;
    /// Port output (x86 `out`/`outs`).
    fn io_write(&mut self, at: ProgramPoint, port: u16, size: u8, value: u32);
    /// Load from a guest-physical address that is not RAM. `size` is 1, 2, 4 or 8.
    fn mmio_read(&mut self, at: ProgramPoint, addr: u64, size: u8) -> u64;
    /// Store to a guest-physical address that is not RAM.
    fn mmio_write(&mut self, at: ProgramPoint, addr: u64, size: u8, value: u64);
    /// A read of the free-running time-stamp counter (x86 `rdtsc`/`rdtscp`/`rdmsr` of the TSC, ARM
    /// generic-timer counter reads). The CPU applies its own offset (e.g. after a TSC write) on top.
    fn read_timestamp(&mut self, at: ProgramPoint) -> u64;
    /// The CPU is taking an external interrupt (x86 INTR while IF=1): returns the vector supplied by
    /// the interrupt controller (x86: 0..=255).
    fn interrupt_ack(&mut self, at: ProgramPoint) -> u32;
}

/// Errors from [`GuestRam`] accesses outside the RAM block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RamError {
    /// The range `[addr, addr+len)` is not entirely inside RAM.
    #[error("guest-physical range {addr:#x}+{len:#x} is outside RAM ({base:#x}..{end:#x})")]
    OutOfRange {
        /// Start of the requested range.
        addr: u64,
        /// Length of the requested range.
        len: u64,
        /// RAM base.
        base: u64,
        /// RAM end (exclusive).
        end: u64,
    },
    /// The requested RAM size is zero, not page aligned, or too large for this host.
    #[error("invalid RAM size {0:#x} bytes (must be a non-zero multiple of 4 KiB that fits in host memory)")]
    BadSize(u64),
    /// The host could not allocate that much memory for guest RAM.
    #[error("cannot allocate {0:#x} bytes of guest RAM: not enough host memory")]
    NoHostMemory(u64),
}

/// A zeroed byte vector of `len` bytes, or `None` when the host cannot provide the memory.
///
/// `vec![0; n]` would use calloc too, but aborts the whole process when the allocation fails; a
/// snapshot or option asking for more RAM than the host has must be an error instead. calloc
/// (`alloc_zeroed`) maps pages lazily, so untouched guest RAM costs no host memory.
fn zeroed_vec(len: usize) -> Option<Vec<u8>> {
    let layout = std::alloc::Layout::array::<u8>(len).ok()?;
    if layout.size() == 0 {
        return Some(Vec::new());
    }
    // SAFETY: the layout has a non-zero size. A non-null result points to `len` zeroed bytes
    // allocated by the global allocator with the alignment of `u8`, which is exactly what
    // `Vec::from_raw_parts` requires (capacity = length = `len`).
    unsafe {
        let p = std::alloc::alloc_zeroed(layout);
        // (Vec::from_raw_parts takes ownership; dropping the Vec frees with the same layout.)
        if p.is_null() {
            return None;
        }
        Some(Vec::from_raw_parts(p, len, len))
    }
}

/// Size of a guest page for dirty/zero-page bookkeeping.
pub const PAGE_SIZE: u64 = 4096;

/// Guest-physical RAM: one contiguous block starting at `base` (0 on PCs, 0x4000_0000 on ARM virt).
///
/// Backed by zero-initialised host memory, so untouched guest pages cost no host memory.
pub struct GuestRam {
    base: u64,
    data: Vec<u8>,
    /// A read-only ROM region outside RAM (a PC's system firmware below 4 GiB): the CPU fetches
    /// and reads it directly and drops writes to it. It is not part of [`GuestRam::hash`]: the
    /// board's state holds the image and maps it again when a snapshot is loaded.
    rom: Option<(u64, std::sync::Arc<[u8]>)>,
}

impl GuestRam {
    /// Allocate `size` bytes of zeroed RAM at guest-physical `base`.
    pub fn new(base: u64, size: u64) -> Result<Self, RamError> {
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) || size > (1u64 << 40) || usize::try_from(size).is_err() {
            return Err(RamError::BadSize(size));
        }
        Ok(Self { base, data: zeroed_vec(size as usize).ok_or(RamError::NoHostMemory(size))?, rom: None })
    }

    /// Guest-physical address of the first byte.
    #[inline]
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    #[inline]
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// Guest-physical end address (exclusive).
    #[inline]
    pub fn end(&self) -> u64 {
        self.base + self.data.len() as u64
    }

    /// Whether `[addr, addr+len)` lies entirely in RAM.
    #[inline]
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.base && addr.wrapping_sub(self.base).checked_add(len).is_some_and(|e| e <= self.size())
    }

    /// Offset into [`Self::as_slice`] of guest-physical `addr`, if `[addr, addr+len)` is in RAM.
    #[inline]
    pub fn offset_of(&self, addr: u64, len: u64) -> Option<usize> {
        if self.contains(addr, len) {
            Some((addr - self.base) as usize)
        } else {
            None
        }
    }

    /// The whole RAM as bytes (index 0 is guest-physical `base`).
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// The whole RAM as mutable bytes (index 0 is guest-physical `base`).
    ///
    /// Writers outside the CPU (loaders, DMA in replay) must tell the CPU about code they may have
    /// overwritten; see the CPU crate's invalidation API.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    fn range_err(&self, addr: u64, len: u64) -> RamError {
        RamError::OutOfRange { addr, len, base: self.base, end: self.end() }
    }

    /// Copy guest-physical `[addr, addr+buf.len())` into `buf`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), RamError> {
        let off = self.offset_of(addr, buf.len() as u64).ok_or_else(|| self.range_err(addr, buf.len() as u64))?;
        buf.copy_from_slice(&self.data[off..off + buf.len()]);
        Ok(())
    }

    /// Copy `buf` into guest-physical `[addr, addr+buf.len())`.
    pub fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), RamError> {
        let off = self.offset_of(addr, buf.len() as u64).ok_or_else(|| self.range_err(addr, buf.len() as u64))?;
        self.data[off..off + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    /// Little-endian u32 at `addr`.
    pub fn read_u32(&self, addr: u64) -> Result<u32, RamError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Store little-endian u32 at `addr`.
    pub fn write_u32(&mut self, addr: u64, v: u32) -> Result<(), RamError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Little-endian u64 at `addr`.
    pub fn read_u64(&self, addr: u64) -> Result<u64, RamError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Store little-endian u64 at `addr`.
    pub fn write_u64(&mut self, addr: u64, v: u64) -> Result<(), RamError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Map `bytes` read-only at guest-physical `base` (replacing any earlier ROM). The region
    /// must not overlap RAM; an overlapping or wrapping one is refused.
    pub fn map_rom(&mut self, base: u64, bytes: std::sync::Arc<[u8]>) -> Result<(), RamError> {
        let len = bytes.len() as u64;
        let end =
            base.checked_add(len).ok_or(RamError::OutOfRange { addr: base, len, base: self.base, end: self.end() })?;
        if len == 0 || (base < self.end() && end > self.base) {
            return Err(RamError::OutOfRange { addr: base, len, base: self.base, end: self.end() });
        }
        self.rom = Some((base, bytes));
        Ok(())
    }

    /// The ROM bytes at `[addr, addr+len)` if that range lies entirely in the mapped ROM.
    #[inline]
    pub fn rom_at(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let (base, bytes) = self.rom.as_ref()?;
        let off = addr.checked_sub(*base)?;
        let end = off.checked_add(len)?;
        if end <= bytes.len() as u64 {
            Some(&bytes[off as usize..end as usize])
        } else {
            None
        }
    }

    /// The ROM's guest-physical range, if one is mapped.
    pub fn rom_range(&self) -> Option<(u64, u64)> {
        self.rom.as_ref().map(|(b, r)| (*b, *b + r.len() as u64))
    }

    /// BLAKE3 hash of the RAM contents (part of the CPU+RAM state hash that record and replay
    /// compare).
    pub fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&self.base.to_le_bytes());
        h.update(&(self.data.len() as u64).to_le_bytes());
        h.update(&self.data);
        *h.finalize().as_bytes()
    }
}

impl fmt::Debug for GuestRam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestRam").field("base", &format_args!("{:#x}", self.base)).field("size", &self.size()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rom_is_mapped_outside_ram_only() {
        let mut ram = GuestRam::new(0, 0x2000).unwrap();
        let rom: std::sync::Arc<[u8]> = vec![1u8, 2, 3, 4].into();
        assert!(ram.map_rom(0x1000, rom.clone()).is_err(), "overlaps RAM");
        assert!(ram.map_rom(u64::MAX - 1, rom.clone()).is_err(), "wraps");
        ram.map_rom(0xffff_fffc, rom).unwrap();
        assert_eq!(ram.rom_at(0xffff_fffd, 2), Some(&[2u8, 3][..]));
        assert_eq!(ram.rom_at(0xffff_fffe, 4), None);
        assert_eq!(ram.rom_at(0, 1), None);
        assert_eq!(ram.rom_range(), Some((0xffff_fffc, 0x1_0000_0000)));
    }

    #[test]
    fn ram_bounds_and_rw() {
        let mut ram = GuestRam::new(0x1000, 0x2000).unwrap();
        assert!(ram.contains(0x1000, 0x2000));
        assert!(!ram.contains(0x0fff, 1));
        assert!(!ram.contains(0x2fff, 2));
        assert!(!ram.contains(u64::MAX, 2));
        ram.write_u32(0x1ffc, 0xdead_beef).unwrap();
        assert_eq!(ram.read_u32(0x1ffc).unwrap(), 0xdead_beef);
        assert!(matches!(ram.write_u32(0x2ffe, 1), Err(RamError::OutOfRange { .. })));
        assert!(matches!(GuestRam::new(0, 100), Err(RamError::BadSize(100))));
    }

    #[test]
    fn hash_sees_every_byte() {
        let mut ram = GuestRam::new(0, 0x4000).unwrap();
        let h0 = ram.hash();
        ram.as_mut_slice()[0x3fff] = 1;
        assert_ne!(h0, ram.hash());
    }
}
