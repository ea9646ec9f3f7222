//! Long mode (IA-32e, SDM Vol. 3 chapters 5.8.8, 6.14, 7.7, 9.8): interrupt and exception
//! delivery through 16-byte IDT gates with the 64-bit TSS's RSPn and IST stacks, IRET from
//! 64-bit mode, far returns into 64-bit code, SYSCALL/SYSRET, SWAPGS, SYSENTER/SYSEXIT to and
//! from 64-bit code, and the 16-byte LDT/TSS descriptors.
//!
//! Entering and leaving long mode (EFER.LME + CR0.PG, EFER.LMA) is in `exec.rs` (`write_cr`);
//! 4-level paging in `mem.rs`; the 64-bit and compatibility-mode instruction semantics are the
//! ordinary interpreter paths with 64-bit operand and address sizes.
//!
//! The model follows Intel where vendors differ: SYSCALL and SYSRET raise #UD outside 64-bit
//! mode (AMD allows them in compatibility and legacy mode), SYSRET checks RCX for canonicality
//! before changing anything (#GP(0) in ring 0), and IA32_CSTAR is stored but never used.
//!
//! Task switches do not exist in IA-32e mode (task gates and TSS targets give #GP, as on
//! hardware); far transfers through 16-byte 64-bit call gates do (`through_call_gate64`).

use ailuro_bus::Platform;

use crate::mem::{Bus, ACC_U, ACC_W};
use crate::prot::{desc_to_seg, Event};
use crate::{
    canonical, ex, exc, Cpu, CpuModel, Fault, Res, SegReg, Segment, ATTR_DB, ATTR_G, ATTR_L, ATTR_P, ATTR_S, EFER_SCE,
    IF, NT, RF, TF, VM,
};

const CS: usize = SegReg::Cs as usize;
const SS: usize = SegReg::Ss as usize;
const GS: usize = SegReg::Gs as usize;

/// A flat 4 GiB code or data segment cache as SYSCALL/SYSRET/SYSENTER/SYSEXIT load it.
fn flat(selector: u16, dpl: u8, code: bool, long: bool) -> Segment {
    let kind = if code { 0xb } else { 0x3 };
    let size = if code && long { ATTR_L } else { ATTR_DB };
    Segment {
        selector,
        base: 0,
        limit: 0xffff_ffff,
        attr: ATTR_P | ATTR_S | ATTR_G | size | kind | (u16::from(dpl) << 5),
    }
}

impl Cpu {
    /// The CPU model has long mode (CPUID 0x8000_0001:EDX.LM).
    #[inline]
    pub(crate) fn has_long_mode(&self) -> bool {
        self.s.model == CpuModel::X86_64
    }

    /// The upper 8 bytes of the 16-byte system descriptor for `sel` (LDT and TSS descriptors are
    /// 16 bytes in IA-32e mode, and always in the GDT); #GP(sel) if they lie outside the table.
    pub(crate) fn read_desc_upper<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, sel: u16) -> Res<u64> {
        self.read_desc_upper_any(b, sel & !4)
    }

    /// Whether `ip` is a valid target in the code segment `cs`: canonical for a 64-bit code
    /// segment in long mode, within the limit otherwise.
    pub(crate) fn target_ok(&self, cs: &Segment, ip: u64) -> bool {
        if self.lma() && cs.attr & ATTR_L != 0 {
            canonical(ip)
        } else {
            ip <= u64::from(cs.limit)
        }
    }

    /// Deliver an interrupt or exception in IA-32e mode (SDM Vol. 3 6.14): 16-byte gates (64-bit
    /// interrupt or trap gates only), a 64-bit code segment target, a stack switch to RSPn of the
    /// TSS on a privilege change or to an IST stack when the gate names one, RSP aligned to 16,
    /// and SS:RSP, RFLAGS, CS:RIP (and the error code) pushed as 8-byte values in every case.
    /// Nothing is committed on failure.
    pub(crate) fn deliver_long<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        vec: u8,
        code: Option<u32>,
        ev: Event,
    ) -> Res<()> {
        let ext = u32::from(ev == Event::External);
        let gate_err = u32::from(vec) * 8 + 2 + ext;
        let goff = u64::from(vec) * 16;
        if goff + 15 > u64::from(self.s.idtr.limit) {
            return exc(13, gate_err);
        }
        let gaddr = self.sys_lin(self.s.idtr.base + goff);
        let lo = self.lin_read(b, gaddr, 8, 0)?;
        let hi = self.lin_read(b, self.sys_lin(gaddr + 8), 8, 0)?;
        let trap = match (lo >> 40) & 0x1f {
            0x0e => false,
            0x0f => true,
            _ => return exc(13, gate_err),
        };
        let cpl = self.s.cpl;
        let gdpl = ((lo >> 45) & 3) as u8;
        if ev == Event::Software && gdpl < cpl {
            return exc(13, gate_err);
        }
        if lo & (1 << 47) == 0 {
            return exc(11, gate_err);
        }
        let tsel = ((lo >> 16) & 0xffff) as u16;
        let target = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000) | (hi << 32);
        let ist = (lo >> 32) & 7;
        if tsel & 0xfffc == 0 {
            return exc(13, ext);
        }
        let terr = u32::from(tsel & 0xfffc) + ext;
        let d = self.read_desc(b, tsel).map_err(|_| Fault::Ex { vector: 13, code: Some(terr) })?;
        let dpl = ((d >> 45) & 3) as u8;
        let is_code = d & (1 << 44) != 0 && d & (1 << 43) != 0;
        // The target must be a 64-bit code segment: L=1, D=0.
        let long_code = d & (1 << 53) != 0 && d & (1 << 54) == 0;
        if !is_code || !long_code || dpl > cpl {
            return exc(13, terr);
        }
        if d & (1 << 47) == 0 {
            return exc(11, terr);
        }
        if !canonical(target) {
            return exc(13, ext);
        }
        let conforming = d & (1 << 42) != 0;
        let new_cpl = if !conforming && dpl < cpl { dpl } else { cpl };
        let mut rsp = if new_cpl < cpl || ist != 0 {
            let off = if ist != 0 { 0x24 + 8 * (ist - 1) } else { 4 + 8 * u64::from(new_cpl) };
            let tr = self.s.tr;
            let trerr = u32::from(tr.selector & 0xfffc) + ext;
            if tr.attr & ATTR_P == 0 || off + 7 > u64::from(tr.limit) {
                return exc(10, trerr);
            }
            self.lin_read(b, self.sys_lin(tr.base + off), 8, 0)?
        } else {
            self.s.regs[4]
        };
        if !canonical(rsp) {
            return exc(12, ext);
        }
        rsp &= !0xf;
        let old_ss = u64::from(self.s.seg[SS].selector);
        let mut vals = [old_ss, self.s.regs[4], self.s.rflags, u64::from(self.s.seg[CS].selector), self.s.rip, 0];
        let n = if let Some(c) = code {
            vals[5] = u64::from(c);
            6
        } else {
            5
        };
        let acc = if new_cpl == 3 { ACC_U } else { 0 };
        // Check every slot first so that a #PF leaves memory and registers untouched.
        let bottom = rsp.wrapping_sub(8 * n as u64);
        if !canonical(bottom) {
            return exc(12, ext);
        }
        self.translate(b, bottom, acc | ACC_W)?;
        self.translate(b, rsp.wrapping_sub(8), acc | ACC_W)?;
        for v in &vals[..n] {
            rsp = rsp.wrapping_sub(8);
            self.lin_write(b, rsp, 8, *v, acc)?;
        }
        if d & (1 << 40) == 0 {
            let lin = self.sys_lin(self.desc_table_base(tsel) + u64::from(tsel & 0xfff8) + 5);
            self.lin_write(b, lin, 1, (d >> 40) | 1, 0)?;
        }
        let mut cs = desc_to_seg(tsel, d | (1 << 40));
        cs.selector = (tsel & 0xfffc) | u16::from(new_cpl);
        if new_cpl < cpl {
            // A privilege change loads SS with a null selector whose RPL is the new CPL.
            self.s.seg[SS] = Segment { selector: u16::from(new_cpl), base: 0, limit: 0, attr: 0 };
        }
        self.set_cs(cs, new_cpl);
        self.s.regs[4] = rsp;
        self.s.rip = target;
        self.s.rflags &= !(TF | NT | RF | VM);
        if !trap {
            self.s.rflags &= !IF;
        }
        Ok(())
    }

    /// Base of the table (GDT or LDT) that `sel` indexes.
    pub(crate) fn desc_table_base(&self, sel: u16) -> u64 {
        if sel & 4 != 0 {
            self.s.ldtr.base
        } else {
            self.s.gdtr.base
        }
    }

    /// Far CALL/JMP through a 64-bit call gate (SDM Vol. 3 5.8.6): the gate is 16 bytes, its
    /// target a 64-bit code segment; a CALL to a more privileged non-conforming segment switches
    /// to RSPn of the TSS with a null SS (RPL = new CPL) and pushes the old SS, RSP, CS and RIP
    /// as 8-byte values (no parameters are copied); otherwise CS and RIP are pushed on the
    /// current stack (8-byte values from 64-bit mode, 4-byte from compatibility mode). A JMP may
    /// not change privilege.
    pub(crate) fn through_call_gate64<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        sel: u16,
        gate: u64,
        call: bool,
        next: u64,
    ) -> Res<()> {
        let err = u32::from(sel & 0xfffc);
        let cpl = self.s.cpl;
        let gdpl = ((gate >> 45) & 3) as u8;
        if gdpl < cpl || gdpl < (sel & 3) as u8 {
            return exc(13, err);
        }
        if gate & (1 << 47) == 0 {
            return exc(11, err);
        }
        let hi = self.read_desc_upper_any(b, sel)?;
        let tsel = ((gate >> 16) & 0xffff) as u16;
        let target = (gate & 0xffff) | ((gate >> 32) & 0xffff_0000) | (hi << 32);
        if tsel & 0xfffc == 0 {
            return exc(13, 0);
        }
        let terr = u32::from(tsel & 0xfffc);
        let d = self.read_desc(b, tsel)?;
        let dpl = ((d >> 45) & 3) as u8;
        let is_code = d & (1 << 44) != 0 && d & (1 << 43) != 0;
        let long_code = d & (1 << 53) != 0 && d & (1 << 54) == 0;
        if !is_code || !long_code || dpl > cpl {
            return exc(13, terr);
        }
        let conforming = d & (1 << 42) != 0;
        if !call && !conforming && dpl != cpl {
            return exc(13, terr);
        }
        if d & (1 << 47) == 0 {
            return exc(11, terr);
        }
        if !canonical(target) {
            return exc(13, 0);
        }
        let mut cs = desc_to_seg(tsel, d | (1 << 40));
        let inner = call && !conforming && dpl < cpl;
        let new_cpl = if inner { dpl } else { cpl };
        if call {
            let old_cs = u64::from(self.s.seg[CS].selector);
            if inner {
                let tr = self.s.tr;
                let off = 4 + 8 * u64::from(dpl);
                if tr.attr & ATTR_P == 0 || off + 7 > u64::from(tr.limit) {
                    return exc(10, u32::from(tr.selector & 0xfffc));
                }
                let rsp = self.lin_read(b, self.sys_lin(tr.base + off), 8, 0)?;
                if !canonical(rsp) {
                    return exc(12, 0);
                }
                let vals = [u64::from(self.s.seg[SS].selector), self.s.regs[4], old_cs, next];
                let acc = if dpl == 3 { ACC_U } else { 0 };
                let bottom = rsp.wrapping_sub(32);
                if !canonical(bottom) {
                    return exc(12, 0);
                }
                self.translate(b, bottom, acc | ACC_W)?;
                self.translate(b, rsp.wrapping_sub(8), acc | ACC_W)?;
                let mut sp = rsp;
                for v in vals {
                    sp = sp.wrapping_sub(8);
                    self.lin_write(b, sp, 8, v, acc)?;
                }
                self.s.seg[SS] = Segment { selector: u16::from(dpl), base: 0, limit: 0, attr: 0 };
                self.s.regs[4] = sp;
            } else {
                // Same privilege: CS and RIP on the current stack, 8 bytes each in 64-bit mode.
                let size = if self.long64() { 8 } else { 4 };
                let m = self.sp_mask();
                let sp = self.s.regs[4];
                self.push(b, old_cs, size)?;
                if let Err(e) = self.push(b, next, size) {
                    self.s.regs[4] = (self.s.regs[4] & !m) | (sp & m);
                    return Err(e);
                }
            }
        }
        self.set_accessed(b, tsel, d)?;
        cs.selector = (tsel & 0xfffc) | u16::from(new_cpl);
        self.set_cs(cs, new_cpl);
        self.s.rip = target;
        Ok(())
    }

    /// The upper 8 bytes of a 16-byte descriptor in the GDT or LDT (call gates may be in either).
    fn read_desc_upper_any<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, sel: u16) -> Res<u64> {
        let (base, limit) =
            if sel & 4 != 0 { (self.s.ldtr.base, self.s.ldtr.limit) } else { (self.s.gdtr.base, self.s.gdtr.limit) };
        let idx = u64::from(sel & 0xfff8);
        if idx + 15 > u64::from(limit) {
            return exc(13, u32::from(sel & 0xfffc));
        }
        let hi = self.lin_read(b, self.sys_lin(base + idx + 8), 8, 0)?;
        if (hi >> 40) & 0x1f != 0 {
            return exc(13, u32::from(sel & 0xfffc));
        }
        Ok(hi)
    }

    /// IRET in 64-bit mode (SDM Vol. 2 IRET, "IA-32e mode"): RIP, CS, RFLAGS, RSP and SS are
    /// popped (operand-size values) in every case; the return may go to 64-bit or compatibility
    /// mode. SS may be null when returning to 64-bit code below ring 3.
    pub(crate) fn iret64<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, size: u32) -> Res<()> {
        if self.s.rflags & NT != 0 {
            // No task switches in IA-32e mode.
            return exc(13, 0);
        }
        let s = u64::from(size);
        let rip = self.peek(b, 0, size)?;
        let sel = self.peek(b, s, size)? as u16;
        let fl = self.peek(b, 2 * s, size)?;
        let rsp = self.peek(b, 3 * s, size)?;
        let ss_sel = self.peek(b, 4 * s, size)? as u16;
        let d = self.check_return_cs(b, sel)?;
        let rpl = (sel & 3) as u8;
        let seg = desc_to_seg(sel, d | (1 << 40));
        if seg.attr & ATTR_L != 0 && seg.attr & ATTR_DB != 0 {
            return exc(13, u32::from(sel & 0xfffc));
        }
        if !self.target_ok(&seg, rip) {
            return exc(13, 0);
        }
        let to64 = seg.attr & ATTR_L != 0;
        let ss = if ss_sel & 0xfffc == 0 {
            if !to64 || rpl == 3 {
                return exc(13, 0);
            }
            Segment { selector: ss_sel, base: 0, limit: 0, attr: 0 }
        } else {
            let sd = self.check_stack_sel(b, ss_sel, rpl, 13)?;
            desc_to_seg(ss_sel, sd | (1 << 40))
        };
        let old_cpl = self.s.cpl;
        self.set_accessed(b, sel, d)?;
        self.write_flags_priv(fl, size, old_cpl);
        if size >= 4 {
            self.s.rflags = (self.s.rflags & !RF) | (fl & RF);
        }
        self.set_cs(seg, rpl);
        self.s.rip = if to64 { rip } else { rip & 0xffff_ffff };
        self.s.seg[SS] = ss;
        self.s.regs[4] = match size {
            2 => (self.s.regs[4] & !0xffff) | (rsp & 0xffff),
            4 => rsp & 0xffff_ffff,
            _ => rsp,
        };
        if rpl > old_cpl {
            self.null_inaccessible_segs();
        }
        Ok(())
    }

    /// SYSCALL (Intel: 64-bit mode only).
    pub(crate) fn syscall(&mut self) -> Res<()> {
        if !self.has_long_mode() || self.s.efer & EFER_SCE == 0 || !self.long64() {
            return ex(6);
        }
        let star = self.s.lm.star;
        let sel = ((star >> 32) & 0xfffc) as u16;
        self.s.regs[1] = self.s.rip;
        self.s.regs[11] = self.s.rflags & !RF;
        self.s.rflags = (self.s.rflags & !self.s.lm.fmask & !RF) | 2;
        self.set_cs(flat(sel, 0, true, true), 0);
        self.s.seg[SS] = flat(sel + 8, 0, false, false);
        self.s.rip = self.s.lm.lstar;
        Ok(())
    }

    /// SYSRET (Intel: 64-bit mode only; `rex_w` returns to 64-bit mode, else to compatibility
    /// mode).
    pub(crate) fn sysret(&mut self, rex_w: bool) -> Res<()> {
        if !self.has_long_mode() || self.s.efer & EFER_SCE == 0 || !self.long64() {
            return ex(6);
        }
        if self.s.cpl != 0 {
            return exc(13, 0);
        }
        let rcx = self.s.regs[1];
        if rex_w && !canonical(rcx) {
            return exc(13, 0);
        }
        let base = ((self.s.lm.star >> 48) & 0xffff) as u16;
        let (cs, rip) = if rex_w {
            (flat(base.wrapping_add(16) | 3, 3, true, true), rcx)
        } else {
            (flat(base | 3, 3, true, false), rcx & 0xffff_ffff)
        };
        // RF and VM are cleared, bit 1 set; the rest comes from R11.
        self.s.rflags = (self.s.regs[11] & 0x3c_7fd7) | 2;
        self.set_cs(cs, 3);
        // SS's selector comes from STAR; its cache is a flat ring-3 data segment (Intel).
        self.s.seg[SS] = flat(base.wrapping_add(8) | 3, 3, false, false);
        self.s.rip = rip;
        Ok(())
    }

    /// SWAPGS (64-bit mode, ring 0).
    pub(crate) fn swapgs(&mut self) -> Res<()> {
        if !self.long64() {
            return ex(6);
        }
        if self.s.cpl != 0 {
            return exc(13, 0);
        }
        std::mem::swap(&mut self.s.seg[GS].base, &mut self.s.lm.kernel_gs_base);
        Ok(())
    }

    /// SYSENTER in IA-32e mode: to 64-bit code (CS.L=1) with the full IA32_SYSENTER_ESP/EIP.
    pub(crate) fn sysenter_long(&mut self, cs: u16) {
        self.s.rflags &= !(VM | IF | RF);
        self.set_cs(flat(cs & 0xfffc, 0, true, true), 0);
        self.s.seg[SS] = flat((cs & 0xfffc) + 8, 0, false, false);
        self.s.regs[4] = self.s.sysenter_esp;
        self.s.rip = self.s.sysenter_eip;
    }

    /// SYSEXIT in IA-32e mode: REX.W returns to 64-bit mode (CS = SYSENTER_CS + 32, SS + 40,
    /// RIP = RDX, RSP = RCX, both canonical), otherwise to compatibility mode (CS + 16, SS + 24).
    pub(crate) fn sysexit_long(&mut self, cs: u16, rex_w: bool) -> Res<()> {
        let (rip, rsp) = (self.s.regs[2], self.s.regs[1]);
        if rex_w {
            if !canonical(rip) || !canonical(rsp) {
                return exc(13, 0);
            }
            self.set_cs(flat(cs.wrapping_add(32) | 3, 3, true, true), 3);
            self.s.seg[SS] = flat(cs.wrapping_add(40) | 3, 3, false, false);
            self.s.regs[4] = rsp;
            self.s.rip = rip;
        } else {
            self.set_cs(flat(cs.wrapping_add(16) | 3, 3, true, false), 3);
            self.s.seg[SS] = flat(cs.wrapping_add(24) | 3, 3, false, false);
            self.s.regs[4] = rsp & 0xffff_ffff;
            self.s.rip = rip & 0xffff_ffff;
        }
        Ok(())
    }

    /// CMPXCHG16B m128 (16-byte aligned, #GP(0) otherwise). The destination is always written
    /// (with its old value when the comparison fails), as a locked access does.
    pub(crate) fn exec_cmpxchg16b<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        i: &iced_x86::Instruction,
    ) -> Res<()> {
        let off = self.ea(i);
        let seg = Self::mseg(i);
        let lin = self.seg_addr(seg, off, 16, true)?;
        if lin & 15 != 0 {
            return exc(13, 0);
        }
        self.probe_write(b, seg, off, 16)?;
        let lo = self.rd(b, seg, off, 8)?;
        let hi = self.rd(b, seg, off.wrapping_add(8), 8)?;
        if lo == self.s.regs[0] && hi == self.s.regs[2] {
            let (nlo, nhi) = (self.s.regs[3], self.s.regs[1]);
            self.wr(b, seg, off, 8, nlo)?;
            self.wr(b, seg, off.wrapping_add(8), 8, nhi)?;
            self.set_flag(crate::ZF, true);
        } else {
            self.wr(b, seg, off, 8, lo)?;
            self.wr(b, seg, off.wrapping_add(8), 8, hi)?;
            self.s.regs[0] = lo;
            self.s.regs[2] = hi;
            self.set_flag(crate::ZF, false);
        }
        Ok(())
    }
}
