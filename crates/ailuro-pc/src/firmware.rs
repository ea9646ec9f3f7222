//! The system firmware ROM (`-bios FILE`), mapped as QEMU's `pc` machine maps it
//! (`x86_bios_rom_init` in QEMU 7.2): the whole image read-only at the top of the 4 GiB space,
//! ending at `0xffff_ffff`, and its last 128 KiB (the whole image if smaller) aliased below 1 MiB,
//! ending at `0xf_ffff` (QEMU's "isa-bios" region).
//!
//! The high mapping belongs to the board: loads there are MMIO reads answered from the image,
//! stores are ignored. The low alias lies inside guest RAM (which starts at 0 and is always at
//! least 2 MiB), so the machine copies it into RAM at power-on and reset; see
//! [`FirmwareImage::isa_alias`] for what that means for stores.

use serde::{Deserialize, Serialize};

/// Firmware images are a whole number of these (QEMU: "bios size must be a multiple of 64 KiB").
pub const FIRMWARE_GRANULE: usize = 64 << 10;
/// The largest image accepted. QEMU's own limit comes from the address space: a larger image
/// would cover the IOAPIC (0xfec0_0000) and local APIC (0xfee0_0000) windows below 4 GiB. 16 MiB
/// ends well above both (0xff00_0000 .. 0xffff_ffff).
pub const FIRMWARE_MAX: usize = 16 << 20;
/// Size of the ISA alias below 1 MiB (QEMU: `MIN(bios_size, 128 * KiB)`).
pub const ISA_BIOS_MAX: usize = 128 << 10;
/// End (exclusive) of the ISA alias: the 1 MiB line.
pub const ISA_BIOS_END: u64 = 0x10_0000;
/// End (exclusive) of the high mapping: 4 GiB.
pub const HIGH_END: u64 = 1 << 32;

/// Why a firmware image was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirmwareError {
    /// The file is empty.
    #[error("the firmware image is empty (a PC BIOS is a whole number of 64 KiB blocks)")]
    Empty,
    /// The size is not a multiple of 64 KiB.
    #[error(
        "the firmware image is {size} bytes, not a multiple of 64 KiB (65536 bytes); QEMU's pc \
         machine refuses such images too (a PC BIOS is usually 64, 128 or 256 KiB)"
    )]
    NotGranular {
        /// Size of the image in bytes.
        size: usize,
    },
    /// The image is larger than [`FIRMWARE_MAX`].
    #[error(
        "the firmware image is {size} bytes; at most 16 MiB fits below 4 GiB without covering the \
         APIC windows"
    )]
    TooLarge {
        /// Size of the image in bytes.
        size: usize,
    },
}

/// A validated firmware image.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareImage {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for FirmwareImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Megabytes of ROM are no use in debug output.
        write!(f, "FirmwareImage({} KiB)", self.bytes.len() >> 10)
    }
}

impl FirmwareImage {
    /// Check `bytes` against the pc machine's rules (non-empty, a multiple of 64 KiB, at most
    /// 16 MiB).
    pub fn new(bytes: Vec<u8>) -> Result<FirmwareImage, FirmwareError> {
        let image = FirmwareImage { bytes };
        image.check()?;
        Ok(image)
    }

    fn check(&self) -> Result<(), FirmwareError> {
        let size = self.bytes.len();
        if size == 0 {
            Err(FirmwareError::Empty)
        } else if size > FIRMWARE_MAX {
            Err(FirmwareError::TooLarge { size })
        } else if !size.is_multiple_of(FIRMWARE_GRANULE) {
            Err(FirmwareError::NotGranular { size })
        } else {
            Ok(())
        }
    }

    /// Whether a deserialised image still follows the rules.
    pub(crate) fn valid(&self) -> bool {
        self.check().is_ok()
    }

    /// The whole image.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Guest-physical address of the high mapping (`4 GiB - size`).
    pub fn high_base(&self) -> u64 {
        HIGH_END - self.bytes.len() as u64
    }

    /// Whether `[addr, addr+size)` lies inside the high mapping.
    pub fn claims(&self, addr: u64, size: u8) -> bool {
        addr >= self.high_base() && addr.saturating_add(u64::from(size.max(1))) <= HIGH_END
    }

    /// A little-endian load of `size` bytes from the high mapping (the caller checked
    /// [`FirmwareImage::claims`]).
    pub fn read(&self, addr: u64, size: u8) -> u64 {
        let off = (addr - self.high_base()) as usize;
        self.bytes[off..off + usize::from(size.clamp(1, 8))].iter().rev().fold(0u64, |v, &b| (v << 8) | u64::from(b))
    }

    /// The ISA alias: its guest-physical start (`1 MiB - len`) and bytes (the image's last
    /// 128 KiB, or all of it).
    ///
    /// On QEMU 7.2's `pc` machine the i440FX PAM registers are 0 at reset, so this range reads
    /// the read-only ROM and stores to it are dropped until the firmware enables shadow RAM
    /// (SeaBIOS does so at once: `make_bios_writable`). Here the range is guest RAM preloaded
    /// with the alias (the CPU reaches RAM directly, so no range of it can be read-only): reads
    /// give the same bytes, but stores land in RAM from power-on. The PAM registers keep QEMU's
    /// reset value 0 (not PAM emulation: they are stored only), so SeaBIOS does what it does on
    /// QEMU: it runs its shadowing routine from the high mapping, sets the PAM registers and
    /// copies its code from the high mapping down to 0xc0000-0xfffff, which also fills in the
    /// part of a 256 KiB image below 0xe0000 that the alias does not cover.
    pub fn isa_alias(&self) -> (u64, &[u8]) {
        let len = self.bytes.len().min(ISA_BIOS_MAX);
        (ISA_BIOS_END - len as u64, &self.bytes[self.bytes.len() - len..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_pc_machine_rules() {
        assert_eq!(FirmwareImage::new(vec![]), Err(FirmwareError::Empty));
        assert_eq!(FirmwareImage::new(vec![0; 1000]), Err(FirmwareError::NotGranular { size: 1000 }));
        assert_eq!(
            FirmwareImage::new(vec![0; FIRMWARE_MAX + FIRMWARE_GRANULE]),
            Err(FirmwareError::TooLarge { size: FIRMWARE_MAX + FIRMWARE_GRANULE })
        );
        assert!(FirmwareImage::new(vec![0; 64 << 10]).is_ok());
        assert!(FirmwareImage::new(vec![0; FIRMWARE_MAX]).is_ok());
    }

    #[test]
    fn high_mapping_and_isa_alias() {
        let mut bytes = vec![0u8; 256 << 10];
        let n = bytes.len();
        bytes[n - 16..n - 11].copy_from_slice(&[0xea, 0x5b, 0xe0, 0x00, 0xf0]);
        bytes[0] = 0x11;
        let img = FirmwareImage::new(bytes).unwrap();
        assert_eq!(img.high_base(), 0xfffc_0000);
        assert!(img.claims(0xffff_fff0, 8) && !img.claims(0xffff_fffc, 8) && !img.claims(0xfffb_ffff, 1));
        assert_eq!(img.read(0xffff_fff0, 4), 0x00e0_5bea);
        assert_eq!(img.read(0xfffc_0000, 1), 0x11);
        let (base, alias) = img.isa_alias();
        assert_eq!((base, alias.len()), (0xe_0000, 128 << 10));
        assert_eq!(&alias[alias.len() - 16..alias.len() - 11], &[0xea, 0x5b, 0xe0, 0x00, 0xf0]);
        let small = FirmwareImage::new(vec![0; 64 << 10]).unwrap();
        assert_eq!(small.isa_alias().0, 0xf_0000);
    }
}
