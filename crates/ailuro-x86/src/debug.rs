//! Debug registers: DR0-DR3 breakpoint addresses, DR6 status, DR7 control (SDM Vol. 3 ch. 17).
//!
//! * Instruction breakpoints (R/W=00) are checked by the run loop before an instruction when RF=0
//!   and no MOV SS shadow is active: a fault-class #DB with the pushed RF left at 0.
//! * Data breakpoints (R/W=01 write, 11 read/write) are checked on every access made through
//!   `rd`/`wr`; a hit is remembered in `State::dbg_pending` and reported as a trap-class #DB after
//!   the instruction retires (discarded if it faults). LEN 00/01/11/10 = 1/2/4/8 bytes; the
//!   address is aligned down to the length, and any overlap with the access matches.
//! * I/O breakpoints (R/W=10) exist only with CR4.DE=1 (without it the encoding is undefined and
//!   ignored); they match IN/OUT/INS/OUTS port ranges like data breakpoints.
//! * General detect (DR7.GD): any MOV to/from a debug register raises a fault-class #DB with
//!   DR6.BD; the processor clears GD when it delivers a #DB.
//! * DR4/DR5 alias DR6/DR7 when CR4.DE=0 and raise #UD when CR4.DE=1.
//!
//! The cost when no breakpoint is enabled: `Cpu::bp_active` (cached from DR7's enable bits) is
//! tested once per `run` loop iteration and once per memory access; while it is set, the fast
//! path does not chain instructions and REP string instructions run one iteration per step.

use ailuro_bus::Platform;
use iced_x86::{Code, Instruction, Register};

use crate::mem::Bus;
use crate::{ex, Cpu, Res, CR4_DE};

/// DR6 bits that always read as 1 (bits 4..=11 and 16..=31 on P6).
pub(crate) const DR6_FIXED: u64 = 0xffff_0ff0;
/// DR6.BD: the #DB was a general-detect fault.
pub(crate) const DR6_BD: u64 = 1 << 13;
/// DR6.BS: the #DB was a single-step trap.
pub(crate) const DR6_BS: u64 = 1 << 14;
/// DR6 bits software can write (B0..B3, BD, BS, BT).
const DR6_RW: u64 = 0xf | DR6_BD | DR6_BS | (1 << 15);
/// DR7.GD.
pub(crate) const DR7_GD: u64 = 1 << 13;
/// DR7 bits that exist: L0..G3, LE, GE, GD, R/W and LEN fields. Bit 10 reads as 1.
const DR7_RW: u64 = 0xffff_23ff;

/// Length in bytes of breakpoint `i` from DR7.LENi.
#[inline]
fn bp_len(dr7: u64, i: usize) -> u64 {
    match (dr7 >> (18 + 4 * i)) & 3 {
        0 => 1,
        1 => 2,
        2 => 8,
        _ => 4,
    }
}

/// R/W field of breakpoint `i` (0 execute, 1 write, 2 I/O, 3 read/write) if it is enabled.
#[inline]
fn bp_kind(dr7: u64, i: usize) -> Option<u64> {
    if dr7 & (3 << (2 * i)) == 0 {
        return None;
    }
    Some((dr7 >> (16 + 4 * i)) & 3)
}

impl Cpu {
    /// Recompute the cached "any breakpoint enabled" flag (after DR7 changes or a state load).
    pub(crate) fn update_bp_active(&mut self) {
        self.bp_active = self.s.dr[7] & 0xff != 0;
    }

    /// Breakpoint addresses are 64-bit linear addresses in IA-32e mode, 32-bit otherwise.
    fn dr_addr_mask(&self) -> u64 {
        if self.lma() {
            u64::MAX
        } else {
            0xffff_ffff
        }
    }

    /// Enabled instruction breakpoints at linear address `lin` (a DR6 B0..B3 mask).
    pub(crate) fn code_bp_hits(&self, lin: u64) -> u32 {
        let dr7 = self.s.dr[7];
        let m = self.dr_addr_mask();
        (0..4).filter(|&i| bp_kind(dr7, i) == Some(0) && self.s.dr[i] & m == lin).fold(0, |m, i| m | (1 << i))
    }

    /// Breakpoints of the kinds `want` (R/W values) whose range overlaps `[addr, addr+size)`.
    fn range_hits(&self, addr: u64, size: u32, want: impl Fn(u64) -> bool) -> u32 {
        let dr7 = self.s.dr[7];
        let mut hits = 0;
        for i in 0..4 {
            let Some(kind) = bp_kind(dr7, i) else { continue };
            if !want(kind) {
                continue;
            }
            let len = bp_len(dr7, i);
            let start = self.s.dr[i] & self.dr_addr_mask() & !(len - 1);
            if addr < start.wrapping_add(len) && start < addr.wrapping_add(u64::from(size)) {
                hits |= 1 << i;
            }
        }
        hits
    }

    /// A data access at linear `lin` by the current instruction: note matching data breakpoints.
    #[cold]
    #[inline(never)]
    pub(crate) fn data_bp_check(&mut self, lin: u64, size: u32, write: bool) {
        self.s.dbg_pending |= self.range_hits(lin, size, |k| k == 3 || (k == 1 && write));
    }

    /// An I/O access to `port`: note matching I/O breakpoints (CR4.DE=1 only).
    #[cold]
    #[inline(never)]
    pub(crate) fn io_bp_check(&mut self, port: u16, size: u32) {
        if self.s.cr4 & CR4_DE != 0 {
            self.s.dbg_pending |= self.range_hits(u64::from(port), size, |k| k == 2);
        }
    }

    /// MOV to/from DRn.
    pub(crate) fn exec_mov_dr<P: Platform + ?Sized>(&mut self, _b: &mut Bus<P>, i: &Instruction) -> Res<()> {
        if self.pm() && self.s.cpl != 0 {
            return crate::exc(13, 0);
        }
        let to_dr = matches!(i.code(), Code::Mov_dr_r32 | Code::Mov_dr_r64);
        // 64-bit mode moves 64 bits (DR0-3 hold 64-bit linear addresses).
        let m = if self.long64() { u64::MAX } else { 0xffff_ffff };
        let (dr, gp) = if to_dr { (i.op0_register(), i.op1_register()) } else { (i.op1_register(), i.op0_register()) };
        let mut n = (dr as u32).wrapping_sub(Register::DR0 as u32) as usize;
        if n == 4 || n == 5 {
            if self.s.cr4 & CR4_DE != 0 {
                return ex(6);
            }
            n += 2;
        }
        if n > 7 {
            return ex(6);
        }
        if self.s.dr[7] & DR7_GD != 0 {
            // General detect: a fault before the access (the handler may then use the DRs: GD is
            // cleared on delivery).
            self.s.dr[6] |= DR6_BD;
            return ex(1);
        }
        if !to_dr {
            self.reg_set(gp, self.s.dr[n] & m);
            return Ok(());
        }
        let v = self.reg_get(gp) & m;
        if n >= 6 && v >> 32 != 0 {
            // The upper halves of DR6 and DR7 are reserved: writing ones is #GP(0).
            return crate::exc(13, 0);
        }
        match n {
            6 => self.s.dr[6] = (v & DR6_RW) | DR6_FIXED,
            7 => {
                self.s.dr[7] = (v & DR7_RW) | 0x400;
                self.update_bp_active();
            }
            _ => self.s.dr[n] = v,
        }
        Ok(())
    }
}
