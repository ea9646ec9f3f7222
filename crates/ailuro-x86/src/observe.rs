//! What the x86 core shows observers (plugins): a read-only [`CpuView`] and a page walk with no
//! side effects.

use ailuro_bus::observe::CpuView;
use ailuro_bus::GuestRam;

use crate::{Cpu, SegReg, CR0_PG, CR4_PAE, CR4_PSE};

/// Register numbering of [`CpuView::reg`] for x86.
pub const X86_REG_NAMES: &[&str] = &[
    "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags", "cr0", "cr2", "cr3", "cr4", "cs", "ss",
    "ds", "es", "fs", "gs",
];

/// A view of the CPU at a given program counter (the instruction being reported).
pub(crate) struct View<'a> {
    pub cpu: &'a Cpu,
    pub pc: u64,
}

impl CpuView for View<'_> {
    fn pc(&self) -> u64 {
        self.pc
    }
    fn icount(&self) -> u64 {
        self.cpu.s.icount
    }
    fn asid(&self) -> u64 {
        self.cpu.asid()
    }
    fn in_kernel(&self) -> bool {
        self.cpu.s.cpl == 0
    }
    fn reg(&self, n: usize) -> u64 {
        let s = &self.cpu.s;
        match n {
            0..=7 => s.regs[n] & 0xffff_ffff,
            8 => s.rip,
            9 => s.rflags,
            10 => s.cr0,
            11 => s.cr2,
            12 => s.cr3,
            13 => s.cr4,
            14 => u64::from(s.seg[SegReg::Cs as usize].selector),
            15 => u64::from(s.seg[SegReg::Ss as usize].selector),
            16 => u64::from(s.seg[SegReg::Ds as usize].selector),
            17 => u64::from(s.seg[SegReg::Es as usize].selector),
            18 => u64::from(s.seg[SegReg::Fs as usize].selector),
            19 => u64::from(s.seg[SegReg::Gs as usize].selector),
            _ => 0,
        }
    }
    fn reg_names(&self) -> &'static [&'static str] {
        X86_REG_NAMES
    }
    fn virt_to_phys(&self, ram: &GuestRam, vaddr: u64) -> Option<u64> {
        self.cpu.debug_translate(ram, vaddr)
    }
    fn blocks(&self) -> u64 {
        self.cpu.blocks
    }
    fn bits(&self) -> u32 {
        if self.cpu.s.seg[SegReg::Cs as usize].attr & crate::ATTR_DB != 0 && self.cpu.s.cr0 & crate::CR0_PE != 0 {
            32
        } else {
            16
        }
    }
}

impl Cpu {
    /// Address-space identifier: CR3 without its flag bits while paging is on, else 0. With PAE
    /// the PDPT is only 32-byte aligned (Linux packs several processes' PDPTs into one page), so
    /// its bits 11:5 count too.
    pub fn asid(&self) -> u64 {
        if self.s.cr0 & CR0_PG != 0 && self.s.cr4 & CR4_PAE != 0 {
            self.s.cr3 & 0xffff_ffe0
        } else if self.s.cr0 & CR0_PG != 0 {
            self.s.cr3 & 0xffff_f000
        } else {
            0
        }
    }

    /// Translate a linear address with the current page tables without any side effect (no TLB
    /// fill, no accessed/dirty bits, never a fault). `None` when not mapped. Ignores permissions.
    pub fn debug_translate(&self, ram: &GuestRam, lin: u64) -> Option<u64> {
        let lin = lin & 0xffff_ffff;
        if self.s.cr0 & CR0_PG == 0 {
            return Some(lin);
        }
        if self.s.cr4 & CR4_PAE != 0 {
            return self.debug_translate_pae(ram, lin);
        }
        let rd = |a: u64| ram.read_u32(a).ok().map(u64::from);
        let pde = rd((self.s.cr3 & 0xffff_f000) | ((lin >> 20) & 0xffc))?;
        if pde & 1 == 0 {
            return None;
        }
        if pde & 0x80 != 0 && self.s.cr4 & CR4_PSE != 0 {
            return Some((pde & 0xffc0_0000) | (lin & 0x003f_ffff));
        }
        let pte = rd((pde & 0xffff_f000) | ((lin >> 10) & 0xffc))?;
        if pte & 1 == 0 {
            return None;
        }
        Some((pte & 0xffff_f000) | (lin & 0xfff))
    }

    /// [`Cpu::debug_translate`] for PAE paging: the CPU's PDPTE registers, then 64-bit entries.
    /// Entries with reserved bits set translate to `None`, as the CPU would fault on them.
    fn debug_translate_pae(&self, ram: &GuestRam, lin: u64) -> Option<u64> {
        use crate::mem::{PAE_ADDR as ADDR, PAE_RSVD, PAE_RSVD_2M, PAE_XD};
        let nxe = self.s.efer & crate::EFER_NXE != 0;
        let rsvd = if nxe { PAE_RSVD & !PAE_XD } else { PAE_RSVD };
        let pdpte = self.s.pdpte[((lin >> 30) & 3) as usize];
        if pdpte & 1 == 0 {
            return None;
        }
        let pde = ram.read_u64((pdpte & ADDR) | ((lin >> 18) & 0xff8)).ok()?;
        if pde & 1 == 0 || pde & rsvd != 0 {
            return None;
        }
        if pde & 0x80 != 0 {
            if pde & PAE_RSVD_2M != 0 {
                return None;
            }
            return Some((pde & ADDR & !0x1f_ffff) | (lin & 0x1f_ffff));
        }
        let pte = ram.read_u64((pde & ADDR) | ((lin >> 9) & 0xff8)).ok()?;
        if pte & 1 == 0 || pte & rsvd != 0 {
            return None;
        }
        Some((pte & ADDR) | (lin & 0xfff))
    }

    /// A read-only view for observers, reporting `pc`.
    pub(crate) fn view(&self, pc: u64) -> View<'_> {
        View { cpu: self, pc }
    }
}

impl Cpu {
    /// A read-only view for observers outside a `run` call (pc = next instruction).
    pub fn observer_view(&self) -> impl CpuView + '_ {
        self.view(self.lin_pc())
    }
}
