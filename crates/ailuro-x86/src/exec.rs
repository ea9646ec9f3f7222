//! Instruction execution: one decoded instruction at a time.

use ailuro_bus::Platform;
use iced_x86::{Code, Instruction, Mnemonic as M, OpKind, Register};

use crate::fast::Kind;
use crate::flags::{sext, Alu, Shift};
use crate::mem::{mask, Bus};
use crate::prot::Event;
use crate::{
    ex, exc, Cpu, Res, SegReg, AF, CF, CPUID_SIGNATURE, CR0_EM, CR0_MP, CR0_PE, CR0_PG, CR0_TS, CR0_WP, CR4_PAE,
    CR4_PGE, CR4_PSE, CR4_TSD, DF, IF, OF, PF, SF, ZF,
};

const CS: usize = SegReg::Cs as usize;
const SS: usize = SegReg::Ss as usize;
const ES: usize = SegReg::Es as usize;
const DS: usize = SegReg::Ds as usize;

/// Size in bytes of an iced general-purpose or segment register.
#[inline]
fn reg_size(r: Register) -> u32 {
    match r as u32 {
        1..=20 => 1,
        21..=36 => 2,
        37..=52 => 4,
        53..=68 => 8,
        69 => 4,
        70 => 8,
        71..=76 => 2,
        _ => 4,
    }
}

/// Segment register number (ES=0 .. GS=5); anything else (never produced for a memory operand)
/// maps to DS rather than panicking.
#[inline]
fn seg_index(r: Register) -> usize {
    let n = (r as u32).wrapping_sub(Register::ES as u32) as usize;
    if n < 6 {
        n
    } else {
        DS
    }
}

/// Mask of the count register (CX, ECX or RCX: the address size) of LOOPcc/JcXZ.
fn counter_mask(c: Code) -> u64 {
    match c {
        Code::Loop_rel8_16_CX
        | Code::Loop_rel8_32_CX
        | Code::Loope_rel8_16_CX
        | Code::Loope_rel8_32_CX
        | Code::Loopne_rel8_16_CX
        | Code::Loopne_rel8_32_CX
        | Code::Jcxz_rel8_16
        | Code::Jcxz_rel8_32 => 0xffff,
        Code::Loop_rel8_16_RCX
        | Code::Loop_rel8_64_RCX
        | Code::Loope_rel8_16_RCX
        | Code::Loope_rel8_64_RCX
        | Code::Loopne_rel8_16_RCX
        | Code::Loopne_rel8_64_RCX
        | Code::Jrcxz_rel8_16
        | Code::Jrcxz_rel8_64 => u64::MAX,
        _ => 0xffff_ffff,
    }
}

/// Write the low `am` bits of a register value as an address-size update does: a 32-bit update
/// zero-extends (as every 32-bit register write), a 16-bit one keeps the upper bits.
#[inline]
fn addr_update(old: u64, new: u64, am: u64) -> u64 {
    if am == 0xffff {
        (old & !0xffff) | (new & 0xffff)
    } else {
        new & am
    }
}

/// String instruction address-size mask: 16-bit if an operand uses SI/DI, 64-bit if RSI/RDI.
fn str_addr_mask(i: &Instruction) -> u64 {
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::MemorySegSI | OpKind::MemorySegDI | OpKind::MemoryESDI => return 0xffff,
            OpKind::MemorySegRSI | OpKind::MemorySegRDI | OpKind::MemoryESRDI => return u64::MAX,
            _ => {}
        }
    }
    0xffff_ffff
}

impl Cpu {
    #[inline]
    pub(crate) fn reg_get(&self, r: Register) -> u64 {
        let n = r as u32;
        let g = &self.s.regs;
        match n {
            1..=4 => g[(n - 1) as usize] & 0xff,
            5..=8 => (g[(n - 5) as usize] >> 8) & 0xff,
            9..=20 => g[(n - 5) as usize] & 0xff,
            21..=36 => g[(n - 21) as usize] & 0xffff,
            37..=52 => g[(n - 37) as usize] & 0xffff_ffff,
            53..=68 => g[(n - 53) as usize],
            71..=76 => u64::from(self.s.seg[(n - 71) as usize].selector),
            _ => 0,
        }
    }

    #[inline]
    pub(crate) fn reg_set(&mut self, r: Register, v: u64) {
        let n = r as u32;
        let g = &mut self.s.regs;
        match n {
            1..=4 => {
                let x = &mut g[(n - 1) as usize];
                *x = (*x & !0xff) | (v & 0xff);
            }
            5..=8 => {
                let x = &mut g[(n - 5) as usize];
                *x = (*x & !0xff00) | ((v & 0xff) << 8);
            }
            9..=20 => {
                let x = &mut g[(n - 5) as usize];
                *x = (*x & !0xff) | (v & 0xff);
            }
            21..=36 => {
                let x = &mut g[(n - 21) as usize];
                *x = (*x & !0xffff) | (v & 0xffff);
            }
            37..=52 => g[(n - 37) as usize] = v & 0xffff_ffff,
            53..=68 => g[(n - 53) as usize] = v,
            _ => {}
        }
    }

    /// Write the low `size` bytes of GPR number `idx` (0=eAX..7=eDI), 8-bit meaning AL..BL style low.
    #[inline]
    fn gpr_write(&mut self, idx: usize, size: u32, v: u64) {
        let x = &mut self.s.regs[idx];
        *x = match size {
            1 => (*x & !0xff) | (v & 0xff),
            2 => (*x & !0xffff) | (v & 0xffff),
            4 => v & 0xffff_ffff,
            _ => v,
        };
    }

    /// Effective address (offset within the segment) of the memory operand.
    #[inline]
    pub(crate) fn ea(&self, i: &Instruction) -> u64 {
        let base = i.memory_base();
        let index = i.memory_index();
        let mut a = i.memory_displacement64();
        if base == Register::RIP || base == Register::EIP {
            // RIP-relative: the decode cache decodes at IP 0, so the displacement iced gives is
            // relative to the start of this instruction.
            let a = self.cur_eip.wrapping_add(a);
            return if base == Register::EIP { a & 0xffff_ffff } else { a };
        }
        // Without a base or index the displacement's size is the address size.
        let mut am = match i.memory_displ_size() {
            8 => u64::MAX,
            2 => 0xffff,
            _ => 0xffff_ffff,
        };
        if base != Register::None {
            a = a.wrapping_add(self.reg_get(base));
            am = mask(reg_size(base));
        }
        if index != Register::None {
            a = a.wrapping_add(self.reg_get(index).wrapping_mul(u64::from(i.memory_index_scale())));
            if base == Register::None || reg_size(index) > 1 {
                am = mask(reg_size(index).max(2));
            }
        }
        a & am
    }

    /// Mask of the memory operand's address size (16, 32 or 64 bits).
    fn addr_size_mask(i: &Instruction) -> u64 {
        let base = i.memory_base();
        let r = if base != Register::None { base } else { i.memory_index() };
        if r != Register::None {
            return mask(reg_size(r));
        }
        match i.memory_displ_size() {
            8 => u64::MAX,
            2 => 0xffff,
            _ => 0xffff_ffff,
        }
    }

    #[inline]
    pub(crate) fn mseg(i: &Instruction) -> usize {
        seg_index(i.memory_segment())
    }

    #[inline]
    fn op_size(i: &Instruction, n: u32) -> u32 {
        match i.op_kind(n) {
            OpKind::Register => reg_size(i.op_register(n)),
            // Operand sizes are 1..=8; clamp so that no size arithmetic can overflow.
            _ => (i.memory_size().size() as u32).clamp(1, 8),
        }
    }

    #[inline]
    fn rd_op<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, n: u32, size: u32) -> Res<u64> {
        Ok(match i.op_kind(n) {
            OpKind::Register => self.reg_get(i.op_register(n)),
            OpKind::Memory => {
                let off = self.ea(i);
                self.rd(b, Self::mseg(i), off, size)?
            }
            OpKind::Immediate8 => u64::from(i.immediate8()),
            OpKind::Immediate8_2nd => u64::from(i.immediate8_2nd()),
            OpKind::Immediate16 => u64::from(i.immediate16()),
            OpKind::Immediate32 => u64::from(i.immediate32()),
            OpKind::Immediate8to16 => i.immediate8to16() as u16 as u64,
            OpKind::Immediate8to32 => i.immediate8to32() as u32 as u64,
            _ => i.immediate(n) & mask(size),
        })
    }

    #[inline]
    fn wr_op<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, n: u32, size: u32, v: u64) -> Res<()> {
        match i.op_kind(n) {
            OpKind::Register => {
                self.reg_set(i.op_register(n), v);
                Ok(())
            }
            _ => {
                let off = self.ea(i);
                self.wr(b, Self::mseg(i), off, size, v)
            }
        }
    }

    /// Near-branch target for a relative branch (the decode cache decodes at IP 0, so the decoded
    /// target is the displacement from this instruction's start).
    #[inline]
    fn rel_target(&self, i: &Instruction) -> u64 {
        let m = match i.op0_kind() {
            OpKind::NearBranch16 => 0xffff,
            OpKind::NearBranch64 => u64::MAX,
            _ => 0xffff_ffff,
        };
        self.cur_eip.wrapping_add(i.near_branch_target()) & m
    }

    /// Jump to `target` within CS (limit checked).
    #[inline]
    fn jump_near(&mut self, target: u64) -> Res<()> {
        if self.long64() {
            // No limit in 64-bit mode; a non-canonical target faults on the branch itself.
            if !crate::canonical(target) {
                return exc(13, 0);
            }
        } else if target > u64::from(self.s.seg[CS].limit) {
            return exc(13, 0);
        }
        self.s.rip = target;
        Ok(())
    }

    fn need_cpl0(&self) -> Res<()> {
        if self.pm() && self.s.cpl != 0 {
            return exc(13, 0);
        }
        Ok(())
    }

    /// Protected-mode-only instructions (LLDT, SLDT, LTR, STR, LAR, LSL, VERR, VERW, ARPL): #UD in
    /// real mode and in VM86 ("not recognized in virtual-8086 mode").
    fn need_pm(&self) -> Res<()> {
        if !self.pm() || self.vm86() {
            return ex(6);
        }
        Ok(())
    }

    /// Execute one instruction: fetch, execute, retire. On a fault nothing is retired and EIP,
    /// ESP and EFLAGS are as before the instruction.
    pub(crate) fn step<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>) -> Res<()> {
        self.s.shadow = false;
        self.s.ss_shadow = false;
        // RF is cleared at the start of every instruction, after the instruction-breakpoint
        // check (run loop); a fault pushes RF=1 anyway, IRET and task switches load it.
        self.s.rflags &= !crate::RF;
        let idx = self.fetch(b)?;
        let e = &self.icache.e[idx];
        let len = u64::from(e.len);
        let ipm = if self.long64() {
            u64::MAX
        } else if self.s.seg[CS].attr & crate::ATTR_DB != 0 && self.pm() {
            0xffff_ffff
        } else {
            0xffff
        };
        let next = self.s.rip.wrapping_add(len) & ipm;
        let (sp0, fl0, rip0) = (self.s.regs[4], self.s.rflags, self.s.rip);
        self.cur_eip = rip0;
        let kind = e.uop.kind;
        if b.hooks & crate::mem::BLOCK_HOOKS != 0 && self.block_start {
            self.report_block_start(b);
        }
        if kind != Kind::Generic && !kind.lift_only() {
            let u = self.icache.e[idx].uop;
            return self.run_fast_chain(b, u, next, sp0, fl0, rip0);
        }
        let i = self.icache.ins[idx];
        let pc = self.cur_pc;
        let mut soft: Option<u8> = None;
        if let Err(e) = self.exec(b, &i, next, &mut soft) {
            self.s.regs[4] = sp0;
            self.s.rflags = fl0;
            self.s.rip = rip0;
            return Err(e);
        }
        self.s.icount += 1;
        if b.hooks & crate::mem::BLOCK_HOOKS != 0 && i.flow_control() != iced_x86::FlowControl::Next {
            self.report_block_end(b, pc);
        }
        if let Some(v) = soft {
            if let Err(e) = self.deliver(b, v, None, Event::Software) {
                // The gate could not be used (e.g. DPL < CPL): INT n faults instead of retiring.
                self.s.icount -= 1;
                self.s.rip = rip0;
                self.s.regs[4] = sp0;
                self.s.rflags = fl0;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Execute a pre-decoded instruction, then keep going through following pre-decoded
    /// instructions on the same code page without returning to the run loop, as long as nothing the
    /// run loop checks can change: no interrupt deliverable (fast forms never touch IF, the
    /// interrupt shadow or the pin), no single-step, no Platform call, `stop_at` not reached. Any
    /// other case (cache miss, generic instruction, page change) falls back to the normal path.
    #[inline(always)]
    fn run_fast_chain<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        mut u: crate::fast::Uop,
        mut next: u64,
        mut sp0: u64,
        mut fl0: u64,
        mut rip0: u64,
    ) -> Res<()> {
        let interrupt_possible = self.s.intr && self.flag(IF);
        let interrupt_possible = interrupt_possible || self.s.nmi_pending;
        // Breakpoints need the run loop between instructions (instruction breakpoints before,
        // data-breakpoint traps after each one).
        let chain =
            !interrupt_possible && !self.bp_active && !self.flag(crate::TF) && b.hooks & crate::mem::STEP_HOOKS == 0;
        loop {
            self.s.rip = next;
            if let Err(e) = self.exec_fast(b, &u) {
                self.s.regs[4] = sp0;
                self.s.rflags = fl0;
                self.s.rip = rip0;
                return Err(e);
            }
            self.s.icount += 1;
            if b.hooks & crate::mem::BLOCK_HOOKS != 0 && u.kind.ends_block() {
                self.report_block_end(b, self.cur_pc);
            }
            if !chain || b.touched || self.s.icount >= self.stop_at {
                return Ok(());
            }
            // With the translator on, block ends and instructions it cannot compile go back to
            // the run loop, so that the next instruction is a dispatch point (compiled code
            // runs there, or it counts toward compiling a block that starts there).
            if self.jit.is_some() && (u.kind.ends_block() || !u.liftable()) {
                return Ok(());
            }
            // Fast forms never change CS, so the mode of the first one holds for the chain.
            let eip = self.s.rip;
            let cs = &self.s.seg[CS];
            let ft = self.tlb.fetch_tag;
            let (lin, bits) = if u.long { (eip, 64u64) } else { (cs.base.wrapping_add(eip) & 0xffff_ffff, 32) };
            let same_page = if u.long {
                (ft & 0xf_ffff_ffff) == (lin & 0xffff_ffff_ffff) >> 12 && crate::canonical(eip)
            } else {
                (ft & 0xf_ffff) == lin >> 12 && eip <= u64::from(cs.limit)
            };
            if ft == 0 || !same_page {
                return Ok(());
            }
            let pa = self.tlb.fetch_ppage | (lin & 0xfff);
            let Some(idx) = self.icache.lookup(pa | (bits << 56), pa) else {
                return Ok(());
            };
            let e = &self.icache.e[idx];
            let len = u64::from(e.len);
            let end = eip.wrapping_add(len - 1);
            let fits = if u.long { crate::canonical(end) } else { end <= u64::from(cs.limit) };
            if e.uop.kind == Kind::Generic || e.uop.kind.lift_only() || !fits {
                return Ok(());
            }
            u = e.uop;
            self.cur_pc = lin;
            self.cur_eip = eip;
            next = if u.long { eip.wrapping_add(len) } else { (eip + len) & 0xffff_ffff };
            (sp0, fl0, rip0) = (self.s.regs[4], self.s.rflags, eip);
            if b.hooks & crate::mem::BLOCK_HOOKS != 0 && self.block_start {
                self.report_block_start(b);
            }
        }
    }

    /// The instruction at `cur_pc` starts a basic block: tell the observer.
    #[inline(never)]
    pub(crate) fn report_block_start<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>) {
        self.block_start = false;
        self.blocks += 1;
        if b.hooks & ailuro_bus::observe::hook::BEFORE_BLOCK != 0 {
            let v = self.view(self.cur_pc);
            b.obs.before_block(&v, b.ram);
        }
    }

    /// The control transfer at `pc` retired: the block ends, the next instruction starts one.
    #[inline(never)]
    fn report_block_end<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, pc: u64) {
        self.block_start = true;
        if b.hooks & ailuro_bus::observe::hook::AFTER_BLOCK != 0 {
            let v = self.view(self.lin_pc());
            b.obs.after_block(&v, b.ram, pc);
        }
    }

    fn exec<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        i: &Instruction,
        next: u64,
        soft: &mut Option<u8>,
    ) -> Res<()> {
        self.s.rip = next;
        let m = i.mnemonic();
        match m {
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => {
                let op = match m {
                    M::Add => Alu::Add,
                    M::Or => Alu::Or,
                    M::Adc => Alu::Adc,
                    M::Sbb => Alu::Sbb,
                    M::And | M::Test => Alu::And,
                    M::Sub => Alu::Sub,
                    M::Xor => Alu::Xor,
                    _ => Alu::Cmp,
                };
                let size = Self::op_size(i, 0);
                let a = self.rd_op(b, i, 0, size)?;
                let v = self.rd_op(b, i, 1, size)?;
                let r = self.alu(op, a, v, size);
                if op != Alu::Cmp && m != M::Test {
                    self.wr_op(b, i, 0, size, r)?;
                }
            }
            M::Inc | M::Dec => {
                let size = Self::op_size(i, 0);
                let a = self.rd_op(b, i, 0, size)?;
                let r = self.incdec(a, m == M::Dec, size);
                self.wr_op(b, i, 0, size, r)?;
            }
            M::Not => {
                let size = Self::op_size(i, 0);
                let a = self.rd_op(b, i, 0, size)?;
                self.wr_op(b, i, 0, size, !a & mask(size))?;
            }
            M::Neg => {
                let size = Self::op_size(i, 0);
                let a = self.rd_op(b, i, 0, size)?;
                let r = self.alu(Alu::Sub, 0, a, size);
                self.wr_op(b, i, 0, size, r)?;
            }
            M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shl | M::Sal | M::Shr | M::Sar => {
                let op = match m {
                    M::Rol => Shift::Rol,
                    M::Ror => Shift::Ror,
                    M::Rcl => Shift::Rcl,
                    M::Rcr => Shift::Rcr,
                    M::Shl | M::Sal => Shift::Shl,
                    M::Shr => Shift::Shr,
                    _ => Shift::Sar,
                };
                let size = Self::op_size(i, 0);
                let a = self.rd_op(b, i, 0, size)?;
                let c = self.rd_op(b, i, 1, 1)?;
                let r = self.shift(op, a, c, size);
                self.wr_op(b, i, 0, size, r)?;
            }
            M::Shld | M::Shrd => {
                let size = Self::op_size(i, 0);
                let a = self.rd_op(b, i, 0, size)?;
                let s = self.rd_op(b, i, 1, size)?;
                let c = self.rd_op(b, i, 2, 1)?;
                let r = self.shiftd(m == M::Shld, a, s, c, size);
                self.wr_op(b, i, 0, size, r)?;
            }
            M::Mov => self.exec_mov(b, i)?,
            M::Movzx | M::Movsx | M::Movsxd => {
                let dsz = Self::op_size(i, 0);
                let ssz = Self::op_size(i, 1);
                let v = self.rd_op(b, i, 1, ssz)?;
                let v = if m == M::Movzx { v } else { sext(v, ssz) as u64 & mask(dsz) };
                self.reg_set(i.op0_register(), v);
            }
            M::Lea => {
                let size = Self::op_size(i, 0);
                let a = self.ea(i);
                self.reg_set(i.op0_register(), a & mask(size));
            }
            M::Xchg => {
                let size = Self::op_size(i, 0);
                let a = self.rd_op(b, i, 0, size)?;
                let v = self.rd_op(b, i, 1, size)?;
                // The memory operand (if any) is op0: write it first so a fault leaves registers intact.
                self.wr_op(b, i, 0, size, v)?;
                self.wr_op(b, i, 1, size, a)?;
            }
            M::Xadd => {
                let size = Self::op_size(i, 0);
                let a = self.rd_op(b, i, 0, size)?;
                let v = self.rd_op(b, i, 1, size)?;
                let r = self.alu(Alu::Add, a, v, size);
                if i.op0_kind() == OpKind::Register {
                    // SRC <- DEST, then DEST <- sum: `xadd r, r` leaves the sum.
                    self.wr_op(b, i, 1, size, a)?;
                    self.wr_op(b, i, 0, size, r)?;
                } else {
                    // Memory first so that a fault leaves the register intact.
                    self.wr_op(b, i, 0, size, r)?;
                    self.wr_op(b, i, 1, size, a)?;
                }
            }
            M::Cmpxchg => {
                let size = Self::op_size(i, 0);
                let d = self.rd_op(b, i, 0, size)?;
                let acc = self.s.regs[0] & mask(size);
                self.alu(Alu::Cmp, acc, d, size);
                if acc == d {
                    let v = self.rd_op(b, i, 1, size)?;
                    self.wr_op(b, i, 0, size, v)?;
                } else {
                    // A memory destination is always written (with its old value), as a locked
                    // access does; a register destination is left untouched (also its upper
                    // half in 64-bit mode, as hardware does).
                    if i.op0_kind() == OpKind::Memory {
                        self.wr_op(b, i, 0, size, d)?;
                    }
                    self.gpr_write(0, size, d);
                }
            }
            M::Cmpxchg16b => self.exec_cmpxchg16b(b, i)?,
            M::Cmpxchg8b => {
                let off = self.ea(i);
                let seg = Self::mseg(i);
                let v = self.rd(b, seg, off, 8)?;
                let cmp = (self.s.regs[2] & 0xffff_ffff) << 32 | (self.s.regs[0] & 0xffff_ffff);
                if v == cmp {
                    let nv = (self.s.regs[1] & 0xffff_ffff) << 32 | (self.s.regs[3] & 0xffff_ffff);
                    self.wr(b, seg, off, 8, nv)?;
                    self.set_flag(ZF, true);
                } else {
                    self.wr(b, seg, off, 8, v)?;
                    self.s.regs[0] = v & 0xffff_ffff;
                    self.s.regs[2] = v >> 32;
                    self.set_flag(ZF, false);
                }
            }
            M::Bt | M::Bts | M::Btr | M::Btc => self.exec_bt(b, i, m)?,
            // TZCNT/LZCNT encodings (F3 0F BC/BD) execute as BSF/BSR on a CPU without BMI1/LZCNT,
            // which compilers rely on ("rep bsf").
            M::Bsf | M::Bsr | M::Tzcnt | M::Lzcnt => {
                let size = Self::op_size(i, 0);
                let v = self.rd_op(b, i, 1, size)? & mask(size);
                if v == 0 {
                    self.set_flag(ZF, true);
                } else {
                    let r = if matches!(m, M::Bsf | M::Tzcnt) { v.trailing_zeros() } else { 63 - v.leading_zeros() };
                    self.set_flag(ZF, false);
                    self.reg_set(i.op0_register(), u64::from(r));
                }
            }
            M::Bswap => {
                let r = i.op0_register();
                let v = self.reg_get(r);
                let nv = match reg_size(r) {
                    4 => u64::from((v as u32).swap_bytes()),
                    8 => v.swap_bytes(),
                    // BSWAP of a 16-bit register is undefined; Intel and AMD give 0.
                    _ => 0,
                };
                self.reg_set(r, nv);
            }
            M::Mul | M::Imul if i.op_count() == 1 => {
                let size = Self::op_size(i, 0);
                let v = self.rd_op(b, i, 0, size)?;
                self.mul1(v, size, m == M::Imul);
            }
            M::Imul => {
                let size = Self::op_size(i, 0);
                let (a, v) = if i.op_count() == 2 {
                    (self.rd_op(b, i, 0, size)?, self.rd_op(b, i, 1, size)?)
                } else {
                    (self.rd_op(b, i, 1, size)?, self.rd_op(b, i, 2, size)?)
                };
                let full = i128::from(sext(a, size)) * i128::from(sext(v, size));
                let r = (full as u64) & mask(size);
                let ovf = i128::from(sext(r, size)) != full;
                let f = Self::szp(r, size) | if ovf { CF | OF } else { 0 };
                self.set_status(f);
                self.reg_set(i.op0_register(), r);
            }
            M::Div | M::Idiv => {
                let size = Self::op_size(i, 0);
                let v = self.rd_op(b, i, 0, size)?;
                self.div1(v, size, m == M::Idiv)?;
            }
            M::Cbw => self.gpr_write(0, 2, sext(self.s.regs[0], 1) as u64),
            M::Cwde => self.gpr_write(0, 4, sext(self.s.regs[0], 2) as u64),
            M::Cdqe => self.gpr_write(0, 8, sext(self.s.regs[0], 4) as u64),
            M::Cqo => {
                let v = if self.s.regs[0] >> 63 != 0 { u64::MAX } else { 0 };
                self.gpr_write(2, 8, v);
            }
            M::Cwd => {
                let v = if self.s.regs[0] & 0x8000 != 0 { 0xffff } else { 0 };
                self.gpr_write(2, 2, v);
            }
            M::Cdq => {
                let v = if self.s.regs[0] & 0x8000_0000 != 0 { 0xffff_ffff } else { 0 };
                self.gpr_write(2, 4, v);
            }
            M::Lahf => {
                let v = (self.s.rflags & (SF | ZF | AF | PF | CF)) | 2;
                self.s.regs[0] = (self.s.regs[0] & !0xff00) | (v << 8);
            }
            M::Sahf => {
                let ah = (self.s.regs[0] >> 8) & 0xff;
                let keep = self.s.rflags & !(SF | ZF | AF | PF | CF);
                self.s.rflags = keep | (ah & (SF | ZF | AF | PF | CF));
            }
            M::Clc => self.set_flag(CF, false),
            M::Stc => self.set_flag(CF, true),
            M::Cmc => self.s.rflags ^= CF,
            M::Cld => self.set_flag(DF, false),
            M::Std => self.set_flag(DF, true),
            M::Cli => {
                if self.pm() && self.s.cpl > self.iopl() {
                    return exc(13, 0);
                }
                self.set_flag(IF, false);
            }
            M::Sti => {
                if self.pm() && self.s.cpl > self.iopl() {
                    return exc(13, 0);
                }
                if !self.flag(IF) {
                    self.s.shadow = true;
                }
                self.set_flag(IF, true);
            }
            // ENDBR32/64 are NOPs on CPUs without CET.
            M::Nop
            | M::Endbr32
            | M::Endbr64
            | M::Pause
            | M::Lfence
            | M::Sfence
            | M::Mfence
            | M::Clflush
            | M::Prefetchnta
            | M::Prefetcht0
            | M::Prefetcht1
            | M::Prefetcht2
            | M::Prefetchw
            | M::Reservednop => {}
            M::Wbinvd | M::Invd => self.need_cpl0()?,
            M::Invlpg => {
                self.need_cpl0()?;
                let off = self.ea(i);
                let seg = Self::mseg(i);
                let lin = if self.long64() {
                    if seg >= SegReg::Fs as usize {
                        self.s.seg[seg].base.wrapping_add(off)
                    } else {
                        off
                    }
                } else {
                    self.s.seg[seg].base.wrapping_add(off) & 0xffff_ffff
                };
                self.tlb.flush_page(lin);
            }
            M::Push => {
                let size = (-i.stack_pointer_increment()) as u32;
                let v = if i.op0_kind() == OpKind::Register {
                    self.reg_get(i.op0_register())
                } else {
                    self.rd_op(b, i, 0, size)?
                };
                self.push(b, v & mask(size), size)?;
            }
            M::Pop => {
                let size = i.stack_pointer_increment() as u32;
                let v = self.peek(b, 0, size)?;
                let sp = self.s.regs[4];
                self.set_sp(sp.wrapping_add(u64::from(size)));
                if i.op0_kind() == OpKind::Register {
                    let r = i.op0_register();
                    if (Register::ES..=Register::GS).contains(&r) {
                        let seg = seg_index(r);
                        if seg == CS {
                            return ex(6);
                        }
                        self.load_seg(b, seg, v as u16)?;
                        if seg == SS {
                            self.s.shadow = true;
                            self.s.ss_shadow = true;
                        }
                    } else {
                        self.reg_set(r, v);
                    }
                } else {
                    // The address is computed with ESP already incremented (SDM POP).
                    self.wr_op(b, i, 0, size, v)?;
                }
            }
            M::Pusha | M::Pushad => {
                let size = if m == M::Pushad { 4 } else { 2 };
                let sp = self.s.regs[4];
                for r in 0..8 {
                    let v = if r == 4 { sp } else { self.s.regs[r] };
                    self.push(b, v & mask(size), size)?;
                }
            }
            M::Popa | M::Popad => {
                let size = if m == M::Popad { 4 } else { 2 };
                let mut vals = [0u64; 8];
                for (k, v) in vals.iter_mut().enumerate() {
                    *v = self.peek(b, (k as u64) * u64::from(size), size)?;
                }
                for (k, v) in vals.iter().enumerate() {
                    let r = 7 - k;
                    if r != 4 {
                        self.gpr_write(r, size, *v);
                    }
                }
                let sp = self.s.regs[4];
                self.set_sp(sp.wrapping_add(8 * u64::from(size)));
            }
            M::Pushf | M::Pushfd | M::Pushfq => {
                let size = match m {
                    M::Pushfq => 8,
                    M::Pushfd => 4,
                    _ => 2,
                };
                self.vm86_iopl_check()?;
                // VM and RF read as zero in the pushed image.
                let v = self.s.rflags & !(crate::VM | crate::RF);
                self.push(b, v & mask(size), size)?;
            }
            M::Popf | M::Popfd | M::Popfq => {
                let size = match m {
                    M::Popfq => 8,
                    M::Popfd => 4,
                    _ => 2,
                };
                // In VM86 (IOPL = 3 past this check) CPL 3 keeps IOPL, VM and RF unchanged.
                self.vm86_iopl_check()?;
                let v = self.pop(b, size)?;
                self.write_flags(v, size);
            }
            M::Enter => self.exec_enter(b, i)?,
            M::Leave => {
                let size = match i.code() {
                    Code::Leavew => 2,
                    Code::Leaveq => 8,
                    _ => 4,
                };
                let m2 = self.sp_mask();
                let bp = self.s.regs[5] & m2;
                let v = self.rd(b, SS, bp, size)?;
                self.set_sp(bp + u64::from(size));
                self.gpr_write(5, size, v);
            }
            M::Call => self.exec_call(b, i, next)?,
            M::Jmp => match i.op0_kind() {
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                    let t = self.rel_target(i);
                    self.jump_near(t)?;
                }
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    let size = if i.op0_kind() == OpKind::FarBranch16 { 2 } else { 4 };
                    let off = if size == 2 { u64::from(i.far_branch16()) } else { u64::from(i.far_branch32()) };
                    self.far_jump(b, i.far_branch_selector(), off, false, size, next)?;
                }
                _ if matches!(i.code(), Code::Jmp_m1616 | Code::Jmp_m1632 | Code::Jmp_m1664) => {
                    let size = match i.code() {
                        Code::Jmp_m1616 => 2,
                        Code::Jmp_m1664 => 8,
                        _ => 4,
                    };
                    let (sel, off) = self.read_farptr(b, i, size)?;
                    self.far_jump(b, sel, off, false, size, next)?;
                }
                _ => {
                    let size = Self::op_size(i, 0);
                    let t = self.rd_op(b, i, 0, size)?;
                    self.jump_near(t)?;
                }
            },
            M::Ret => {
                let size = match i.code() {
                    Code::Retnw | Code::Retnw_imm16 => 2,
                    Code::Retnq | Code::Retnq_imm16 => 8,
                    _ => 4,
                };
                let imm = if i.op_count() == 1 { u64::from(i.immediate16()) } else { 0 };
                let t = self.peek(b, 0, size)?;
                self.jump_near(t)?;
                let sp = self.s.regs[4];
                self.set_sp(sp.wrapping_add(u64::from(size) + imm));
            }
            M::Retf => {
                let size = match i.code() {
                    Code::Retfw | Code::Retfw_imm16 => 2,
                    Code::Retfq | Code::Retfq_imm16 => 8,
                    _ => 4,
                };
                let imm = if i.op_count() == 1 { u64::from(i.immediate16()) } else { 0 };
                self.far_ret(b, size, imm)?;
            }
            M::Iret | M::Iretd | M::Iretq => {
                let size = match m {
                    M::Iretq => 8,
                    M::Iretd => 4,
                    _ => 2,
                };
                self.iret(b, size)?;
            }
            M::Loop | M::Loope | M::Loopne | M::Jcxz | M::Jecxz | M::Jrcxz => {
                let am = counter_mask(i.code());
                let cx0 = self.s.regs[1];
                let cx = cx0 & am;
                let taken = if matches!(m, M::Jcxz | M::Jecxz | M::Jrcxz) {
                    cx == 0
                } else {
                    let ncx = cx.wrapping_sub(1) & am;
                    self.s.regs[1] = addr_update(cx0, ncx, am);
                    ncx != 0
                        && match m {
                            M::Loope => self.flag(ZF),
                            M::Loopne => !self.flag(ZF),
                            _ => true,
                        }
                };
                if taken {
                    let t = self.rel_target(i);
                    if let Err(e) = self.jump_near(t) {
                        // A faulting LOOP leaves ECX unchanged.
                        self.s.regs[1] = cx0;
                        return Err(e);
                    }
                }
            }
            M::Int | M::Int3 | M::Into | M::Int1 => {
                if m == M::Int {
                    // Only INT n (CD ib, also CD 03) is IOPL-sensitive in VM86; INT3, INTO and
                    // INT1 go to the IDT, where the gate DPL decides (SDM INT n pseudocode).
                    self.vm86_iopl_check()?;
                }
                let v = match m {
                    M::Int => i.immediate8(),
                    M::Int3 => 3,
                    M::Int1 => 1,
                    _ => {
                        if !self.flag(OF) {
                            return Ok(());
                        }
                        4
                    }
                };
                *soft = Some(v);
            }
            M::Ud0 | M::Ud1 | M::Ud2 => return ex(6),
            M::Hlt => {
                self.need_cpl0()?;
                self.s.halted = true;
            }
            M::Cpuid => self.exec_cpuid(),
            M::Rdtsc => {
                if self.s.cr4 & CR4_TSD != 0 && self.pm() && self.s.cpl != 0 {
                    return exc(13, 0);
                }
                let t = self.read_tsc(b);
                self.s.regs[0] = t & 0xffff_ffff;
                self.s.regs[2] = t >> 32;
            }
            M::Rdmsr => {
                self.need_cpl0()?;
                let v = self.rdmsr(b)?;
                self.s.regs[0] = v & 0xffff_ffff;
                self.s.regs[2] = v >> 32;
            }
            M::Wrmsr => {
                self.need_cpl0()?;
                self.wrmsr(b)?;
            }
            M::Sysenter => self.sysenter()?,
            M::Sysexit | M::Sysexitq => self.sysexit(m == M::Sysexitq)?,
            M::Syscall => self.syscall()?,
            M::Sysret | M::Sysretq => self.sysret(m == M::Sysretq)?,
            M::Swapgs => self.swapgs()?,
            M::Lgdt | M::Lidt => {
                self.need_cpl0()?;
                let off = self.ea(i);
                let seg = Self::mseg(i);
                let limit = self.rd(b, seg, off, 2)? as u32;
                let wide = matches!(i.code(), Code::Lgdt_m1664 | Code::Lidt_m1664);
                let mut base = self.rd(b, seg, off.wrapping_add(2), if wide { 8 } else { 4 })?;
                if matches!(i.code(), Code::Lgdt_m1632_16 | Code::Lidt_m1632_16) {
                    base &= 0xff_ffff;
                }
                if wide && !crate::canonical(base) {
                    return exc(13, 0);
                }
                let t = crate::DescTable { base, limit };
                if m == M::Lgdt {
                    self.s.gdtr = t;
                } else {
                    self.s.idtr = t;
                }
            }
            M::Sgdt | M::Sidt => {
                let off = self.ea(i);
                let seg = Self::mseg(i);
                let t = if m == M::Sgdt { self.s.gdtr } else { self.s.idtr };
                let wide = matches!(i.code(), Code::Sgdt_m1664 | Code::Sidt_m1664);
                let base = if matches!(i.code(), Code::Sgdt_m1632_16 | Code::Sidt_m1632_16) {
                    t.base & 0xff_ffff
                } else if wide {
                    t.base
                } else {
                    t.base & 0xffff_ffff
                };
                let bsize = if wide { 8 } else { 4 };
                self.probe_write(b, seg, off, 2 + bsize)?;
                self.wr(b, seg, off, 2, u64::from(t.limit))?;
                self.wr(b, seg, off.wrapping_add(2), bsize, base)?;
            }
            M::Lldt | M::Ltr => {
                self.need_pm()?;
                self.need_cpl0()?;
                let sel = self.rd_op(b, i, 0, 2)? as u16;
                if m == M::Lldt {
                    self.lldt(b, sel)?;
                } else {
                    self.ltr(b, sel)?;
                }
            }
            M::Sldt | M::Str => {
                self.need_pm()?;
                let v = if m == M::Sldt { self.s.ldtr.selector } else { self.s.tr.selector };
                let size = Self::op_size(i, 0);
                self.wr_op(b, i, 0, size, u64::from(v))?;
            }
            M::Smsw => {
                let size = Self::op_size(i, 0);
                self.wr_op(b, i, 0, size, self.s.cr0 & mask(size))?;
            }
            M::Lmsw => {
                self.need_cpl0()?;
                let v = self.rd_op(b, i, 0, 2)?;
                // LMSW cannot clear PE.
                let bits = CR0_PE | CR0_MP | CR0_EM | CR0_TS;
                let nv = (self.s.cr0 & !(CR0_MP | CR0_EM | CR0_TS)) | (v & bits);
                self.write_cr(b, 0, nv)?;
            }
            M::Clts => {
                self.need_cpl0()?;
                self.s.cr0 &= !CR0_TS;
            }
            M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => {
                let size = Self::op_size(i, 0);
                let (sel, off) = self.read_farptr(b, i, size)?;
                let seg = match m {
                    M::Lds => DS,
                    M::Les => ES,
                    M::Lfs => SegReg::Fs as usize,
                    M::Lgs => SegReg::Gs as usize,
                    _ => SS,
                };
                self.load_seg(b, seg, sel)?;
                self.reg_set(i.op0_register(), off);
            }
            M::Lar | M::Lsl | M::Verr | M::Verw => self.exec_lar(b, i, m)?,
            M::Arpl => {
                self.need_pm()?;
                let d = self.rd_op(b, i, 0, 2)?;
                let s = self.reg_get(i.op1_register());
                if d & 3 < s & 3 {
                    self.wr_op(b, i, 0, 2, (d & !3) | (s & 3))?;
                    self.set_flag(ZF, true);
                } else {
                    self.set_flag(ZF, false);
                }
            }
            M::Bound => {
                let size = reg_size(i.op0_register());
                let idx = sext(self.reg_get(i.op0_register()), size);
                let off = self.ea(i);
                let seg = Self::mseg(i);
                let lo = sext(self.rd(b, seg, off, size)?, size);
                let hi = sext(self.rd(b, seg, off.wrapping_add(u64::from(size)), size)?, size);
                if idx < lo || idx > hi {
                    return ex(5);
                }
            }
            M::Xlatb => {
                let off = self.ea(i);
                let v = self.rd(b, Self::mseg(i), off, 1)?;
                self.gpr_write(0, 1, v);
            }
            M::Daa | M::Das => self.exec_daa_das(m == M::Das),
            M::Aaa | M::Aas => {
                let al = self.s.regs[0] & 0xff;
                if al & 0xf > 9 || self.flag(AF) {
                    let ax = self.s.regs[0] & 0xffff;
                    let nax = if m == M::Aaa { ax.wrapping_add(0x106) } else { ax.wrapping_sub(6).wrapping_sub(0x100) };
                    self.gpr_write(0, 2, nax);
                    self.set_flag(AF, true);
                    self.set_flag(CF, true);
                } else {
                    self.set_flag(AF, false);
                    self.set_flag(CF, false);
                }
                let al = self.s.regs[0] & 0x0f;
                self.gpr_write(0, 1, al);
                let f = (self.s.rflags & (AF | CF)) | Self::szp(al, 1);
                self.set_status(f);
            }
            M::Aam => {
                let base = u64::from(i.immediate8());
                if base == 0 {
                    return ex(0);
                }
                let al = self.s.regs[0] & 0xff;
                let (ah, nal) = (al / base, al % base);
                self.gpr_write(0, 2, (ah << 8) | nal);
                self.set_status(Self::szp(nal, 1));
            }
            M::Aad => {
                let base = u64::from(i.immediate8());
                let al = self.s.regs[0] & 0xff;
                let ah = (self.s.regs[0] >> 8) & 0xff;
                let nal = (al + ah * base) & 0xff;
                self.gpr_write(0, 2, nal);
                self.set_status(Self::szp(nal, 1));
            }
            M::Salc => {
                let v = if self.flag(CF) { 0xff } else { 0 };
                self.gpr_write(0, 1, v);
            }
            M::In | M::Out => {
                let (port, size) = if m == M::In {
                    let p = if i.op1_kind() == OpKind::Register {
                        self.s.regs[2] & 0xffff
                    } else {
                        u64::from(i.immediate8())
                    };
                    (p as u16, reg_size(i.op0_register()))
                } else {
                    let p = if i.op0_kind() == OpKind::Register {
                        self.s.regs[2] & 0xffff
                    } else {
                        u64::from(i.immediate8())
                    };
                    (p as u16, reg_size(i.op1_register()))
                };
                self.io_check(b, port, size)?;
                let at = self.at();
                b.touched = true;
                if m == M::In {
                    let v = b.p.io_read(at, port, size as u8);
                    self.gpr_write(0, size, u64::from(v));
                } else {
                    let v = self.s.regs[0] & mask(size);
                    b.p.io_write(at, port, size as u8, v as u32);
                }
            }
            M::Movsb
            | M::Movsw
            | M::Movsd
            | M::Movsq
            | M::Stosb
            | M::Stosw
            | M::Stosd
            | M::Stosq
            | M::Lodsb
            | M::Lodsw
            | M::Lodsd
            | M::Lodsq
            | M::Cmpsb
            | M::Cmpsw
            | M::Cmpsd
            | M::Cmpsq
            | M::Scasb
            | M::Scasw
            | M::Scasd
            | M::Scasq
            | M::Insb
            | M::Insw
            | M::Insd
            | M::Outsb
            | M::Outsw
            | M::Outsd => {
                if (m == M::Movsd && i.code() != Code::Movsd_m32_m32)
                    || (m == M::Cmpsd && i.code() != Code::Cmpsd_m32_m32)
                {
                    // SSE2 MOVSD/CMPSD share the string instructions' mnemonics.
                    return if crate::sse::is_simd(i) { self.exec_simd(b, i) } else { ex(6) };
                }
                self.exec_string(b, i, m)?;
            }
            M::Wait | M::Fxsave | M::Fxrstor => return self.exec_fpu(b, i),
            _ => {
                if crate::fpu::is_x87(i) {
                    return self.exec_fpu(b, i);
                }
                if let Some(cc) = Self::jcc_like(i) {
                    return self.exec_cc(b, i, cc);
                }
                if crate::sse::is_simd(i) {
                    return self.exec_simd(b, i);
                }
                return ex(6);
            }
        }
        Ok(())
    }

    fn jcc_like(i: &Instruction) -> Option<iced_x86::ConditionCode> {
        let cc = i.condition_code();
        if cc == iced_x86::ConditionCode::None {
            None
        } else {
            Some(cc)
        }
    }

    /// Jcc, SETcc, CMOVcc.
    fn exec_cc<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        i: &Instruction,
        cc: iced_x86::ConditionCode,
    ) -> Res<()> {
        let t = self.cond(cc);
        if i.is_jcc_short_or_near() {
            if t {
                let tg = self.rel_target(i);
                self.jump_near(tg)?;
            }
            return Ok(());
        }
        // SETcc has one operand; CMOVcc two with a general-purpose destination.
        if i.op_count() == 1 {
            return self.wr_op(b, i, 0, 1, u64::from(t));
        }
        if i.op_count() == 2 && (1..=68).contains(&(i.op0_register() as u32)) {
            let size = Self::op_size(i, 0);
            // The source is read (and may fault) even if the condition is false.
            let v = self.rd_op(b, i, 1, size)?;
            if t {
                self.reg_set(i.op0_register(), v);
            } else if size == 4 && self.long64() {
                // A 32-bit CMOVcc clears the upper half even when it does not move (SDM).
                let r = i.op0_register();
                self.reg_set(r, self.reg_get(r));
            }
            return Ok(());
        }
        ex(6)
    }

    fn exec_mov<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction) -> Res<()> {
        match i.code() {
            Code::Mov_r32_cr | Code::Mov_r64_cr => {
                self.need_cpl0()?;
                let n = i.op1_register() as u32 - Register::CR0 as u32;
                let v = match n {
                    0 => self.s.cr0,
                    2 => self.s.cr2,
                    3 => self.s.cr3,
                    4 => self.s.cr4,
                    8 if self.long64() => self.read_cr8(b),
                    _ => return ex(6),
                };
                self.reg_set(i.op0_register(), v);
                Ok(())
            }
            Code::Mov_cr_r32 | Code::Mov_cr_r64 => {
                self.need_cpl0()?;
                let n = i.op0_register() as u32 - Register::CR0 as u32;
                let v = self.reg_get(i.op1_register());
                if n == 8 && self.long64() {
                    return self.write_cr8(b, v);
                }
                let old = self.asid();
                self.write_cr(b, n, v)?;
                self.note_asid(b, old);
                Ok(())
            }
            Code::Mov_r32_dr | Code::Mov_dr_r32 | Code::Mov_r64_dr | Code::Mov_dr_r64 => self.exec_mov_dr(b, i),
            _ => {
                let r0 = if i.op0_kind() == OpKind::Register { i.op0_register() } else { Register::None };
                if (Register::ES..=Register::GS).contains(&r0) {
                    let seg = seg_index(r0);
                    if seg == CS {
                        return ex(6);
                    }
                    let v = self.rd_op(b, i, 1, 2)?;
                    self.load_seg(b, seg, v as u16)?;
                    if seg == SS {
                        self.s.shadow = true;
                        self.s.ss_shadow = true;
                    }
                    return Ok(());
                }
                let size = Self::op_size(i, 0);
                let v = self.rd_op(b, i, 1, size)?;
                self.wr_op(b, i, 0, size, v)
            }
        }
    }

    /// The local APIC's task-priority register (offset 0x80 of the APIC page that IA32_APIC_BASE
    /// names), which CR8 mirrors: CR8[3:0] = TPR[7:4] (SDM Vol. 3 10.8.6.1). The CPU reaches
    /// the APIC through the Platform like any MMIO access, so the read is recorded.
    fn tpr_addr(&self) -> u64 {
        (self.s.apic_base & !0xfff) + 0x80
    }

    fn read_cr8<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>) -> u64 {
        let at = self.at();
        b.touched = true;
        let tpr = b.p.mmio_read(at, self.tpr_addr(), 4);
        (tpr >> 4) & 0xf
    }

    fn write_cr8<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, v: u64) -> Res<()> {
        // Bits 63:4 are reserved.
        if v >> 4 != 0 {
            return exc(13, 0);
        }
        let at = self.at();
        b.touched = true;
        b.p.mmio_write(at, self.tpr_addr(), 4, v << 4);
        Ok(())
    }

    pub(crate) fn write_cr<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, n: u32, v: u64) -> Res<()> {
        // Outside 64-bit mode only 32 bits are written; in 64-bit mode the upper halves of CR0
        // and CR4 are reserved (#GP) and CR3 holds a physical address below MAXPHYADDR.
        let v = if self.long64() { v } else { v & 0xffff_ffff };
        if n != 3 && n != 2 && v >> 32 != 0 {
            return exc(13, 0);
        }
        match n {
            0 => {
                if v & CR0_PG != 0 && v & CR0_PE == 0 {
                    return exc(13, 0);
                }
                if v & crate::CR0_NW != 0 && v & crate::CR0_CD == 0 {
                    return exc(13, 0);
                }
                let supported = 0xe005_003f;
                let nv = (v & supported) | crate::CR0_ET;
                let old = self.s.cr0;
                // Entering long mode (SDM Vol. 3 10.8.5): turning paging on with EFER.LME=1
                // needs CR4.PAE and activates IA-32e mode (EFER.LMA). Turning it off in IA-32e
                // mode is allowed only from compatibility mode and leaves it.
                let enter_long = nv & CR0_PG != 0 && old & CR0_PG == 0 && self.s.efer & crate::EFER_LME != 0;
                let leave_long = nv & CR0_PG == 0 && old & CR0_PG != 0 && self.lma();
                if enter_long && (self.s.cr4 & CR4_PAE == 0 || self.s.seg[CS].attr & crate::ATTR_L != 0) {
                    return exc(13, 0);
                }
                if leave_long && self.long64() {
                    return exc(13, 0);
                }
                // SDM Vol. 3 4.4.1: with PAE, a MOV to CR0 that changes PG, CD or NW while
                // paging ends up enabled reloads the PDPTEs (and faults before any change);
                // 4-level paging has no PDPTE registers.
                let reload = CR0_PG | crate::CR0_CD | crate::CR0_NW;
                let long_after = (self.lma() || enter_long) && !leave_long;
                if nv & CR0_PG != 0 && self.s.cr4 & CR4_PAE != 0 && (old ^ nv) & reload != 0 && !long_after {
                    self.load_pdptes(b, self.s.cr3)?;
                }
                if enter_long {
                    self.s.efer |= crate::EFER_LMA;
                }
                if leave_long {
                    self.s.efer &= !crate::EFER_LMA;
                }
                self.s.cr0 = nv;
                if (old ^ nv) & (CR0_PG | CR0_WP | CR0_PE) != 0 {
                    self.tlb.flush_all();
                }
                if nv & CR0_PE == 0 {
                    self.s.cpl = 0;
                }
            }
            2 => self.s.cr2 = v,
            3 => {
                if v & crate::mem::PAE_RSVD != 0 {
                    return exc(13, 0);
                }
                if self.s.cr0 & CR0_PG != 0 && self.s.cr4 & CR4_PAE != 0 && !self.lma() {
                    self.load_pdptes(b, v)?;
                }
                self.s.cr3 = v;
                if self.s.cr4 & CR4_PGE != 0 {
                    self.tlb.flush_non_global();
                } else {
                    self.tlb.flush_all();
                }
            }
            4 => {
                // DE: debug extensions (I/O breakpoints, DR4/DR5 #UD), see debug.rs.
                let known =
                    CR4_TSD | crate::CR4_DE | CR4_PSE | CR4_PAE | CR4_PGE | crate::CR4_OSFXSR | crate::CR4_OSXMMEXCPT;
                if v & !known != 0 {
                    return exc(13, 0);
                }
                // IA-32e mode needs PAE.
                if self.lma() && v & CR4_PAE == 0 {
                    return exc(13, 0);
                }
                // SDM Vol. 3 4.4.1: changing PAE, PGE or PSE with paging on and PAE (then) set
                // reloads the PDPTEs (not in IA-32e mode: 4-level paging has none).
                if self.s.cr0 & CR0_PG != 0
                    && v & CR4_PAE != 0
                    && !self.lma()
                    && (self.s.cr4 ^ v) & (CR4_PAE | CR4_PGE | CR4_PSE) != 0
                {
                    self.load_pdptes(b, self.s.cr3)?;
                }
                self.s.cr4 = v;
                self.tlb.flush_all();
            }
            _ => return ex(6),
        }
        Ok(())
    }

    fn read_farptr<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, size: u32) -> Res<(u16, u64)> {
        if i.op_kind(i.op_count() - 1) != OpKind::Memory {
            return ex(6);
        }
        let off = self.ea(i);
        let seg = Self::mseg(i);
        let o = self.rd(b, seg, off, size)?;
        let sel = self.rd(b, seg, off.wrapping_add(u64::from(size)), 2)? as u16;
        Ok((sel, o))
    }

    fn exec_call<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, next: u64) -> Res<()> {
        match i.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                let size = match i.op0_kind() {
                    OpKind::NearBranch16 => 2,
                    OpKind::NearBranch64 => 8,
                    _ => 4,
                };
                let t = self.rel_target(i);
                self.push(b, next, size)?;
                self.jump_near(t)
            }
            OpKind::FarBranch16 | OpKind::FarBranch32 => {
                let size = if i.op0_kind() == OpKind::FarBranch16 { 2 } else { 4 };
                let off = if size == 2 { u64::from(i.far_branch16()) } else { u64::from(i.far_branch32()) };
                self.far_jump(b, i.far_branch_selector(), off, true, size, next)
            }
            _ if matches!(i.code(), Code::Call_m1616 | Code::Call_m1632 | Code::Call_m1664) => {
                let size = match i.code() {
                    Code::Call_m1616 => 2,
                    Code::Call_m1664 => 8,
                    _ => 4,
                };
                let (sel, off) = self.read_farptr(b, i, size)?;
                self.far_jump(b, sel, off, true, size, next)
            }
            _ => {
                let size = Self::op_size(i, 0);
                let t = self.rd_op(b, i, 0, size)?;
                self.push(b, next, size)?;
                self.jump_near(t)
            }
        }
    }

    /// ENTER, following the SDM/i386 pseudo-code and Bochs where the SDM is terse:
    /// * pushes use the stack-address size (SS.B) for SP/ESP and the operand size for the data;
    /// * FrameTemp is the *full* ESP after pushing EBP when the operand size is 32 (even on a
    ///   16-bit stack, where the push moved only SP), SP when it is 16; EBP/BP <- FrameTemp;
    /// * the nesting loop reads the display through EBP (32-bit stack) or BP (16-bit stack),
    ///   stepping by the operand size;
    /// * the final `- AllocSize` applies to ESP or SP by stack-address size (i386 manual);
    /// * before anything is committed the processor checks that the final stack pointer is
    ///   writable (#SS or #PF for an operand-size access there), so the whole instruction faults
    ///   atomically: every read, every push slot and the final position are checked first, and
    ///   memory and registers are written only when nothing can fault any more.
    fn exec_enter<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction) -> Res<()> {
        let size: u32 = match i.code() {
            Code::Enterw_imm16_imm8 => 2,
            Code::Enterq_imm16_imm8 => 8,
            _ => 4,
        };
        let sz = u64::from(size);
        let alloc = u64::from(i.immediate16());
        let level = usize::from(i.immediate8_2nd() & 31);
        let spm = self.sp_mask();
        let (esp0, ebp0) = (self.s.regs[4], self.s.regs[5]);
        // Values to push, in order: old (E)BP, level-1 display entries, FrameTemp.
        let mut vals = [0u64; 33];
        let mut n = 0;
        vals[n] = ebp0 & mask(size);
        n += 1;
        let sp_after_bp = esp0.wrapping_sub(sz) & spm;
        let frame = match size {
            4 => ((esp0 & !spm) | sp_after_bp) & 0xffff_ffff,
            8 => sp_after_bp,
            _ => sp_after_bp & 0xffff,
        };
        if level > 0 {
            let mut bp = ebp0 & spm;
            for _ in 1..level {
                bp = bp.wrapping_sub(sz) & spm;
                vals[n] = self.rd(b, SS, bp, size)?;
                n += 1;
            }
            vals[n] = frame;
            n += 1;
        }
        let mut sp = esp0 & spm;
        for _ in 0..n {
            sp = sp.wrapping_sub(sz) & spm;
            self.probe_write(b, SS, sp, size)?;
        }
        let final_sp = sp.wrapping_sub(alloc) & spm;
        self.probe_write(b, SS, final_sp, size)?;
        let mut sp = esp0 & spm;
        for v in &vals[..n] {
            sp = sp.wrapping_sub(sz) & spm;
            self.wr(b, SS, sp, size, *v)?;
        }
        self.gpr_write(5, size, frame);
        self.set_sp(final_sp);
        Ok(())
    }

    fn exec_bt<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, m: M) -> Res<()> {
        let size = Self::op_size(i, 0);
        let bits = u64::from(size * 8);
        let (val, bit, mem) = if i.op0_kind() == OpKind::Memory {
            let mut off = self.ea(i);
            let raw = self.rd_op(b, i, 1, size)?;
            let bit = if i.op1_kind() == OpKind::Register {
                // A register bit offset addresses memory beyond the operand (signed).
                let so = sext(raw, size);
                off = off.wrapping_add(((so >> (size * 8).trailing_zeros()) * i64::from(size)) as u64);
                off &= Self::addr_size_mask(i);
                (raw & (bits - 1)) as u32
            } else {
                (raw & (bits - 1)) as u32
            };
            let v = self.rd(b, Self::mseg(i), off, size)?;
            (v, bit, Some(off))
        } else {
            let v = self.reg_get(i.op0_register());
            let raw = self.rd_op(b, i, 1, size)?;
            (v, (raw & (bits - 1)) as u32, None)
        };
        let cf = (val >> bit) & 1 != 0;
        let nv = match m {
            M::Bts => val | (1 << bit),
            M::Btr => val & !(1 << bit),
            M::Btc => val ^ (1 << bit),
            _ => val,
        };
        if m != M::Bt {
            match mem {
                Some(off) => self.wr(b, Self::mseg(i), off, size, nv)?,
                None => self.reg_set(i.op0_register(), nv),
            }
        }
        self.set_flag(CF, cf);
        Ok(())
    }

    fn mul1(&mut self, v: u64, size: u32, signed: bool) {
        let m = mask(size);
        let a = self.s.regs[0] & m;
        let v = v & m;
        let (lo, hi, ovf) = if signed {
            let full = i128::from(sext(a, size)) * i128::from(sext(v, size));
            let lo = (full as u64) & m;
            let hi = ((full >> (size * 8)) as u64) & m;
            (lo, hi, i128::from(sext(lo, size)) != full)
        } else {
            let full = u128::from(a) * u128::from(v);
            let lo = (full as u64) & m;
            let hi = ((full >> (size * 8)) as u64) & m;
            (lo, hi, hi != 0)
        };
        match size {
            1 => self.gpr_write(0, 2, (hi << 8) | lo),
            _ => {
                self.gpr_write(0, size, lo);
                self.gpr_write(2, size, hi);
            }
        }
        self.set_status(Self::szp(lo, size) | if ovf { CF | OF } else { 0 });
    }

    fn div1(&mut self, v: u64, size: u32, signed: bool) -> Res<()> {
        let m = mask(size);
        let v = v & m;
        if v == 0 {
            return ex(0);
        }
        let bits = size * 8;
        let dividend: u128 = if size == 1 {
            u128::from(self.s.regs[0] & 0xffff)
        } else {
            (u128::from(self.s.regs[2] & m) << bits) | u128::from(self.s.regs[0] & m)
        };
        let (q, r) = if signed {
            let sh = 128 - 2 * bits;
            let dd = ((dividend << sh) as i128) >> sh;
            let dv = i128::from(sext(v, size));
            // i128::MIN / -1 (a 64-bit IDIV of 2^127 by -1) overflows: #DE like any other
            // quotient out of range.
            let (Some(q), Some(r)) = (dd.checked_div(dv), dd.checked_rem(dv)) else {
                return ex(0);
            };
            let max = (1i128 << (bits - 1)) - 1;
            let min = -(1i128 << (bits - 1));
            if q > max || q < min {
                return ex(0);
            }
            ((q as u64) & m, (r as u64) & m)
        } else {
            let q = dividend / u128::from(v);
            if q > u128::from(m) {
                return ex(0);
            }
            (q as u64, (dividend % u128::from(v)) as u64)
        };
        if size == 1 {
            self.gpr_write(0, 2, (r << 8) | q);
        } else {
            self.gpr_write(0, size, q);
            self.gpr_write(2, size, r);
        }
        Ok(())
    }

    fn exec_daa_das(&mut self, das: bool) {
        let old_al = self.s.regs[0] & 0xff;
        let old_cf = self.flag(CF);
        let mut al = old_al;
        let mut cf = false;
        let af;
        if al & 0xf > 9 || self.flag(AF) {
            if das {
                cf = old_cf || al < 6;
                al = al.wrapping_sub(6) & 0xff;
            } else {
                cf = old_cf || al + 6 > 0xff;
                al = (al + 6) & 0xff;
            }
            af = true;
        } else {
            af = false;
        }
        if old_al > 0x99 || old_cf {
            al = if das { al.wrapping_sub(0x60) & 0xff } else { (al + 0x60) & 0xff };
            cf = true;
        }
        self.gpr_write(0, 1, al);
        let f = Self::szp(al, 1) | if cf { CF } else { 0 } | if af { AF } else { 0 };
        self.set_status(f);
    }

    fn exec_lar<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, m: M) -> Res<()> {
        self.need_pm()?;
        let src = if matches!(m, M::Verr | M::Verw) { 0 } else { 1 };
        let sel = self.rd_op(b, i, src, 2)? as u16;
        let d = self.probe_desc(b, sel)?;
        let ok = d.filter(|&d| {
            let s = d & (1 << 44) != 0;
            let t = ((d >> 40) & 0xf) as u8;
            let code = t & 8 != 0;
            match m {
                M::Lar => s || matches!(t, 1 | 2 | 3 | 4 | 5 | 9 | 0xb | 0xc),
                M::Lsl => s || matches!(t, 1 | 2 | 3 | 9 | 0xb),
                M::Verr => s && (!code || t & 2 != 0),
                _ => s && !code && t & 2 != 0,
            }
        });
        match ok {
            Some(d) => {
                self.set_flag(ZF, true);
                match m {
                    M::Lar => {
                        let size = Self::op_size(i, 0);
                        self.reg_set(i.op0_register(), (d >> 32) & 0x00f0_ff00 & mask(size));
                    }
                    M::Lsl => {
                        let size = Self::op_size(i, 0);
                        let lim = crate::prot::desc_to_seg(sel, d).limit;
                        self.reg_set(i.op0_register(), u64::from(lim) & mask(size));
                    }
                    _ => {}
                }
            }
            None => self.set_flag(ZF, false),
        }
        Ok(())
    }

    fn exec_cpuid(&mut self) {
        let leaf = self.s.regs[0] as u32;
        let (a, b, c, d): (u32, u32, u32, u32) = match leaf {
            0 => (1, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            1 => {
                // FPU, DE, PSE, TSC, MSR, PAE, CX8, APIC, SEP, PGE, CMOV, PAT, FXSR: exactly what is
                // implemented (DE: CR4.DE, see debug.rs; PAT: the MSR, see msr.rs; PAE: mem.rs,
                // with MAXPHYADDR 36, which is what software assumes when leaf 0x8000_0008 is
                // absent, as it is here).
                let edx = 1
                    | (1 << 2)
                    | (1 << 3)
                    | (1 << 4)
                    | (1 << 5)
                    | (1 << 6)
                    | (1 << 8)
                    | (1 << 9)
                    | (1 << 11)
                    | (1 << 13)
                    | (1 << 15)
                    | (1 << 16)
                    | (1 << 24);
                // MMX/SSE feature bits: exactly what sse.rs implements.
                let (simd_edx, simd_ecx) = crate::sse::cpuid_bits();
                // CMPXCHG16B (ECX bit 13) exists with 64-bit mode (long.rs).
                let cx16 = if self.has_long_mode() { 1 << 13 } else { 0 };
                (CPUID_SIGNATURE, 0, simd_ecx | cx16, edx | simd_edx)
            }
            // i386 model: extended leaves up to 0x8000_0001, for NX (EDX bit 20: XD in PAE
            // entries and EFER.NXE, see mem.rs and msr.rs). No 0x8000_0008: MAXPHYADDR is the
            // default 36.
            0x8000_0000 if !self.has_long_mode() => (0x8000_0001, 0, 0, 0),
            0x8000_0001 if !self.has_long_mode() => (0, 0, 0, 1 << 20),
            // x86_64 model (long.rs): LAHF/SAHF in 64-bit mode (ECX bit 0); SYSCALL/SYSRET (EDX
            // bit 11), NX (20), long mode (29). 0x8000_0008: 36 physical and 48 linear address
            // bits (mem.rs MAXPHYADDR, `canonical`).
            0x8000_0000 => (0x8000_0008, 0, 0, 0),
            0x8000_0001 => (0, 0, 1, (1 << 11) | (1 << 20) | (1 << 29)),
            0x8000_0008 if self.has_long_mode() => (0x3024, 0, 0, 0),
            _ => (0, 0, 0, 0),
        };
        self.s.regs[0] = u64::from(a);
        self.s.regs[3] = u64::from(b);
        self.s.regs[1] = u64::from(c);
        self.s.regs[2] = u64::from(d);
    }

    pub(crate) fn read_tsc<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>) -> u64 {
        let at = self.at();
        b.touched = true;
        b.p.read_timestamp(at).wrapping_add(self.s.tsc_offset)
    }

    /// I/O permission: CPL <= IOPL, or the TSS I/O bitmap allows every byte of the access. In
    /// VM86 the bitmap alone decides, whatever the IOPL (SDM 20.2.8.1).
    fn io_check<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, port: u16, size: u32) -> Res<()> {
        if self.bp_active {
            self.io_bp_check(port, size);
        }
        if !self.pm() || (self.s.cpl <= self.iopl() && !self.vm86()) {
            return Ok(());
        }
        let tr = self.s.tr;
        if tr.attr & crate::ATTR_P == 0 || tr.attr & 0x8 == 0 || tr.limit < 0x67 {
            return exc(13, 0);
        }
        let iomap = self.lin_read(b, (tr.base + 0x66) & 0xffff_ffff, 2, 0)?;
        let byte = iomap + u64::from(port / 8);
        if byte + 1 > u64::from(tr.limit) {
            return exc(13, 0);
        }
        let bm = self.lin_read(b, (tr.base + byte) & 0xffff_ffff, 2, 0)?;
        let want = ((1u64 << size) - 1) << (port & 7);
        if bm & want != 0 {
            return exc(13, 0);
        }
        Ok(())
    }

    /// One iteration of a string instruction (see the crate docs for the REP counting rule).
    fn exec_string<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, i: &Instruction, m: M) -> Res<()> {
        let am = str_addr_mask(i);
        let rep = i.has_rep_prefix() || i.has_repne_prefix();
        if rep && self.s.regs[1] & am == 0 {
            return Ok(());
        }
        let size = i.memory_size().size() as u32;
        let delta = if self.flag(DF) { (size as u64).wrapping_neg() } else { u64::from(size) };
        // Batching: several iterations of REP MOVS/STOS/LODS run inside this one step, each
        // retiring as its own instruction, as long as nothing could observe the difference: no
        // interrupt deliverable (INTR only changes between `run` calls), no single-step, no
        // Platform call, no write to cached code, and the run's `stop_at` not reached. These forms
        // do not touch EFLAGS, so a fault in a later iteration leaves the state exactly as if the
        // iterations had been separate steps.
        let batch =
            rep && matches!(
                m,
                M::Movsb
                    | M::Movsw
                    | M::Movsd
                    | M::Movsq
                    | M::Stosb
                    | M::Stosw
                    | M::Stosd
                    | M::Stosq
                    | M::Lodsb
                    | M::Lodsw
                    | M::Lodsd
                    | M::Lodsq
            ) && !self.event_possible()
                && !self.bp_active
                && !self.flag(crate::TF)
                && b.hooks & crate::mem::STEP_HOOKS == 0;
        loop {
            let inval = self.icache.invalidations;
            let more = self.string_iteration(b, i, m, am, size, delta)?;
            if !more {
                return Ok(());
            }
            if !batch || b.touched || self.icache.invalidations != inval || self.s.icount + 1 >= self.stop_at {
                // Stay on this instruction: the next iteration is the next "instruction". RF=1 as
                // on hardware after a non-final iteration: an interrupt or trap here pushes RF=1,
                // and the next iteration does not hit the instruction breakpoint again.
                self.s.rip = self.cur_eip;
                self.s.rflags |= crate::RF;
                return Ok(());
            }
            self.s.icount += 1;
        }
    }

    /// One iteration; returns whether a REP instruction has more iterations to do.
    #[inline(always)]
    fn string_iteration<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        i: &Instruction,
        m: M,
        am: u64,
        size: u32,
        delta: u64,
    ) -> Res<bool> {
        let rep = i.has_rep_prefix() || i.has_repne_prefix();
        let si = self.s.regs[6] & am;
        let di = self.s.regs[7] & am;
        let src_seg = Self::mseg(i);
        let (mut dsi, mut ddi) = (false, false);
        match m {
            M::Movsb | M::Movsw | M::Movsd | M::Movsq => {
                let v = self.rd(b, src_seg, si, size)?;
                self.wr(b, ES, di, size, v)?;
                dsi = true;
                ddi = true;
            }
            M::Stosb | M::Stosw | M::Stosd | M::Stosq => {
                self.wr(b, ES, di, size, self.s.regs[0] & mask(size))?;
                ddi = true;
            }
            M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => {
                let v = self.rd(b, src_seg, si, size)?;
                self.gpr_write(0, size, v);
                dsi = true;
            }
            M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq => {
                let a = self.rd(b, src_seg, si, size)?;
                let c = self.rd(b, ES, di, size)?;
                self.alu(Alu::Cmp, a, c, size);
                dsi = true;
                ddi = true;
            }
            M::Scasb | M::Scasw | M::Scasd | M::Scasq => {
                let c = self.rd(b, ES, di, size)?;
                self.alu(Alu::Cmp, self.s.regs[0], c, size);
                ddi = true;
            }
            M::Insb | M::Insw | M::Insd => {
                let port = (self.s.regs[2] & 0xffff) as u16;
                self.io_check(b, port, size)?;
                // Check the destination before the (side-effecting, logged) port read.
                self.probe_write(b, ES, di, size)?;
                let at = self.at();
                b.touched = true;
                let v = b.p.io_read(at, port, size as u8);
                self.wr(b, ES, di, size, u64::from(v))?;
                ddi = true;
            }
            _ => {
                let port = (self.s.regs[2] & 0xffff) as u16;
                self.io_check(b, port, size)?;
                let v = self.rd(b, src_seg, si, size)?;
                let at = self.at();
                b.touched = true;
                b.p.io_write(at, port, size as u8, v as u32);
                dsi = true;
            }
        }
        if dsi {
            self.s.regs[6] = addr_update(self.s.regs[6], si.wrapping_add(delta), am);
        }
        if ddi {
            self.s.regs[7] = addr_update(self.s.regs[7], di.wrapping_add(delta), am);
        }
        if rep {
            let cx = (self.s.regs[1] & am).wrapping_sub(1) & am;
            self.s.regs[1] = addr_update(self.s.regs[1], cx, am);
            let cmp =
                matches!(m, M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq | M::Scasb | M::Scasw | M::Scasd | M::Scasq);
            let stop = cx == 0
                || (cmp && i.has_repe_prefix() && !self.flag(ZF))
                || (cmp && i.has_repne_prefix() && self.flag(ZF));
            return Ok(!stop);
        }
        Ok(false)
    }
}
