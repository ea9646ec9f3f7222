//! Model-specific registers of the emulated P6-class CPU: the one table of what exists.
//!
//! | MSR | name | reset | read | write |
//! |---|---|---|---|---|
//! | 0x10 | IA32_TSC | (run loop clock) | Platform time-stamp + offset | sets the offset |
//! | 0x17 | IA32_PLATFORM_ID | 0 | 0 | #GP (read-only) |
//! | 0x1b | IA32_APIC_BASE | 0xfee0_0900 (BSP, enabled) | value | #GP on reserved bits (0..7, 9, 10, 36..63) |
//! | 0x8b | IA32_BIOS_SIGN_ID | 0 | 0 (no microcode update loaded) | ignored (the update trigger) |
//! | 0x174..=0x176 | IA32_SYSENTER_CS/ESP/EIP | 0 | value | CS keeps 16 bits |
//! | 0x1a0 | IA32_MISC_ENABLE | 0x1801 | value | see [`MISC_ENABLE_RW`] |
//! | 0x277 | IA32_PAT | 0x0007_0406_0007_0406 | value | #GP if any entry is a reserved type (2, 3, 8..) |
//! | 0xc000_0080 | IA32_EFER | 0 | value | #GP on bits other than NXE (bit 11), and on the i386 model also SCE (0) and LME (8); LMA (10) is read-only; changing LME with paging on is #GP |
//! | 0xc000_0081..=0xc000_0084 | IA32_STAR, LSTAR, CSTAR, FMASK (x86_64 model) | 0 | value | LSTAR/CSTAR must be canonical; FMASK keeps 32 bits |
//! | 0xc000_0100..=0xc000_0102 | IA32_FS_BASE, GS_BASE, KERNEL_GS_BASE (x86_64 model) | 0 | value | must be canonical |
//!
//! Everything else raises #GP(0), as on hardware: in particular the MTRRs (CPUID.1:EDX.MTRR=0),
//! the machine-check MSRs (MCE/MCA=0) and the performance counters; IA32_TSC_AUX (no RDTSCP).
//! IA32_EFER exists because NX is advertised (CPUID 0x8000_0001:EDX bit 20); on the i386 model
//! LME and SCE are reserved (it advertises neither long mode nor SYSCALL). CPUID.1:EDX advertises MSR, TSC, APIC, SEP and PAT
//! accordingly. PAT memory types have no effect in an emulator (every access is coherent), so the
//! MSR is stored and checked but not used by the page walk.

use ailuro_bus::Platform;

use crate::mem::Bus;
use crate::{exc, Cpu, Res};

/// IA32_MISC_ENABLE after reset: fast strings enabled (bit 0, as the BIOS leaves it on P6 parts),
/// branch-trace storage unavailable (bit 11) and PEBS unavailable (bit 12): the model has no debug
/// store (CPUID.1:EDX.DS=0). Bit 7 (performance monitoring available) is 0: no PMU. Bit 22 (limit
/// CPUID max leaf to 2) is 0; it would have no visible effect, the maximum basic leaf is 1.
pub(crate) const MISC_ENABLE_RESET: u64 = 1 | (1 << 11) | (1 << 12);
/// Bits software may change: fast strings (0), automatic thermal control (3), limit CPUID maxval
/// (22). None of them changes the emulation.
pub(crate) const MISC_ENABLE_RW: u64 = 1 | (1 << 3) | (1 << 22);
/// Read-only bits: writes of any value are ignored (Linux writes back what it read).
const MISC_ENABLE_RO: u64 = (1 << 7) | (1 << 11) | (1 << 12);
/// IA32_PAT after reset (SDM Vol. 3 "PAT"): WB, WT, UC-, UC, WB, WT, UC-, UC.
pub(crate) const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// IA32_APIC_BASE after reset: base 0xfee0_0000, global enable (bit 11), BSP (bit 8).
pub(crate) const APIC_BASE_RESET: u64 = 0xfee0_0000 | (1 << 11) | (1 << 8);

impl Cpu {
    /// RDMSR of ECX (CPL 0 already checked).
    pub(crate) fn rdmsr<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>) -> Res<u64> {
        Ok(match self.s.regs[1] as u32 {
            0x10 => self.read_tsc(b),
            0x17 | 0x8b => 0,
            0x1b => self.s.apic_base,
            0x174 => self.s.sysenter_cs,
            0x175 => self.s.sysenter_esp,
            0x176 => self.s.sysenter_eip,
            0x1a0 => self.s.misc_enable,
            0x277 => self.s.pat,
            0xc000_0080 => self.s.efer,
            0xc000_0081 if self.has_long_mode() => self.s.lm.star,
            0xc000_0082 if self.has_long_mode() => self.s.lm.lstar,
            0xc000_0083 if self.has_long_mode() => self.s.lm.cstar,
            0xc000_0084 if self.has_long_mode() => self.s.lm.fmask,
            0xc000_0100 if self.has_long_mode() => self.s.seg[crate::SegReg::Fs as usize].base,
            0xc000_0101 if self.has_long_mode() => self.s.seg[crate::SegReg::Gs as usize].base,
            0xc000_0102 if self.has_long_mode() => self.s.lm.kernel_gs_base,
            _ => return exc(13, 0),
        })
    }

    /// WRMSR of EDX:EAX to ECX (CPL 0 already checked). Nothing changes on #GP.
    pub(crate) fn wrmsr<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>) -> Res<()> {
        let v = (self.s.regs[2] & 0xffff_ffff) << 32 | (self.s.regs[0] & 0xffff_ffff);
        match self.s.regs[1] as u32 {
            0x10 => {
                let at = self.at();
                b.touched = true;
                let now = b.p.read_timestamp(at);
                self.s.tsc_offset = v.wrapping_sub(now);
            }
            0x1b => {
                if v & !0xf_ffff_f900 != 0 {
                    return exc(13, 0);
                }
                self.s.apic_base = v;
            }
            0x8b => {}
            0x174 => self.s.sysenter_cs = v & 0xffff,
            0x175 => self.s.sysenter_esp = v,
            0x176 => self.s.sysenter_eip = v,
            0x1a0 => {
                if v & !(MISC_ENABLE_RW | MISC_ENABLE_RO) != 0 {
                    return exc(13, 0);
                }
                self.s.misc_enable = (self.s.misc_enable & !MISC_ENABLE_RW) | (v & MISC_ENABLE_RW);
            }
            0x277 => {
                // Each byte is a memory type; 2, 3 and 8..=255 are reserved.
                if (0..8).any(|k| matches!((v >> (8 * k)) & 0xff, 2 | 3 | 8..)) {
                    return exc(13, 0);
                }
                self.s.pat = v;
            }
            0xc000_0080 => {
                let writable = if self.has_long_mode() {
                    crate::EFER_NXE | crate::EFER_SCE | crate::EFER_LME
                } else {
                    crate::EFER_NXE
                };
                // LMA is read-only: the written value of that bit is ignored.
                let v = v & !crate::EFER_LMA;
                if v & !writable != 0 {
                    return exc(13, 0);
                }
                if (self.s.efer ^ v) & crate::EFER_LME != 0 && self.s.cr0 & crate::CR0_PG != 0 {
                    return exc(13, 0);
                }
                if (self.s.efer ^ v) & crate::EFER_NXE != 0 {
                    // XD bits change meaning (reserved <-> execute-disable): drop cached walks.
                    self.tlb.flush_all();
                }
                self.s.efer = v | (self.s.efer & crate::EFER_LMA);
            }
            0xc000_0081 if self.has_long_mode() => self.s.lm.star = v,
            0xc000_0082 | 0xc000_0083 | 0xc000_0100..=0xc000_0102 if self.has_long_mode() => {
                if !crate::canonical(v) {
                    return exc(13, 0);
                }
                match self.s.regs[1] as u32 {
                    0xc000_0082 => self.s.lm.lstar = v,
                    0xc000_0083 => self.s.lm.cstar = v,
                    0xc000_0100 => self.s.seg[crate::SegReg::Fs as usize].base = v,
                    0xc000_0101 => self.s.seg[crate::SegReg::Gs as usize].base = v,
                    _ => self.s.lm.kernel_gs_base = v,
                }
            }
            0xc000_0084 if self.has_long_mode() => self.s.lm.fmask = v & 0xffff_ffff,
            _ => return exc(13, 0),
        }
        Ok(())
    }
}
