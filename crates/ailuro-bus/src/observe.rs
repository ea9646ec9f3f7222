//! The CPU's second seam: what analyses (plugins) may watch.
//!
//! A CPU core reports instruction execution, memory accesses, interrupts/exceptions and
//! address-space changes to a [`CpuObserver`], but only the kinds the observer asked for in
//! [`CpuObserver::hooks`]: the core reads that mask once per `run` call and tests one bit at each
//! site, so a kind nobody wants costs one predictable branch and no call. Observers never change
//! guest state: they get a read-only [`CpuView`] and the RAM, so a replay with plugins executes
//! exactly as one without.
//!
//! This module knows no architecture: registers are numbered by the core (its `reg_names` says
//! how) and the address-space identifier is whatever the architecture uses (x86: CR3, ARM: TTBR0).

use crate::GuestRam;

/// Bits of [`CpuObserver::hooks`].
pub mod hook {
    /// [`super::CpuObserver::before_insn`].
    pub const BEFORE_INSN: u32 = 1 << 0;
    /// [`super::CpuObserver::after_insn`].
    pub const AFTER_INSN: u32 = 1 << 1;
    /// [`super::CpuObserver::before_block`].
    pub const BEFORE_BLOCK: u32 = 1 << 2;
    /// [`super::CpuObserver::after_block`].
    pub const AFTER_BLOCK: u32 = 1 << 3;
    /// [`super::CpuObserver::mem_read`].
    pub const MEM_READ: u32 = 1 << 4;
    /// [`super::CpuObserver::mem_write`].
    pub const MEM_WRITE: u32 = 1 << 5;
    /// [`super::CpuObserver::interrupt`].
    pub const INTERRUPT: u32 = 1 << 6;
    /// [`super::CpuObserver::asid_change`].
    pub const ASID_CHANGE: u32 = 1 << 7;
    /// No callback: the core counts basic blocks in [`super::CpuView::blocks`] (much cheaper than
    /// a `before_block` callback per block).
    pub const COUNT_BLOCKS: u32 = 1 << 8;
    /// Everything.
    pub const ALL: u32 = 0x1ff;
}

/// A read-only view of the CPU handed to observers.
pub trait CpuView {
    /// Program counter of the instruction being reported (x86: linear address CS.base+EIP).
    fn pc(&self) -> u64;
    /// Instructions retired so far.
    fn icount(&self) -> u64;
    /// Current address-space identifier (x86: CR3 with the flag bits cleared, in long mode the
    /// PML4's physical address; 0 without paging).
    fn asid(&self) -> u64;
    /// Is the CPU in its most privileged mode (x86 CPL 0, ARM a PL1 mode)?
    fn in_kernel(&self) -> bool;
    /// Register `n` in the core's numbering (see [`CpuView::reg_names`]).
    fn reg(&self, n: usize) -> u64;
    /// Names of the registers `reg` accepts, in order (x86: eax, ecx, edx, ebx, esp, ebp, esi,
    /// edi, eip, eflags, cr0, cr2, cr3, cr4, cs, ss, ds, es, fs, gs, then r8..r15, fs_base,
    /// gs_base, kernel_gs_base, efer; in long mode the first ten are the full 64-bit rax..rdi,
    /// rip and rflags). New registers are appended, so indices stay valid.
    fn reg_names(&self) -> &'static [&'static str];
    /// The index of the register called `name` in [`CpuView::reg_names`], if the core has it
    /// (e.g. `kernel_gs_base`, which only an x86_64-capable core reports).
    fn reg_index(&self, name: &str) -> Option<usize> {
        self.reg_names().iter().position(|n| *n == name)
    }
    /// Translate a virtual address with the guest's current page tables, without touching the
    /// TLB, accessed/dirty bits or anything else (never faults). `None` if unmapped.
    fn virt_to_phys(&self, ram: &GuestRam, vaddr: u64) -> Option<u64>;
    /// Width of the code being executed in bits (x86: 16, 32 or 64; ARM: 32, or 16 for Thumb),
    /// e.g. to pick a disassembler mode.
    fn bits(&self) -> u32 {
        32
    }
    /// Basic blocks started so far, counted while an observer wants [`hook::COUNT_BLOCKS`] or a
    /// block callback (0 if the core does not count).
    fn blocks(&self) -> u64 {
        0
    }
}

/// One memory access by the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemAccess {
    /// Virtual (x86: linear) address.
    pub vaddr: u64,
    /// Physical address of the first byte (an access split at a page boundary is reported as one
    /// access per page).
    pub paddr: u64,
    /// Size in bytes (1..=8 here; wider accesses are reported in parts).
    pub size: u8,
    /// The value read or written (little-endian, zero-extended).
    pub value: u64,
    /// Did it go to RAM (`false`: MMIO)?
    pub ram: bool,
}

/// An interrupt or exception taken by the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptEvent {
    /// Vector (x86 0..=255; ARM exception kind).
    pub vector: u32,
    /// Error code pushed, if any.
    pub error_code: Option<u32>,
    /// External (hardware) interrupt rather than an exception or software interrupt.
    pub external: bool,
    /// Software interrupt instruction (x86 `int n`, ARM `svc`).
    pub software: bool,
}

/// Receives what the CPU reports. Every method has an empty default; a core calls a method only
/// when its bit is set in [`CpuObserver::hooks`].
#[allow(unused_variables)]
pub trait CpuObserver {
    /// The [`hook`] bits this observer wants. Read once per `run` call.
    fn hooks(&self) -> u32;
    /// Before an instruction executes (`cpu.pc()` is its address).
    fn before_insn(&mut self, cpu: &dyn CpuView, ram: &GuestRam) {}
    /// After an instruction retired (`cpu.pc()` is the next instruction; `pc` the one retired).
    fn after_insn(&mut self, cpu: &dyn CpuView, ram: &GuestRam, pc: u64) {}
    /// Before the first instruction of a basic block: the instruction after a control transfer
    /// (taken or not), after an interrupt or exception, or the first one of a `run` call.
    fn before_block(&mut self, cpu: &dyn CpuView, ram: &GuestRam) {}
    /// After the last instruction of a block (a control transfer) retired; `pc` is its address.
    fn after_block(&mut self, cpu: &dyn CpuView, ram: &GuestRam, pc: u64) {}
    /// A guest memory read (after it completed).
    fn mem_read(&mut self, cpu: &dyn CpuView, ram: &GuestRam, access: &MemAccess) {}
    /// A guest memory write (after it completed).
    fn mem_write(&mut self, cpu: &dyn CpuView, ram: &GuestRam, access: &MemAccess) {}
    /// The CPU is delivering an interrupt or exception (`cpu.pc()`: where it was raised).
    fn interrupt(&mut self, cpu: &dyn CpuView, ram: &GuestRam, event: &InterruptEvent) {}
    /// The address-space identifier changed (x86: a CR3 write or task switch).
    fn asid_change(&mut self, cpu: &dyn CpuView, ram: &GuestRam, old: u64, new: u64) {}
}

/// The observer of a plain run: wants nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl CpuObserver for NoObserver {
    fn hooks(&self) -> u32 {
        0
    }
}
