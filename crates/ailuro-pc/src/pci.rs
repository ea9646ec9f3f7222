//! PCI host bridge with configuration mechanism #1 (0xcf8 address, 0xcfc-0xcff data) and two
//! functions on bus 0: the i440FX host bridge (8086:1237) at 00:00.0 and the PIIX3 PCI-to-ISA
//! bridge (8086:7000) at 00:01.0, with the identifiers QEMU's `pc` machine gives them. Functions
//! that do not exist read as all ones. Port 0xcf9 (a byte inside the address register's range) is
//! the PIIX3 reset control register.

use serde::{Deserialize, Serialize};

/// One PCI function's 256-byte configuration space and which of its bits software may write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Function {
    /// Bus/device/function number in `0xcf8` layout (bits 23..8).
    bdf: u32,
    config: Vec<u8>,
    wmask: Vec<u8>,
}

impl Function {
    fn new(bdf: u32, vendor: u16, device: u16, class: u32, rev: u8, header: u8) -> Function {
        let mut c = vec![0u8; 256];
        let mut w = vec![0u8; 256];
        c[0..2].copy_from_slice(&vendor.to_le_bytes());
        c[2..4].copy_from_slice(&device.to_le_bytes());
        // Command: I/O and memory space and bus mastering are enabled by firmware on these.
        c[4] = 0x07;
        // Status: medium DEVSEL timing, fast back-to-back capable.
        c[6] = 0x80;
        c[7] = 0x02;
        c[8] = rev;
        c[9] = class as u8;
        c[10] = (class >> 8) as u8;
        c[11] = (class >> 16) as u8;
        c[0x0e] = header;
        // QEMU's subsystem id.
        c[0x2c..0x2e].copy_from_slice(&0x1af4u16.to_le_bytes());
        c[0x2e..0x30].copy_from_slice(&0x1100u16.to_le_bytes());
        w[4] = 0xff;
        w[5] = 0x07;
        w[0x0c] = 0xff; // cache line size
        w[0x0d] = 0xff; // latency timer
        w[0x3c] = 0xff; // interrupt line
        Function { bdf, config: c, wmask: w }
    }
}

/// The host bridge and its configuration space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciHost {
    /// CONFIG_ADDRESS (0xcf8).
    address: u32,
    /// PIIX3 reset control register (0xcf9) bits other than the reset trigger.
    rcr: u8,
    functions: Vec<Function>,
}

impl Default for PciHost {
    fn default() -> Self {
        Self::new()
    }
}

impl PciHost {
    /// Bus 0 with the i440FX and PIIX3.
    pub fn new() -> PciHost {
        let mut host = Function::new(0, 0x8086, 0x1237, 0x06_00_00, 0x02, 0x00);
        // PAM0-6 (0x59-0x5f) and SMRAM (0x72) are writable chipset registers.
        for i in 0x59..=0x5f {
            host.wmask[i] = 0xff;
        }
        host.wmask[0x72] = 0x7f;
        host.config[0x72] = 0x02;
        let mut isa = Function::new(1 << 11, 0x8086, 0x7000, 0x06_01_00, 0x00, 0x80);
        // PIRQ[A-D] route control: disabled (bit 7) until firmware routes them; writable.
        for i in 0x60..=0x63 {
            isa.config[i] = 0x80;
            isa.wmask[i] = 0x8f;
        }
        // Top of memory, misc status, APIC base and deterministic latency registers.
        for i in [0x4c, 0x4e, 0x4f, 0x69, 0x6a, 0x70, 0x76, 0x77, 0x78, 0x79, 0x80, 0x82, 0xa0, 0xa2] {
            isa.wmask[i] = 0xff;
        }
        isa.config[0x4c] = 0x4d;
        isa.config[0x4e] = 0x03;
        isa.config[0x69] = 0x02;
        isa.config[0x70] = 0x80;
        isa.config[0x76] = 0x0c;
        isa.config[0x77] = 0x0c;
        isa.config[0x78] = 0x02;
        PciHost { address: 0, rcr: 0, functions: vec![host, isa] }
    }

    /// Check invariants after deserialisation.
    pub(crate) fn valid(&self) -> bool {
        self.functions.iter().all(|f| f.config.len() == 256 && f.wmask.len() == 256)
    }

    /// The function CONFIG_ADDRESS selects and the register offset, if enabled and present.
    fn selected(&self) -> Option<(usize, usize)> {
        if self.address & 0x8000_0000 == 0 {
            return None;
        }
        let bdf = self.address & 0x00ff_ff00;
        let idx = self.functions.iter().position(|f| f.bdf == bdf)?;
        Some((idx, (self.address & 0xfc) as usize))
    }

    /// Port read. Returns `None` for accesses this device does not decode.
    pub fn io_read(&mut self, port: u16, size: u8) -> Option<u32> {
        match (port, size) {
            (0xcf8, 4) => Some(self.address),
            (0xcf9, 1) => Some(self.rcr as u32),
            (0xcfc..=0xcff, _) => {
                let off = (port - 0xcfc) as usize;
                let Some((f, reg)) = self.selected() else { return Some(u32::MAX) };
                let cfg = &self.functions[f].config;
                let mut v = 0u32;
                for i in 0..size as usize {
                    v |= (*cfg.get(reg + off + i).unwrap_or(&0xff) as u32) << (8 * i);
                }
                Some(v)
            }
            _ => None,
        }
    }

    /// Port write. Returns whether the PIIX3 reset control register asked for a reset, or `None`
    /// if the access was not decoded.
    pub fn io_write(&mut self, port: u16, size: u8, val: u32) -> Option<bool> {
        match (port, size) {
            (0xcf8, 4) => {
                // Kept as written (it reads back unchanged); decoding ignores bits 30..24 and 1..0.
                self.address = val;
                Some(false)
            }
            (0xcf9, 1) => {
                // Bit 2 starts a reset (bit 1 selects hard vs soft; both reset the machine here).
                if val & 0x04 != 0 {
                    return Some(true);
                }
                self.rcr = (val & 0x02) as u8;
                Some(false)
            }
            (0xcfc..=0xcff, _) => {
                let off = (port - 0xcfc) as usize;
                if let Some((f, reg)) = self.selected() {
                    let func = &mut self.functions[f];
                    for i in 0..size as usize {
                        let a = reg + off + i;
                        if a < 256 {
                            let m = func.wmask[a];
                            let b = (val >> (8 * i)) as u8;
                            func.config[a] = (func.config[a] & !m) | (b & m);
                        }
                    }
                }
                Some(false)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_read(p: &mut PciHost, dev: u32, func: u32, reg: u32) -> u32 {
        p.io_write(0xcf8, 4, 0x8000_0000 | dev << 11 | func << 8 | reg);
        p.io_read(0xcfc, 4).unwrap()
    }

    #[test]
    fn linux_type1_check() {
        let mut p = PciHost::new();
        p.io_write(0xcfb, 1, 0x01);
        let tmp = p.io_read(0xcf8, 4).unwrap();
        p.io_write(0xcf8, 4, 0x8000_0000);
        assert_eq!(p.io_read(0xcf8, 4), Some(0x8000_0000));
        p.io_write(0xcf8, 4, tmp);
        // Non-dword accesses to 0xcf8 are not decoded.
        assert_eq!(p.io_read(0xcf8, 2), None);
    }

    #[test]
    fn ids_and_absent_functions() {
        let mut p = PciHost::new();
        assert_eq!(cfg_read(&mut p, 0, 0, 0), 0x1237_8086);
        assert_eq!(cfg_read(&mut p, 0, 0, 8) >> 8, 0x06_00_00);
        assert_eq!(cfg_read(&mut p, 1, 0, 0), 0x7000_8086);
        assert_eq!(cfg_read(&mut p, 1, 0, 8) >> 8, 0x06_01_00);
        assert_eq!((cfg_read(&mut p, 1, 0, 0x0c) >> 16) & 0xff, 0x80);
        assert_eq!(cfg_read(&mut p, 1, 1, 0), u32::MAX);
        assert_eq!(cfg_read(&mut p, 5, 0, 0), u32::MAX);
        p.io_write(0xcf8, 4, 0x0000_0000);
        assert_eq!(p.io_read(0xcfc, 4), Some(u32::MAX));
    }

    #[test]
    fn byte_and_word_accesses_and_write_mask() {
        let mut p = PciHost::new();
        p.io_write(0xcf8, 4, 0x8000_0800 | 0x60);
        assert_eq!(p.io_read(0xcfd, 1), Some(0x80));
        p.io_write(0xcfd, 1, 0x0b);
        assert_eq!(p.io_read(0xcfc, 4), Some(0x8080_0b80));
        // Vendor ID is read-only.
        p.io_write(0xcf8, 4, 0x8000_0000);
        p.io_write(0xcfc, 2, 0x1234);
        assert_eq!(p.io_read(0xcfc, 2), Some(0x8086));
        assert_eq!(p.io_read(0xcfe, 2), Some(0x1237));
        // Interrupt line is writable.
        p.io_write(0xcf8, 4, 0x8000_003c);
        p.io_write(0xcfc, 1, 0x0b);
        assert_eq!(p.io_read(0xcfc, 1), Some(0x0b));
    }

    #[test]
    fn reset_control() {
        let mut p = PciHost::new();
        assert_eq!(p.io_write(0xcf9, 1, 0x02), Some(false));
        assert_eq!(p.io_read(0xcf9, 1), Some(0x02));
        assert_eq!(p.io_write(0xcf9, 1, 0x06), Some(true));
        assert_eq!(p.io_write(0xcf9, 1, 0x0e), Some(true));
    }
}
