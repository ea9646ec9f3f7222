//! The x87 FPU: register stack, control/status/tag words, instruction and data pointers, and the
//! execution of every x87 instruction of a P6 (plus FXSAVE/FXRSTOR).
//!
//! Arithmetic is done by `softfloat.rs`; this module does the stack bookkeeping (TOP, tags, stack
//! overflow/underflow with SF and C1), the masked/unmasked exception responses, condition codes,
//! the environment/state images and the exception delivery rules:
//!
//! * CR0.EM=1 or CR0.TS=1: every ESC (D8..DF) opcode raises #NM; FXSAVE/FXRSTOR raise #UD when
//!   EM=1 and #NM when TS=1; WAIT/FWAIT raises #NM only when TS=1 and MP=1.
//! * An unmasked exception sets ES and B in the status word. The next *waiting* x87 instruction
//!   (everything except FNINIT, FNCLEX, FNSTSW, FNSTCW, FNSTENV, FNSAVE, FXSAVE, FXRSTOR and the
//!   no-op FNENI/FNDISI/FNSETPM) raises #MF (vector 16) before doing anything. With CR0.NE=0 a
//!   real PC would assert FERR# and raise IRQ13 through the PIC instead; that path is not
//!   modelled, #MF is delivered in both cases.
//! * Memory operands are read completely before any FPU state changes, and stores are done (after
//!   a write probe of the whole destination) before the FPU state is committed, so a #GP/#PF
//!   leaves the FPU as it was.
//! * FIP/FCS/FOP are updated by every non-control instruction, FDP/FDS by those with a memory
//!   operand (SDM vol. 1 8.1.8); the control instructions (FINIT, FCLEX, FLDCW, FSTCW, FSTSW,
//!   FSTENV, FLDENV, FSAVE, FRSTOR, FINCSTP, FDECSTP, FFREE, FNOP, WAIT, FXSAVE, FXRSTOR) keep them.

use ailuro_bus::Platform;
use iced_x86::{CpuidFeature, Instruction, MemorySize, Mnemonic as M, OpKind, Register};
use serde::{Deserialize, Serialize};

use crate::mem::{Bus, ACC_X};
use crate::softfloat::{self as sf, Class, Cmp, Env, Trig, F80};
use crate::{ex, exc, Cpu, Res, SegReg, CF, CR0_EM, CR0_MP, CR0_PE, CR0_TS, PF, ZF};

/// FSW bits.
pub(crate) const SW_SF: u16 = 0x40;
pub(crate) const SW_ES: u16 = 0x80;
pub(crate) const SW_C0: u16 = 0x100;
pub(crate) const SW_C1: u16 = 0x200;
pub(crate) const SW_C2: u16 = 0x400;
pub(crate) const SW_C3: u16 = 0x4000;
pub(crate) const SW_B: u16 = 0x8000;
const SW_CC: u16 = SW_C0 | SW_C1 | SW_C2 | SW_C3;

/// MXCSR_MASK as FXSAVE reports it: every MXCSR bit `sse.rs` implements, DAZ included.
pub(crate) const MXCSR_MASK: u32 = crate::sse::MXCSR_MASK;

/// Architectural x87 state (part of the serialized CPU state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fpu {
    /// Physical registers R0..R7.
    pub regs: [F80; 8],
    pub fcw: u16,
    /// Status word including TOP (bits 11..13).
    pub fsw: u16,
    /// Bit n set: physical register n is in use (not empty).
    pub tags: u8,
    /// Last non-control instruction: opcode (11 bits), EIP offset and CS selector.
    pub fop: u16,
    pub fip: u32,
    pub fcs: u16,
    /// Last memory operand: offset and segment selector.
    pub fdp: u32,
    pub fds: u16,
}

impl Fpu {
    /// State after RESET (SDM vol. 3 table 9-1): FCW 0x0040, FSW 0, all registers +0.0 tagged
    /// valid.
    pub(crate) fn reset() -> Fpu {
        Fpu { regs: [F80::ZERO; 8], fcw: 0x0040, fsw: 0, tags: 0xff, fop: 0, fip: 0, fcs: 0, fdp: 0, fds: 0 }
    }

    fn finit(&mut self) {
        self.fcw = 0x037f;
        self.fsw = 0;
        self.tags = 0;
        self.fop = 0;
        self.fip = 0;
        self.fcs = 0;
        self.fdp = 0;
        self.fds = 0;
    }

    pub(crate) fn top(&self) -> usize {
        usize::from((self.fsw >> 11) & 7)
    }

    fn set_top(&mut self, t: usize) {
        self.fsw = (self.fsw & !0x3800) | ((t as u16 & 7) << 11);
    }

    fn phys(&self, i: usize) -> usize {
        (self.top() + i) & 7
    }

    /// ST(i), or None if empty.
    pub(crate) fn st(&self, i: usize) -> Option<F80> {
        let p = self.phys(i);
        if self.tags & (1 << p) != 0 {
            Some(self.regs[p])
        } else {
            None
        }
    }

    fn set_st(&mut self, i: usize, v: F80) {
        let p = self.phys(i);
        self.regs[p] = v;
        self.tags |= 1 << p;
    }

    fn push(&mut self, v: F80) {
        let t = (self.top() + 7) & 7;
        self.set_top(t);
        self.regs[t] = v;
        self.tags |= 1 << t;
    }

    fn pop(&mut self) {
        let t = self.top();
        self.tags &= !(1 << t);
        self.set_top(t + 1);
    }

    /// Whether a push would overflow (ST(7) in use).
    fn push_overflows(&self) -> bool {
        self.tags & (1 << self.phys(7)) != 0
    }

    fn set_cc(&mut self, c0: bool, c1: bool, c2: bool, c3: bool) {
        self.fsw &= !SW_CC;
        if c0 {
            self.fsw |= SW_C0;
        }
        if c1 {
            self.fsw |= SW_C1;
        }
        if c2 {
            self.fsw |= SW_C2;
        }
        if c3 {
            self.fsw |= SW_C3;
        }
    }

    fn set_c1(&mut self, v: bool) {
        if v {
            self.fsw |= SW_C1;
        } else {
            self.fsw &= !SW_C1;
        }
    }

    /// Recompute ES and B from the exception flags and masks.
    pub(crate) fn update_es(&mut self) {
        if self.fsw & !self.fcw & 0x3f != 0 {
            self.fsw |= SW_ES | SW_B;
        } else {
            self.fsw &= !(SW_ES | SW_B);
        }
    }

    /// Merge exception flags into the status word.
    fn raise(&mut self, flags: u16) {
        self.fsw |= flags & 0x7f;
        self.update_es();
    }

    fn env(&self) -> Env {
        Env::new(self.fcw)
    }

    /// Commit the flags of an operation; returns whether the result is to be written (no unmasked
    /// IE/DE/ZE).
    fn commit(&mut self, e: &Env) -> bool {
        self.raise(e.flags);
        if e.stopped() {
            self.set_c1(false);
            return false;
        }
        self.set_c1(e.c1);
        true
    }

    /// Stack underflow (IE+SF, C1=0); returns whether IE is masked (the masked response proceeds).
    fn underflow(&mut self) -> bool {
        self.set_c1(false);
        self.raise(sf::IE | SW_SF);
        self.fcw & 1 != 0
    }

    /// Stack overflow (IE+SF, C1=1); returns whether IE is masked.
    fn overflow(&mut self) -> bool {
        self.raise(sf::IE | SW_SF);
        self.set_c1(true);
        self.fcw & 1 != 0
    }

    /// Full 16-bit tag word (00 valid, 01 zero, 10 special, 11 empty) computed from the contents.
    pub(crate) fn tag_word(&self) -> u16 {
        let mut w = 0u16;
        for p in 0..8 {
            let t = if self.tags & (1 << p) == 0 {
                3
            } else {
                match self.regs[p].class() {
                    Class::Zero => 1,
                    Class::Normal => 0,
                    _ => 2,
                }
            };
            w |= t << (2 * p);
        }
        w
    }

    fn set_tag_word(&mut self, w: u16) {
        self.tags = 0;
        for p in 0..8 {
            if (w >> (2 * p)) & 3 != 3 {
                self.tags |= 1 << p;
            }
        }
    }

    /// FXAM class code (C3, C2, C0) and C1 (sign) of ST(0).
    fn fxam(&mut self) {
        let p = self.phys(0);
        let v = self.regs[p];
        let sign = v.sign();
        let (c3, c2, c0) = if self.tags & (1 << p) == 0 {
            (true, false, true)
        } else {
            match v.class() {
                Class::Unsupported => (false, false, false),
                Class::QNaN | Class::SNaN => (false, false, true),
                Class::Normal => (false, true, false),
                Class::Inf => (false, true, true),
                Class::Zero => (true, false, false),
                Class::Denormal => (true, true, false),
            }
        };
        self.set_cc(c0, sign, c2, c3);
    }
}

/// Source of the second operand of a two-operand arithmetic instruction.
#[derive(Clone, Copy)]
enum Src {
    Reg(usize),
    Val(F80, bool),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    SubR,
    Mul,
    Div,
    DivR,
}

/// Whether iced tags the instruction as an x87 one (any FPU generation).
pub(crate) fn is_x87(i: &Instruction) -> bool {
    i.cpuid_features().iter().any(|f| {
        matches!(
            f,
            CpuidFeature::FPU
                | CpuidFeature::FPU287
                | CpuidFeature::FPU287XL_ONLY
                | CpuidFeature::FPU387
                | CpuidFeature::FPU387SL_ONLY
        )
    })
}

fn st_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::ST0 as usize) & 7
}

/// Read `n` bytes or write them in naturally sized pieces.
fn pieces(n: usize) -> impl Iterator<Item = (usize, u32)> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off >= n {
            return None;
        }
        let left = n - off;
        let sz = if left >= 8 {
            8
        } else if left >= 4 {
            4
        } else if left >= 2 {
            2
        } else {
            1
        };
        let r = (off, sz as u32);
        off += sz;
        Some(r)
    })
}

impl Cpu {
    fn fmem(&self, i: &Instruction) -> (usize, u64) {
        (Self::mseg(i), self.ea(i))
    }

    fn fread_bytes<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, seg: usize, off: u64, n: usize) -> Res<Vec<u8>> {
        self.seg_addr(seg, off, n as u32, false)?;
        let am = self.addr_mask();
        let mut out = vec![0u8; n];
        for (o, sz) in pieces(n) {
            let v = self.rd(b, seg, off.wrapping_add(o as u64) & am, sz)?;
            out[o..o + sz as usize].copy_from_slice(&v.to_le_bytes()[..sz as usize]);
        }
        Ok(out)
    }

    fn fwrite_bytes<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, seg: usize, off: u64, data: &[u8]) -> Res<()> {
        self.probe_write(b, seg, off, data.len() as u32)?;
        let am = self.addr_mask();
        for (o, sz) in pieces(data.len()) {
            let mut v = [0u8; 8];
            v[..sz as usize].copy_from_slice(&data[o..o + sz as usize]);
            self.wr(b, seg, off.wrapping_add(o as u64) & am, sz, u64::from_le_bytes(v))?;
        }
        Ok(())
    }

    /// Offsets wrap at 4 GiB (the segment checks reject wrapping in 16-bit segments); 64-bit
    /// mode has 64-bit offsets.
    fn addr_mask(&self) -> u64 {
        if self.long64() {
            u64::MAX
        } else {
            0xffff_ffff
        }
    }

    /// Record FIP/FCS/FOP (and FDP/FDS for a memory operand) of a non-control instruction.
    fn fpu_note<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction) {
        let mut fop = 0u16;
        let acc = self.user_acc() | ACC_X;
        let n = i.len() as u64;
        for k in 0..n {
            let lin = self.next_page_lin(self.cur_pc, k);
            let Ok(byte) = self.lin_read(b, lin, 1, acc) else { break };
            if (0xd8..=0xdf).contains(&byte) {
                let lin2 = self.next_page_lin(self.cur_pc, k + 1);
                let modrm = self.lin_read(b, lin2, 1, acc).unwrap_or(0);
                fop = (((byte & 7) << 8) | modrm) as u16;
                break;
            }
        }
        let mem = (0..i.op_count()).any(|k| i.op_kind(k) == OpKind::Memory);
        let (fdp, fds) = if mem { (self.ea(i) as u32, self.s.seg[Self::mseg(i)].selector) } else { (0, 0) };
        let fcs = self.s.seg[SegReg::Cs as usize].selector;
        let f = &mut self.s.fpu;
        f.fop = fop;
        f.fip = self.cur_eip as u32;
        f.fcs = fcs;
        if mem {
            f.fdp = fdp;
            f.fds = fds;
        }
    }

    /// Execute an x87 instruction (or WAIT, FXSAVE, FXRSTOR).
    pub(crate) fn exec_fpu<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction) -> Res<()> {
        let m = i.mnemonic();
        let cr0 = self.s.cr0;
        if m == M::Wait {
            if cr0 & (CR0_TS | CR0_MP) == (CR0_TS | CR0_MP) {
                return ex(7);
            }
            if self.s.fpu.fsw & SW_ES != 0 {
                return ex(16);
            }
            return Ok(());
        }
        if i.has_lock_prefix() {
            return ex(6);
        }
        if matches!(m, M::Fxsave | M::Fxrstor | M::Fxsave64 | M::Fxrstor64) {
            if cr0 & CR0_EM != 0 {
                return ex(6);
            }
            if cr0 & CR0_TS != 0 {
                return ex(7);
            }
            let wide = matches!(m, M::Fxsave64 | M::Fxrstor64);
            return if matches!(m, M::Fxsave | M::Fxsave64) {
                self.fxsave(b, i, wide)
            } else {
                self.fxrstor(b, i, wide)
            };
        }
        if cr0 & (CR0_EM | CR0_TS) != 0 {
            return ex(7);
        }
        let nowait = matches!(
            m,
            M::Fninit | M::Fnclex | M::Fnstsw | M::Fnstcw | M::Fnstenv | M::Fnsave | M::Fneni | M::Fndisi | M::Fnsetpm
        );
        if !nowait && self.s.fpu.fsw & SW_ES != 0 {
            return ex(16);
        }
        match m {
            M::Fninit | M::Finit => self.s.fpu.finit(),
            M::Fnclex | M::Fclex => self.s.fpu.fsw &= !(0x7f | SW_ES | SW_B),
            M::Fnstsw | M::Fstsw => {
                let v = u64::from(self.s.fpu.fsw);
                if i.op0_kind() == OpKind::Register {
                    self.reg_set(Register::AX, v);
                } else {
                    let (seg, off) = self.fmem(i);
                    self.wr(b, seg, off, 2, v)?;
                }
            }
            M::Fnstcw | M::Fstcw => {
                let (seg, off) = self.fmem(i);
                self.wr(b, seg, off, 2, u64::from(self.s.fpu.fcw))?;
            }
            M::Fldcw => {
                let (seg, off) = self.fmem(i);
                let v = self.rd(b, seg, off, 2)? as u16;
                self.s.fpu.fcw = fcw_value(v);
                self.s.fpu.update_es();
            }
            M::Fnstenv | M::Fstenv => {
                let (seg, off) = self.fmem(i);
                let img = self.env_image(i.memory_size() == MemorySize::FpuEnv28);
                self.fwrite_bytes(b, seg, off, &img)?;
                self.s.fpu.fcw |= 0x3f;
                self.s.fpu.update_es();
            }
            M::Fldenv => {
                let (seg, off) = self.fmem(i);
                let big = i.memory_size() == MemorySize::FpuEnv28;
                let img = self.fread_bytes(b, seg, off, if big { 28 } else { 14 })?;
                self.load_env_image(&img, big);
            }
            M::Fnsave | M::Fsave => {
                let (seg, off) = self.fmem(i);
                let big = i.memory_size() == MemorySize::FpuState108;
                let mut img = self.env_image(big);
                for k in 0..8 {
                    img.extend_from_slice(&self.s.fpu.regs[self.s.fpu.phys(k)].to_bytes());
                }
                self.fwrite_bytes(b, seg, off, &img)?;
                self.s.fpu.finit();
            }
            M::Frstor => {
                let (seg, off) = self.fmem(i);
                let big = i.memory_size() == MemorySize::FpuState108;
                let n = if big { 108 } else { 94 };
                let img = self.fread_bytes(b, seg, off, n)?;
                let base = if big { 28 } else { 14 };
                self.load_env_image(&img[..base], big);
                for k in 0..8 {
                    let p = self.s.fpu.phys(k);
                    self.s.fpu.regs[p] = F80::from_bytes(&img[base + 10 * k..base + 10 * k + 10]);
                }
            }
            M::Fneni | M::Fndisi | M::Fnsetpm | M::Feni | M::Fdisi | M::Fsetpm => {}
            M::Fnop => self.fpu_note(b, i),
            M::Fincstp | M::Fdecstp => {
                self.fpu_note(b, i);
                let f = &mut self.s.fpu;
                let t = if m == M::Fincstp { f.top() + 1 } else { f.top() + 7 };
                f.set_top(t);
                f.set_c1(false);
            }
            M::Ffree | M::Ffreep => {
                self.fpu_note(b, i);
                let f = &mut self.s.fpu;
                let p = f.phys(st_index(i.op0_register()));
                f.tags &= !(1 << p);
                f.set_c1(false);
                if m == M::Ffreep {
                    f.pop();
                }
            }
            _ => return self.exec_fpu_data(b, i, m),
        }
        Ok(())
    }

    /// Non-control x87 instructions.
    fn exec_fpu_data<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, m: M) -> Res<()> {
        match m {
            M::Fadd | M::Faddp | M::Fiadd => self.farith(b, i, Op::Add, m == M::Faddp),
            M::Fsub | M::Fsubp | M::Fisub => self.farith(b, i, Op::Sub, m == M::Fsubp),
            M::Fsubr | M::Fsubrp | M::Fisubr => self.farith(b, i, Op::SubR, m == M::Fsubrp),
            M::Fmul | M::Fmulp | M::Fimul => self.farith(b, i, Op::Mul, m == M::Fmulp),
            M::Fdiv | M::Fdivp | M::Fidiv => self.farith(b, i, Op::Div, m == M::Fdivp),
            M::Fdivr | M::Fdivrp | M::Fidivr => self.farith(b, i, Op::DivR, m == M::Fdivrp),
            M::Fld | M::Fild | M::Fbld => self.fload(b, i, m),
            M::Fst | M::Fstp | M::Fstpnce | M::Fist | M::Fistp | M::Fisttp | M::Fbstp => self.fstore(b, i, m),
            M::Fcom | M::Fcomp | M::Fcompp | M::Fucom | M::Fucomp | M::Fucompp | M::Ficom | M::Ficomp => {
                self.fcom(b, i, m)
            }
            M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip => {
                self.fpu_note(b, i);
                let quiet = matches!(m, M::Fucomi | M::Fucomip);
                let pop = matches!(m, M::Fcomip | M::Fucomip);
                let k = st_index(i.op1_register());
                let f = &mut self.s.fpu;
                let (a, c) = (f.st(0), f.st(k));
                // EFLAGS are set even when an unmasked exception suppresses the pop; C1 is left
                // alone (except by a stack fault).
                let (res, go) = match (a, c) {
                    (Some(a), Some(c)) => {
                        let mut e = f.env();
                        let r = sf::compare(&mut e, a, c, quiet);
                        f.raise(e.flags);
                        (r, !e.stopped())
                    }
                    _ => (Cmp::Unordered, f.underflow()),
                };
                if pop && go {
                    f.pop();
                }
                let fl = match res {
                    Cmp::Greater => 0,
                    Cmp::Less => CF,
                    Cmp::Equal => ZF,
                    Cmp::Unordered => ZF | PF | CF,
                };
                self.s.rflags = (self.s.rflags & !crate::STATUS) | fl;
                Ok(())
            }
            M::Fxch => {
                self.fpu_note(b, i);
                let k = if i.op_count() >= 2 { st_index(i.op1_register()) } else { 1 };
                let f = &mut self.s.fpu;
                let (a, c) = (f.st(0), f.st(k));
                let (a, c) = match (a, c) {
                    (Some(a), Some(c)) => (a, c),
                    _ => {
                        if !f.underflow() {
                            return Ok(());
                        }
                        (a.unwrap_or(F80::INDEFINITE), c.unwrap_or(F80::INDEFINITE))
                    }
                };
                f.set_st(0, c);
                f.set_st(k, a);
                f.set_c1(false);
                Ok(())
            }
            M::Fcmovb | M::Fcmove | M::Fcmovbe | M::Fcmovu | M::Fcmovnb | M::Fcmovne | M::Fcmovnbe | M::Fcmovnu => {
                self.fpu_note(b, i);
                let fl = self.s.rflags;
                let (cf, zf, pf) = (fl & CF != 0, fl & ZF != 0, fl & PF != 0);
                let cond = match m {
                    M::Fcmovb => cf,
                    M::Fcmove => zf,
                    M::Fcmovbe => cf || zf,
                    M::Fcmovu => pf,
                    M::Fcmovnb => !cf,
                    M::Fcmovne => !zf,
                    M::Fcmovnbe => !cf && !zf,
                    _ => !pf,
                };
                let k = st_index(i.op1_register());
                let f = &mut self.s.fpu;
                match (f.st(0), f.st(k)) {
                    (Some(_), Some(v)) => {
                        if cond {
                            f.set_st(0, v);
                        }
                    }
                    _ => {
                        if f.underflow() {
                            f.set_st(0, F80::INDEFINITE);
                        }
                    }
                }
                Ok(())
            }
            M::Ftst => {
                self.fpu_note(b, i);
                let f = &mut self.s.fpu;
                let r = match f.st(0) {
                    Some(a) => {
                        let mut e = f.env();
                        let r = sf::compare(&mut e, a, F80::ZERO, false);
                        f.commit(&e);
                        r
                    }
                    None => {
                        f.underflow();
                        Cmp::Unordered
                    }
                };
                set_cmp_cc(f, r);
                Ok(())
            }
            M::Fxam => {
                self.fpu_note(b, i);
                self.s.fpu.fxam();
                Ok(())
            }
            M::Fchs | M::Fabs => {
                self.fpu_note(b, i);
                let f = &mut self.s.fpu;
                match f.st(0) {
                    Some(v) => {
                        f.set_st(0, if m == M::Fchs { v.neg() } else { v.abs() });
                        f.set_c1(false);
                    }
                    None => {
                        if f.underflow() {
                            f.set_st(0, F80::INDEFINITE);
                        }
                    }
                }
                Ok(())
            }
            M::Fld1 | M::Fldz | M::Fldpi | M::Fldl2e | M::Fldl2t | M::Fldlg2 | M::Fldln2 => {
                self.fpu_note(b, i);
                let which = match m {
                    M::Fld1 => 0,
                    M::Fldz => 1,
                    M::Fldpi => 2,
                    M::Fldl2e => 3,
                    M::Fldl2t => 4,
                    M::Fldlg2 => 5,
                    _ => 6,
                };
                let f = &mut self.s.fpu;
                let v = sf::constant(((f.fcw >> 10) & 3) as u8, which);
                fpush(f, v);
                Ok(())
            }
            M::Fsqrt | M::Frndint | M::F2xm1 | M::Fsin | M::Fcos => {
                self.fpu_note(b, i);
                let f = &mut self.s.fpu;
                if matches!(m, M::Fsin | M::Fcos) {
                    // C2 = 1 only for an out-of-range operand.
                    f.fsw &= !SW_C2;
                }
                let Some(a) = f.st(0) else {
                    if f.underflow() {
                        f.set_st(0, F80::INDEFINITE);
                    }
                    return Ok(());
                };
                let mut e = f.env();
                let r = match m {
                    M::Fsqrt => sf::sqrt(&mut e, a),
                    M::Frndint => sf::round_int(&mut e, a),
                    M::F2xm1 => sf::f2xm1(&mut e, a),
                    _ => match sf::trig(&mut e, a, if m == M::Fsin { 0 } else { 1 }) {
                        Trig::OutOfRange => {
                            f.fsw |= SW_C2;
                            return Ok(());
                        }
                        Trig::Done(r, _) => r,
                    },
                };
                if f.commit(&e) {
                    f.set_st(0, r);
                }
                Ok(())
            }
            M::Fsincos | M::Fptan => {
                self.fpu_note(b, i);
                let f = &mut self.s.fpu;
                f.fsw &= !SW_C2;
                let Some(a) = f.st(0) else {
                    if f.underflow() {
                        f.set_st(0, F80::INDEFINITE);
                        f.push(F80::INDEFINITE);
                    }
                    return Ok(());
                };
                if f.push_overflows() {
                    if f.overflow() {
                        f.set_st(0, F80::INDEFINITE);
                        f.push(F80::INDEFINITE);
                    }
                    return Ok(());
                }
                let mut e = f.env();
                match sf::trig(&mut e, a, if m == M::Fsincos { 2 } else { 3 }) {
                    Trig::OutOfRange => f.fsw |= SW_C2,
                    Trig::Done(r0, r1) => {
                        if f.commit(&e) {
                            f.set_st(0, r0);
                            f.push(r1);
                        }
                    }
                }
                Ok(())
            }
            M::Fxtract => {
                self.fpu_note(b, i);
                let f = &mut self.s.fpu;
                let Some(a) = f.st(0) else {
                    if f.underflow() {
                        f.set_st(0, F80::INDEFINITE);
                        f.push(F80::INDEFINITE);
                    }
                    return Ok(());
                };
                if f.push_overflows() {
                    if f.overflow() {
                        f.set_st(0, F80::INDEFINITE);
                        f.push(F80::INDEFINITE);
                    }
                    return Ok(());
                }
                let mut e = f.env();
                let (ex_, sig) = sf::extract(&mut e, a);
                if f.commit(&e) {
                    f.set_st(0, ex_);
                    f.push(sig);
                }
                Ok(())
            }
            M::Fscale | M::Fprem | M::Fprem1 => {
                self.fpu_note(b, i);
                let f = &mut self.s.fpu;
                if m != M::Fscale {
                    f.fsw &= !SW_C2;
                }
                let (Some(a), Some(c)) = (f.st(0), f.st(1)) else {
                    if f.underflow() {
                        f.set_st(0, F80::INDEFINITE);
                    }
                    return Ok(());
                };
                let mut e = f.env();
                if m == M::Fscale {
                    let r = sf::scale(&mut e, a, c);
                    if f.commit(&e) {
                        f.set_st(0, r);
                    }
                } else {
                    let (r, cc) = sf::rem(&mut e, a, c, m == M::Fprem1);
                    if f.commit(&e) {
                        f.set_st(0, r);
                        if let Some([c0, c1, c2, c3]) = cc {
                            f.set_cc(c0, c1, c2, c3);
                        }
                    }
                }
                Ok(())
            }
            M::Fyl2x | M::Fyl2xp1 | M::Fpatan => {
                self.fpu_note(b, i);
                let f = &mut self.s.fpu;
                let (Some(x), Some(y)) = (f.st(0), f.st(1)) else {
                    if f.underflow() {
                        f.set_st(1, F80::INDEFINITE);
                        f.pop();
                    }
                    return Ok(());
                };
                let mut e = f.env();
                let r = match m {
                    M::Fpatan => sf::fpatan(&mut e, x, y),
                    _ => sf::fyl2x(&mut e, x, y, m == M::Fyl2xp1),
                };
                if f.commit(&e) {
                    f.set_st(1, r);
                    f.pop();
                }
                Ok(())
            }
            _ => ex(6),
        }
    }

    /// FADD/FSUB/FSUBR/FMUL/FDIV/FDIVR in all forms.
    fn farith<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, op: Op, pop: bool) -> Res<()> {
        let (dst, src) = if i.op0_kind() == OpKind::Memory {
            let (seg, off) = self.fmem(i);
            let (v, den) = match i.memory_size() {
                MemorySize::Float32 => sf::from_f32_raw(self.rd(b, seg, off, 4)? as u32),
                MemorySize::Float64 => sf::from_f64_raw(self.rd(b, seg, off, 8)?),
                MemorySize::Int16 => (sf::from_int(i64::from(self.rd(b, seg, off, 2)? as i16)), false),
                _ => (sf::from_int(i64::from(self.rd(b, seg, off, 4)? as i32)), false),
            };
            (0, Src::Val(v, den))
        } else if i.op_count() >= 2 {
            (st_index(i.op0_register()), Src::Reg(st_index(i.op1_register())))
        } else {
            (1, Src::Reg(0))
        };
        self.fpu_note(b, i);
        let f = &mut self.s.fpu;
        let d = f.st(dst);
        let (s, den) = match src {
            Src::Reg(k) => (f.st(k), false),
            Src::Val(v, den) => (Some(v), den),
        };
        let (Some(d), Some(s)) = (d, s) else {
            if f.underflow() {
                f.set_st(dst, F80::INDEFINITE);
                if pop {
                    f.pop();
                }
            }
            return Ok(());
        };
        let mut e = f.env();
        e.src_den = den;
        let r = match op {
            Op::Add => sf::add(&mut e, d, s, false),
            Op::Sub => sf::add(&mut e, d, s, true),
            Op::SubR => sf::add(&mut e, s, d, true),
            Op::Mul => sf::mul(&mut e, d, s),
            Op::Div => sf::div(&mut e, d, s),
            Op::DivR => sf::div(&mut e, s, d),
        };
        if f.commit(&e) {
            f.set_st(dst, r);
            if pop {
                f.pop();
            }
        }
        Ok(())
    }

    /// FLD/FILD/FBLD.
    fn fload<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, m: M) -> Res<()> {
        enum L {
            Raw(F80),
            F32(u32),
            F64(u64),
            Reg(usize),
        }
        let l = if i.op0_kind() == OpKind::Memory {
            let (seg, off) = self.fmem(i);
            match (m, i.memory_size()) {
                (M::Fld, MemorySize::Float32) => L::F32(self.rd(b, seg, off, 4)? as u32),
                (M::Fld, MemorySize::Float64) => L::F64(self.rd(b, seg, off, 8)?),
                (M::Fld, _) => {
                    let v = self.fread_bytes(b, seg, off, 10)?;
                    L::Raw(F80::from_bytes(&v))
                }
                (M::Fbld, _) => {
                    let v = self.fread_bytes(b, seg, off, 10)?;
                    let mut a = [0u8; 10];
                    a.copy_from_slice(&v);
                    L::Raw(sf::from_bcd(&a))
                }
                (_, MemorySize::Int16) => L::Raw(sf::from_int(i64::from(self.rd(b, seg, off, 2)? as i16))),
                (_, MemorySize::Int32) => L::Raw(sf::from_int(i64::from(self.rd(b, seg, off, 4)? as i32))),
                _ => L::Raw(sf::from_int(self.rd(b, seg, off, 8)? as i64)),
            }
        } else {
            L::Reg(st_index(i.op0_register()))
        };
        self.fpu_note(b, i);
        let f = &mut self.s.fpu;
        let v = match l {
            L::Reg(k) => match f.st(k) {
                Some(v) => Some(v),
                None => {
                    // Stack underflow: the indefinite is pushed without an overflow check.
                    if f.underflow() {
                        f.push(F80::INDEFINITE);
                    }
                    return Ok(());
                }
            },
            _ => None,
        };
        if f.push_overflows() {
            if f.overflow() {
                f.push(F80::INDEFINITE);
            }
            return Ok(());
        }
        let mut e = f.env();
        let v = match l {
            L::Raw(v) => v,
            L::F32(x) => sf::from_f32(&mut e, x),
            L::F64(x) => sf::from_f64(&mut e, x),
            L::Reg(_) => v.unwrap_or(F80::INDEFINITE),
        };
        // A denormal source with DE unmasked is still loaded; only an unmasked IE stops it.
        f.raise(e.flags);
        f.set_c1(false);
        if e.flags & !e.masks & sf::IE == 0 {
            f.push(v);
        }
        Ok(())
    }

    /// FST/FSTP/FIST/FISTP/FBSTP.
    fn fstore<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, m: M) -> Res<()> {
        let pop = matches!(m, M::Fstp | M::Fstpnce | M::Fistp | M::Fisttp | M::Fbstp);
        if i.op0_kind() != OpKind::Memory {
            self.fpu_note(b, i);
            let k = st_index(i.op0_register());
            let f = &mut self.s.fpu;
            match f.st(0) {
                Some(v) => {
                    f.set_st(k, v);
                    f.set_c1(false);
                }
                None => {
                    if !f.underflow() {
                        return Ok(());
                    }
                    f.set_st(k, F80::INDEFINITE);
                }
            }
            if pop {
                f.pop();
            }
            return Ok(());
        }
        let (seg, off) = self.fmem(i);
        let f = &self.s.fpu;
        let mut e = f.env();
        if m == M::Fisttp {
            // SSE3 FISTTP: FISTP with truncation whatever FCW.RC says.
            e.rc = 3;
        }
        let src = f.st(0);
        let ms = i.memory_size();
        // Bytes to store (None: nothing is stored because of an unmasked exception).
        let mut underflow = false;
        let data: Option<Vec<u8>> = match src {
            None => {
                underflow = true;
                if f.fcw & 1 == 0 {
                    None
                } else {
                    Some(match (m, ms) {
                        (M::Fbstp, _) => sf::BCD_INDEFINITE.to_vec(),
                        (M::Fst | M::Fstp, MemorySize::Float32) => 0xffc0_0000u32.to_le_bytes().to_vec(),
                        (M::Fst | M::Fstp, MemorySize::Float64) => 0xfff8_0000_0000_0000u64.to_le_bytes().to_vec(),
                        (M::Fst | M::Fstp, _) => F80::INDEFINITE.to_bytes().to_vec(),
                        (_, MemorySize::Int16) => 0x8000u16.to_le_bytes().to_vec(),
                        (_, MemorySize::Int32) => 0x8000_0000u32.to_le_bytes().to_vec(),
                        _ => 0x8000_0000_0000_0000u64.to_le_bytes().to_vec(),
                    })
                }
            }
            Some(v) => {
                let bytes = match (m, ms) {
                    (M::Fbstp, _) => sf::to_bcd(&mut e, v).to_vec(),
                    (M::Fst | M::Fstp, MemorySize::Float32) => sf::to_f32(&mut e, v).to_le_bytes().to_vec(),
                    (M::Fst | M::Fstp, MemorySize::Float64) => sf::to_f64(&mut e, v).to_le_bytes().to_vec(),
                    (M::Fst | M::Fstp, _) => v.to_bytes().to_vec(),
                    (_, ms) => {
                        let (bits, ind) = match ms {
                            MemorySize::Int16 => (16, 0x8000u64),
                            MemorySize::Int32 => (32, 0x8000_0000),
                            _ => (64, 0x8000_0000_0000_0000),
                        };
                        let r = sf::to_int(&mut e, v, bits).map(|x| x as u64).unwrap_or(ind);
                        r.to_le_bytes()[..bits as usize / 8].to_vec()
                    }
                };
                // Unmasked IE/DE/OE/UE: nothing is stored.
                if e.flags & !e.masks & (sf::IE | sf::DE | sf::OE | sf::UE) != 0 {
                    None
                } else {
                    Some(bytes)
                }
            }
        };
        if let Some(d) = &data {
            self.fwrite_bytes(b, seg, off, d)?;
        }
        self.fpu_note(b, i);
        let f = &mut self.s.fpu;
        if underflow {
            if f.underflow() && pop {
                f.pop();
            }
            return Ok(());
        }
        f.raise(e.flags);
        if data.is_some() {
            f.set_c1(e.c1);
            if pop {
                f.pop();
            }
        } else {
            f.set_c1(false);
        }
        Ok(())
    }

    /// FCOM/FCOMP/FCOMPP/FUCOM*/FICOM*.
    fn fcom<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, m: M) -> Res<()> {
        let quiet = matches!(m, M::Fucom | M::Fucomp | M::Fucompp);
        let pops = match m {
            M::Fcompp | M::Fucompp => 2,
            M::Fcomp | M::Fucomp | M::Ficomp => 1,
            _ => 0,
        };
        let src = if i.op_count() >= 1 && i.op0_kind() == OpKind::Memory {
            let (seg, off) = self.fmem(i);
            let (v, den) = match i.memory_size() {
                MemorySize::Float32 => sf::from_f32_raw(self.rd(b, seg, off, 4)? as u32),
                MemorySize::Float64 => sf::from_f64_raw(self.rd(b, seg, off, 8)?),
                MemorySize::Int16 => (sf::from_int(i64::from(self.rd(b, seg, off, 2)? as i16)), false),
                _ => (sf::from_int(i64::from(self.rd(b, seg, off, 4)? as i32)), false),
            };
            Src::Val(v, den)
        } else if i.op_count() >= 2 {
            Src::Reg(st_index(i.op1_register()))
        } else if i.op_count() == 1 {
            Src::Reg(st_index(i.op0_register()))
        } else {
            Src::Reg(1)
        };
        self.fpu_note(b, i);
        let f = &mut self.s.fpu;
        let (s, den) = match src {
            Src::Reg(k) => (f.st(k), false),
            Src::Val(v, den) => (Some(v), den),
        };
        // The condition codes are set even when an unmasked exception suppresses the pops.
        let (r, go) = match (f.st(0), s) {
            (Some(a), Some(c)) => {
                let mut e = f.env();
                e.src_den = den;
                let r = sf::compare(&mut e, a, c, quiet);
                (r, f.commit(&e))
            }
            _ => (Cmp::Unordered, f.underflow()),
        };
        set_cmp_cc(f, r);
        if go {
            for _ in 0..pops {
                f.pop();
            }
        }
        Ok(())
    }

    /// FSTENV image of the current environment (then the caller may mask exceptions).
    fn env_image(&self, big: bool) -> Vec<u8> {
        let f = &self.s.fpu;
        let tw = f.tag_word();
        // Virtual-8086 mode uses the real-mode layout too (SDM Vol. 1 8.1.10).
        let real = self.s.cr0 & CR0_PE == 0 || self.vm86();
        let mut v = Vec::with_capacity(28);
        if big {
            let w32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
            w32(&mut v, 0xffff_0000 | u32::from(f.fcw));
            w32(&mut v, 0xffff_0000 | u32::from(f.fsw));
            w32(&mut v, 0xffff_0000 | u32::from(tw));
            if real {
                let ip = f.fip.wrapping_add(u32::from(f.fcs) << 4);
                let dp = f.fdp.wrapping_add(u32::from(f.fds) << 4);
                w32(&mut v, 0xffff_0000 | (ip & 0xffff));
                w32(&mut v, ((ip >> 16) << 12) | u32::from(f.fop & 0x7ff));
                w32(&mut v, 0xffff_0000 | (dp & 0xffff));
                w32(&mut v, (dp >> 16) << 12);
            } else {
                w32(&mut v, f.fip);
                w32(&mut v, u32::from(f.fcs) | (u32::from(f.fop & 0x7ff) << 16));
                w32(&mut v, f.fdp);
                w32(&mut v, 0xffff_0000 | u32::from(f.fds));
            }
        } else {
            let w16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
            w16(&mut v, f.fcw);
            w16(&mut v, f.fsw);
            w16(&mut v, tw);
            if real {
                let ip = f.fip.wrapping_add(u32::from(f.fcs) << 4);
                let dp = f.fdp.wrapping_add(u32::from(f.fds) << 4);
                w16(&mut v, ip as u16);
                w16(&mut v, (((ip >> 16) & 0xf) << 12) as u16 | (f.fop & 0x7ff));
                w16(&mut v, dp as u16);
                w16(&mut v, (((dp >> 16) & 0xf) << 12) as u16);
            } else {
                w16(&mut v, f.fip as u16);
                w16(&mut v, f.fcs);
                w16(&mut v, f.fdp as u16);
                w16(&mut v, f.fds);
            }
        }
        v
    }

    fn load_env_image(&mut self, img: &[u8], big: bool) {
        // Virtual-8086 mode uses the real-mode layout too (SDM Vol. 1 8.1.10).
        let real = self.s.cr0 & CR0_PE == 0 || self.vm86();
        let f = &mut self.s.fpu;
        if big {
            let r32 = |k: usize| u32::from_le_bytes([img[4 * k], img[4 * k + 1], img[4 * k + 2], img[4 * k + 3]]);
            f.fcw = fcw_value(r32(0) as u16);
            f.fsw = r32(1) as u16;
            f.set_tag_word(r32(2) as u16);
            if real {
                f.fip = (r32(3) & 0xffff) | ((r32(4) >> 12) << 16);
                f.fop = (r32(4) & 0x7ff) as u16;
                f.fdp = (r32(5) & 0xffff) | ((r32(6) >> 12) << 16);
                f.fcs = 0;
                f.fds = 0;
            } else {
                f.fip = r32(3);
                f.fcs = r32(4) as u16;
                f.fop = ((r32(4) >> 16) & 0x7ff) as u16;
                f.fdp = r32(5);
                f.fds = r32(6) as u16;
            }
        } else {
            let r16 = |k: usize| u16::from_le_bytes([img[2 * k], img[2 * k + 1]]);
            f.fcw = fcw_value(r16(0));
            f.fsw = r16(1);
            f.set_tag_word(r16(2));
            if real {
                f.fip = u32::from(r16(3)) | (u32::from(r16(4) >> 12) << 16);
                f.fop = r16(4) & 0x7ff;
                f.fdp = u32::from(r16(5)) | (u32::from(r16(6) >> 12) << 16);
                f.fcs = 0;
                f.fds = 0;
            } else {
                f.fip = u32::from(r16(3));
                f.fcs = r16(4);
                f.fdp = u32::from(r16(5));
                f.fds = r16(6);
            }
        }
        f.update_es();
    }

    /// Linear address of the memory operand, checked for 16-byte alignment (#GP(0)).
    fn fx_area(&self, i: &Instruction) -> Res<(usize, u64)> {
        let (seg, off) = self.fmem(i);
        let lin = self.seg_addr(seg, off, 1, false)?;
        if lin & 15 != 0 {
            return exc(13, 0);
        }
        Ok((seg, off))
    }

    /// FXSAVE / FXSAVE64 (`wide`: 64-bit FIP/FDP without selectors). The 512-byte image holds
    /// the x87 state, MXCSR with MXCSR_MASK, and XMM0-7 (XMM0-15 in 64-bit mode) at 160 + 16n;
    /// the rest of the area (reserved and available to software) is not written.
    fn fxsave<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, wide: bool) -> Res<()> {
        let (seg, off) = self.fx_area(i)?;
        let nxmm = if self.long64() { 16 } else { 8 };
        let f = &self.s.fpu;
        let mut img = vec![0u8; 160 + 16 * nxmm];
        img[0..2].copy_from_slice(&f.fcw.to_le_bytes());
        img[2..4].copy_from_slice(&f.fsw.to_le_bytes());
        img[4] = f.tags;
        img[6..8].copy_from_slice(&(f.fop & 0x7ff).to_le_bytes());
        if wide {
            img[8..16].copy_from_slice(&u64::from(f.fip).to_le_bytes());
            img[16..24].copy_from_slice(&u64::from(f.fdp).to_le_bytes());
        } else {
            img[8..12].copy_from_slice(&f.fip.to_le_bytes());
            img[12..14].copy_from_slice(&f.fcs.to_le_bytes());
            img[16..20].copy_from_slice(&f.fdp.to_le_bytes());
            img[20..22].copy_from_slice(&f.fds.to_le_bytes());
        }
        img[24..28].copy_from_slice(&self.s.sse.mxcsr.to_le_bytes());
        img[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
        for k in 0..8 {
            let at = 32 + 16 * k;
            img[at..at + 10].copy_from_slice(&f.regs[f.phys(k)].to_bytes());
        }
        for k in 0..nxmm {
            let at = 160 + 16 * k;
            img[at..at + 16].copy_from_slice(&self.s.sse.xmm[k].to_le_bytes());
        }
        self.probe_write(b, seg, off, 512)?;
        self.fwrite_bytes(b, seg, off, &img)
    }

    /// FXRSTOR / FXRSTOR64: the inverse of [`Cpu::fxsave`]; #GP(0) (before any change) if the
    /// image's MXCSR sets a bit outside MXCSR_MASK.
    fn fxrstor<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, wide: bool) -> Res<()> {
        let (seg, off) = self.fx_area(i)?;
        self.seg_addr(seg, off, 512, false)?;
        let nxmm = if self.long64() { 16 } else { 8 };
        let img = self.fread_bytes(b, seg, off, 160 + 16 * nxmm)?;
        let mxcsr = u32::from_le_bytes([img[24], img[25], img[26], img[27]]);
        if mxcsr & !MXCSR_MASK != 0 {
            return exc(13, 0);
        }
        let r16 = |k: usize| u16::from_le_bytes([img[k], img[k + 1]]);
        let r32 = |k: usize| u32::from_le_bytes([img[k], img[k + 1], img[k + 2], img[k + 3]]);
        let f = &mut self.s.fpu;
        f.fcw = fcw_value(r16(0));
        f.fsw = r16(2);
        f.tags = img[4];
        f.fop = r16(6) & 0x7ff;
        f.fip = r32(8);
        f.fdp = r32(16);
        if wide {
            // FIP/FDP are kept as 32-bit offsets: the upper halves are dropped.
            f.fcs = 0;
            f.fds = 0;
        } else {
            f.fcs = r16(12);
            f.fds = r16(20);
        }
        for k in 0..8 {
            let p = f.phys(k);
            f.regs[p] = F80::from_bytes(&img[32 + 16 * k..42 + 16 * k]);
        }
        f.update_es();
        self.s.sse.mxcsr = mxcsr;
        for k in 0..nxmm {
            let at = 160 + 16 * k;
            let mut x = [0u8; 16];
            x.copy_from_slice(&img[at..at + 16]);
            self.s.sse.xmm[k] = u128::from_le_bytes(x);
        }
        Ok(())
    }
}

/// FCW as stored: bit 6 reads as 1, bits 7 and 13..15 as 0; bit 12 (the 287's infinity control)
/// is kept.
fn fcw_value(v: u16) -> u16 {
    (v & 0x1f3f) | 0x0040
}

fn set_cmp_cc(f: &mut Fpu, r: Cmp) {
    let (c3, c2, c0) = match r {
        Cmp::Greater => (false, false, false),
        Cmp::Less => (false, false, true),
        Cmp::Equal => (true, false, false),
        Cmp::Unordered => (true, true, true),
    };
    f.set_cc(c0, false, c2, c3);
}

/// Push a value (constant loads), with the stack overflow response.
fn fpush(f: &mut Fpu, v: F80) {
    if f.push_overflows() {
        if f.overflow() {
            f.push(F80::INDEFINITE);
        }
        return;
    }
    f.push(v);
    f.set_c1(false);
}
