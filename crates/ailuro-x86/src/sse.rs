//! MMX, SSE, SSE2, SSE3 and SSSE3 (CPUID.1: EDX MMX/SSE/SSE2, ECX SSE3/SSSE3).
//!
//! `exec.rs` hands every legacy-encoded instruction whose iced CPUID features are only these
//! extensions to [`Cpu::exec_simd`] (the fences and PREFETCHh never get here: the main match
//! executes them as no-ops, which is all they are on a single in-order CPU; FISTTP is an x87
//! instruction and lives in `fpu.rs`). Lane arithmetic is in `sse_int.rs`, floating point in
//! `sse_float.rs`.
//!
//! # Rules followed (Intel SDM)
//! * Exceptions, in order: LOCK → #UD; CR0.EM=1 → #UD; an XMM operand (or LDMXCSR, STMXCSR,
//!   CVTPI2PS) with CR4.OSFXSR=0 → #UD; CR0.TS=1 → #NM; an MMX register operand (and
//!   CVTPI2PS, EMMS) with a pending unmasked x87 exception (FSW.ES) → #MF; then the memory
//!   operand (#GP/#SS/#PF, and #GP(0) for a misaligned 16-byte operand of every instruction but
//!   MOVUPS/MOVUPD/MOVDQU/LDDQU/MASKMOVDQU); then unmasked SIMD floating-point exceptions →
//!   #XM with CR4.OSXMMEXCPT=1, else #UD. MOVNTI only checks its memory operand.
//! * Floating-point exceptions follow SDM Vol. 1 11.5.3: the flags of all elements are ORed;
//!   if an unmasked pre-computation exception (IE, DE, ZE) occurred only those flags are set,
//!   else if an unmasked post-computation one (OE, UE, PE) occurred all flags are set; in both
//!   cases the destination is left unchanged and the fault is raised. Otherwise the result is
//!   written and the flags are merged into MXCSR.
//! * MMX: every instruction with an MMX register operand (and CVTPI2PS with a memory source,
//!   which the SDM also lists) moves the x87 unit to MMX state when it completes: TOP = 0 and
//!   all registers tagged valid. Writing MMn stores the value in the significand of physical
//!   register n and sets its sign and exponent bits to ones; EMMS sets TOP = 0 and tags all
//!   registers empty. (An AMD host does not switch to MMX state for CVTPI2PS with a memory
//!   source; the SDM says CVTPI2PS always does, unlike CVTPI2PD, and that is followed here.)
//! * Faults are atomic: memory operands are read (and store destinations probed) before any
//!   register, MXCSR flag or x87-state change (except the MXCSR flags of a #XM, which are part of
//!   that exception).
//! * RCPPS/RCPSS/RSQRTPS/RSQRTSS: the hardware's values come from implementation-specific
//!   tables; these return the exact result rounded to 12 significant bits (|relative error| <=
//!   2^-12, within the architectural 1.5 * 2^-12), see `sse_float::rcp`. They are the only
//!   results here that are not bit-exact with a real CPU.

use ailuro_bus::Platform;
use iced_x86::{Code, CpuidFeature, EncodingKind, Instruction, Mnemonic as M, OpKind, Register};

use crate::mem::Bus;
use crate::softfloat::F80;
use crate::sse_float::{self as sf, Ctx, F32, F64};
use crate::sse_int::{int_op, lane, movmsk, set_lane, width_mask};
use crate::{ex, exc, Cpu, Res, CF, CR0_EM, CR0_TS, CR4_OSFXSR, CR4_OSXMMEXCPT, PF, ZF};

/// MXCSR bits this implementation supports (MXCSR_MASK as FXSAVE reports it): flags, DAZ,
/// masks, rounding control, FZ.
pub(crate) const MXCSR_MASK: u32 = 0xffff;

/// Whether `i` is an MMX/SSE instruction this module executes.
pub(crate) fn is_simd(i: &Instruction) -> bool {
    if i.encoding() != EncodingKind::Legacy {
        return false;
    }
    // FXSAVE64/FXRSTOR64 (REX.W) are not routed to the x87 code by exec.rs: take them here.
    if matches!(i.mnemonic(), M::Fxsave64 | M::Fxrstor64) {
        return true;
    }
    let f = i.cpuid_features();
    !f.is_empty()
        && f.iter().all(|x| {
            matches!(
                x,
                CpuidFeature::MMX | CpuidFeature::SSE | CpuidFeature::SSE2 | CpuidFeature::SSE3 | CpuidFeature::SSSE3
            )
        })
}

/// CPUID leaf 1 feature bits (EDX, ECX) for what this module implements: EDX MMX (23), SSE (25),
/// SSE2 (26); ECX SSE3 (0), SSSE3 (9).
pub(crate) fn cpuid_bits() -> (u32, u32) {
    ((1 << 23) | (1 << 25) | (1 << 26), 1 | (1 << 9))
}

fn is_mm(r: Register) -> bool {
    (Register::MM0..=Register::MM7).contains(&r)
}

fn is_xmm(r: Register) -> bool {
    (Register::XMM0..=Register::XMM15).contains(&r)
}

fn xmm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::XMM0 as usize) & 15
}

fn mm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::MM0 as usize) & 7
}

/// 16-byte memory operands that need not be aligned.
fn unaligned_ok(m: M) -> bool {
    matches!(m, M::Movups | M::Movupd | M::Movdqu | M::Lddqu | M::Maskmovdqu)
}

/// Packed/scalar floating-point arithmetic kinds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fop {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    Sqrt,
}

impl Cpu {
    #[inline]
    fn xmm(&self, r: Register) -> u128 {
        self.s.sse.xmm[xmm_index(r)]
    }

    #[inline]
    fn set_xmm(&mut self, r: Register, v: u128) {
        self.s.sse.xmm[xmm_index(r)] = v;
    }

    #[inline]
    fn mm(&self, r: Register) -> u64 {
        self.s.fpu.regs[mm_index(r)].m
    }

    /// Write MMn (and enter MMX state; call only when the instruction completes).
    fn set_mm(&mut self, r: Register, v: u64) {
        self.s.fpu.regs[mm_index(r)] = F80::new(0xffff, v);
        self.mmx_enter();
    }

    /// x87 → MMX transition: TOP = 0, all registers valid.
    pub(crate) fn mmx_enter(&mut self) {
        self.s.fpu.fsw &= !0x3800;
        self.s.fpu.tags = 0xff;
    }

    /// Value of a register operand (XMM, MM zero-extended, or GPR).
    fn reg_vec(&self, r: Register) -> u128 {
        if is_xmm(r) {
            self.xmm(r)
        } else if is_mm(r) {
            u128::from(self.mm(r))
        } else {
            u128::from(self.reg_get(r))
        }
    }

    /// Write a register operand: XMM (all 128 bits), MM, or GPR (32-bit writes zero-extend).
    fn set_reg_vec(&mut self, r: Register, v: u128) {
        if is_xmm(r) {
            self.set_xmm(r, v);
        } else if is_mm(r) {
            self.set_mm(r, v as u64);
        } else {
            self.reg_set(r, v as u64);
        }
    }

    /// Read `size` bytes (1..=8 or 16) at the instruction's memory operand.
    fn simd_rd<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, size: u32) -> Res<u128> {
        let seg = Self::mseg(i);
        let off = self.ea(i);
        self.simd_rd_at(b, i, seg, off, size)
    }

    fn simd_rd_at<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        i: &Instruction,
        seg: usize,
        off: u64,
        size: u32,
    ) -> Res<u128> {
        if size == 16 {
            self.align_check(i, seg, off)?;
            self.seg_addr(seg, off, 16, false)?;
            let lo = self.rd(b, seg, off, 8)?;
            let hi = self.rd(b, seg, off.wrapping_add(8), 8)?;
            return Ok(u128::from(lo) | (u128::from(hi) << 64));
        }
        Ok(u128::from(self.rd(b, seg, off, size.clamp(1, 8))?))
    }

    /// Write `size` bytes (1..=8 or 16) at the instruction's memory operand; the whole destination
    /// is checked before anything is written.
    fn simd_wr<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, size: u32, v: u128) -> Res<()> {
        let seg = Self::mseg(i);
        let off = self.ea(i);
        if size == 16 {
            self.align_check(i, seg, off)?;
            self.probe_write(b, seg, off, 16)?;
            self.wr(b, seg, off, 8, v as u64)?;
            return self.wr(b, seg, off.wrapping_add(8), 8, (v >> 64) as u64);
        }
        self.wr(b, seg, off, size.clamp(1, 8), v as u64)
    }

    /// #GP(0) for a misaligned 16-byte operand of an instruction that requires alignment.
    fn align_check(&self, i: &Instruction, seg: usize, off: u64) -> Res<()> {
        if !unaligned_ok(i.mnemonic()) && self.s.seg[seg].base.wrapping_add(off) & 15 != 0 {
            return exc(13, 0);
        }
        Ok(())
    }

    /// Operand `n` as a value: register, memory (sized by the instruction's memory size) or
    /// immediate.
    fn opnd<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, n: u32) -> Res<u128> {
        match i.op_kind(n) {
            OpKind::Register => Ok(self.reg_vec(i.op_register(n))),
            OpKind::Memory => {
                let size = i.memory_size().size() as u32;
                self.simd_rd(b, i, size)
            }
            _ => Ok(u128::from(i.immediate(n))),
        }
    }

    /// Raise #XM (CR4.OSXMMEXCPT=1) or #UD for an unmasked SIMD floating-point exception.
    fn simd_fp_fault(&self) -> Res<()> {
        if self.s.cr4 & CR4_OSXMMEXCPT != 0 {
            ex(19)
        } else {
            ex(6)
        }
    }

    /// Merge the flags of a completed floating-point computation into MXCSR; `Err` (with the
    /// flags set as SDM Vol. 1 11.5.3 says) if an unmasked exception suppresses the result.
    fn fp_commit(&mut self, c: &Ctx) -> Res<()> {
        let masks = (self.s.sse.mxcsr >> 7) & 0x3f;
        let pre = c.flags & (sf::IE | sf::DE | sf::ZE);
        if pre & !masks != 0 {
            self.s.sse.mxcsr |= pre;
            return self.simd_fp_fault();
        }
        self.s.sse.mxcsr |= c.flags;
        if c.flags & !masks != 0 {
            return self.simd_fp_fault();
        }
        Ok(())
    }

    /// The device-not-available / invalid-opcode / x87-pending checks of a SIMD instruction.
    fn simd_checks(&self, i: &Instruction, m: M) -> Res<bool> {
        let mut mmx = matches!(m, M::Emms | M::Cvtpi2ps);
        let mut xmm = matches!(m, M::Ldmxcsr | M::Stmxcsr | M::Cvtpi2ps);
        for n in 0..i.op_count() {
            if i.op_kind(n) == OpKind::Register {
                let r = i.op_register(n);
                mmx |= is_mm(r);
                xmm |= is_xmm(r);
            }
        }
        let cr0 = self.s.cr0;
        if cr0 & CR0_EM != 0 {
            return ex(6);
        }
        if xmm && self.s.cr4 & CR4_OSFXSR == 0 {
            return ex(6);
        }
        if cr0 & CR0_TS != 0 {
            return ex(7);
        }
        if mmx && self.s.fpu.fsw & crate::fpu::SW_ES != 0 {
            return ex(16);
        }
        Ok(mmx)
    }

    /// Execute an MMX/SSE instruction (`is_simd(i)` holds).
    pub(crate) fn exec_simd<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction) -> Res<()> {
        if i.has_lock_prefix() {
            return ex(6);
        }
        let m = i.mnemonic();
        if matches!(m, M::Fxsave64 | M::Fxrstor64) {
            return self.exec_fpu(b, i);
        }
        if m == M::Movnti {
            let v = self.reg_get(i.op1_register());
            let size = i.memory_size().size() as u32;
            return self.simd_wr(b, i, size, u128::from(v));
        }
        let mmx = self.simd_checks(i, m)?;
        self.exec_simd_body(b, i, m)?;
        if mmx {
            self.mmx_enter();
        }
        if m == M::Emms {
            // EMMS also leaves TOP = 0 (SDM Vol. 1 table 9-2), with every register empty.
            self.s.fpu.tags = 0;
        }
        Ok(())
    }

    fn exec_simd_body<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, m: M) -> Res<()> {
        let op0 = i.op0_kind();
        // Destination width in bytes for two-operand register forms.
        let width = |r: Register| if is_xmm(r) { 16 } else { 8 };
        match m {
            M::Emms => return Ok(()),
            M::Ldmxcsr => {
                let v = self.simd_rd(b, i, 4)? as u32;
                if v & !MXCSR_MASK != 0 {
                    return exc(13, 0);
                }
                self.s.sse.mxcsr = v;
                return Ok(());
            }
            M::Stmxcsr => return self.simd_wr(b, i, 4, u128::from(self.s.sse.mxcsr)),
            _ => {}
        }
        // Data movement.
        if self.simd_move(b, i, m)? {
            return Ok(());
        }
        // Floating point.
        if self.simd_float(b, i, m)? {
            return Ok(());
        }
        // Integer / logical / shuffle with destination register op0.
        if op0 != OpKind::Register {
            return ex(6);
        }
        let dr = i.op0_register();
        match m {
            M::Pextrw => {
                let src = self.reg_vec(i.op1_register());
                let bytes = width(i.op1_register());
                let k = u32::from(i.immediate8()) & (bytes / 2 - 1);
                self.reg_set(dr, lane(src, 16, k));
                return Ok(());
            }
            M::Pinsrw => {
                let v = self.opnd(b, i, 1)? as u64;
                let bytes = width(dr);
                let k = u32::from(i.immediate8()) & (bytes / 2 - 1);
                let r = set_lane(self.reg_vec(dr), 16, k, v);
                self.set_reg_vec(dr, r);
                return Ok(());
            }
            M::Pmovmskb | M::Movmskps | M::Movmskpd => {
                let sr = i.op1_register();
                let bits = match m {
                    M::Pmovmskb => 8,
                    M::Movmskps => 32,
                    _ => 64,
                };
                let v = movmsk(self.reg_vec(sr), width(sr), bits);
                self.reg_set(dr, v);
                return Ok(());
            }
            _ => {}
        }
        let bytes = width(dr);
        let d = self.reg_vec(dr);
        // Shifts by an immediate have it as operand 1.
        let (s, imm) = if i.op_count() >= 2 && i.op1_kind() == OpKind::Immediate8 {
            (u128::from(i.immediate8()), i.immediate8())
        } else {
            let s = self.opnd(b, i, 1)?;
            let imm = if i.op_count() >= 3 { i.immediate8() } else { 0 };
            (s, imm)
        };
        let Some(r) = int_op(m, d, s, bytes, imm) else {
            return ex(6);
        };
        self.set_reg_vec(dr, r & width_mask(bytes));
        Ok(())
    }

    /// Moves, loads and stores; `true` if `m` is one of them.
    fn simd_move<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, m: M) -> Res<bool> {
        let c = i.code();
        match m {
            M::Movd | M::Movq => {
                // MOVD/MOVQ in all directions: op0 <- op1, zero-extended into XMM/MM registers.
                let size = match c {
                    Code::Movd_mm_rm32 | Code::Movd_xmm_rm32 | Code::Movd_rm32_mm | Code::Movd_rm32_xmm => 4,
                    _ => 8,
                };
                let v = self.opnd(b, i, 1)? & width_mask(size);
                if i.op0_kind() == OpKind::Memory {
                    self.simd_wr(b, i, size, v)?;
                } else {
                    self.set_reg_vec(i.op0_register(), v);
                }
            }
            M::Movq2dq => {
                let v = u128::from(self.mm(i.op1_register()));
                self.set_xmm(i.op0_register(), v);
            }
            M::Movdq2q => {
                let v = self.xmm(i.op1_register()) as u64;
                self.set_mm(i.op0_register(), v);
            }
            M::Movaps
            | M::Movapd
            | M::Movdqa
            | M::Movups
            | M::Movupd
            | M::Movdqu
            | M::Lddqu
            | M::Movntps
            | M::Movntpd
            | M::Movntdq
            | M::Movntq => {
                let size = if m == M::Movntq { 8 } else { 16 };
                let v = self.opnd(b, i, 1)?;
                if i.op0_kind() == OpKind::Memory {
                    self.simd_wr(b, i, size, v)?;
                } else {
                    self.set_reg_vec(i.op0_register(), v);
                }
            }
            M::Movss | M::Movsd => {
                let size = if m == M::Movss { 4 } else { 8 };
                let bits = size * 8;
                if i.op0_kind() == OpKind::Memory {
                    let v = self.xmm(i.op1_register()) & width_mask(size);
                    self.simd_wr(b, i, size, v)?;
                } else if i.op1_kind() == OpKind::Memory {
                    let v = self.simd_rd(b, i, size)?;
                    self.set_xmm(i.op0_register(), v);
                } else {
                    let s = lane(self.xmm(i.op1_register()), bits, 0);
                    let d = self.xmm(i.op0_register());
                    self.set_xmm(i.op0_register(), set_lane(d, bits, 0, s));
                }
            }
            M::Movlps | M::Movlpd | M::Movhps | M::Movhpd => {
                let k = u32::from(matches!(m, M::Movhps | M::Movhpd));
                if i.op0_kind() == OpKind::Memory {
                    let v = lane(self.xmm(i.op1_register()), 64, k);
                    self.simd_wr(b, i, 8, u128::from(v))?;
                } else {
                    let v = self.simd_rd(b, i, 8)? as u64;
                    let d = self.xmm(i.op0_register());
                    self.set_xmm(i.op0_register(), set_lane(d, 64, k, v));
                }
            }
            M::Movhlps | M::Movlhps => {
                let s = self.xmm(i.op1_register());
                let d = self.xmm(i.op0_register());
                let r = if m == M::Movhlps {
                    set_lane(d, 64, 0, lane(s, 64, 1))
                } else {
                    set_lane(d, 64, 1, lane(s, 64, 0))
                };
                self.set_xmm(i.op0_register(), r);
            }
            M::Maskmovq | M::Maskmovdqu => {
                let bytes = if m == M::Maskmovq { 8 } else { 16 };
                let data = self.reg_vec(i.op1_register());
                let mask = self.reg_vec(i.op2_register());
                let seg = Self::mseg(i);
                let off = match i.op0_kind() {
                    OpKind::MemorySegDI => self.s.regs[7] & 0xffff,
                    OpKind::MemorySegEDI => self.s.regs[7] & 0xffff_ffff,
                    _ => self.s.regs[7],
                };
                // The whole destination is checked first (the SDM allows faults on masked-off
                // bytes); then the selected bytes are written one by one.
                self.probe_write(b, seg, off, bytes)?;
                for k in 0..bytes {
                    if lane(mask, 8, k) & 0x80 != 0 {
                        self.wr(b, seg, off.wrapping_add(u64::from(k)), 1, lane(data, 8, k))?;
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Floating-point instructions; `true` if `m` is one of them.
    fn simd_float<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, m: M) -> Res<bool> {
        // (format, lanes, operation); lanes 1 = scalar.
        let arith = match m {
            M::Addps => Some((F32, 4, Fop::Add)),
            M::Addss => Some((F32, 1, Fop::Add)),
            M::Addpd => Some((F64, 2, Fop::Add)),
            M::Addsd => Some((F64, 1, Fop::Add)),
            M::Subps => Some((F32, 4, Fop::Sub)),
            M::Subss => Some((F32, 1, Fop::Sub)),
            M::Subpd => Some((F64, 2, Fop::Sub)),
            M::Subsd => Some((F64, 1, Fop::Sub)),
            M::Mulps => Some((F32, 4, Fop::Mul)),
            M::Mulss => Some((F32, 1, Fop::Mul)),
            M::Mulpd => Some((F64, 2, Fop::Mul)),
            M::Mulsd => Some((F64, 1, Fop::Mul)),
            M::Divps => Some((F32, 4, Fop::Div)),
            M::Divss => Some((F32, 1, Fop::Div)),
            M::Divpd => Some((F64, 2, Fop::Div)),
            M::Divsd => Some((F64, 1, Fop::Div)),
            M::Minps => Some((F32, 4, Fop::Min)),
            M::Minss => Some((F32, 1, Fop::Min)),
            M::Minpd => Some((F64, 2, Fop::Min)),
            M::Minsd => Some((F64, 1, Fop::Min)),
            M::Maxps => Some((F32, 4, Fop::Max)),
            M::Maxss => Some((F32, 1, Fop::Max)),
            M::Maxpd => Some((F64, 2, Fop::Max)),
            M::Maxsd => Some((F64, 1, Fop::Max)),
            M::Sqrtps => Some((F32, 4, Fop::Sqrt)),
            M::Sqrtss => Some((F32, 1, Fop::Sqrt)),
            M::Sqrtpd => Some((F64, 2, Fop::Sqrt)),
            M::Sqrtsd => Some((F64, 1, Fop::Sqrt)),
            _ => None,
        };
        let dr = i.op0_register();
        if let Some((f, lanes, op)) = arith {
            let s = self.opnd(b, i, 1)?;
            let d = self.xmm(dr);
            let bits = if f == F32 { 32 } else { 64 };
            let mut c = Ctx::new(self.s.sse.mxcsr);
            let mut r = d;
            for k in 0..lanes {
                let (x, y) = (lane(d, bits, k), lane(s, bits, k));
                let v = match op {
                    Fop::Add => c.add(f, x, y, false),
                    Fop::Sub => c.add(f, x, y, true),
                    Fop::Mul => c.mul(f, x, y),
                    Fop::Div => c.div(f, x, y),
                    Fop::Min => c.minmax(f, x, y, false),
                    Fop::Max => c.minmax(f, x, y, true),
                    Fop::Sqrt => c.sqrt(f, y),
                };
                r = set_lane(r, bits, k, v);
            }
            self.fp_commit(&c)?;
            self.set_xmm(dr, r);
            return Ok(true);
        }
        match m {
            M::Addsubps | M::Addsubpd | M::Haddps | M::Haddpd | M::Hsubps | M::Hsubpd => {
                let s = self.opnd(b, i, 1)?;
                let d = self.xmm(dr);
                let (f, bits) = if matches!(m, M::Addsubps | M::Haddps | M::Hsubps) { (F32, 32) } else { (F64, 64) };
                let n = 128 / bits;
                let mut c = Ctx::new(self.s.sse.mxcsr);
                let mut r = 0u128;
                for k in 0..n {
                    let v = match m {
                        M::Addsubps | M::Addsubpd => c.add(f, lane(d, bits, k), lane(s, bits, k), k % 2 == 0),
                        _ => {
                            let src = if k < n / 2 { d } else { s };
                            let j = 2 * (k % (n / 2));
                            c.add(f, lane(src, bits, j), lane(src, bits, j + 1), matches!(m, M::Hsubps | M::Hsubpd))
                        }
                    };
                    r = set_lane(r, bits, k, v);
                }
                self.fp_commit(&c)?;
                self.set_xmm(dr, r);
            }
            M::Rcpps | M::Rcpss | M::Rsqrtps | M::Rsqrtss => {
                let s = self.opnd(b, i, 1)?;
                let lanes = if matches!(m, M::Rcpps | M::Rsqrtps) { 4 } else { 1 };
                let mut r = self.xmm(dr);
                for k in 0..lanes {
                    let x = lane(s, 32, k) as u32;
                    let v = if matches!(m, M::Rcpps | M::Rcpss) { sf::rcp(x) } else { sf::rsqrt(x) };
                    r = set_lane(r, 32, k, u64::from(v));
                }
                self.set_xmm(dr, r);
            }
            M::Cmpps | M::Cmpss | M::Cmppd | M::Cmpsd => {
                let s = self.opnd(b, i, 1)?;
                let d = self.xmm(dr);
                let (f, bits, lanes) = match m {
                    M::Cmpps => (F32, 32, 4),
                    M::Cmpss => (F32, 32, 1),
                    M::Cmppd => (F64, 64, 2),
                    _ => (F64, 64, 1),
                };
                let pred = i.immediate8() & 7;
                let mut c = Ctx::new(self.s.sse.mxcsr);
                let mut r = d;
                for k in 0..lanes {
                    let signaling = matches!(pred, 1 | 2 | 5 | 6);
                    let o = c.compare(f, lane(d, bits, k), lane(s, bits, k), signaling);
                    use std::cmp::Ordering as O;
                    let t = match pred {
                        0 => o == Some(O::Equal),
                        1 => o == Some(O::Less),
                        2 => matches!(o, Some(O::Less | O::Equal)),
                        3 => o.is_none(),
                        4 => o != Some(O::Equal),
                        5 => o != Some(O::Less),
                        6 => !matches!(o, Some(O::Less | O::Equal)),
                        _ => o.is_some(),
                    };
                    r = set_lane(r, bits, k, if t { u64::MAX } else { 0 });
                }
                self.fp_commit(&c)?;
                self.set_xmm(dr, r);
            }
            M::Comiss | M::Ucomiss | M::Comisd | M::Ucomisd => {
                let s = self.opnd(b, i, 1)?;
                let d = self.xmm(dr);
                let (f, bits) = if matches!(m, M::Comiss | M::Ucomiss) { (F32, 32) } else { (F64, 64) };
                let mut c = Ctx::new(self.s.sse.mxcsr);
                let o = c.compare(f, lane(d, bits, 0), lane(s, bits, 0), matches!(m, M::Comiss | M::Comisd));
                self.fp_commit(&c)?;
                use std::cmp::Ordering as O;
                let fl = match o {
                    None => ZF | PF | CF,
                    Some(O::Less) => CF,
                    Some(O::Equal) => ZF,
                    Some(O::Greater) => 0,
                };
                self.s.rflags = (self.s.rflags & !crate::STATUS) | fl;
            }
            _ => return self.simd_convert(b, i, m),
        }
        Ok(true)
    }

    /// The CVT* conversions; `true` if `m` is one of them.
    fn simd_convert<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, m: M) -> Res<bool> {
        let dr = i.op0_register();
        let mut c = Ctx::new(self.s.sse.mxcsr);
        // Result for the destination register (full value).
        let r: u128 = match m {
            M::Cvtsi2ss | M::Cvtsi2sd => {
                let wide = matches!(i.code(), Code::Cvtsi2ss_xmm_rm64 | Code::Cvtsi2sd_xmm_rm64);
                let v = self.opnd(b, i, 1)? as u64;
                let v = if wide { v as i64 } else { i64::from(v as u32 as i32) };
                let (f, bits) = if m == M::Cvtsi2ss { (F32, 32) } else { (F64, 64) };
                set_lane(self.xmm(dr), bits, 0, c.int_to_float(f, v))
            }
            M::Cvtss2si | M::Cvttss2si | M::Cvtsd2si | M::Cvttsd2si => {
                let (f, sbits) = if matches!(m, M::Cvtss2si | M::Cvttss2si) { (F32, 32) } else { (F64, 64) };
                let v = lane(self.opnd(b, i, 1)?, sbits, 0);
                let bits = if dr.size() == 8 { 64 } else { 32 };
                u128::from(c.float_to_int(f, v, bits, matches!(m, M::Cvttss2si | M::Cvttsd2si)))
            }
            M::Cvtss2sd => {
                let v = lane(self.opnd(b, i, 1)?, 32, 0);
                set_lane(self.xmm(dr), 64, 0, c.convert(F32, F64, v))
            }
            M::Cvtsd2ss => {
                let v = lane(self.opnd(b, i, 1)?, 64, 0);
                set_lane(self.xmm(dr), 32, 0, c.convert(F64, F32, v))
            }
            M::Cvtps2pd => {
                let s = self.opnd(b, i, 1)?;
                let lo = c.convert(F32, F64, lane(s, 32, 0));
                let hi = c.convert(F32, F64, lane(s, 32, 1));
                u128::from(lo) | (u128::from(hi) << 64)
            }
            M::Cvtpd2ps => {
                let s = self.opnd(b, i, 1)?;
                let lo = c.convert(F64, F32, lane(s, 64, 0));
                let hi = c.convert(F64, F32, lane(s, 64, 1));
                u128::from(lo) | (u128::from(hi) << 32)
            }
            M::Cvtdq2ps => {
                let s = self.opnd(b, i, 1)?;
                let mut r = 0u128;
                for k in 0..4 {
                    let v = i64::from(lane(s, 32, k) as u32 as i32);
                    r = set_lane(r, 32, k, c.int_to_float(F32, v));
                }
                r
            }
            M::Cvtps2dq | M::Cvttps2dq => {
                let s = self.opnd(b, i, 1)?;
                let mut r = 0u128;
                for k in 0..4 {
                    r = set_lane(r, 32, k, c.float_to_int(F32, lane(s, 32, k), 32, m == M::Cvttps2dq));
                }
                r
            }
            M::Cvtdq2pd | M::Cvtpi2pd => {
                let s = self.opnd(b, i, 1)?;
                let lo = c.int_to_float(F64, i64::from(lane(s, 32, 0) as u32 as i32));
                let hi = c.int_to_float(F64, i64::from(lane(s, 32, 1) as u32 as i32));
                u128::from(lo) | (u128::from(hi) << 64)
            }
            M::Cvtpd2dq | M::Cvttpd2dq | M::Cvtpd2pi | M::Cvttpd2pi => {
                let s = self.opnd(b, i, 1)?;
                let t = matches!(m, M::Cvttpd2dq | M::Cvttpd2pi);
                let lo = c.float_to_int(F64, lane(s, 64, 0), 32, t);
                let hi = c.float_to_int(F64, lane(s, 64, 1), 32, t);
                u128::from(lo) | (u128::from(hi) << 32)
            }
            M::Cvtpi2ps => {
                let s = self.opnd(b, i, 1)?;
                let lo = c.int_to_float(F32, i64::from(lane(s, 32, 0) as u32 as i32));
                let hi = c.int_to_float(F32, i64::from(lane(s, 32, 1) as u32 as i32));
                set_lane(self.xmm(dr), 64, 0, lo | (hi << 32))
            }
            M::Cvtps2pi | M::Cvttps2pi => {
                let s = self.opnd(b, i, 1)?;
                let t = m == M::Cvttps2pi;
                let lo = c.float_to_int(F32, lane(s, 32, 0), 32, t);
                let hi = c.float_to_int(F32, lane(s, 32, 1), 32, t);
                u128::from(lo) | (u128::from(hi) << 32)
            }
            _ => return Ok(false),
        };
        self.fp_commit(&c)?;
        self.set_reg_vec(dr, r);
        Ok(true)
    }
}
