//! QEMU's `pc-testdev` (hw/misc/pc-testdev.c), the device kvm-unit-tests drive on x86.
//!
//! Present only with `-device pc-testdev`. Its parts, at QEMU's fixed addresses:
//! * ports 0xe0–0xe3: a 32-bit scratch register, accessible with any width at any byte offset;
//! * ports 0xe4–0xe7: "flush page" (a 4-byte write of a guest-physical address; QEMU re-protects
//!   the host mapping of that page). Guest memory here has no host mapping tricks, so the write
//!   is accepted and has no effect;
//! * ports 0xe8–0xeb: the same scratch register through byte-wide accesses;
//! * ports 0x2000–0x2017: a byte write to 0x2000 + n sets ISA IRQ line n to `value != 0` (the
//!   board drives it into the 8259 pair and the IOAPIC);
//! * MMIO 0xff000000–0xff00ffff: 64 KiB of RAM-like memory that reads back what was written.
//!
//! The board splits wider port accesses into consecutive byte accesses; for the scratch register
//! that is the same as QEMU's masked access at `(port & 3) * 8`.

use serde::{Deserialize, Serialize};

/// First port of the 32-bit scratch register.
pub const TESTDEV_IOPORT: u16 = 0xe0;
/// First port of the flush-page register.
pub const TESTDEV_FLUSH: u16 = 0xe4;
/// First port of the byte-wide view of the scratch register.
pub const TESTDEV_IOPORT_BYTE: u16 = 0xe8;
/// First IRQ-line port.
pub const TESTDEV_IRQ: u16 = 0x2000;
/// Number of IRQ-line ports (QEMU's region is 24 bytes; lines above 15 do not exist on ISA).
pub const TESTDEV_IRQ_LEN: u16 = 24;
/// Base of the MMIO memory.
pub const TESTDEV_IOMEM: u64 = 0xff00_0000;
/// Size of the MMIO memory (QEMU's IOMEM_LEN).
pub const TESTDEV_IOMEM_LEN: u64 = 0x1_0000;

/// State of the pc-testdev.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcTestdev {
    /// The scratch register behind 0xe0 and 0xe8.
    ioport_data: u32,
    /// Levels the guest set on ISA IRQ lines 0–15 through 0x2000 + n.
    irq_levels: u16,
    /// The MMIO memory.
    iomem: Vec<u8>,
}

impl Default for PcTestdev {
    fn default() -> Self {
        PcTestdev::new()
    }
}

impl PcTestdev {
    /// Power-on state: everything zero.
    pub fn new() -> PcTestdev {
        PcTestdev { ioport_data: 0, irq_levels: 0, iomem: vec![0; TESTDEV_IOMEM_LEN as usize] }
    }

    /// Does the device decode port `port`? (The flush and IRQ ports are write-only: reading them
    /// is left to the board's unmapped default, as QEMU has no read handler for them.)
    pub fn claims_read(port: u16) -> bool {
        matches!(port, 0xe0..=0xe3 | 0xe8..=0xeb)
    }

    /// Does the device take writes to port `port`?
    pub fn claims_write(port: u16) -> bool {
        matches!(port, 0xe0..=0xeb) || (TESTDEV_IRQ..TESTDEV_IRQ + TESTDEV_IRQ_LEN).contains(&port)
    }

    /// Byte read of a port it claims.
    pub fn read8(&self, port: u16) -> u8 {
        (self.ioport_data >> ((port & 3) * 8)) as u8
    }

    /// Byte write of a port it claims.
    pub fn write8(&mut self, port: u16, v: u8) {
        match port {
            0xe0..=0xe3 | 0xe8..=0xeb => {
                let shift = (port & 3) * 8;
                self.ioport_data = (self.ioport_data & !(0xff << shift)) | (v as u32) << shift;
            }
            // Flush page: nothing is cached on the host side of guest memory.
            0xe4..=0xe7 => {}
            p => {
                let line = p - TESTDEV_IRQ;
                // QEMU asserts on lines above 15 (an ISA bus has 16); ignore them instead.
                if line < 16 {
                    if v != 0 {
                        self.irq_levels |= 1 << line;
                    } else {
                        self.irq_levels &= !(1 << line);
                    }
                }
            }
        }
    }

    /// Levels the device drives on ISA IRQ lines 0–15 (bit n: line n).
    pub fn irq_levels(&self) -> u16 {
        self.irq_levels
    }

    /// Is `addr` inside the MMIO memory?
    pub fn claims_mmio(addr: u64) -> bool {
        (TESTDEV_IOMEM..TESTDEV_IOMEM + TESTDEV_IOMEM_LEN).contains(&addr)
    }

    /// Little-endian MMIO load of `size` bytes at `addr` (bytes beyond the window read 0).
    pub fn mmio_read(&self, addr: u64, size: u8) -> u64 {
        let off = addr - TESTDEV_IOMEM;
        let mut v = 0u64;
        for i in 0..size.min(8) as u64 {
            let b = self.iomem.get((off + i) as usize).copied().unwrap_or(0);
            v |= (b as u64) << (8 * i);
        }
        v
    }

    /// Little-endian MMIO store (bytes beyond the window are dropped).
    pub fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        let off = addr - TESTDEV_IOMEM;
        for i in 0..size.min(8) as u64 {
            if let Some(b) = self.iomem.get_mut((off + i) as usize) {
                *b = (value >> (8 * i)) as u8;
            }
        }
    }

    /// Restored state is sane.
    pub fn valid(&self) -> bool {
        self.iomem.len() == TESTDEV_IOMEM_LEN as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_register_at_0xe0_any_width() {
        let mut t = PcTestdev::new();
        for (i, b) in 0x1234_5678u32.to_le_bytes().into_iter().enumerate() {
            t.write8(0xe0 + i as u16, b);
        }
        assert_eq!((0..4).map(|i| t.read8(0xe0 + i)).collect::<Vec<_>>(), [0x78, 0x56, 0x34, 0x12]);
        // A byte write at 0xe2 replaces only bits 16..24.
        t.write8(0xe2, 0xab);
        assert_eq!(u32::from_le_bytes([t.read8(0xe0), t.read8(0xe1), t.read8(0xe2), t.read8(0xe3)]), 0x12ab_5678);
    }

    #[test]
    fn byte_ports_share_the_register() {
        let mut t = PcTestdev::new();
        t.write8(0xe9, 0x5a);
        assert_eq!(t.read8(0xe1), 0x5a);
        t.write8(0xe0, 0x11);
        assert_eq!(t.read8(0xe8), 0x11);
    }

    #[test]
    fn flush_page_is_accepted_and_changes_nothing() {
        let mut t = PcTestdev::new();
        let before = t.clone();
        for p in 0xe4..0xe8 {
            assert!(PcTestdev::claims_write(p));
            assert!(!PcTestdev::claims_read(p));
            t.write8(p, 0x10);
        }
        assert_eq!(t, before);
    }

    #[test]
    fn irq_line_ports_set_levels() {
        let mut t = PcTestdev::new();
        t.write8(0x2005, 1);
        t.write8(0x200a, 0xff);
        assert_eq!(t.irq_levels(), (1 << 5) | (1 << 10));
        t.write8(0x2005, 0);
        assert_eq!(t.irq_levels(), 1 << 10);
        // Lines 16..23 are in QEMU's region but not on the ISA bus.
        t.write8(0x2010, 1);
        assert_eq!(t.irq_levels(), 1 << 10);
        assert!(!PcTestdev::claims_write(0x2018));
    }

    #[test]
    fn iomem_reads_back_what_was_written() {
        let mut t = PcTestdev::new();
        t.mmio_write(TESTDEV_IOMEM + 0x10, 4, 0xdead_beef);
        assert_eq!(t.mmio_read(TESTDEV_IOMEM + 0x10, 4), 0xdead_beef);
        assert_eq!(t.mmio_read(TESTDEV_IOMEM + 0x11, 2), 0xadbe);
        t.mmio_write(TESTDEV_IOMEM + 0x100, 8, 0x0102_0304_0506_0708);
        assert_eq!(t.mmio_read(TESTDEV_IOMEM + 0x100, 8), 0x0102_0304_0506_0708);
        let last = TESTDEV_IOMEM + TESTDEV_IOMEM_LEN - 1;
        t.mmio_write(last, 1, 0x42);
        assert_eq!(t.mmio_read(last, 1), 0x42);
        // An access running off the end keeps the bytes inside the window only.
        t.mmio_write(last - 1, 4, 0xffff_ffff);
        assert_eq!(t.mmio_read(last - 1, 4), 0xffff);
        assert!(PcTestdev::claims_mmio(last) && !PcTestdev::claims_mmio(last + 1));
    }
}
