//! What the x86 core shows observers (plugins): a read-only [`CpuView`] and a page walk with no
//! side effects (2-level, PAE and long mode's 4-level paging).

use ailuro_bus::observe::CpuView;
use ailuro_bus::GuestRam;

use crate::{Cpu, SegReg, CR0_PG, CR4_PAE, CR4_PSE};

/// Register numbering of [`CpuView::reg`] for x86. Indices 0-19 are those of the 32-bit core
/// (kept stable); the long-mode registers follow. In long mode (EFER.LMA, 64-bit or
/// compatibility code) indices 0-9 give the full 64-bit RAX..RDI, RIP and RFLAGS; outside it
/// the low 32 bits, as before. `fs_base`/`gs_base` are the segment bases (in 64-bit kernel code
/// GS.base is the per-cpu area, in user code the user's), `kernel_gs_base` is
/// IA32_KERNEL_GS_BASE (what SWAPGS exchanges with GS.base), `efer` is IA32_EFER.
pub const X86_REG_NAMES: &[&str] = &[
    "eax",
    "ecx",
    "edx",
    "ebx",
    "esp",
    "ebp",
    "esi",
    "edi",
    "eip",
    "eflags",
    "cr0",
    "cr2",
    "cr3",
    "cr4",
    "cs",
    "ss",
    "ds",
    "es",
    "fs",
    "gs",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "fs_base",
    "gs_base",
    "kernel_gs_base",
    "efer",
];

/// Index of `r8` in [`X86_REG_NAMES`] (r8..r15 follow in order).
pub const REG_R8: usize = 20;
/// Index of `fs_base` in [`X86_REG_NAMES`].
pub const REG_FS_BASE: usize = 28;
/// Index of `gs_base` in [`X86_REG_NAMES`].
pub const REG_GS_BASE: usize = 29;
/// Index of `kernel_gs_base` in [`X86_REG_NAMES`].
pub const REG_KERNEL_GS_BASE: usize = 30;
/// Index of `efer` in [`X86_REG_NAMES`].
pub const REG_EFER: usize = 31;

/// IA32_EFER.LMA (long mode active). Kept here rather than taken from the core so that this
/// read-only view does not depend on how the executing code names its constants.
const EFER_LMA: u64 = 1 << 10;
/// Segment attribute bit of CS.L (descriptor bit 53, stored in bit 13 of `attr`).
const ATTR_L: u16 = 1 << 13;
/// Physical-address bits 51:12 of a 4-level paging entry (and of CR3 in long mode). The walk
/// masks rather than checks reserved bits: it reports where an entry points, not whether the
/// CPU would accept it.
const LM_ADDR: u64 = 0x000f_ffff_ffff_f000;

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
        // Outside long mode only the low halves are architectural.
        let wide = if s.efer & EFER_LMA != 0 { u64::MAX } else { 0xffff_ffff };
        match n {
            0..=7 => s.regs[n] & wide,
            8 => s.rip & wide,
            9 => s.rflags & wide,
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
            REG_R8..=27 => s.regs[n - REG_R8 + 8],
            REG_FS_BASE => s.seg[SegReg::Fs as usize].base,
            REG_GS_BASE => s.seg[SegReg::Gs as usize].base,
            REG_KERNEL_GS_BASE => s.lm.kernel_gs_base,
            REG_EFER => s.efer,
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
        let s = &self.cpu.s;
        let cs = s.seg[SegReg::Cs as usize].attr;
        if s.efer & EFER_LMA != 0 && cs & ATTR_L != 0 {
            64
        } else if cs & crate::ATTR_DB != 0 && s.cr0 & crate::CR0_PE != 0 {
            // Protected mode, or compatibility mode under a 64-bit kernel.
            32
        } else {
            16
        }
    }
}

impl Cpu {
    /// Address-space identifier: CR3 without its flag bits while paging is on, else 0. With PAE
    /// the PDPT is only 32-byte aligned (Linux packs several processes' PDPTs into one page), so
    /// its bits 11:5 count too. In long mode: the PML4's physical address (bits 51:12; PCID
    /// bits 11:0 are not used, PCID is not advertised, and bit 63 is a flag of the write).
    pub fn asid(&self) -> u64 {
        if self.s.efer & EFER_LMA != 0 {
            self.s.cr3 & LM_ADDR
        } else if self.s.cr0 & CR0_PG != 0 && self.s.cr4 & CR4_PAE != 0 {
            self.s.cr3 & 0xffff_ffe0
        } else if self.s.cr0 & CR0_PG != 0 {
            self.s.cr3 & 0xffff_f000
        } else {
            0
        }
    }

    /// Translate a linear address with the current page tables without any side effect (no TLB
    /// fill, no accessed/dirty bits, never a fault). `None` when not mapped. Ignores permissions.
    /// In long mode (EFER.LMA) the walk is 4-level from CR3 (see `Cpu::debug_translate_lm`);
    /// otherwise addresses are 32 bits wide.
    pub fn debug_translate(&self, ram: &GuestRam, lin: u64) -> Option<u64> {
        if self.s.efer & EFER_LMA != 0 {
            return self.debug_translate_lm(ram, lin);
        }
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

    /// [`Cpu::debug_translate`] in long mode: PML4 at CR3, then PDPT (1 GiB pages), page
    /// directory (2 MiB pages) and page table, 64-bit entries with 52-bit physical addresses.
    /// A non-canonical address (bits 63:47 not all equal) is `None`, as the CPU would fault.
    /// Reserved bits and NX are ignored (an observer asks where, not whether).
    fn debug_translate_lm(&self, ram: &GuestRam, lin: u64) -> Option<u64> {
        let top = (lin as i64) >> 47;
        if top != 0 && top != -1 {
            return None;
        }
        let mut table = self.s.cr3 & LM_ADDR;
        // (index shift, large-page size at this level: PDPT 1 GiB, PD 2 MiB)
        for (shift, large) in [(39u32, None), (30, Some(1u64 << 30)), (21, Some(1u64 << 21)), (12, None)] {
            let e = ram.read_u64(table | (((lin >> shift) & 0x1ff) << 3)).ok()?;
            if e & 1 == 0 {
                return None;
            }
            if shift == 12 {
                return Some((e & LM_ADDR) | (lin & 0xfff));
            }
            if let Some(size) = large {
                if e & 0x80 != 0 {
                    return Some((e & LM_ADDR & !(size - 1)) | (lin & (size - 1)));
                }
            }
            table = e & LM_ADDR;
        }
        None
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

#[cfg(test)]
mod tests {
    //! The side-effect-free page walks (4-level and PAE) on page tables built in RAM, and what
    //! the view reports in long mode.

    use super::*;
    use crate::{CpuConfig, CpuModel};

    const P: u64 = 1; // present
    const RW: u64 = 2;
    const PS: u64 = 0x80; // large page
    const NX: u64 = 1 << 63;

    fn cpu64() -> Cpu {
        Cpu::new(CpuConfig { model: CpuModel::X86_64 })
    }

    /// Long mode with paging, PML4 at `cr3`, in 64-bit code (CS.L) at CPL `cpl`.
    fn long_mode(cpu: &mut Cpu, cr3: u64, cpl: u8) {
        cpu.s.cr0 |= CR0_PG | crate::CR0_PE;
        cpu.s.cr4 |= CR4_PAE;
        cpu.s.efer |= EFER_LMA | (1 << 8);
        cpu.s.cr3 = cr3;
        cpu.s.cpl = cpl;
        cpu.s.seg[SegReg::Cs as usize].attr = 0x9b | ATTR_L;
    }

    fn w(ram: &mut GuestRam, at: u64, v: u64) {
        ram.write_u64(at, v).unwrap();
    }

    /// PML4 0x1000; kernel half: PML4[511] -> PDPT 0x2000 with PDPT[510] -> PD 0x3000 (the
    /// kernel text mapping at 0xffffffff80000000) and PDPT[0] a 1 GiB page at 0x4000_0000 (for
    /// 0xffffff8000000000); user half: PML4[0] -> PDPT 0x4000 -> PD 0x5000 -> PT 0x6000.
    fn tables(ram: &mut GuestRam) {
        w(ram, 0x1000 + 511 * 8, 0x2000 | P | RW);
        w(ram, 0x1000, 0x4000 | P | RW | 4);
        w(ram, 0x2000 + 510 * 8, 0x3000 | P | RW);
        w(ram, 0x2000, 0x4000_0000 | P | RW | PS | NX);
        // PD: entry 8 a 2 MiB page at 0x0100_0000 (with NX and high flag bits: ignored),
        // entry 9 not present.
        w(ram, 0x3000 + 8 * 8, 0x0100_0000 | P | PS | NX | (0x7f << 52));
        w(ram, 0x4000, 0x5000 | P | RW | 4);
        w(ram, 0x5000 + 0x40 * 8, 0x6000 | P | RW | 4);
        w(ram, 0x6000 + 0x48 * 8, 0x0020_7000 | P | 4);
    }

    #[test]
    fn four_level_walk_with_1g_2m_and_4k_pages() {
        let mut ram = GuestRam::new(0, 4 << 20).unwrap();
        tables(&mut ram);
        let mut cpu = cpu64();
        long_mode(&mut cpu, 0x1000 | 0x18 | (1 << 63), 0);
        // 2 MiB page of the kernel text mapping: 0xffffffff81000000 + 0x12345
        assert_eq!(cpu.debug_translate(&ram, 0xffff_ffff_8101_2345), Some(0x0101_2345));
        // 1 GiB page
        assert_eq!(cpu.debug_translate(&ram, 0xffff_ff80_1234_5678), Some(0x5234_5678));
        // 4 KiB page: PML4 0, PDPT 0, PD 0x40, PT 0x48 -> 0x0804_8abc
        assert_eq!(cpu.debug_translate(&ram, 0x0804_8abc), Some(0x0020_7abc));
        // not present at each level
        assert_eq!(cpu.debug_translate(&ram, 0xffff_ffff_8120_0000), None, "PD entry");
        assert_eq!(cpu.debug_translate(&ram, 0x0804_9000), None, "PT entry");
        assert_eq!(cpu.debug_translate(&ram, 0x0000_7fff_0000_0000), None, "PML4 entry");
        // non-canonical
        assert_eq!(cpu.debug_translate(&ram, 0x0000_8000_0000_0000), None);
        assert_eq!(cpu.debug_translate(&ram, 0xffff_0000_0000_0000 | 0x0804_8abc), None);
        // a table outside RAM
        w(&mut ram, 0x1000 + 8, 0x7000_0000 | P);
        assert_eq!(cpu.debug_translate(&ram, 0x0000_0080_0000_0000), None);
        // the asid drops the flag bits of CR3 (PCD/PWT, bit 63)
        assert_eq!(cpu.asid(), 0x1000);
        let v = cpu.observer_view();
        assert_eq!(v.virt_to_phys(&ram, 0xffff_ffff_8101_2345), Some(0x0101_2345));
        assert_eq!(v.asid(), 0x1000);
    }

    #[test]
    fn pae_walk_uses_the_pdpte_registers() {
        let mut ram = GuestRam::new(0, 4 << 20).unwrap();
        let mut cpu = cpu64();
        cpu.s.cr0 |= CR0_PG | crate::CR0_PE;
        cpu.s.cr4 |= CR4_PAE;
        cpu.s.cr3 = 0x1020;
        // The registers, not the PDPT in memory (which says something else), count.
        cpu.s.pdpte = [0x2000 | P, 0, 0, 0x3000 | P];
        w(&mut ram, 0x1020, 0x9000 | P);
        // PDPTE 0: PD 0x2000, entry 0x40 -> PT 0x4000, entry 0x48 -> 0x0020_7000
        w(&mut ram, 0x2000 + 0x40 * 8, 0x4000 | P | RW);
        w(&mut ram, 0x4000 + 0x48 * 8, 0x0020_7000 | P);
        // PDPTE 3: PD 0x3000, entry 8 a 2 MiB page at 0x0100_0000
        w(&mut ram, 0x3000 + 8 * 8, 0x0100_0000 | P | PS);
        assert_eq!(cpu.debug_translate(&ram, 0x0804_8abc), Some(0x0020_7abc));
        assert_eq!(cpu.debug_translate(&ram, 0xc101_2345), Some(0x0101_2345));
        assert_eq!(cpu.debug_translate(&ram, 0x4000_0000), None, "PDPTE 1 not present");
        assert_eq!(cpu.debug_translate(&ram, 0xc120_0000), None, "PDE not present");
        assert_eq!(cpu.asid(), 0x1020, "PAE asid keeps the 32-byte PDPT offset");
        // addresses are 32 bits wide outside long mode
        assert_eq!(cpu.debug_translate(&ram, 0x1_0804_8abc), Some(0x0020_7abc));
    }

    #[test]
    fn long_mode_registers_bits_and_bases() {
        let mut cpu = cpu64();
        let ram = GuestRam::new(0, 1 << 20).unwrap();
        // Legacy mode first: 32-bit values as before, 16-bit code after reset.
        cpu.s.regs[0] = 0x1234_5678_9abc_def0;
        assert_eq!(cpu.observer_view().reg(0), 0x9abc_def0);
        assert_eq!(cpu.observer_view().bits(), 16);
        long_mode(&mut cpu, 0x1000, 3);
        cpu.s.regs[8] = 8;
        cpu.s.regs[15] = 0xffff_8000_0000_000f;
        cpu.s.rip = 0x7fff_0000_1000;
        cpu.s.seg[SegReg::Fs as usize].base = 0x7f00_0000_0000;
        cpu.s.seg[SegReg::Gs as usize].base = 0;
        cpu.s.lm.kernel_gs_base = 0xffff_8880_0fc0_0000;
        let v = cpu.observer_view();
        assert_eq!(v.reg(0), 0x1234_5678_9abc_def0, "full RAX in long mode");
        assert_eq!(v.reg(8), 0x7fff_0000_1000, "full RIP");
        assert_eq!(v.reg(REG_R8), 8);
        assert_eq!(v.reg(REG_R8 + 7), 0xffff_8000_0000_000f);
        assert_eq!(v.reg(REG_FS_BASE), 0x7f00_0000_0000);
        assert_eq!(v.reg(REG_GS_BASE), 0);
        assert_eq!(v.reg(REG_KERNEL_GS_BASE), 0xffff_8880_0fc0_0000);
        assert_eq!(v.reg(REG_EFER) & EFER_LMA, EFER_LMA);
        assert_eq!(v.bits(), 64);
        assert!(!v.in_kernel());
        assert_eq!(v.pc(), 0x7fff_0000_1000);
        let names = v.reg_names();
        assert_eq!(names.len(), 32);
        for (i, n) in [(0, "eax"), (19, "gs"), (REG_R8, "r8"), (27, "r15"), (REG_KERNEL_GS_BASE, "kernel_gs_base")] {
            assert_eq!(names[i], n);
        }
        assert_eq!(v.reg(99), 0);
        // compatibility mode: a 32-bit code segment under long mode
        drop(v);
        cpu.s.seg[SegReg::Cs as usize].attr = 0x9b | crate::ATTR_DB;
        assert_eq!(cpu.observer_view().bits(), 32);
        assert_eq!(cpu.observer_view().virt_to_phys(&ram, 0x1000), None, "no PML4 entries");
    }
}
