//! Minimal ACPI tables for a PC without firmware, modelled on what QEMU's `pc` (PIIX4) machine gives
//! a guest: enough for Linux to find the interrupt controllers, the PM timer, the SCI and the S5
//! (soft-off) sleep state, so that `poweroff -f` works.
//!
//! # Tables and where [`build_acpi_tables`] puts them
//!
//! Everything lies in `0xe0000..0x100000` (the loader's e820 map marks it reserved), the whole
//! area is cleared first, and every table is 16-byte aligned:
//!
//! | address | table |
//! |---|---|
//! | [`ACPI_RSDP_ADDR`] `0xe0000` | RSDP, ACPI 1.0 (revision 0, 20 bytes), found by Linux's scan of `0xe0000..0xfffff` |
//! | `0xe0040` | FACS (64 bytes, 64-byte aligned; waking vector 0, global lock free) |
//! | `0xe0080` | DSDT (revision 1) whose AML is only `Name (\_S5, Package (4) { 0, 0, 0, 0 })` |
//! | then | FADT (revision 3, ACPI 2.0 layout, 244 bytes) |
//! | then | MADT ("APIC", revision 1) |
//! | then | HPET (only if [`AcpiConfig::hpet`] is set) |
//! | then | RSDT listing FADT, MADT (and HPET) |
//!
//! OEM ID "AILURO", OEM table ID "AILUROPC", creator "ALRO". All checksums are correct.
//!
//! # What the board must implement for these tables to be true
//!
//! With `pm_base` = [`AcpiConfig::pm_base`] (default 0x600, as QEMU's PIIX4 PM):
//!
//! * **PM1a event block** at `pm_base` (4 bytes): PM1_STS (16 bits) at `pm_base`, write-1-to-clear:
//!   bit 0 TMR_STS (set when bit 23 of the PM timer changes), bit 8 PWRBTN_STS, bit 15 WAK_STS;
//!   PM1_EN (16 bits) at `pm_base + 2`: bit 0 TMR_EN, bit 8 PWRBTN_EN. The SCI is asserted while
//!   `PM1_STS & PM1_EN & 0x0121 != 0`. The FADT declares a fixed-feature power button (flag
//!   PWR_BUTTON clear), which the board may never press; the sleep button is absent (SLP_BUTTON set).
//! * **PM1a control block** at `pm_base + 4` (2 bytes): bit 0 SCI_EN reads as 1 (ACPI mode is
//!   always on: the FADT has no SMI_CMD, so the OS never tries to switch modes), SLP_TYP in bits
//!   10–12, SLP_EN bit 13 (write-only, reads 0). A write with SLP_EN = 1 and SLP_TYP =
//!   [`ACPI_S5_SLP_TYP`] (0, QEMU's PIIX4 value) powers the machine off. Other SLP_TYP values may be
//!   ignored (no other sleep state is declared).
//! * **PM timer** at `pm_base + 8` (4 bytes, read-only): a free-running 24-bit counter at
//!   3.579545 MHz (bits 24–31 read 0; TMR_VAL_EXT is clear), derived from virtual time.
//! * **SCI on ISA IRQ 9**, level triggered, active high (MADT override IRQ9 → GSI 9, flags 0xd): the
//!   8259 ELCR should mark IRQ 9 level triggered and the IOAPIC pin 9 is level/active-high.
//! * **Reset register** (if [`AcpiConfig::reset_reg`] is set; default port 0xcf9, value 6, as the
//!   PIIX "reset control register"): a byte write of that value to that port resets the machine.
//! * **Interrupt controllers**: a local APIC (ID 0, version ≥ 0x14 i.e. xAPIC, so that 32-bit Linux
//!   accepts IOAPIC ID 0) at [`AcpiConfig::lapic_addr`] with LINT1 wired to NMI; one IOAPIC with ID
//!   [`AcpiConfig::ioapic_id`] (its ID register must read back this ID) at
//!   [`AcpiConfig::ioapic_addr`], 24 pins, GSI base 0, ISA IRQ n on pin n except the PIT (IRQ 0)
//!   on pin 2; and the 8259 pair (MADT flag PCAT_COMPAT).
//! * The FADT's IAPC_BOOT_ARCH says: legacy ISA devices present, an 8042 keyboard controller
//!   present, **no VGA**; the CENTURY byte of the RTC CMOS is register 0x32.
//! * **HPET** (only if [`AcpiConfig::hpet`] is `Some(addr)`): an HPET at `addr` whose capabilities
//!   register's low 32 bits are [`ACPI_HPET_BLOCK_ID`] (vendor 0x8086, legacy-replacement capable,
//!   64-bit counter, 3 comparators, revision 1).
//!
//! Processor objects, `_PRT` and PCI root bridges are not described; Linux then probes PCI bus 0
//! through the legacy configuration mechanism and uses the interrupt line registers.

use ailuro_bus::{GuestRam, RamError};

/// Start of the area the tables are placed in (Linux scans it for the RSDP).
pub const ACPI_AREA_START: u64 = 0xe_0000;
/// End (exclusive) of that area.
pub const ACPI_AREA_END: u64 = 0x10_0000;
/// Where [`build_acpi_tables`] writes the RSDP.
pub const ACPI_RSDP_ADDR: u64 = ACPI_AREA_START;
/// SLP_TYP value of the S5 (soft-off) state in the DSDT's `\_S5` package (QEMU PIIX4's value).
pub const ACPI_S5_SLP_TYP: u8 = 0;
/// PM timer frequency in Hz.
pub const ACPI_PM_TIMER_HZ: u32 = 3_579_545;
/// SCI interrupt (ISA IRQ and GSI).
pub const ACPI_SCI_IRQ: u8 = 9;
/// Event Timer Block ID written into the HPET table (QEMU's HPET capabilities, low 32 bits).
pub const ACPI_HPET_BLOCK_ID: u32 = 0x8086_a201;
/// The OEM ID in every table header and the RSDP.
pub const ACPI_OEM_ID: &[u8; 6] = b"AILURO";

const OEM_TABLE_ID: &[u8; 8] = b"AILUROPC";
const CREATOR_ID: &[u8; 4] = b"ALRO";
const HEADER_LEN: usize = 36;
const FADT_LEN: usize = 244;
const FACS_LEN: usize = 64;

// FADT flags.
const FADT_WBINVD: u32 = 1 << 0;
const FADT_PROC_C1: u32 = 1 << 2;
const FADT_SLP_BUTTON: u32 = 1 << 5;
const FADT_RESET_REG_SUP: u32 = 1 << 10;
// IAPC_BOOT_ARCH flags.
const BOOT_ARCH_LEGACY_DEVICES: u16 = 1 << 0;
const BOOT_ARCH_8042: u16 = 1 << 1;
const BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
// Generic address structure space IDs.
const GAS_SYSTEM_MEMORY: u8 = 0;
const GAS_SYSTEM_IO: u8 = 1;

/// Configuration of the tables: where the board's devices are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Base port of the PM register block: PM1a_EVT at `pm_base` (4 bytes), PM1a_CNT at `pm_base+4`
    /// (2 bytes), PM_TMR at `pm_base+8` (4 bytes). Default 0x600.
    pub pm_base: u16,
    /// IOAPIC MMIO base. Default 0xfec00000.
    pub ioapic_addr: u32,
    /// IOAPIC ID. Default 0 (as QEMU).
    pub ioapic_id: u8,
    /// Local APIC MMIO base. Default 0xfee00000.
    pub lapic_addr: u32,
    /// HPET MMIO base, if the board has one (then an HPET table is added). Default `None`.
    pub hpet: Option<u64>,
    /// FADT reset register: an I/O port and the byte written to it to reset. Default
    /// `Some((0xcf9, 6))`; `None` leaves RESET_REG_SUP clear.
    pub reset_reg: Option<(u16, u8)>,
}

impl Default for AcpiConfig {
    fn default() -> Self {
        Self {
            pm_base: 0x600,
            ioapic_addr: 0xfec0_0000,
            ioapic_id: 0,
            lapic_addr: 0xfee0_0000,
            hpet: None,
            reset_reg: Some((0xcf9, 6)),
        }
    }
}

/// Why the ACPI tables could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcpiError {
    /// Guest RAM does not cover the table area 0xe0000..0x100000.
    #[error("ACPI tables need RAM at {start:#x}..{end:#x}, but RAM is {ram_base:#x}..{ram_end:#x}")]
    NoRam {
        /// Start of the table area.
        start: u64,
        /// End of the table area.
        end: u64,
        /// RAM base.
        ram_base: u64,
        /// RAM end.
        ram_end: u64,
    },
    /// An [`AcpiConfig`] value is unusable.
    #[error("invalid ACPI configuration: {0}")]
    BadConfig(String),
    /// A RAM access failed (internal consistency error).
    #[error("guest RAM access failed: {0}")]
    Ram(#[from] RamError),
}

/// Set the checksum byte at `off` so that all bytes of `table` sum to 0 (mod 256).
fn fix_checksum(table: &mut [u8], off: usize) {
    table[off] = 0;
    let sum = table.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    table[off] = 0u8.wrapping_sub(sum);
}

/// A table with a standard 36-byte header (length and checksum filled in by [`Table::finish`]).
struct Table(Vec<u8>);

impl Table {
    fn new(signature: &[u8; 4], revision: u8) -> Self {
        let mut t = vec![0u8; HEADER_LEN];
        t[0..4].copy_from_slice(signature);
        t[8] = revision;
        t[10..16].copy_from_slice(ACPI_OEM_ID);
        t[16..24].copy_from_slice(OEM_TABLE_ID);
        t[24..28].copy_from_slice(&1u32.to_le_bytes());
        t[28..32].copy_from_slice(CREATOR_ID);
        t[32..36].copy_from_slice(&1u32.to_le_bytes());
        Self(t)
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// Generic address structure.
    fn gas(&mut self, space: u8, bit_width: u8, access_size: u8, addr: u64) -> &mut Self {
        self.u8(space).u8(bit_width).u8(0).u8(access_size).u64(addr)
    }
    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut self.0, 9);
        self.0
    }
}

/// The DSDT's AML: `Name (\_S5, Package (4) { S5, 0, 0, 0 })`.
fn dsdt_aml() -> Vec<u8> {
    const NAME_OP: u8 = 0x08;
    const ROOT_CHAR: u8 = b'\\';
    const PACKAGE_OP: u8 = 0x12;
    const ZERO_OP: u8 = 0x00;
    const BYTE_PREFIX: u8 = 0x0a;
    let slp_typ: &[u8] = if ACPI_S5_SLP_TYP == 0 { &[ZERO_OP] } else { &[BYTE_PREFIX, ACPI_S5_SLP_TYP] };
    // Package elements: SLP_TYP for PM1a, SLP_TYP for PM1b (unused), two reserved.
    let mut elements = slp_typ.to_vec();
    elements.extend_from_slice(&[ZERO_OP, ZERO_OP, ZERO_OP]);
    // One-byte PkgLength: counts itself, NumElements and the elements (< 64 bytes).
    let pkg_len = 1 + 1 + elements.len();
    let mut aml = vec![NAME_OP, ROOT_CHAR, b'_', b'S', b'5', b'_', PACKAGE_OP, pkg_len as u8, 4];
    aml.extend_from_slice(&elements);
    aml
}

fn build_fadt(cfg: &AcpiConfig, facs: u32, dsdt: u32) -> Vec<u8> {
    let pm = u32::from(cfg.pm_base);
    let mut flags = FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON;
    if cfg.reset_reg.is_some() {
        flags |= FADT_RESET_REG_SUP;
    }
    let mut t = Table::new(b"FACP", 3);
    t.u32(facs) // FIRMWARE_CTRL
        .u32(dsdt) // DSDT
        .u8(1) // INT_MODEL (ACPI 1.0 field): multiple APIC
        .u8(0) // Preferred_PM_Profile: unspecified
        .u16(u16::from(ACPI_SCI_IRQ)) // SCI_INT
        .u32(0) // SMI_CMD: none, ACPI mode is always on
        .u8(0) // ACPI_ENABLE
        .u8(0) // ACPI_DISABLE
        .u8(0) // S4BIOS_REQ
        .u8(0) // PSTATE_CNT
        .u32(pm) // PM1a_EVT_BLK
        .u32(0) // PM1b_EVT_BLK
        .u32(pm + 4) // PM1a_CNT_BLK
        .u32(0) // PM1b_CNT_BLK
        .u32(0) // PM2_CNT_BLK
        .u32(pm + 8) // PM_TMR_BLK
        .u32(0) // GPE0_BLK
        .u32(0) // GPE1_BLK
        .u8(4) // PM1_EVT_LEN
        .u8(2) // PM1_CNT_LEN
        .u8(0) // PM2_CNT_LEN
        .u8(4) // PM_TMR_LEN
        .u8(0) // GPE0_BLK_LEN
        .u8(0) // GPE1_BLK_LEN
        .u8(0) // GPE1_BASE
        .u8(0) // CST_CNT
        .u16(0x0fff) // P_LVL2_LAT: > 100, C2 not supported
        .u16(0x0fff) // P_LVL3_LAT: > 1000, C3 not supported
        .u16(0) // FLUSH_SIZE
        .u16(0) // FLUSH_STRIDE
        .u8(0) // DUTY_OFFSET
        .u8(0) // DUTY_WIDTH
        .u8(0) // DAY_ALRM
        .u8(0) // MON_ALRM
        .u8(0x32) // CENTURY
        .u16(BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_8042 | BOOT_ARCH_VGA_NOT_PRESENT) // IAPC_BOOT_ARCH
        .u8(0) // reserved
        .u32(flags);
    let (port, value) = cfg.reset_reg.unwrap_or((0, 0));
    if cfg.reset_reg.is_some() {
        t.gas(GAS_SYSTEM_IO, 8, 1, u64::from(port)); // RESET_REG
    } else {
        t.gas(0, 0, 0, 0);
    }
    t.u8(value) // RESET_VALUE
        .bytes(&[0; 3]) // reserved
        .u64(0) // X_FIRMWARE_CTRL: FIRMWARE_CTRL is used
        .u64(0); // X_DSDT: DSDT is used
                 // X_PM1a_EVT_BLK .. X_GPE1_BLK: zero, the OS uses the 32-bit block addresses and lengths.
    for _ in 0..8 {
        t.gas(0, 0, 0, 0);
    }
    let fadt = t.finish();
    debug_assert_eq!(fadt.len(), FADT_LEN);
    fadt
}

fn build_madt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut t = Table::new(b"APIC", 1);
    t.u32(cfg.lapic_addr).u32(1); // Local APIC address, flags: PCAT_COMPAT
    t.u8(0).u8(8).u8(0).u8(0).u32(1); // Processor Local APIC: UID 0, APIC ID 0, enabled
    t.u8(1).u8(12).u8(cfg.ioapic_id).u8(0).u32(cfg.ioapic_addr).u32(0); // IOAPIC, GSI base 0
    t.u8(2).u8(10).u8(0).u8(0).u32(2).u16(0); // override: ISA IRQ 0 -> GSI 2, bus-conforming
    t.u8(2).u8(10).u8(0).u8(ACPI_SCI_IRQ).u32(u32::from(ACPI_SCI_IRQ)).u16(0x000d); // SCI: level, active high
    t.u8(4).u8(6).u8(0xff).u16(0).u8(1); // Local APIC NMI: all processors, LINT1
    t.finish()
}

fn build_hpet(addr: u64) -> Vec<u8> {
    let mut t = Table::new(b"HPET", 1);
    t.u32(ACPI_HPET_BLOCK_ID).gas(GAS_SYSTEM_MEMORY, 0, 0, addr).u8(0).u16(0x0080).u8(0);
    t.finish()
}

fn build_facs() -> Vec<u8> {
    let mut f = vec![0u8; FACS_LEN];
    f[0..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&(FACS_LEN as u32).to_le_bytes());
    f[32] = 1; // version
    f
}

fn build_rsdp(rsdt: u32) -> Vec<u8> {
    let mut r = vec![0u8; 20];
    r[0..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(ACPI_OEM_ID);
    r[15] = 0; // revision 0: ACPI 1.0, RSDT only
    r[16..20].copy_from_slice(&rsdt.to_le_bytes());
    fix_checksum(&mut r, 8);
    r
}

/// Build the tables described in the [module documentation](self) in `0xe0000..0x100000` (cleared
/// first) and return the RSDP address. Never panics.
pub fn build_acpi_tables(ram: &mut GuestRam, cfg: &AcpiConfig) -> Result<u64, AcpiError> {
    if !ram.contains(ACPI_AREA_START, ACPI_AREA_END - ACPI_AREA_START) {
        return Err(AcpiError::NoRam {
            start: ACPI_AREA_START,
            end: ACPI_AREA_END,
            ram_base: ram.base(),
            ram_end: ram.end(),
        });
    }
    if cfg.pm_base == 0 || cfg.pm_base > 0xfff4 {
        return Err(AcpiError::BadConfig(format!("pm_base {:#x} must be in 1..=0xfff4", cfg.pm_base)));
    }
    if cfg.lapic_addr == 0 || cfg.ioapic_addr == 0 || cfg.hpet == Some(0) {
        return Err(AcpiError::BadConfig("LAPIC, IOAPIC and HPET addresses must be non-zero".into()));
    }

    let mut area = vec![0u8; (ACPI_AREA_END - ACPI_AREA_START) as usize];
    let mut cursor = ACPI_RSDP_ADDR + 0x40;
    let mut place = |area: &mut Vec<u8>, bytes: &[u8], align: u64| -> Result<u32, AcpiError> {
        let addr = cursor.div_ceil(align) * align;
        let end = addr + bytes.len() as u64;
        if end > ACPI_AREA_END {
            return Err(AcpiError::BadConfig("tables do not fit in 0xe0000..0x100000".into()));
        }
        let off = (addr - ACPI_AREA_START) as usize;
        area[off..off + bytes.len()].copy_from_slice(bytes);
        cursor = end;
        Ok(addr as u32)
    };

    let facs = place(&mut area, &build_facs(), 64)?;
    let mut dsdt = Table::new(b"DSDT", 1);
    dsdt.bytes(&dsdt_aml());
    let dsdt = place(&mut area, &dsdt.finish(), 16)?;
    let mut entries = vec![place(&mut area, &build_fadt(cfg, facs, dsdt), 16)?];
    entries.push(place(&mut area, &build_madt(cfg), 16)?);
    if let Some(hpet) = cfg.hpet {
        entries.push(place(&mut area, &build_hpet(hpet), 16)?);
    }
    let mut rsdt = Table::new(b"RSDT", 1);
    for e in &entries {
        rsdt.u32(*e);
    }
    let rsdt = place(&mut area, &rsdt.finish(), 16)?;
    let rsdp = build_rsdp(rsdt);
    let off = (ACPI_RSDP_ADDR - ACPI_AREA_START) as usize;
    area[off..off + rsdp.len()].copy_from_slice(&rsdp);

    ram.write(ACPI_AREA_START, &area)?;
    Ok(ACPI_RSDP_ADDR)
}

#[cfg(test)]
mod tests;
