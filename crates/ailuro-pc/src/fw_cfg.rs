//! QEMU's firmware configuration device (fw_cfg), traditional port-I/O interface only.
//!
//! QEMU's `pc` machine always has it (selector at port 0x510, data at 0x511) and test kernels such
//! as kvm-unit-tests read it unasked (CPU count, RAM size), so the board has it by default. Only
//! the items a guest can use without firmware are present; there is no DMA interface, so
//! `FW_CFG_ID` says "traditional interface only" and port 0x514 stays unmapped.
//!
//! Semantics follow QEMU's `docs/specs/fw_cfg.rst`: a 16-bit write to the selector picks an item
//! and resets the data offset to 0; each byte read from the data port returns the next byte of the
//! item, and 0 once past its end or for a selector naming no item. Numbers are little-endian
//! except in the file directory, which is big-endian. Writes to the data port are ignored (QEMU
//! has had no writable items on this interface since 2.4).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Selector register port (16-bit writes).
pub const FW_CFG_PORT_SEL: u16 = 0x510;
/// Data register port (8-bit reads).
pub const FW_CFG_PORT_DATA: u16 = 0x511;

/// "QEMU".
pub const FW_CFG_SIGNATURE: u16 = 0x0000;
/// Interface feature bitmap (u32 LE): bit 0 traditional interface, bit 1 DMA.
pub const FW_CFG_ID: u16 = 0x0001;
/// RAM size in bytes (u64 LE).
pub const FW_CFG_RAM_SIZE: u16 = 0x0003;
/// Number of boot CPUs (u16 LE).
pub const FW_CFG_NB_CPUS: u16 = 0x0005;
/// Maximum number of CPUs (u16 LE).
pub const FW_CFG_MAX_CPUS: u16 = 0x000f;
/// Length of the command line including its NUL (u32 LE).
pub const FW_CFG_CMDLINE_SIZE: u16 = 0x0014;
/// The command line, NUL-terminated.
pub const FW_CFG_CMDLINE_DATA: u16 = 0x0015;
/// File directory: u32 BE count, then 64-byte entries.
pub const FW_CFG_FILE_DIR: u16 = 0x0019;

/// Feature bit of the traditional (selector/data port) interface.
const FEATURE_TRADITIONAL: u32 = 1;

/// The fw_cfg device: its items (fixed at power-on) and the guest's read position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwCfg {
    /// Item contents by selector. Part of the saved state so a restored board shows the guest
    /// the same items without knowing the configuration it was built from.
    items: BTreeMap<u16, Vec<u8>>,
    /// Current selector as written by the guest (0 after reset: the signature).
    selector: u16,
    /// Next byte of the selected item to read.
    offset: u32,
}

impl FwCfg {
    /// The device of a one-CPU PC with `ram_size` bytes of RAM and command line `cmdline`.
    pub fn new(ram_size: u64, cmdline: &str) -> FwCfg {
        let mut items = BTreeMap::new();
        items.insert(FW_CFG_SIGNATURE, b"QEMU".to_vec());
        items.insert(FW_CFG_ID, FEATURE_TRADITIONAL.to_le_bytes().to_vec());
        items.insert(FW_CFG_RAM_SIZE, ram_size.to_le_bytes().to_vec());
        items.insert(FW_CFG_NB_CPUS, 1u16.to_le_bytes().to_vec());
        items.insert(FW_CFG_MAX_CPUS, 1u16.to_le_bytes().to_vec());
        let mut data = cmdline.as_bytes().to_vec();
        data.push(0);
        items.insert(FW_CFG_CMDLINE_SIZE, (data.len() as u32).to_le_bytes().to_vec());
        items.insert(FW_CFG_CMDLINE_DATA, data);
        // No files: the directory is just its big-endian count.
        items.insert(FW_CFG_FILE_DIR, 0u32.to_be_bytes().to_vec());
        FwCfg { items, selector: FW_CFG_SIGNATURE, offset: 0 }
    }

    /// A 16-bit write to the selector register: select an item and rewind to its start. Bit 14
    /// (write enable) and bit 15 (architecture-specific items) are part of the key, as in QEMU;
    /// no such item exists here, so those keys read as 0.
    pub fn select(&mut self, key: u16) {
        self.selector = key;
        self.offset = 0;
    }

    /// A byte read of the data register.
    pub fn read_data(&mut self) -> u8 {
        let b = self.items.get(&self.selector).and_then(|d| d.get(self.offset as usize)).copied();
        match b {
            Some(b) => {
                self.offset += 1;
                b
            }
            // Past the end (or no item): 0, and the offset stays put as in QEMU.
            None => 0,
        }
    }

    /// Restored state is sane: the offset never goes beyond the selected item's length.
    pub fn valid(&self) -> bool {
        let len = self.items.get(&self.selector).map_or(0, |d| d.len());
        self.offset as usize <= len && self.items.values().all(|d| d.len() <= u32::MAX as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_item(f: &mut FwCfg, key: u16, n: usize) -> Vec<u8> {
        f.select(key);
        (0..n).map(|_| f.read_data()).collect()
    }

    #[test]
    fn signature_and_id() {
        let mut f = FwCfg::new(128 << 20, "");
        assert_eq!(read_item(&mut f, FW_CFG_SIGNATURE, 4), b"QEMU");
        let id = u32::from_le_bytes(read_item(&mut f, FW_CFG_ID, 4).try_into().unwrap());
        assert_eq!(id & 1, 1, "traditional interface");
        assert_eq!(id & 2, 0, "no DMA interface");
    }

    #[test]
    fn reset_state_selects_the_signature() {
        let mut f = FwCfg::new(1 << 20, "");
        assert_eq!(f.read_data(), b'Q');
    }

    #[test]
    fn numbers_are_little_endian() {
        let mut f = FwCfg::new(0x1_2345_6000, "");
        assert_eq!(u64::from_le_bytes(read_item(&mut f, FW_CFG_RAM_SIZE, 8).try_into().unwrap()), 0x1_2345_6000);
        assert_eq!(read_item(&mut f, FW_CFG_NB_CPUS, 2), [1, 0]);
        assert_eq!(read_item(&mut f, FW_CFG_MAX_CPUS, 2), [1, 0]);
    }

    #[test]
    fn command_line_with_its_size() {
        let mut f = FwCfg::new(1 << 20, "console=ttyS0 x");
        assert_eq!(read_item(&mut f, FW_CFG_CMDLINE_SIZE, 4), 16u32.to_le_bytes());
        assert_eq!(read_item(&mut f, FW_CFG_CMDLINE_DATA, 16), b"console=ttyS0 x\0");
        // An empty command line is a lone NUL.
        let mut f = FwCfg::new(1 << 20, "");
        assert_eq!(read_item(&mut f, FW_CFG_CMDLINE_SIZE, 4), 1u32.to_le_bytes());
        assert_eq!(read_item(&mut f, FW_CFG_CMDLINE_DATA, 2), [0, 0]);
    }

    #[test]
    fn empty_file_directory_is_a_big_endian_zero() {
        let mut f = FwCfg::new(1 << 20, "");
        assert_eq!(read_item(&mut f, FW_CFG_FILE_DIR, 6), [0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn past_the_end_and_unknown_keys_read_zero() {
        let mut f = FwCfg::new(1 << 20, "");
        assert_eq!(read_item(&mut f, FW_CFG_SIGNATURE, 7), [b'Q', b'E', b'M', b'U', 0, 0, 0]);
        assert_eq!(read_item(&mut f, 0x1234, 3), [0, 0, 0]);
        assert_eq!(read_item(&mut f, 0x4000, 2), [0, 0]);
        assert!(f.valid());
    }

    #[test]
    fn select_rewinds() {
        let mut f = FwCfg::new(1 << 20, "");
        assert_eq!(read_item(&mut f, FW_CFG_SIGNATURE, 2), b"QE");
        assert_eq!(read_item(&mut f, FW_CFG_SIGNATURE, 2), b"QE");
    }
}
