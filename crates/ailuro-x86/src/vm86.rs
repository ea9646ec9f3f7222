//! Virtual-8086 mode (SDM Vol. 3 chapter 20), without the virtual-mode extensions: CR4.VME and
//! CR4.PVI are neither advertised nor settable, so there are no VIF/VIP semantics and no
//! software-interrupt redirection bitmap.
//!
//! VM86 is EFLAGS.VM = 1 with CR0.PE = 1 outside IA-32e mode. It is entered by a 32-bit IRET at
//! CPL 0 whose EFLAGS image has VM set (`iret_to_vm86`) or by a task switch into a 32-bit TSS
//! whose EFLAGS image has VM set (`task_switch` in `prot.rs`), and left by an interrupt or
//! exception, which always goes to a ring-0 handler through a 32-bit gate with the extended frame
//! (GS, FS, DS, ES, SS, ESP, EFLAGS, CS, EIP; see `deliver` in `prot.rs`) or through a task gate.
//!
//! While in VM86 the CPL is 3 and every segment register holds an 8086-style descriptor cache:
//! base = selector << 4, limit 0xffff and the attributes of a present, accessed, read/write data
//! segment with DPL 3 (0xf3, which is also what VMX demands of VM86 guest segments). Because the
//! D/B bit is clear, instruction decoding (`fetch`), the IP mask and the stack-pointer mask are
//! 16-bit without any VM test on those hot paths, and the protected-mode checks of `seg_addr`
//! reduce to the real-mode 64 KiB limit check (CS writes through an override are allowed, as on
//! an 8086). User-mode paging applies because the CPL is 3.
//!
//! The IOPL-sensitive instructions (CLI, STI, PUSHF, POPF, INT n, IRET) raise #GP(0) when IOPL < 3
//! (CLI/STI through the usual CPL > IOPL test, the others in `exec.rs` and here); IN/OUT/INS/OUTS
//! consult the TSS I/O permission bitmap whatever the IOPL (`io_check`); INT3, INTO and BOUND are
//! not IOPL-sensitive (INT3/INTO go through the IDT with the gate DPL checked against CPL 3).

use ailuro_bus::Platform;

use crate::mem::Bus;
use crate::{exc, Cpu, Res, SegReg, Segment, IOPL, VM};

/// Attributes of every VM86 segment register: present, DPL 3, code/data, read/write data,
/// accessed; byte granular and 16-bit (G = D/B = 0).
pub(crate) const VM86_ATTR: u16 = 0xf3;

/// The descriptor cache a VM86 segment load produces for `sel`.
pub(crate) fn vm86_seg(sel: u16) -> Segment {
    Segment { selector: sel, base: u64::from(sel) << 4, limit: 0xffff, attr: VM86_ATTR }
}

impl Cpu {
    /// Virtual-8086 mode active (EFLAGS.VM can only be set with CR0.PE = 1 outside IA-32e mode).
    #[inline]
    pub(crate) fn vm86(&self) -> bool {
        self.s.rflags & VM != 0
    }

    /// #GP(0) for an IOPL-sensitive instruction in VM86 when IOPL < 3 (SDM 20.2.7): the monitor
    /// emulates it from its #GP handler.
    #[inline]
    pub(crate) fn vm86_iopl_check(&self) -> Res<()> {
        if self.vm86() && self.s.rflags & IOPL != IOPL {
            return exc(13, 0);
        }
        Ok(())
    }

    /// Load all six segment registers 8086-style and make the CPL 3 (entering VM86).
    pub(crate) fn load_vm86_segs(&mut self, sels: [u16; 6]) {
        for (r, s) in sels.iter().enumerate() {
            self.s.seg[r] = vm86_seg(*s);
        }
        self.s.cpl = 3;
    }

    /// IRETD at CPL 0 with VM = 1 in the popped EFLAGS (SDM IRET, RETURN-TO-VIRTUAL-8086-MODE).
    /// `eip`, `cs` and `fl` were read from the first three dwords; the frame goes on with ESP, SS,
    /// ES, DS, FS and GS (the selectors' upper halves are discarded). Everything is read before
    /// anything changes, so a fault leaves the CPU as it was.
    pub(crate) fn iret_to_vm86<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, eip: u64, cs: u16, fl: u64) -> Res<()> {
        let mut rest = [0u64; 6];
        for (k, v) in rest.iter_mut().enumerate() {
            *v = self.peek(b, 12 + 4 * k as u64, 4)?;
        }
        // The new CS limit is 0xffff: the return EIP must lie within it.
        if eip > 0xffff {
            return exc(13, 0);
        }
        let [esp, ss, es, ds, fs, gs] = rest;
        // At CPL 0 every flag is loaded (IOPL and IF included), then VM; RF comes from the image
        // as for every IRETD. VIF/VIP stay clear: without VME they have no meaning here.
        self.write_flags_priv(fl, 4, 0);
        self.s.rflags = (self.s.rflags & !crate::RF) | (fl & crate::RF) | VM;
        self.load_vm86_segs([es as u16, cs, ss as u16, ds as u16, fs as u16, gs as u16]);
        self.s.regs[4] = esp & 0xffff_ffff;
        self.s.rip = eip;
        Ok(())
    }

    /// IRET executed in VM86 (SDM IRET, RETURN-FROM-VIRTUAL-8086-MODE): #GP(0) unless IOPL = 3;
    /// otherwise a real-mode style return that stays in VM86 and cannot change VM or IOPL (NT is
    /// not consulted: no task return from VM86).
    pub(crate) fn iret_in_vm86<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, size: u32) -> Res<()> {
        self.vm86_iopl_check()?;
        let s = u64::from(size);
        let eip = self.peek(b, 0, size)?;
        let cs = self.peek(b, s, size)? as u16;
        let fl = self.peek(b, 2 * s, size)?;
        if eip > 0xffff {
            return exc(13, 0);
        }
        let sp = self.s.regs[4];
        self.set_sp(sp.wrapping_add(3 * s));
        self.s.seg[SegReg::Cs as usize] = vm86_seg(cs);
        self.s.rip = eip;
        // CPL 3 = IOPL: IF is writable, IOPL is not; VM and RF are never written by the flag
        // write itself. A 32-bit IRET loads RF from the image.
        self.write_flags_priv(fl, size, 3);
        if size == 4 {
            self.s.rflags = (self.s.rflags & !crate::RF) | (fl & crate::RF);
        }
        Ok(())
    }
}
