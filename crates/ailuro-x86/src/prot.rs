//! Protected-mode machinery: descriptors, segment loads, far transfers, interrupt and exception
//! delivery (real-mode IVT and protected-mode IDT with TSS stack switching), IRET, and double/triple
//! fault escalation.

use ailuro_bus::Platform;

use crate::mem::{Bus, ACC_U};
use crate::{exc, Cpu, Fault, Res, SegReg, Segment, AC, ATTR_DB, ATTR_G, ATTR_P, ATTR_S, IF, IOPL, NT, RF, TF, VM};

const ES: usize = SegReg::Es as usize;
const CS: usize = SegReg::Cs as usize;
const SS: usize = SegReg::Ss as usize;
const DS: usize = SegReg::Ds as usize;
const FS: usize = SegReg::Fs as usize;
const GS: usize = SegReg::Gs as usize;

/// What kind of event is being delivered through the IDT/IVT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// CPU exception (fault or trap detected by the CPU).
    Exception,
    /// INT n / INT3 / INTO: gate DPL is checked against CPL.
    Software,
    /// External interrupt (INTR): error codes carry EXT=1.
    External,
}

/// Why a hardware task switch happens (decides busy bits, NT and the back link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskSwitch {
    Jmp,
    /// CALL, INT through a task gate, exception/interrupt through a task gate.
    Call,
    Iret,
}

/// Contributory exceptions for the double-fault rules.
fn contributory(v: u8) -> bool {
    matches!(v, 0 | 10 | 11 | 12 | 13)
}

/// Decode a segment descriptor into a descriptor cache.
pub(crate) fn desc_to_seg(sel: u16, d: u64) -> Segment {
    let base = ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24);
    let mut limit = ((d & 0xffff) | (((d >> 48) & 0xf) << 16)) as u32;
    let attr = (((d >> 40) & 0xff) | (((d >> 52) & 0xf) << 12)) as u16;
    if attr & ATTR_G != 0 {
        limit = (limit << 12) | 0xfff;
    }
    Segment { selector: sel, base, limit, attr }
}

#[inline]
fn d_dpl(d: u64) -> u8 {
    ((d >> 45) & 3) as u8
}
#[inline]
fn d_present(d: u64) -> bool {
    d & (1 << 47) != 0
}
#[inline]
fn d_is_code_data(d: u64) -> bool {
    d & (1 << 44) != 0
}
#[inline]
fn d_is_code(d: u64) -> bool {
    d & (1 << 43) != 0
}
#[inline]
fn d_type(d: u64) -> u8 {
    ((d >> 40) & 0xf) as u8
}

impl Cpu {
    #[inline]
    pub(crate) fn iopl(&self) -> u8 {
        ((self.s.rflags & IOPL) >> 12) as u8
    }

    /// Stack-pointer mask from SS.B.
    #[inline]
    pub(crate) fn sp_mask(&self) -> u64 {
        if self.long64() {
            u64::MAX
        } else if self.s.seg[SS].attr & ATTR_DB != 0 {
            0xffff_ffff
        } else {
            0xffff
        }
    }

    #[inline]
    pub(crate) fn set_sp(&mut self, v: u64) {
        let m = self.sp_mask();
        self.s.regs[4] = (self.s.regs[4] & !m) | (v & m);
    }

    pub(crate) fn push<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, v: u64, size: u32) -> Res<()> {
        let m = self.sp_mask();
        let sp = self.s.regs[4].wrapping_sub(u64::from(size)) & m;
        self.wr(b, SS, sp, size, v)?;
        self.set_sp(sp);
        Ok(())
    }

    pub(crate) fn pop<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, size: u32) -> Res<u64> {
        let m = self.sp_mask();
        let sp = self.s.regs[4] & m;
        let v = self.rd(b, SS, sp, size)?;
        self.set_sp(sp + u64::from(size));
        Ok(v)
    }

    /// Read the stack at SP + `off` without popping.
    pub(crate) fn peek<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, off: u64, size: u32) -> Res<u64> {
        let m = self.sp_mask();
        let sp = self.s.regs[4].wrapping_add(off) & m;
        self.rd(b, SS, sp, size)
    }

    /// Read the 8-byte descriptor for `sel` from the GDT or LDT (#GP(sel) if outside the table).
    pub(crate) fn read_desc<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, sel: u16) -> Res<u64> {
        let (base, limit) = if sel & 4 != 0 {
            if self.s.ldtr.attr & ATTR_P == 0 {
                return exc(13, u32::from(sel & 0xfffc));
            }
            (self.s.ldtr.base, self.s.ldtr.limit)
        } else {
            (self.s.gdtr.base, self.s.gdtr.limit)
        };
        let idx = u64::from(sel & 0xfff8);
        if idx + 7 > u64::from(limit) {
            return exc(13, u32::from(sel & 0xfffc));
        }
        self.lin_read(b, self.sys_lin(base + idx), 8, 0)
    }

    /// Set the accessed bit of a code/data descriptor in memory.
    pub(crate) fn set_accessed<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, sel: u16, d: u64) -> Res<()> {
        if d & (1 << 40) == 0 {
            let base = if sel & 4 != 0 { self.s.ldtr.base } else { self.s.gdtr.base };
            let lin = self.sys_lin(base + u64::from(sel & 0xfff8) + 5);
            self.lin_write(b, lin, 1, (d >> 40) | 1, 0)?;
        }
        Ok(())
    }

    /// Install a code segment and update CPL.
    pub(crate) fn set_cs(&mut self, seg: Segment, cpl: u8) {
        self.s.seg[CS] = seg;
        self.s.cpl = cpl;
    }

    /// MOV/POP/LxS to a data or stack segment register, with all protected-mode checks.
    pub(crate) fn load_seg<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, seg: usize, sel: u16) -> Res<()> {
        if self.vm86() {
            // 8086-style load with the fixed VM86 limit and attributes (see vm86.rs).
            self.s.seg[seg] = crate::vm86::vm86_seg(sel);
            return Ok(());
        }
        if !self.pm() {
            let s = &mut self.s.seg[seg];
            s.selector = sel;
            s.base = u64::from(sel) << 4;
            if seg == CS {
                // Real-mode far transfers leave the CS descriptor a 16-bit code segment.
                s.attr = (s.attr & !0xf) | 0xb | ATTR_P | ATTR_S;
            }
            return Ok(());
        }
        let cpl = self.s.cpl;
        let rpl = (sel & 3) as u8;
        let err = u32::from(sel & 0xfffc);
        if seg == SS {
            if sel & 0xfffc == 0 && self.long64() && cpl != 3 && rpl == cpl {
                // 64-bit mode allows a null SS below ring 3.
                self.s.seg[SS] = Segment { selector: sel, base: 0, limit: 0, attr: 0 };
                return Ok(());
            }
            if sel & 0xfffc == 0 || rpl != cpl {
                return exc(13, err);
            }
            let d = self.read_desc(b, sel)?;
            if !d_is_code_data(d) || d_is_code(d) || d_type(d) & 2 == 0 || d_dpl(d) != cpl {
                return exc(13, err);
            }
            if !d_present(d) {
                return exc(12, err);
            }
            self.set_accessed(b, sel, d)?;
            self.s.seg[SS] = desc_to_seg(sel, d | (1 << 40));
            return Ok(());
        }
        if sel & 0xfffc == 0 {
            self.s.seg[seg] = Segment { selector: sel, base: 0, limit: 0, attr: 0 };
            return Ok(());
        }
        let d = self.read_desc(b, sel)?;
        if !d_is_code_data(d) || (d_is_code(d) && d_type(d) & 2 == 0) {
            return exc(13, err);
        }
        let conforming_code = d_is_code(d) && d_type(d) & 4 != 0;
        if !conforming_code && d_dpl(d) < cpl.max(rpl) {
            return exc(13, err);
        }
        if !d_present(d) {
            return exc(11, err);
        }
        self.set_accessed(b, sel, d)?;
        self.s.seg[seg] = desc_to_seg(sel, d | (1 << 40));
        Ok(())
    }

    /// Validate a code-segment selector as a far JMP/CALL target; returns the descriptor.
    fn check_code_target<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, sel: u16) -> Res<u64> {
        let err = u32::from(sel & 0xfffc);
        if sel & 0xfffc == 0 {
            return exc(13, 0);
        }
        let d = self.read_desc(b, sel)?;
        if !d_is_code_data(d) {
            // System descriptors other than call gates, task gates and TSSs (handled by the caller).
            return exc(13, err);
        }
        if !d_is_code(d) {
            return exc(13, err);
        }
        let cpl = self.s.cpl;
        let rpl = (sel & 3) as u8;
        if d_type(d) & 4 != 0 {
            if d_dpl(d) > cpl {
                return exc(13, err);
            }
        } else if rpl > cpl || d_dpl(d) != cpl {
            return exc(13, err);
        }
        if !d_present(d) {
            return exc(11, err);
        }
        Ok(d)
    }

    /// Far JMP or CALL to `sel:off`. `size` is the operand size (2 or 4), `next` the return EIP.
    pub(crate) fn far_jump<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        sel: u16,
        off: u64,
        call: bool,
        size: u32,
        next: u64,
    ) -> Res<()> {
        let off = match size {
            2 => off & 0xffff,
            4 => off & 0xffff_ffff,
            _ => off,
        };
        if !self.pm() || self.vm86() {
            // Real mode and VM86: no descriptors. VM86 has a fixed 64 KiB CS limit to check
            // before anything changes (real mode keeps whatever limit CS has).
            if self.vm86() && off > 0xffff {
                return exc(13, 0);
            }
            if call {
                let m = self.sp_mask();
                let sp = self.s.regs[4];
                self.push(b, u64::from(self.s.seg[CS].selector), size)?;
                if let Err(e) = self.push(b, next, size) {
                    self.s.regs[4] = (self.s.regs[4] & !m) | (sp & m);
                    return Err(e);
                }
            }
            self.load_seg(b, CS, sel)?;
            self.s.rip = off;
            return Ok(());
        }
        if sel & 0xfffc != 0 {
            let raw = self.read_desc(b, sel)?;
            if self.lma() && !d_is_code_data(raw) {
                // IA-32e mode: only 64-bit call gates (type 0xC); no task switches.
                if d_type(raw) == 0xc {
                    return self.through_call_gate64(b, sel, raw, call, next);
                }
                return exc(13, u32::from(sel & 0xfffc));
            }
            if !d_is_code_data(raw) && matches!(d_type(raw), 0x4 | 0xc) {
                return self.through_call_gate(b, sel, raw, call, next);
            }
            if !d_is_code_data(raw) && matches!(d_type(raw), 0x5 | 0x9) {
                // Task gate or available 32-bit TSS: DPL >= max(CPL, RPL).
                let err = u32::from(sel & 0xfffc);
                if d_dpl(raw) < self.s.cpl.max((sel & 3) as u8) {
                    return exc(13, err);
                }
                if !d_present(raw) {
                    return exc(11, err);
                }
                let tss = if d_type(raw) == 0x5 { ((raw >> 16) & 0xffff) as u16 } else { sel };
                let kind = if call { TaskSwitch::Call } else { TaskSwitch::Jmp };
                self.s.rip = next;
                return self.task_switch(b, tss, kind, 0, None);
            }
        }
        let d = self.check_code_target(b, sel)?;
        let mut seg = desc_to_seg(sel, d | (1 << 40));
        if !self.target_ok(&seg, off) {
            return exc(13, 0);
        }
        if call {
            let m = self.sp_mask();
            let sp = self.s.regs[4];
            self.push(b, u64::from(self.s.seg[CS].selector), size)?;
            if let Err(e) = self.push(b, next, size) {
                self.s.regs[4] = (self.s.regs[4] & !m) | (sp & m);
                return Err(e);
            }
        }
        self.set_accessed(b, sel, d)?;
        let cpl = self.s.cpl;
        seg.selector = (sel & 0xfffc) | u16::from(cpl);
        self.set_cs(seg, cpl);
        self.s.rip = off;
        Ok(())
    }

    /// SS:ESP for privilege level `dpl` from the current TSS, validated (#TS on a bad TSS or SS).
    fn tss_stack<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, dpl: u8, ext: u32) -> Res<(u16, u64, Segment)> {
        let tr = self.s.tr;
        let tss32 = tr.attr & 0x8 != 0;
        let (sp_off, ss_off, sw) = if tss32 {
            (4 + u64::from(dpl) * 8, 8 + u64::from(dpl) * 8, 4)
        } else {
            (2 + u64::from(dpl) * 4, 4 + u64::from(dpl) * 4, 2)
        };
        let trerr = u32::from(tr.selector & 0xfffc) + ext;
        if tr.attr & ATTR_P == 0 || ss_off + 1 > u64::from(tr.limit) {
            return exc(10, trerr);
        }
        let new_sp = self.lin_read(b, (tr.base + sp_off) & 0xffff_ffff, sw, 0)?;
        let new_ss = self.lin_read(b, (tr.base + ss_off) & 0xffff_ffff, 2, 0)? as u16;
        let sd = match self.check_stack_sel(b, new_ss, dpl, 10) {
            Ok(sd) => sd,
            Err(Fault::Ex { vector: 13, code: Some(c) }) => return exc(10, c),
            Err(e) => return Err(e),
        };
        Ok((new_ss, new_sp, desc_to_seg(new_ss, sd | (1 << 40))))
    }

    /// Far JMP/CALL through a call gate (type 4: 16-bit, type 0xC: 32-bit).
    fn through_call_gate<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        sel: u16,
        gate: u64,
        call: bool,
        next: u64,
    ) -> Res<()> {
        let err = u32::from(sel & 0xfffc);
        let cpl = self.s.cpl;
        if d_dpl(gate) < cpl || d_dpl(gate) < (sel & 3) as u8 {
            return exc(13, err);
        }
        if !d_present(gate) {
            return exc(11, err);
        }
        let gate32 = d_type(gate) == 0xc;
        let tsel = ((gate >> 16) & 0xffff) as u16;
        let off = (gate & 0xffff) | if gate32 { (gate >> 32) & 0xffff_0000 } else { 0 };
        let params = ((gate >> 32) & 0x1f) as u32;
        if tsel & 0xfffc == 0 {
            return exc(13, 0);
        }
        let terr = u32::from(tsel & 0xfffc);
        let d = self.read_desc(b, tsel)?;
        if !d_is_code_data(d) || !d_is_code(d) || d_dpl(d) > cpl {
            return exc(13, terr);
        }
        let conforming = d_type(d) & 4 != 0;
        if !call && !conforming && d_dpl(d) != cpl {
            return exc(13, terr);
        }
        if !d_present(d) {
            return exc(11, terr);
        }
        let mut cs = desc_to_seg(tsel, d | (1 << 40));
        if off > u64::from(cs.limit) {
            return exc(13, 0);
        }
        let gsize: u32 = if gate32 { 4 } else { 2 };
        let dpl = d_dpl(d);
        if call && !conforming && dpl < cpl {
            let (new_ss, new_sp, ss) = self.tss_stack(b, dpl, 0)?;
            // Copy the parameters from the caller's stack before switching.
            let mut vals = vec![u64::from(self.s.seg[SS].selector), self.s.regs[4] & self.sp_mask()];
            for k in (0..params).rev() {
                vals.push(self.peek(b, u64::from(k * gsize), gsize)?);
            }
            vals.push(u64::from(self.s.seg[CS].selector));
            vals.push(next);
            let spm: u64 = if ss.attr & ATTR_DB != 0 { 0xffff_ffff } else { 0xffff };
            let acc = if dpl == 3 { ACC_U } else { 0 };
            let mut sp = new_sp;
            for v in &vals {
                sp = sp.wrapping_sub(u64::from(gsize)) & spm;
                if sp + u64::from(gsize) - 1 > u64::from(ss.limit) {
                    return exc(12, u32::from(new_ss & 0xfffc));
                }
                self.lin_write(b, (ss.base + sp) & 0xffff_ffff, gsize, *v, acc)?;
            }
            self.set_accessed(b, tsel, d)?;
            cs.selector = (tsel & 0xfffc) | u16::from(dpl);
            self.set_cs(cs, dpl);
            self.s.seg[SS] = ss;
            self.s.regs[4] = (self.s.regs[4] & !spm) | sp;
            self.s.rip = off;
            return Ok(());
        }
        if call {
            let m = self.sp_mask();
            let sp = self.s.regs[4];
            self.push(b, u64::from(self.s.seg[CS].selector), gsize)?;
            if let Err(e) = self.push(b, next, gsize) {
                self.s.regs[4] = (self.s.regs[4] & !m) | (sp & m);
                return Err(e);
            }
        }
        self.set_accessed(b, tsel, d)?;
        cs.selector = (tsel & 0xfffc) | u16::from(cpl);
        self.set_cs(cs, cpl);
        self.s.rip = off;
        Ok(())
    }

    /// Null data segment registers that the new (outer) CPL may not use.
    pub(crate) fn null_inaccessible_segs(&mut self) {
        let cpl = self.s.cpl;
        for r in [ES, DS, FS, GS] {
            let a = self.s.seg[r].attr;
            let dpl = ((a >> 5) & 3) as u8;
            let conforming_code = a & 0x8 != 0 && a & 0x4 != 0;
            if a & ATTR_P != 0 && !conforming_code && dpl < cpl {
                self.s.seg[r] = Segment { selector: 0, base: 0, limit: 0, attr: 0 };
            }
        }
    }

    /// Validate the CS selector popped by RETF/IRET; returns the descriptor.
    pub(crate) fn check_return_cs<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, sel: u16) -> Res<u64> {
        let err = u32::from(sel & 0xfffc);
        if sel & 0xfffc == 0 {
            return exc(13, 0);
        }
        let rpl = (sel & 3) as u8;
        if rpl < self.s.cpl {
            return exc(13, err);
        }
        let d = self.read_desc(b, sel)?;
        if !d_is_code_data(d) || !d_is_code(d) {
            return exc(13, err);
        }
        if d_type(d) & 4 != 0 {
            if d_dpl(d) > rpl {
                return exc(13, err);
            }
        } else if d_dpl(d) != rpl {
            return exc(13, err);
        }
        if !d_present(d) {
            return exc(11, err);
        }
        Ok(d)
    }

    /// Validate a stack selector for privilege level `rpl`; returns the descriptor.
    pub(crate) fn check_stack_sel<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        sel: u16,
        rpl: u8,
        vec: u8,
    ) -> Res<u64> {
        let err = u32::from(sel & 0xfffc);
        if sel & 0xfffc == 0 {
            return exc(vec, 0);
        }
        if (sel & 3) as u8 != rpl {
            return exc(vec, err);
        }
        let d = self.read_desc(b, sel)?;
        if !d_is_code_data(d) || d_is_code(d) || d_type(d) & 2 == 0 || d_dpl(d) != rpl {
            return exc(vec, err);
        }
        if !d_present(d) {
            return exc(12, err);
        }
        Ok(d)
    }

    /// Far return (RETF [imm16]).
    pub(crate) fn far_ret<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, size: u32, imm: u64) -> Res<()> {
        let eip = self.peek(b, 0, size)?;
        let sel = self.peek(b, u64::from(size), size)? as u16;
        let sp = self.s.regs[4];
        if !self.pm() || self.vm86() {
            if self.vm86() && eip > 0xffff {
                return exc(13, 0);
            }
            self.load_seg(b, CS, sel)?;
            self.s.rip = eip;
            self.set_sp(sp.wrapping_add(2 * u64::from(size) + imm));
            return Ok(());
        }
        let d = self.check_return_cs(b, sel)?;
        let rpl = (sel & 3) as u8;
        let seg = desc_to_seg(sel, d | (1 << 40));
        if !self.target_ok(&seg, eip) {
            return exc(13, 0);
        }
        if rpl == self.s.cpl {
            self.set_accessed(b, sel, d)?;
            self.set_cs(seg, rpl);
            self.s.rip = eip;
            self.set_sp(sp.wrapping_add(2 * u64::from(size) + imm));
            return Ok(());
        }
        // Return to an outer privilege level: the outer SS:ESP follows the parameters.
        let new_esp = self.peek(b, 2 * u64::from(size) + imm, size)?;
        let new_ss = self.peek(b, 3 * u64::from(size) + imm, size)? as u16;
        let sd = self.check_stack_sel(b, new_ss, rpl, 13)?;
        self.set_accessed(b, sel, d)?;
        self.set_cs(seg, rpl);
        self.s.rip = eip;
        self.s.seg[SS] = desc_to_seg(new_ss, sd | (1 << 40));
        self.set_sp(new_esp.wrapping_add(imm));
        self.null_inaccessible_segs();
        Ok(())
    }

    /// IRET/IRETD.
    pub(crate) fn iret<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, size: u32) -> Res<()> {
        // IRET ends NMI blocking (also when it then faults, as documented for VMX-less parts).
        self.s.nmi_blocked = false;
        if self.long64() {
            return self.iret64(b, size);
        }
        if self.vm86() {
            // IRET in VM86 is IOPL-sensitive and never a task return (NT is not consulted).
            return self.iret_in_vm86(b, size);
        }
        if self.lma() && self.s.rflags & NT != 0 {
            // No task switches in IA-32e mode (compatibility-mode IRET with NT=1).
            return exc(13, 0);
        }
        if self.pm() && self.s.rflags & NT != 0 {
            // Return to the task in the current TSS's back link.
            let link = self.lin_read(b, self.sys_lin(self.s.tr.base), 2, 0)? as u16;
            return self.task_switch(b, link, TaskSwitch::Iret, 0, None);
        }
        let s = u64::from(size);
        let eip = self.peek(b, 0, size)?;
        let sel = self.peek(b, s, size)? as u16;
        let fl = self.peek(b, 2 * s, size)?;
        let sp = self.s.regs[4];
        if !self.pm() {
            self.load_seg(b, CS, sel)?;
            self.s.rip = eip;
            self.set_sp(sp.wrapping_add(3 * s));
            self.write_flags(fl, size);
            self.iret_rf(fl, size);
            return Ok(());
        }
        if size == 4 && fl & VM != 0 && self.s.cpl == 0 && !self.lma() {
            // Return to VM86 (IA-32e mode ignores VM in the image: it goes the normal way).
            return self.iret_to_vm86(b, eip, sel, fl);
        }
        let d = self.check_return_cs(b, sel)?;
        let rpl = (sel & 3) as u8;
        let seg = desc_to_seg(sel, d | (1 << 40));
        if eip > u64::from(seg.limit) {
            return exc(13, 0);
        }
        let old_cpl = self.s.cpl;
        if rpl == old_cpl {
            self.set_accessed(b, sel, d)?;
            self.set_cs(seg, rpl);
            self.s.rip = eip;
            self.set_sp(sp.wrapping_add(3 * s));
            self.write_flags_priv(fl, size, old_cpl);
            self.iret_rf(fl, size);
            return Ok(());
        }
        let new_esp = self.peek(b, 3 * s, size)?;
        let new_ss = self.peek(b, 4 * s, size)? as u16;
        let sd = self.check_stack_sel(b, new_ss, rpl, 13)?;
        self.set_accessed(b, sel, d)?;
        self.write_flags_priv(fl, size, old_cpl);
        self.iret_rf(fl, size);
        self.set_cs(seg, rpl);
        self.s.rip = eip;
        self.s.seg[SS] = desc_to_seg(new_ss, sd | (1 << 40));
        self.set_sp(new_esp);
        self.null_inaccessible_segs();
        Ok(())
    }

    /// Write EFLAGS from POPF/IRET honouring privilege: IOPL only at CPL 0, IF only at CPL <= IOPL.
    /// VM and RF are never written this way (IRET sets them itself: `iret_rf`, `iret_to_vm86`).
    /// `size` 2 keeps the upper half.
    pub(crate) fn write_flags_priv(&mut self, v: u64, size: u32, cpl: u8) {
        let mut changeable = crate::STATUS | TF | crate::DF | NT | AC | crate::ID;
        if cpl == 0 || !self.pm() {
            changeable |= IOPL;
        }
        if !self.pm() || cpl <= self.iopl() {
            changeable |= IF;
        }
        if size == 2 {
            changeable &= 0xffff;
        }
        self.s.rflags = (self.s.rflags & !changeable) | (v & changeable) | 2;
    }

    /// IRETD loads RF from the popped image (POPF never does): a debug handler returns with RF=1
    /// to skip the instruction breakpoint once.
    fn iret_rf(&mut self, fl: u64, size: u32) {
        if size == 4 {
            self.s.rflags = (self.s.rflags & !RF) | (fl & RF);
        }
    }

    /// POPF/IRET flag write at the current privilege level.
    pub(crate) fn write_flags(&mut self, v: u64, size: u32) {
        let cpl = self.s.cpl;
        self.write_flags_priv(v, size, cpl);
    }

    /// Deliver `vector`, escalating to #DF and triple fault (shutdown) per the SDM rules.
    pub(crate) fn deliver_with_escalation<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        vector: u8,
        code: Option<u32>,
        ev: Event,
    ) -> Result<(), String> {
        let (mut vec, mut code, mut ev) = (vector, code, ev);
        self.s.halted = false;
        loop {
            match self.deliver(b, vec, code, ev) {
                Ok(()) => return Ok(()),
                Err(Fault::Shutdown(r)) => {
                    self.s.shutdown = true;
                    return Err(r);
                }
                Err(Fault::Ex { vector: v2, code: c2 }) => {
                    if vec == 8 {
                        self.s.shutdown = true;
                        return Err(format!(
                            "triple fault: exception {v2} while delivering a double fault (EIP {:#x})",
                            self.s.rip
                        ));
                    }
                    let df = (contributory(vec) && contributory(v2)) || (vec == 14 && (v2 == 14 || contributory(v2)));
                    if df {
                        vec = 8;
                        code = Some(0);
                    } else {
                        vec = v2;
                        code = c2;
                    }
                    ev = Event::Exception;
                }
            }
        }
    }

    /// Deliver one interrupt/exception through the IVT (real mode) or IDT (protected mode).
    /// EIP must already point where the handler returns to. Nothing is committed on failure.
    pub(crate) fn deliver<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        vec: u8,
        code: Option<u32>,
        ev: Event,
    ) -> Res<()> {
        if b.hooks & ailuro_bus::observe::hook::INTERRUPT != 0 {
            let e = ailuro_bus::observe::InterruptEvent {
                vector: u32::from(vec),
                error_code: code,
                external: ev == Event::External,
                software: ev == Event::Software,
            };
            let view = self.view(self.cur_pc);
            b.obs.interrupt(&view, b.ram, &e);
        }
        self.block_start = true;
        if vec == 1 && ev == Event::Exception {
            // The processor clears DR7.GD when it delivers a #DB, so the handler can use the DRs.
            self.s.dr[7] &= !crate::debug::DR7_GD;
        }
        if !self.pm() {
            return self.deliver_real(b, vec);
        }
        if self.lma() {
            return self.deliver_long(b, vec, code, ev);
        }
        let ext = u32::from(ev == Event::External);
        let gate_err = u32::from(vec) * 8 + 2 + ext;
        if u64::from(vec) * 8 + 7 > u64::from(self.s.idtr.limit) {
            return exc(13, gate_err);
        }
        let gate = self.lin_read(b, (self.s.idtr.base + u64::from(vec) * 8) & 0xffff_ffff, 8, 0)?;
        let gtype = ((gate >> 40) & 0x1f) as u8;
        let (gate32, trap) = match gtype {
            0x06 => (false, false),
            0x07 => (false, true),
            0x0e => (true, false),
            0x0f => (true, true),
            0x05 => {
                // Task gate: switch to the TSS it names (DPL/present checks as for other gates).
                if ev == Event::Software && d_dpl(gate) < self.s.cpl {
                    return exc(13, gate_err);
                }
                if !d_present(gate) {
                    return exc(11, gate_err);
                }
                let tss = ((gate >> 16) & 0xffff) as u16;
                return self.task_switch(b, tss, TaskSwitch::Call, ext, code);
            }
            _ => return exc(13, gate_err),
        };
        let cpl = self.s.cpl;
        if ev == Event::Software && d_dpl(gate) < cpl {
            return exc(13, gate_err);
        }
        if !d_present(gate) {
            return exc(11, gate_err);
        }
        let tsel = ((gate >> 16) & 0xffff) as u16;
        let mut off = (gate & 0xffff) | if gate32 { (gate >> 32) & 0xffff_0000 } else { 0 };
        if !gate32 {
            off &= 0xffff;
        }
        if tsel & 0xfffc == 0 {
            return exc(13, ext);
        }
        let terr = u32::from(tsel & 0xfffc) + ext;
        let d = self.read_desc(b, tsel).map_err(|_| Fault::Ex { vector: 13, code: Some(terr) })?;
        if !d_is_code_data(d) || !d_is_code(d) || d_dpl(d) > cpl {
            return exc(13, terr);
        }
        if !d_present(d) {
            return exc(11, terr);
        }
        let dpl = d_dpl(d);
        let conforming = d_type(d) & 4 != 0;
        let vm86 = self.vm86();
        if vm86 && (conforming || dpl != 0) {
            // From VM86 only a ring-0 non-conforming handler can be entered (SDM INT n:
            // #GP(new code segment selector), without EXT).
            return exc(13, u32::from(tsel & 0xfffc));
        }
        let mut cs = desc_to_seg(tsel, d | (1 << 40));
        if off > u64::from(cs.limit) {
            return exc(13, ext);
        }
        let size: u32 = if gate32 { 4 } else { 2 };
        let old_cs = u64::from(self.s.seg[CS].selector);
        let old_eip = self.s.rip;
        let old_fl = self.s.rflags;
        if !conforming && dpl < cpl {
            // Inner privilege: switch to the stack for `dpl` taken from the TSS.
            let (new_ss, new_sp, ss) = self.tss_stack(b, dpl, ext)?;
            let spm: u64 = if ss.attr & ATTR_DB != 0 { 0xffff_ffff } else { 0xffff };
            let mut vals = Vec::with_capacity(10);
            if vm86 {
                // The VM86 frame starts with the 8086 data segment selectors (SDM 20.3.1.1), in
                // the gate's size like the rest (a 16-bit gate pushes 16-bit values).
                for r in [GS, FS, DS, ES] {
                    vals.push(u64::from(self.s.seg[r].selector));
                }
            }
            vals.extend([u64::from(self.s.seg[SS].selector), self.s.regs[4] & 0xffff_ffff, old_fl, old_cs, old_eip]);
            if let Some(c) = code {
                vals.push(u64::from(c));
            }
            let acc = if dpl == 3 { ACC_U } else { 0 };
            let mut sp = new_sp;
            for v in &vals {
                sp = sp.wrapping_sub(u64::from(size)) & spm;
                if sp + u64::from(size) - 1 > u64::from(ss.limit) {
                    return exc(12, u32::from(new_ss & 0xfffc) + ext);
                }
                self.lin_write(b, (ss.base + sp) & 0xffff_ffff, size, *v, acc)?;
            }
            cs.selector = (tsel & 0xfffc) | u16::from(dpl);
            self.set_cs(cs, dpl);
            self.s.seg[SS] = ss;
            self.s.regs[4] = (self.s.regs[4] & !spm) | sp;
            if vm86 {
                // 8086 selectors mean nothing in protected mode: the handler starts with null
                // data segments and finds the VM86 ones in its frame.
                for r in [ES, DS, FS, GS] {
                    self.s.seg[r] = Segment { selector: 0, base: 0, limit: 0, attr: 0 };
                }
            }
        } else {
            // Same privilege (or conforming code): push on the current stack.
            let new_cpl = if conforming { cpl } else { dpl };
            let spm = self.sp_mask();
            let mut sp = self.s.regs[4];
            let mut vals = vec![old_fl, old_cs, old_eip];
            if let Some(c) = code {
                vals.push(u64::from(c));
            }
            for v in &vals {
                sp = sp.wrapping_sub(u64::from(size)) & spm;
                self.wr(b, SS, sp, size, *v)?;
            }
            cs.selector = (tsel & 0xfffc) | u16::from(new_cpl);
            self.set_cs(cs, new_cpl);
            self.set_sp(sp);
        }
        self.set_accessed(b, tsel, d)?;
        self.s.rip = off;
        self.s.rflags &= !(TF | NT | RF | VM);
        if !trap {
            self.s.rflags &= !IF;
        }
        Ok(())
    }

    fn deliver_real<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, vec: u8) -> Res<()> {
        let idx = u64::from(vec) * 4;
        if idx + 3 > u64::from(self.s.idtr.limit) {
            return exc(13, 0);
        }
        let ent = self.lin_read(b, (self.s.idtr.base + idx) & 0xffff_ffff, 4, 0)?;
        let sp0 = self.s.regs[4];
        let fl = self.s.rflags;
        let r = (|| {
            self.push(b, fl & 0xffff, 2)?;
            self.push(b, u64::from(self.s.seg[CS].selector), 2)?;
            self.push(b, self.s.rip & 0xffff, 2)
        })();
        if let Err(e) = r {
            self.s.regs[4] = sp0;
            return Err(e);
        }
        self.load_seg(b, CS, (ent >> 16) as u16)?;
        self.s.rip = ent & 0xffff;
        self.s.rflags &= !(IF | TF | AC | RF);
        Ok(())
    }

    /// Hardware task switch to the 32-bit TSS `sel` (16-bit TSSs are not supported: #GP/#TS).
    /// EIP must already be the return address of the outgoing task. Saves the outgoing state into
    /// the current TSS, then loads CR3, EFLAGS, EIP, the GPRs, LDTR and the segment registers from
    /// the new one (segment faults after the switch are #TS in the new task, as on hardware).
    pub(crate) fn task_switch<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        sel: u16,
        kind: TaskSwitch,
        ext: u32,
        code: Option<u32>,
    ) -> Res<()> {
        let err = u32::from(sel & 0xfffc) + ext;
        if sel & 4 != 0 || sel & 0xfffc == 0 {
            return exc(if kind == TaskSwitch::Iret { 10 } else { 13 }, err);
        }
        let d = self.read_desc(b, sel)?;
        let want = if kind == TaskSwitch::Iret { 0xb } else { 0x9 };
        if d_is_code_data(d) || d_type(d) != want {
            return exc(if kind == TaskSwitch::Iret { 10 } else { 13 }, err);
        }
        if !d_present(d) {
            return exc(11, err);
        }
        let new = desc_to_seg(sel, d);
        if new.limit < 0x67 {
            return exc(10, err);
        }
        let old = self.s.tr;
        if old.attr & 0x8 == 0 || old.limit < 0x67 {
            return exc(10, u32::from(old.selector & 0xfffc) + ext);
        }
        // Read the whole incoming TSS first so that a fault leaves the old task untouched.
        let mut t = [0u32; 26];
        for (k, v) in t.iter_mut().enumerate() {
            *v = self.lin_read(b, (new.base + 4 * k as u64) & 0xffff_ffff, 4, 0)? as u32;
        }
        // Save the outgoing task.
        let mut fl = self.s.rflags;
        if kind == TaskSwitch::Iret {
            fl &= !NT;
        }
        let ob = old.base;
        let mut w = |cpu: &mut Cpu, off: u64, v: u64, size: u32| cpu.lin_write(b, (ob + off) & 0xffff_ffff, size, v, 0);
        w(self, 0x20, self.s.rip, 4)?;
        w(self, 0x24, fl, 4)?;
        for r in 0..8 {
            w(self, 0x28 + 4 * r as u64, self.s.regs[r], 4)?;
        }
        for r in 0..6 {
            w(self, 0x48 + 4 * r as u64, u64::from(self.s.seg[r].selector), 2)?;
        }
        let gdt = self.s.gdtr.base;
        let busy = |cpu: &mut Cpu, b: &mut Bus<P>, s: u16, on: bool| -> Res<()> {
            let lin = (gdt + u64::from(s & 0xfff8) + 5) & 0xffff_ffff;
            let a = cpu.lin_read(b, lin, 1, 0)?;
            let a = if on { a | 2 } else { a & !2 };
            cpu.lin_write(b, lin, 1, a, 0)
        };
        if matches!(kind, TaskSwitch::Jmp | TaskSwitch::Iret) {
            busy(self, b, old.selector, false)?;
        }
        if kind != TaskSwitch::Iret {
            busy(self, b, sel, true)?;
        }
        let mut new_fl = u64::from(t[9]);
        if kind == TaskSwitch::Call {
            self.lin_write(b, new.base & 0xffff_ffff, 2, u64::from(old.selector), 0)?;
            new_fl |= NT;
        }
        // Load the incoming task.
        self.s.tr = desc_to_seg(sel, d | (2 << 40));
        self.s.cr0 |= crate::CR0_TS;
        if self.s.cr0 & crate::CR0_PG != 0 {
            let old = self.asid();
            self.s.cr3 = u64::from(t[7]);
            self.tlb.flush_non_global();
            // Past the commit point: invalid PDPTEs fault in the context of the new task (after
            // observers heard of the address-space change, which has happened).
            let pdptes = if self.s.cr4 & crate::CR4_PAE != 0 { self.load_pdptes(b, self.s.cr3) } else { Ok(()) };
            self.note_asid(b, old);
            pdptes?;
        }
        self.s.rip = u64::from(t[8]);
        // VM comes from the image: a VM86 task's segments are loaded 8086-style below.
        self.s.rflags = new_fl | 2;
        // A task switch clears the local breakpoint enables L0..L3 (and LE).
        self.s.dr[7] &= !0x155;
        self.update_bp_active();
        for r in 0..8 {
            self.s.regs[r] = u64::from(t[10 + r]);
        }
        let sels: Vec<u16> = (0..6).map(|r| t[18 + r] as u16).collect();
        let ldt = t[24] as u16;
        // Selectors first (so that a #TS handler sees them), then the checked descriptor loads.
        for (r, s) in sels.iter().enumerate() {
            self.s.seg[r] = Segment { selector: *s, base: 0, limit: 0, attr: 0 };
        }
        self.s.ldtr = Segment { selector: ldt, base: 0, limit: 0, attr: 0 };
        let ts = |e: Fault, s: u16| match e {
            Fault::Ex { vector: 13, .. } => Fault::Ex { vector: 10, code: Some(u32::from(s & 0xfffc) + ext) },
            other => other,
        };
        if new_fl & VM != 0 {
            // A VM86 task (SDM 7.3 / 20.2.5): 8086-style segment loads without descriptor
            // checks, CPL 3, 64 KiB CS limit. They cannot fault, so they come before the LDT:
            // a #TS for a bad LDT is then delivered from a consistent VM86 state.
            self.load_vm86_segs([sels[ES], sels[CS], sels[SS], sels[DS], sels[FS], sels[GS]]);
            self.lldt(b, ldt).map_err(|e| ts(e, ldt))?;
            if let Some(c) = code {
                // The TSS is a 32-bit one: a doubleword error code, as for a 32-bit gate.
                self.push(b, u64::from(c), 4)?;
            }
            if self.s.rip > 0xffff {
                return exc(13, 0);
            }
            return Ok(());
        }
        self.lldt(b, ldt).map_err(|e| ts(e, ldt))?;
        let cs_sel = sels[CS];
        let new_cpl = (cs_sel & 3) as u8;
        let cd = self.read_desc(b, cs_sel).map_err(|e| ts(e, cs_sel))?;
        if cs_sel & 0xfffc == 0 || !d_is_code_data(cd) || !d_is_code(cd) {
            return exc(10, u32::from(cs_sel & 0xfffc) + ext);
        }
        if !d_present(cd) {
            return exc(11, u32::from(cs_sel & 0xfffc) + ext);
        }
        self.set_cs(desc_to_seg(cs_sel, cd | (1 << 40)), new_cpl);
        self.load_seg(b, SS, sels[SS]).map_err(|e| ts(e, sels[SS]))?;
        for r in [ES, DS, FS, GS] {
            self.load_seg(b, r, sels[r]).map_err(|e| ts(e, sels[r]))?;
        }
        if let Some(c) = code {
            let size = if self.s.seg[CS].attr & ATTR_DB != 0 { 4 } else { 2 };
            self.push(b, u64::from(c), size)?;
        }
        if self.s.rip > u64::from(self.s.seg[CS].limit) {
            return exc(13, 0);
        }
        Ok(())
    }

    /// LLDT.
    pub(crate) fn lldt<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, sel: u16) -> Res<()> {
        if sel & 0xfffc == 0 {
            self.s.ldtr = Segment { selector: sel, base: 0, limit: 0, attr: 0 };
            return Ok(());
        }
        let err = u32::from(sel & 0xfffc);
        if sel & 4 != 0 {
            return exc(13, err);
        }
        let d = self.read_desc(b, sel)?;
        if d_is_code_data(d) || d_type(d) != 2 {
            return exc(13, err);
        }
        let hi = if self.lma() { self.read_desc_upper(b, sel)? } else { 0 };
        if !d_present(d) {
            return exc(11, err);
        }
        let mut ldt = desc_to_seg(sel, d);
        if self.lma() {
            ldt.base |= hi << 32;
            if !crate::canonical(ldt.base) {
                return exc(13, err);
            }
        }
        self.s.ldtr = ldt;
        Ok(())
    }

    /// LTR: load an available TSS and mark it busy.
    pub(crate) fn ltr<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, sel: u16) -> Res<()> {
        let err = u32::from(sel & 0xfffc);
        if sel & 0xfffc == 0 {
            return exc(13, 0);
        }
        if sel & 4 != 0 {
            return exc(13, err);
        }
        let d = self.read_desc(b, sel)?;
        let t = d_type(d);
        // IA-32e mode has only 64-bit TSSs (type 9 there); 16-bit ones are invalid.
        if d_is_code_data(d) || (t != 1 && t != 9) || (self.lma() && t != 9) {
            return exc(13, err);
        }
        let hi = if self.lma() { self.read_desc_upper(b, sel)? } else { 0 };
        if !d_present(d) {
            return exc(11, err);
        }
        let mut tr = desc_to_seg(sel, d | (2 << 40));
        if self.lma() {
            tr.base |= hi << 32;
            if !crate::canonical(tr.base) {
                return exc(13, err);
            }
        }
        let lin = self.sys_lin(self.s.gdtr.base + u64::from(sel & 0xfff8) + 5);
        self.lin_write(b, lin, 1, (d >> 40) | 2, 0)?;
        self.s.tr = tr;
        Ok(())
    }

    /// LAR/LSL/VERR/VERW helper: the descriptor if `sel` is visible at the current CPL, else None.
    pub(crate) fn probe_desc<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, sel: u16) -> Res<Option<u64>> {
        if sel & 0xfffc == 0 {
            return Ok(None);
        }
        let d = match self.read_desc(b, sel) {
            Ok(d) => d,
            Err(Fault::Ex { vector: 13, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let conforming_code = d_is_code_data(d) && d_is_code(d) && d_type(d) & 4 != 0;
        if !conforming_code && (d_dpl(d) < self.s.cpl || d_dpl(d) < (sel & 3) as u8) {
            return Ok(None);
        }
        Ok(Some(d))
    }

    /// SYSENTER.
    pub(crate) fn sysenter(&mut self) -> Res<()> {
        let cs = self.s.sysenter_cs as u16;
        if !self.pm() || cs & 0xfffc == 0 {
            return exc(13, 0);
        }
        if self.lma() {
            self.sysenter_long(cs);
            return Ok(());
        }
        self.s.rflags &= !(VM | IF | RF);
        let code = Segment {
            selector: cs & 0xfffc,
            base: 0,
            limit: 0xffff_ffff,
            attr: ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0xb,
        };
        self.set_cs(code, 0);
        self.s.seg[SS] = Segment {
            selector: (cs & 0xfffc) + 8,
            base: 0,
            limit: 0xffff_ffff,
            attr: ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0x3,
        };
        self.s.regs[4] = self.s.sysenter_esp & 0xffff_ffff;
        self.s.rip = self.s.sysenter_eip & 0xffff_ffff;
        Ok(())
    }

    /// SYSEXIT (to ring 3: 32-bit, or 64-bit with REX.W in IA-32e mode).
    pub(crate) fn sysexit(&mut self, rex_w: bool) -> Res<()> {
        let cs = self.s.sysenter_cs as u16;
        if !self.pm() || self.s.cpl != 0 || cs & 0xfffc == 0 {
            return exc(13, 0);
        }
        if self.lma() {
            return self.sysexit_long(cs, rex_w);
        }
        let code = Segment {
            selector: (cs + 16) | 3,
            base: 0,
            limit: 0xffff_ffff,
            attr: ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0xb | (3 << 5),
        };
        self.set_cs(code, 3);
        self.s.seg[SS] = Segment {
            selector: (cs + 24) | 3,
            base: 0,
            limit: 0xffff_ffff,
            attr: ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0x3 | (3 << 5),
        };
        self.s.regs[4] = self.s.regs[1] & 0xffff_ffff;
        self.s.rip = self.s.regs[2] & 0xffff_ffff;
        Ok(())
    }
}
