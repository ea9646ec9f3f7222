//! Memory access: segmentation checks, paging with a software TLB, physical RAM/MMIO access, and the
//! decoded-instruction cache with its invalidation on writes to code.

use ailuro_bus::observe::{hook, CpuObserver, MemAccess};
use ailuro_bus::{GuestRam, Platform, ProgramPoint};
use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};

use crate::fast::Uop;
use crate::{ex, exc, Cpu, Fault, Res, SegReg, CR0_PG, CR0_WP, CR4_PAE, CR4_PGE, CR4_PSE};

/// RAM and the platform for the duration of one `run` call.
pub(crate) struct Bus<'a, P: Platform + ?Sized> {
    pub ram: &'a mut GuestRam,
    pub p: &'a mut P,
    /// A Platform call happened during the current instruction: `run` returns after it.
    pub touched: bool,
    /// Observer (plugins) and the hook bits it wants for this `run` call.
    pub obs: &'a mut dyn CpuObserver,
    pub hooks: u32,
}

/// Hooks that need instructions executed one at a time (no chaining or batching).
pub(crate) const STEP_HOOKS: u32 = hook::BEFORE_INSN | hook::AFTER_INSN;
/// Block hooks: reported from inside `step` and the fast chain, which keeps chaining.
pub(crate) const BLOCK_HOOKS: u32 = hook::BEFORE_BLOCK | hook::AFTER_BLOCK | hook::COUNT_BLOCKS;

/// Access kind bits; W and U are placed like the #PF error code bits.
pub(crate) const ACC_W: u8 = 2;
pub(crate) const ACC_U: u8 = 4;
/// Instruction fetch (selects the instruction TLB; placed like the #PF error code's I/D bit,
/// which is reported only with PAE and EFER.NXE).
pub(crate) const ACC_X: u8 = 16;

/// Physical-address width (CPUID reports no leaf 0x8000_0008, for which the SDM says 36 with PAE).
pub(crate) const MAXPHYADDR: u32 = 36;
/// Physical-address bits 35:12 of a PAE paging entry.
pub(crate) const PAE_ADDR: u64 = ((1 << MAXPHYADDR) - 1) & !0xfff;
/// Reserved bits of PAE PDEs/PTEs: above MAXPHYADDR, including bit 63 (XD) unless EFER.NXE.
pub(crate) const PAE_RSVD: u64 = !((1 << MAXPHYADDR) - 1);
/// Bit 63 of a PAE entry: execute-disable when EFER.NXE=1.
pub(crate) const PAE_XD: u64 = 1 << 63;
/// Further reserved bits of a PAE PDE that maps a 2 MiB page (bit 12 is PAT).
pub(crate) const PAE_RSVD_2M: u64 = 0x1f_e000;
/// Reserved bits of a present PDPTE: 2:1, 8:5 and everything above MAXPHYADDR.
const PDPTE_RSVD: u64 = !((1 << MAXPHYADDR) - 1) | 0x1e6;
/// Error-code bit of a #PF caused by a reserved bit set in a paging entry.
pub(crate) const PF_RSVD: u32 = 8;

/// The TLB's size, entry layout and index function are the translator's soft-MMU contract
/// (compiled code probes this TLB inline): `ailuro_jit::{TLB_SIZE, TlbEntry, tlb_index}`.
use ailuro_jit::{tlb_index, TlbEntry, TLB_SIZE, TLB_VALID};
/// Valid bit of the fetch tag, which holds bits 47:12 of the linear address (unique for canonical
/// addresses) and the user bit at bit 40.
pub(crate) const FETCH_VALID: u64 = 1 << 48;
pub(crate) const PERM_UR: u8 = 1; // user may read
pub(crate) const PERM_UW: u8 = 2; // user may write (and D is set)
pub(crate) const PERM_SW: u8 = 4; // supervisor may write (and D is set)
const PERM_G: u8 = 8; // global page

/// Software TLB: two direct-mapped arrays (instruction fetches and data accesses, so that code and
/// data pages at the same index do not evict each other), linear page -> physical page plus
/// permissions already checked.
pub(crate) struct Tlb {
    pub d: Vec<TlbEntry>,
    i: Vec<TlbEntry>,
    /// Last instruction-fetch translation: (linear page | user << 40 | valid) -> physical page.
    /// Dropped by every flush, like the TLB entries it was derived from.
    pub fetch_tag: u64,
    pub fetch_ppage: u64,
}

impl Tlb {
    pub fn new() -> Self {
        Tlb {
            d: vec![TlbEntry::default(); TLB_SIZE],
            i: vec![TlbEntry::default(); TLB_SIZE],
            fetch_tag: 0,
            fetch_ppage: 0,
        }
    }

    pub fn flush_all(&mut self) {
        self.fetch_tag = 0;
        self.d.fill(TlbEntry::default());
        self.i.fill(TlbEntry::default());
    }

    pub fn flush_non_global(&mut self) {
        self.fetch_tag = 0;
        for e in self.d.iter_mut().chain(self.i.iter_mut()) {
            if e.perm & PERM_G == 0 {
                *e = TlbEntry::default();
            }
        }
    }

    pub fn flush_page(&mut self, lin: u64) {
        self.fetch_tag = 0;
        let vpn = lin >> 12;
        for t in [&mut self.d, &mut self.i] {
            let e = &mut t[tlb_index(vpn)];
            if e.tag == vpn | TLB_VALID {
                *e = TlbEntry::default();
            }
        }
    }
}

const IC_BITS: u32 = 15;
const IC_SIZE: usize = 1 << IC_BITS;

#[derive(Clone, Copy)]
pub(crate) struct IcEntry {
    tag: u64,
    gen: u32,
    /// Instruction length in bytes.
    pub len: u8,
    pub uop: Uop,
}

/// Decoded instructions keyed by (physical address, code size), validated by a per-RAM-page
/// generation counter that is bumped whenever a page holding cached code is written.
pub(crate) struct DecodeCache {
    /// IC_SIZE direct-mapped entries plus one scratch entry for uncacheable instructions.
    pub e: Vec<IcEntry>,
    /// The full decoded instructions, parallel to `e` (only the generic path reads them, so the
    /// hot metadata stays dense).
    pub ins: Vec<Instruction>,
    pub gen: Vec<u32>,
    /// Pages holding decoded (or translated) code: a write to one bumps its generation.
    pub mark: Vec<bool>,
    base: u64,
    /// Count of whole-cache flushes (the translator drops its blocks when it changes).
    pub flushes: u64,
    /// Count of code-page invalidations (lets batched REP string steps notice self-modification).
    pub invalidations: u64,
    /// Build pre-decoded fast forms (tests turn this off to compare against the generic path).
    pub fast: bool,
}

impl DecodeCache {
    pub fn new() -> Self {
        DecodeCache {
            e: vec![IcEntry { tag: 0, gen: 0, len: 0, uop: Uop::default() }; IC_SIZE + 1],
            ins: vec![Instruction::default(); IC_SIZE + 1],
            gen: Vec::new(),
            mark: Vec::new(),
            base: 0,
            flushes: 0,
            invalidations: 0,
            fast: true,
        }
    }

    pub fn flush(&mut self) {
        self.flushes += 1;
        for e in &mut self.e {
            e.tag = 0;
        }
        self.mark.fill(false);
    }

    /// Size the per-page tables for this RAM (a different RAM layout drops everything).
    pub fn attach(&mut self, ram: &GuestRam) {
        let pages = (ram.size() >> 12) as usize;
        if self.gen.len() != pages || self.base != ram.base() {
            self.gen = vec![0; pages];
            self.mark = vec![false; pages];
            self.base = ram.base();
            self.flush();
        }
    }

    #[inline]
    fn page_written(&mut self, page: usize) {
        if let Some(m) = self.mark.get_mut(page) {
            if *m {
                *m = false;
                self.invalidations += 1;
                let g = self.gen[page].wrapping_add(1);
                self.gen[page] = g;
                if g == 0 {
                    // A wrapped generation could validate a stale entry: drop them all.
                    self.flush();
                }
            }
        }
    }

    /// RAM bytes at offset `off` (from RAM base), `len` long, were written.
    #[inline]
    pub fn note_write(&mut self, off: usize, len: usize) {
        let first = off >> 12;
        let last = (off + len.max(1) - 1) >> 12;
        self.page_written(first);
        if last != first {
            self.page_written(last);
        }
    }

    pub fn invalidate_range(&mut self, paddr: u64, len: u64) {
        if len == 0 || self.gen.is_empty() {
            return;
        }
        let start = paddr.max(self.base);
        let end = paddr.saturating_add(len).min(self.base + (self.gen.len() as u64) * 4096);
        if start >= end {
            return;
        }
        for page in ((start - self.base) >> 12)..=((end - 1 - self.base) >> 12) {
            self.page_written(page as usize);
        }
    }

    #[inline]
    fn slot(paddr: u64) -> usize {
        ((paddr ^ (paddr >> IC_BITS)) as usize) & (IC_SIZE - 1)
    }

    #[inline(always)]
    pub(crate) fn lookup(&self, tag: u64, paddr: u64) -> Option<usize> {
        let slot = Self::slot(paddr);
        let e = &self.e[slot];
        if e.tag == tag {
            let page = (paddr.wrapping_sub(self.base) >> 12) as usize;
            if self.gen.get(page) == Some(&e.gen) {
                return Some(slot);
            }
        }
        None
    }

    /// Store a decoded instruction; returns the entry index.
    fn insert(&mut self, tag: u64, paddr: u64, ins: Instruction, bits: u32) -> usize {
        let uop = Uop::build(&ins, if self.fast { bits } else { 0 });
        let page = (paddr.wrapping_sub(self.base) >> 12) as usize;
        if page >= self.gen.len() {
            return self.scratch(ins, bits);
        }
        self.mark[page] = true;
        let gen = self.gen[page];
        let slot = Self::slot(paddr);
        self.e[slot] = IcEntry { tag, gen, len: ins.len() as u8, uop };
        self.ins[slot] = ins;
        slot
    }

    /// Park an instruction that must not be cached in the scratch entry.
    fn scratch(&mut self, ins: Instruction, bits: u32) -> usize {
        let uop = Uop::build(&ins, if self.fast { bits } else { 0 });
        self.e[IC_SIZE] = IcEntry { tag: 0, gen: 0, len: ins.len() as u8, uop };
        self.ins[IC_SIZE] = ins;
        IC_SIZE
    }
}

impl Cpu {
    #[inline]
    pub(crate) fn at(&self) -> ProgramPoint {
        ProgramPoint { icount: self.s.icount, pc: self.cur_pc }
    }

    #[inline]
    pub(crate) fn pm(&self) -> bool {
        self.s.cr0 & crate::CR0_PE != 0
    }

    #[inline]
    pub(crate) fn user_acc(&self) -> u8 {
        if self.s.cpl == 3 {
            ACC_U
        } else {
            0
        }
    }

    /// Segment checks for `size` bytes at offset `off` of segment `seg`; returns the linear address.
    #[inline]
    pub(crate) fn seg_addr(&self, seg: usize, off: u64, size: u32, write: bool) -> Res<u64> {
        let s = &self.s.seg[seg];
        let fault = if seg == SegReg::Ss as usize { 12 } else { 13 };
        if self.long64() {
            // 64-bit mode: no limit or type checks; only FS and GS have a base. Every byte must
            // be canonical (#SS(0) for stack references, #GP(0) otherwise).
            let base = if seg >= SegReg::Fs as usize { s.base } else { 0 };
            let lin = base.wrapping_add(off);
            if !crate::canonical(lin) || !crate::canonical(lin.wrapping_add(u64::from(size) - 1)) {
                return exc(fault, 0);
            }
            return Ok(lin);
        }
        let end = off + u64::from(size) - 1;
        if self.pm() {
            let a = s.attr;
            if a & crate::ATTR_P == 0 {
                return exc(fault, 0);
            }
            let code = a & 0x8 != 0;
            if write && (code || a & 0x2 == 0) {
                return exc(fault, 0);
            }
            if !write && code && a & 0x2 == 0 {
                return exc(fault, 0);
            }
            if !code && a & 0x4 != 0 {
                // Expand-down data segment: valid offsets are (limit, upper].
                let upper = if a & crate::ATTR_DB != 0 { 0xffff_ffff } else { 0xffff };
                if off <= u64::from(s.limit) || end > upper {
                    return exc(fault, 0);
                }
                return Ok(s.base.wrapping_add(off) & 0xffff_ffff);
            }
        }
        if end > u64::from(s.limit) {
            return exc(fault, 0);
        }
        Ok(s.base.wrapping_add(off) & 0xffff_ffff)
    }

    /// Translate a linear address for an access of kind `acc` (ACC_W/ACC_U bits).
    #[inline(always)]
    pub(crate) fn translate<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, lin: u64, acc: u8) -> Res<u64> {
        if self.s.cr0 & CR0_PG == 0 {
            return Ok(lin);
        }
        let vpn = lin >> 12;
        let t = if acc & ACC_X != 0 { &self.tlb.i } else { &self.tlb.d };
        let e = &t[tlb_index(vpn)];
        if e.tag == vpn | TLB_VALID {
            let need = match (acc & ACC_W != 0, acc & ACC_U != 0) {
                (false, false) => 0,
                (false, true) => PERM_UR,
                (true, false) => PERM_SW,
                (true, true) => PERM_UW,
            };
            if e.perm & need == need {
                return Ok(e.ppage | (lin & 0xfff));
            }
        }
        self.walk(b, lin, acc)
    }

    /// Two-level 32-bit page walk (4 KiB pages, 4 MiB pages with CR4.PSE), setting A/D bits;
    /// with CR4.PAE the PAE walk instead.
    #[inline(never)]
    fn walk<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, lin: u64, acc: u8) -> Res<u64> {
        if self.lma() {
            return self.walk_long(b, lin, acc);
        }
        if self.s.cr4 & CR4_PAE != 0 {
            return self.walk_pae(b, lin, acc);
        }
        let write = acc & ACC_W != 0;
        // No I/D error-code bit without PAE and NXE.
        let acc_pf = acc & !ACC_X;
        let pde_addr = (self.s.cr3 & 0xffff_f000) | ((lin >> 20) & 0xffc);
        let pde = self.phys_read(b, pde_addr, 4);
        if pde & 1 == 0 {
            return self.page_fault(lin, acc_pf, 0);
        }
        let large = pde & 0x80 != 0 && self.s.cr4 & CR4_PSE != 0;
        let (pte_addr, pte) = if large {
            (pde_addr, pde)
        } else {
            let a = (pde & 0xffff_f000) | ((lin >> 10) & 0xffc);
            let pte = self.phys_read(b, a, 4);
            if pte & 1 == 0 {
                return self.page_fault(lin, acc_pf, 0);
            }
            (a, pte)
        };
        let u_ok = pde & pte & 4 != 0;
        let w_ok = pde & pte & 2 != 0;
        self.check_perm(lin, acc_pf, u_ok, w_ok)?;
        // Accessed bits (and dirty on write) are set only for successful translations.
        if pde & 0x20 == 0 {
            self.phys_write(b, pde_addr, 4, pde | 0x20);
        }
        let mut pte_now = if large { pde | 0x20 } else { pte };
        if !large {
            let want = pte | 0x20 | if write { 0x40 } else { 0 };
            if want != pte {
                self.phys_write(b, pte_addr, 4, want);
            }
            pte_now = want;
        } else if write && pte_now & 0x40 == 0 {
            pte_now |= 0x40;
            self.phys_write(b, pde_addr, 4, pte_now);
        }
        let ppage = if large { (pte_now & 0xffc0_0000) | (lin & 0x003f_f000) } else { pte_now & 0xffff_f000 };
        Ok(self.tlb_fill(lin, acc, ppage, u_ok, w_ok, pte_now))
    }

    /// PAE page walk (SDM Vol. 3 4.4): PDPTE register -> 64-bit PDE (2 MiB page when PS=1) ->
    /// 64-bit PTE (4 KiB page). Entries are read and their A/D bits written as 8-byte quantities,
    /// as the processor does. Present entries with reserved bits set (physical-address bits at or
    /// above MAXPHYADDR, bit 63 unless EFER.NXE, bits 20:13 of a 2 MiB PDE) give #PF with RSVD in
    /// the error code and set no accessed bit. With EFER.NXE, an instruction fetch from a page
    /// whose PDE or PTE has XD set is a protection #PF, and every fetch #PF reports I/D.
    fn walk_pae<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, lin: u64, acc: u8) -> Res<u64> {
        let write = acc & ACC_W != 0;
        let nxe = self.s.efer & crate::EFER_NXE != 0;
        // The I/D error-code bit exists only with NXE (SDM Vol. 3 4.7).
        let acc_pf = if nxe { acc } else { acc & !ACC_X };
        let rsvd = if nxe { PAE_RSVD & !PAE_XD } else { PAE_RSVD };
        // The PDPTE registers' reserved bits were checked when they were loaded (#GP then).
        let pdpte = self.s.pdpte[((lin >> 30) & 3) as usize];
        if pdpte & 1 == 0 {
            return self.page_fault(lin, acc_pf, 0);
        }
        let pde_addr = (pdpte & PAE_ADDR) | ((lin >> 18) & 0xff8);
        let pde = self.phys_read(b, pde_addr, 8);
        if pde & 1 == 0 {
            return self.page_fault(lin, acc_pf, 0);
        }
        let large = pde & 0x80 != 0;
        if pde & rsvd != 0 || (large && pde & PAE_RSVD_2M != 0) {
            return self.page_fault(lin, acc_pf, 1 | PF_RSVD);
        }
        let (pte_addr, pte) = if large {
            (pde_addr, pde)
        } else {
            let a = (pde & PAE_ADDR) | ((lin >> 9) & 0xff8);
            let pte = self.phys_read(b, a, 8);
            if pte & 1 == 0 {
                return self.page_fault(lin, acc_pf, 0);
            }
            if pte & rsvd != 0 {
                return self.page_fault(lin, acc_pf, 1 | PF_RSVD);
            }
            (a, pte)
        };
        let u_ok = pde & pte & 4 != 0;
        let w_ok = pde & pte & 2 != 0;
        self.check_perm(lin, acc_pf, u_ok, w_ok)?;
        // Only fetch walks fill the instruction TLB, so a non-executable page never gets an entry
        // there and the fast paths need no execute permission bit.
        if acc & ACC_X != 0 && nxe && (pde | pte) & PAE_XD != 0 {
            return self.page_fault(lin, acc_pf, 1);
        }
        if pde & 0x20 == 0 {
            self.phys_write(b, pde_addr, 8, pde | 0x20);
        }
        let base = if large { pde | 0x20 } else { pte };
        let want = base | 0x20 | if write { 0x40 } else { 0 };
        if want != base {
            self.phys_write(b, pte_addr, 8, want);
        }
        let ppage = if large { (want & PAE_ADDR & !0x1f_ffff) | (lin & 0x1f_f000) } else { want & PAE_ADDR };
        Ok(self.tlb_fill(lin, acc, ppage, u_ok, w_ok, want))
    }

    /// 4-level page walk of IA-32e paging (SDM Vol. 3 4.5): PML4E -> PDPTE -> PDE (2 MiB page
    /// when PS=1) -> PTE. Like the PAE walk: 8-byte entries, A/D bits written as the processor
    /// does, reserved bits (physical-address bits at or above MAXPHYADDR, XD unless EFER.NXE, PS
    /// in a PML4E, PS in a PDPTE since 1-GiB pages are not advertised, bits 20:13 of a 2 MiB PDE)
    /// give #PF with RSVD, U/S and R/W are the AND of all levels and XD the OR.
    fn walk_long<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, lin: u64, acc: u8) -> Res<u64> {
        let write = acc & ACC_W != 0;
        let nxe = self.s.efer & crate::EFER_NXE != 0;
        let acc_pf = if nxe { acc } else { acc & !ACC_X };
        // Bits 51:MAXPHYADDR are reserved; bits 62:52 are ignored (free for software, unlike PAE
        // paging, where they are reserved); bit 63 is XD with NXE, reserved without.
        let rsvd = (PAE_RSVD & ((1 << 52) - 1)) | if nxe { 0 } else { PAE_XD };
        // Physical address of each level's entry and the entry itself.
        let mut addrs = [0u64; 4];
        let mut ents = [0u64; 4];
        let mut table = self.s.cr3 & PAE_ADDR;
        let mut levels = 0;
        let mut large = false;
        for level in 0..4 {
            let shift = 39 - 9 * level as u64;
            let a = table | ((lin >> shift) & 0x1ff) << 3;
            let e = self.phys_read(b, a, 8);
            if e & 1 == 0 {
                return self.page_fault(lin, acc_pf, 0);
            }
            let ps = e & 0x80 != 0;
            let bad = e & rsvd != 0 || (ps && level < 2) || (ps && level == 2 && e & PAE_RSVD_2M != 0);
            if bad {
                return self.page_fault(lin, acc_pf, 1 | PF_RSVD);
            }
            addrs[level] = a;
            ents[level] = e;
            levels = level + 1;
            if ps && level == 2 {
                large = true;
                break;
            }
            table = e & PAE_ADDR;
        }
        let all = ents[..levels].iter().fold(u64::MAX, |m, e| m & e);
        let any = ents[..levels].iter().fold(0, |m, e| m | e);
        let u_ok = all & 4 != 0;
        let w_ok = all & 2 != 0;
        self.check_perm(lin, acc_pf, u_ok, w_ok)?;
        if acc & ACC_X != 0 && nxe && any & PAE_XD != 0 {
            return self.page_fault(lin, acc_pf, 1);
        }
        // Accessed bits on the upper levels, accessed (and dirty on a write) on the leaf.
        for k in 0..levels - 1 {
            if ents[k] & 0x20 == 0 {
                self.phys_write(b, addrs[k], 8, ents[k] | 0x20);
            }
        }
        let leaf = ents[levels - 1];
        let want = leaf | 0x20 | if write { 0x40 } else { 0 };
        if want != leaf {
            self.phys_write(b, addrs[levels - 1], 8, want);
        }
        let ppage = if large { (want & PAE_ADDR & !0x1f_ffff) | (lin & 0x1f_f000) } else { want & PAE_ADDR };
        Ok(self.tlb_fill(lin, acc, ppage, u_ok, w_ok, want))
    }

    /// #PF for `lin` with the present/RSVD bits `bits` plus the access's W/U (and, when the
    /// caller leaves it in `acc`, I/D) bits; sets CR2.
    fn page_fault(&mut self, lin: u64, acc: u8, bits: u32) -> Res<u64> {
        self.s.cr2 = lin;
        exc(14, bits | u32::from(acc & (ACC_W | ACC_U | ACC_X)))
    }

    /// Protection check of a present translation (U/S, R/W, CR0.WP); #PF with P=1 on failure.
    #[inline]
    fn check_perm(&mut self, lin: u64, acc: u8, u_ok: bool, w_ok: bool) -> Res<()> {
        let (write, user) = (acc & ACC_W != 0, acc & ACC_U != 0);
        let wp = self.s.cr0 & CR0_WP != 0;
        if (user && !u_ok) || (write && !w_ok && (user || wp)) {
            self.page_fault(lin, acc, 1)?;
        }
        Ok(())
    }

    /// Cache a successful translation; `leaf` is the final entry with its A/D bits as written.
    /// The TLB entry only holds the physical page and the pre-checked permissions, so the fast
    /// path is the same for every walk format.
    fn tlb_fill(&mut self, lin: u64, acc: u8, ppage: u64, u_ok: bool, w_ok: bool, leaf: u64) -> u64 {
        let wp = self.s.cr0 & CR0_WP != 0;
        let mut perm = 0;
        if u_ok {
            perm |= PERM_UR;
        }
        // Writes are pre-approved only once D is set, so the first write still walks to set it.
        if leaf & 0x40 != 0 {
            if w_ok && u_ok {
                perm |= PERM_UW;
            }
            if w_ok || !wp {
                perm |= PERM_SW;
            }
        }
        if leaf & 0x100 != 0 && self.s.cr4 & CR4_PGE != 0 {
            perm |= PERM_G;
        }
        let vpn = lin >> 12;
        let t = if acc & ACC_X != 0 { &mut self.tlb.i } else { &mut self.tlb.d };
        t[tlb_index(vpn)] = TlbEntry { tag: vpn | TLB_VALID, ppage, perm };
        ppage | (lin & 0xfff)
    }

    /// Load the four PAE PDPTE registers from the 32-byte-aligned PDPT that `cr3` points to.
    /// A present PDPTE with reserved bits set (bits 2:1, 8:5, bits at or above MAXPHYADDR) is
    /// #GP(0), and then nothing changes (SDM Vol. 3 4.4.1).
    pub(crate) fn load_pdptes<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, cr3: u64) -> Res<()> {
        let base = cr3 & 0xffff_ffe0;
        let mut e = [0u64; 4];
        for (k, slot) in e.iter_mut().enumerate() {
            *slot = self.phys_read(b, base + 8 * k as u64, 8);
            if *slot & 1 != 0 && *slot & PDPTE_RSVD != 0 {
                return exc(13, 0);
            }
        }
        self.s.pdpte = e;
        Ok(())
    }

    /// Read `size` (1..=8) bytes at a physical address: RAM directly, anything else via MMIO.
    #[inline(always)]
    pub(crate) fn phys_read<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, pa: u64, size: u32) -> u64 {
        if let Some(off) = b.ram.offset_of(pa, u64::from(size)) {
            let d = b.ram.as_slice();
            return match size {
                1 => u64::from(d[off]),
                2 => u64::from(u16::from_le_bytes([d[off], d[off + 1]])),
                4 => u64::from(u32::from_le_bytes(d[off..off + 4].try_into().expect("4 bytes"))),
                8 => u64::from_le_bytes(d[off..off + 8].try_into().expect("8 bytes")),
                // Odd sizes come from accesses split at a page boundary.
                n => d[off..off + n as usize].iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)),
            };
        }
        self.phys_read_slow(b, pa, size)
    }

    #[inline(never)]
    fn phys_read_slow<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, pa: u64, size: u32) -> u64 {
        if let Some(bytes) = b.ram.rom_at(pa, u64::from(size)) {
            // Firmware ROM: part of the machine state, read directly (no device access).
            return bytes.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x));
        }
        if !b.ram.contains(pa, 1) && !b.ram.contains(pa + u64::from(size) - 1, 1) {
            b.touched = true;
            let at = self.at();
            return b.p.mmio_read(at, pa, size as u8) & mask(size);
        }
        // Straddles RAM and non-RAM: byte by byte.
        let mut v = 0u64;
        for k in 0..u64::from(size) {
            v |= self.phys_read(b, pa + k, 1) << (8 * k);
        }
        v
    }

    /// Write `size` (1..=8) bytes at a physical address, invalidating decoded code there.
    #[inline(always)]
    pub(crate) fn phys_write<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, pa: u64, size: u32, v: u64) {
        if let Some(off) = b.ram.offset_of(pa, u64::from(size)) {
            let d = b.ram.as_mut_slice();
            match size {
                1 => d[off] = v as u8,
                2 => d[off..off + 2].copy_from_slice(&(v as u16).to_le_bytes()),
                4 => d[off..off + 4].copy_from_slice(&(v as u32).to_le_bytes()),
                8 => d[off..off + 8].copy_from_slice(&v.to_le_bytes()),
                // Odd sizes come from accesses split at a page boundary.
                n => d[off..off + n as usize].copy_from_slice(&v.to_le_bytes()[..n as usize]),
            }
            self.icache.note_write(off, size as usize);
            return;
        }
        self.phys_write_slow(b, pa, size, v);
    }

    #[inline(never)]
    fn phys_write_slow<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, pa: u64, size: u32, v: u64) {
        if b.ram.rom_at(pa, u64::from(size)).is_some() {
            // Writes to ROM are dropped, as on the hardware.
            return;
        }
        if !b.ram.contains(pa, 1) && !b.ram.contains(pa + u64::from(size) - 1, 1) {
            b.touched = true;
            let at = self.at();
            b.p.mmio_write(at, pa, size as u8, v & mask(size));
            return;
        }
        for k in 0..u64::from(size) {
            self.phys_write(b, pa + k, 1, v >> (8 * k));
        }
    }

    /// Read at a linear address.
    #[inline(always)]
    pub(crate) fn lin_read<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, lin: u64, size: u32, acc: u8) -> Res<u64> {
        if (lin & 0xfff) + u64::from(size) <= 0x1000 {
            let pa = self.translate(b, lin, acc)?;
            let v = self.phys_read(b, pa, size);
            if b.hooks & hook::MEM_READ != 0 {
                self.report_mem(b, lin, pa, size, v, false);
            }
            return Ok(v);
        }
        self.lin_read_split(b, lin, size, acc)
    }

    /// Tell the observer about a completed access (one page's part of it).
    #[inline(never)]
    pub(crate) fn report_mem<P: Platform + ?Sized>(
        &self,
        b: &mut Bus<P>,
        lin: u64,
        pa: u64,
        size: u32,
        value: u64,
        write: bool,
    ) {
        let a = MemAccess {
            vaddr: lin,
            paddr: pa,
            size: size as u8,
            value: value & mask(size),
            ram: b.ram.contains(pa, u64::from(size)),
        };
        let view = self.view(self.cur_pc);
        if write {
            b.obs.mem_write(&view, b.ram, &a);
        } else {
            b.obs.mem_read(&view, b.ram, &a);
        }
    }

    #[inline(never)]
    fn lin_read_split<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, lin: u64, size: u32, acc: u8) -> Res<u64> {
        // Crosses a page boundary: translate both pages before touching anything.
        let split = 0x1000 - (lin & 0xfff);
        let pa0 = self.translate(b, lin, acc)?;
        let pa1 = self.translate(b, self.next_page_lin(lin, split), acc)?;
        let lo = self.phys_read(b, pa0, split as u32);
        let hi = self.phys_read(b, pa1, size - split as u32);
        if b.hooks & hook::MEM_READ != 0 {
            self.report_mem(b, lin, pa0, split as u32, lo, false);
            self.report_mem(b, self.next_page_lin(lin, split), pa1, size - split as u32, hi, false);
        }
        Ok(lo | (hi << (8 * split)))
    }

    /// Write at a linear address.
    #[inline(always)]
    pub(crate) fn lin_write<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        lin: u64,
        size: u32,
        v: u64,
        acc: u8,
    ) -> Res<()> {
        let acc = acc | ACC_W;
        if (lin & 0xfff) + u64::from(size) <= 0x1000 {
            let pa = self.translate(b, lin, acc)?;
            self.phys_write(b, pa, size, v);
            if b.hooks & hook::MEM_WRITE != 0 {
                self.report_mem(b, lin, pa, size, v, true);
            }
            return Ok(());
        }
        self.lin_write_split(b, lin, size, v, acc)
    }

    #[inline(never)]
    fn lin_write_split<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        lin: u64,
        size: u32,
        v: u64,
        acc: u8,
    ) -> Res<()> {
        let split = 0x1000 - (lin & 0xfff);
        let pa0 = self.translate(b, lin, acc)?;
        let pa1 = self.translate(b, self.next_page_lin(lin, split), acc)?;
        self.phys_write(b, pa0, split as u32, v);
        self.phys_write(b, pa1, size - split as u32, v >> (8 * split));
        if b.hooks & hook::MEM_WRITE != 0 {
            self.report_mem(b, lin, pa0, split as u32, v, true);
            self.report_mem(b, self.next_page_lin(lin, split), pa1, size - split as u32, v >> (8 * split), true);
        }
        Ok(())
    }

    /// Linear address `split` bytes after `lin` (the next page of a split access): wraps at
    /// 4 GiB outside 64-bit mode.
    #[inline]
    pub(crate) fn next_page_lin(&self, lin: u64, split: u64) -> u64 {
        let a = lin.wrapping_add(split);
        if self.long64() {
            a
        } else {
            a & 0xffff_ffff
        }
    }

    /// Read `size` bytes at `seg:off` with the current privilege.
    #[inline]
    pub(crate) fn rd<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, seg: usize, off: u64, size: u32) -> Res<u64> {
        let lin = self.seg_addr(seg, off, size, false)?;
        let acc = self.user_acc();
        let v = self.lin_read(b, lin, size, acc)?;
        if self.bp_active {
            self.data_bp_check(lin, size, false);
        }
        Ok(v)
    }

    /// Write `size` bytes at `seg:off` with the current privilege.
    #[inline]
    pub(crate) fn wr<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        seg: usize,
        off: u64,
        size: u32,
        v: u64,
    ) -> Res<()> {
        let lin = self.seg_addr(seg, off, size, true)?;
        let acc = self.user_acc();
        self.lin_write(b, lin, size, v, acc)?;
        if self.bp_active {
            self.data_bp_check(lin, size, true);
        }
        Ok(())
    }

    /// Check that `seg:off` is writable (used before multi-part updates).
    pub(crate) fn probe_write<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        seg: usize,
        off: u64,
        size: u32,
    ) -> Res<()> {
        let lin = self.seg_addr(seg, off, size, true)?;
        let acc = self.user_acc() | ACC_W;
        self.translate(b, lin, acc)?;
        if (lin & 0xfff) + u64::from(size) > 0x1000 {
            self.translate(b, self.next_page_lin(lin | 0xfff, 1), acc)?;
        }
        Ok(())
    }

    /// Fetch and decode the instruction at CS:EIP (through the decode cache); returns the index of
    /// its decode-cache entry.
    #[inline(always)]
    pub(crate) fn fetch<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>) -> Res<usize> {
        let eip = self.s.rip;
        let cs = self.s.seg[SegReg::Cs as usize];
        let long64 = self.long64();
        let lin = if long64 { eip } else { cs.base.wrapping_add(eip) & 0xffff_ffff };
        self.cur_pc = lin;
        if long64 {
            if !crate::canonical(eip) {
                return exc(13, 0);
            }
        } else if eip > u64::from(cs.limit) {
            return exc(13, 0);
        }
        let acc = self.user_acc() | ACC_X;
        let ftag = ((lin & 0xffff_ffff_ffff) >> 12) | (u64::from(acc & ACC_U) << 40) | FETCH_VALID;
        let pa = if self.tlb.fetch_tag == ftag {
            self.tlb.fetch_ppage | (lin & 0xfff)
        } else {
            let pa = self.translate(b, lin, acc)?;
            self.tlb.fetch_tag = ftag;
            self.tlb.fetch_ppage = pa & !0xfff;
            pa
        };
        let bits: u32 = if long64 {
            64
        } else if cs.attr & crate::ATTR_DB != 0 && self.pm() {
            32
        } else {
            16
        };
        let tag = pa | (u64::from(bits) << 56);
        let idx = if let Some(i) = self.icache.lookup(tag, pa) { i } else { self.decode_at(b, lin, pa, tag, bits)? };
        if long64 {
            if !crate::canonical(eip.wrapping_add(u64::from(self.icache.e[idx].len) - 1)) {
                return exc(13, 0);
            }
        } else if eip + u64::from(self.icache.e[idx].len) - 1 > u64::from(cs.limit) {
            return exc(13, 0);
        }
        Ok(idx)
    }

    #[cold]
    #[inline(never)]
    fn decode_at<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        lin: u64,
        pa: u64,
        tag: u64,
        bits: u32,
    ) -> Res<usize> {
        let Some(off) = b.ram.offset_of(pa, 1) else {
            return self.decode_rom(b, lin, pa, bits);
        };
        let in_page = (0x1000 - (pa & 0xfff)) as usize;
        let avail = in_page.min(15).min(b.ram.as_slice().len() - off);
        let mut dec = Decoder::with_ip(bits, &b.ram.as_slice()[off..off + avail], 0, DecoderOptions::NONE);
        let ins = dec.decode();
        if !ins.is_invalid() {
            return Ok(self.icache.insert(tag, pa, ins, bits));
        }
        if dec.last_error() != DecoderError::NoMoreBytes || avail >= 15 {
            return ex(6);
        }
        // The instruction continues on the next page (or past the end of RAM).
        let mut buf = [0u8; 15];
        buf[..avail].copy_from_slice(&b.ram.as_slice()[off..off + avail]);
        let lin2 = self.next_page_lin(lin, avail as u64);
        let acc = self.user_acc() | ACC_X;
        let pa2 = self.translate(b, lin2, acc)?;
        let need = 15 - avail;
        let Some(off2) = b.ram.offset_of(pa2, 1) else {
            return Err(Fault::Shutdown(format!(
                "instruction fetch from non-RAM physical address {pa2:#x} (linear {lin2:#x})"
            )));
        };
        let n = need.min(b.ram.as_slice().len() - off2).min(0x1000 - (pa2 & 0xfff) as usize);
        buf[avail..avail + n].copy_from_slice(&b.ram.as_slice()[off2..off2 + n]);
        let mut dec = Decoder::with_ip(bits, &buf[..avail + n], 0, DecoderOptions::NONE);
        let ins = dec.decode();
        if ins.is_invalid() {
            return ex(6);
        }
        // Not cached: its bytes live on two pages and only one generation is tracked per entry.
        Ok(self.icache.scratch(ins, bits))
    }
}

impl Cpu {
    /// Decode an instruction from the firmware ROM ([`GuestRam::rom_at`]). ROM code is not
    /// cached (the decode cache is indexed by RAM page); firmware runs briefly at boot.
    #[cold]
    #[inline(never)]
    fn decode_rom<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, lin: u64, pa: u64, bits: u32) -> Res<usize> {
        let mut buf = [0u8; 15];
        let mut n = 0;
        // Bytes up to the end of this page from the ROM; the rest through the next page.
        let in_page = (0x1000 - (pa & 0xfff)).min(15) as usize;
        while n < in_page {
            match b.ram.rom_at(pa + n as u64, 1) {
                Some(x) => buf[n] = x[0],
                None => break,
            }
            n += 1;
        }
        if n == 0 {
            return Err(Fault::Shutdown(format!(
                "instruction fetch from non-RAM physical address {pa:#x} (linear {lin:#x}); executing from MMIO is not supported"
            )));
        }
        if n == in_page && n < 15 {
            let lin2 = self.next_page_lin(lin, n as u64);
            let acc = self.user_acc() | ACC_X;
            let pa2 = self.translate(b, lin2, acc)?;
            while n < 15 {
                let k = (n - in_page) as u64;
                let byte = match (b.ram.rom_at(pa2 + k, 1), b.ram.offset_of(pa2 + k, 1)) {
                    (Some(x), _) => x[0],
                    (None, Some(off)) => b.ram.as_slice()[off],
                    _ => break,
                };
                buf[n] = byte;
                n += 1;
            }
        }
        let mut dec = Decoder::with_ip(bits, &buf[..n], 0, DecoderOptions::NONE);
        let ins = dec.decode();
        if ins.is_invalid() {
            return ex(6);
        }
        Ok(self.icache.scratch(ins, bits))
    }
}

/// All-ones mask for `size` bytes.
#[inline]
pub(crate) fn mask(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}
