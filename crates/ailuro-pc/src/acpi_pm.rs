//! ACPI power-management register block (PIIX4-style PM1a event/control blocks and PM timer), as
//! described to the guest by `ailuro-boot`'s FADT.
//!
//! Layout, relative to the block's base port (0x600 by default, as QEMU's PIIX4 PM):
//! * `+0` PM1_STS (16 bits, write 1 to clear): bit 0 TMR_STS, bit 8 PWRBTN_STS, bit 15 WAK_STS.
//! * `+2` PM1_EN (16 bits): bit 0 TMR_EN, bit 8 PWRBTN_EN.
//! * `+4` PM1_CNT (16 bits): bit 0 SCI_EN (reads 1: ACPI mode is always on), SLP_TYP bits 10–12,
//!   SLP_EN bit 13 (write-only). SLP_EN with SLP_TYP = S5 (0) powers the machine off.
//! * `+8` PM_TMR (32 bits, read-only): 24-bit counter at 3.579545 MHz derived from virtual time.
//!
//! The SCI (ISA IRQ 9, level triggered) is high while `PM1_STS & PM1_EN & 0x0121 != 0`. The
//! registers are byte-addressed here because the board splits wider port accesses into bytes.

use serde::{Deserialize, Serialize};

/// PM timer frequency in Hz.
pub(crate) const PM_TIMER_HZ: u64 = 3_579_545;
const TMR_STS: u16 = 1 << 0;
const PWRBTN_STS: u16 = 1 << 8;
const WAK_STS: u16 = 1 << 15;
const SCI_EN: u16 = 1 << 0;
const SLP_EN: u16 = 1 << 13;
/// SLP_TYP of S5 in the DSDT's `\_S5` package.
const S5_SLP_TYP: u16 = 0;

/// What a register write asks of the board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PmAction {
    None,
    PowerOff,
}

/// The PM register block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AcpiPm {
    sts: u16,
    en: u16,
    cnt: u16,
    /// `ticks >> 23` when TMR_STS was last brought up to date (bit 23 toggles set TMR_STS).
    tmr_epoch: u64,
}

/// PM timer ticks elapsed at virtual time `now_ns` (the counter starts at 0 at power-on).
pub(crate) fn pm_ticks(now_ns: u64) -> u64 {
    ((now_ns as u128 * PM_TIMER_HZ as u128) / 1_000_000_000) as u64
}

impl AcpiPm {
    pub(crate) fn new() -> Self {
        AcpiPm { cnt: SCI_EN, ..AcpiPm::default() }
    }

    /// Bring TMR_STS up to date: it is set whenever bit 23 of the counter changed.
    pub(crate) fn advance(&mut self, now_ns: u64) {
        let epoch = pm_ticks(now_ns) >> 23;
        if epoch != self.tmr_epoch {
            self.tmr_epoch = epoch;
            self.sts |= TMR_STS;
        }
    }

    /// Level of the SCI line.
    pub(crate) fn sci(&self) -> bool {
        self.sts & self.en & (TMR_STS | PWRBTN_STS | WAK_STS) != 0
    }

    /// When the next TMR_STS event happens, if the guest enabled its interrupt.
    pub(crate) fn next_deadline(&self, now_ns: u64) -> Option<u64> {
        if self.en & TMR_STS == 0 || self.sts & TMR_STS != 0 {
            return None;
        }
        let next_tick = ((pm_ticks(now_ns) >> 23) + 1) << 23;
        // First virtual nanosecond at which pm_ticks(t) >= next_tick.
        let t = (next_tick as u128 * 1_000_000_000).div_ceil(PM_TIMER_HZ as u128);
        Some(t as u64)
    }

    /// Byte read at `off` (0..12) from the block base.
    pub(crate) fn read8(&mut self, off: u16, now_ns: u64) -> u8 {
        self.advance(now_ns);
        let word = |w: u16, hi: bool| if hi { (w >> 8) as u8 } else { w as u8 };
        match off {
            0 | 1 => word(self.sts, off == 1),
            2 | 3 => word(self.en, off == 3),
            4 | 5 => word(self.cnt & !SLP_EN, off == 5),
            6 | 7 => 0,
            8..=11 => {
                let v = (pm_ticks(now_ns) & 0x00ff_ffff) as u32;
                (v >> (8 * (off - 8))) as u8
            }
            _ => 0xff,
        }
    }

    /// Byte write at `off` from the block base.
    pub(crate) fn write8(&mut self, off: u16, v: u8, now_ns: u64) -> PmAction {
        self.advance(now_ns);
        let set = |w: &mut u16, hi: bool, v: u8| {
            if hi {
                *w = (*w & 0x00ff) | (u16::from(v) << 8);
            } else {
                *w = (*w & 0xff00) | u16::from(v);
            }
        };
        match off {
            0 => self.sts &= !u16::from(v),
            1 => self.sts &= !(u16::from(v) << 8),
            2 | 3 => {
                set(&mut self.en, off == 3, v);
                self.en &= TMR_STS | PWRBTN_STS;
            }
            4 | 5 => {
                set(&mut self.cnt, off == 5, v);
                self.cnt |= SCI_EN;
                if self.cnt & SLP_EN != 0 {
                    self.cnt &= !SLP_EN;
                    if (self.cnt >> 10) & 7 == S5_SLP_TYP {
                        return PmAction::PowerOff;
                    }
                }
            }
            _ => {}
        }
        PmAction::None
    }

    pub(crate) fn valid(&self) -> bool {
        self.cnt & SCI_EN != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_counts_at_pm_rate_and_wraps_at_24_bits() {
        let mut pm = AcpiPm::new();
        let read32 = |pm: &mut AcpiPm, t: u64| -> u32 { (0..4).map(|i| (pm.read8(8 + i, t) as u32) << (8 * i)).sum() };
        assert_eq!(read32(&mut pm, 0), 0);
        assert_eq!(read32(&mut pm, 1_000_000_000), 3_579_545);
        // 2^24 ticks later the value wraps.
        let wrap_ns = (1u128 << 24) * 1_000_000_000 / PM_TIMER_HZ as u128 + 1;
        assert!(read32(&mut pm, wrap_ns as u64) < 10);
    }

    #[test]
    fn s5_write_powers_off_and_other_types_do_not() {
        let mut pm = AcpiPm::new();
        assert_eq!(pm.read8(4, 0) & 1, 1, "SCI_EN reads as set");
        // SLP_TYP = 5 with SLP_EN: ignored (no such state declared).
        assert_eq!(pm.write8(4, 0, 0), PmAction::None);
        assert_eq!(pm.write8(5, (5 << 2) | (1 << 5), 0), PmAction::None);
        // ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN.
        assert_eq!(pm.write8(5, 0, 0), PmAction::None);
        assert_eq!(pm.write8(5, 1 << 5, 0), PmAction::PowerOff);
        assert_eq!(pm.read8(5, 0) & (1 << 5), 0, "SLP_EN reads as 0");
    }

    #[test]
    fn tmr_sts_raises_sci_when_enabled_and_clears_on_write() {
        let mut pm = AcpiPm::new();
        pm.write8(2, 1, 0); // TMR_EN
        let d = pm.next_deadline(0).expect("deadline with TMR_EN");
        assert!(!pm.sci());
        pm.advance(d - 1);
        assert!(!pm.sci(), "bit 23 has not toggled yet");
        pm.advance(d);
        assert!(pm.sci());
        assert_eq!(pm.next_deadline(d), None, "no deadline while the status is pending");
        pm.write8(0, 1, d);
        assert!(!pm.sci());
        assert!(pm.next_deadline(d).unwrap() > d);
    }
}
