//! Ailuro's x86 CPU core: an interpreter for i386 and x86_64 (one core; the model decides what
//! CPUID advertises and whether long mode exists).
//!
//! Everything outside CPU+RAM is reached through [`Platform`] only, so a recorded run and its
//! replay execute identically; the CPU never consults host time, randomness or hash-map order.
//!
//! # Structure
//! * `mem.rs`: segmentation checks, two-level 32-bit paging (4 KiB, 4 MiB PSE) and PAE paging
//!   (CR4.PAE: PDPTE registers loaded by MOV CR3 and by the CR0/CR4 writes that enter PAE paging,
//!   64-bit entries, 2 MiB pages, 36-bit physical addresses, reserved-bit #PF with RSVD, NX with
//!   EFER.NXE), PGE
//!   global pages, CR0.WP, accessed/dirty bits, #PF error codes and CR2, behind a direct-mapped
//!   software TLB that caches translations independently of the walk format; RAM/MMIO
//!   access, and the decode cache. Decoded instructions are cached by guest-physical address (plus
//!   code size) and validated by a per-RAM-page generation counter; any write to a page that holds
//!   cached code (by the CPU, including the current instruction's own page, or from outside through
//!   [`Cpu::invalidate_code`]) bumps the generation, so the next fetch re-decodes.
//! * `fast.rs`: a small pre-decoded form (`Uop`) of the hottest integer instructions of 32-bit
//!   code and of 64-bit code (32- and 64-bit operand sizes, REX registers, RIP-relative
//!   operands), executed without iced's operand accessors. Everything else runs through `exec.rs`.
//! * `long.rs`: IA-32e mode: 64-bit interrupt delivery (16-byte gates, RSPn/IST stacks), IRETQ,
//!   SYSCALL/SYSRET, SWAPGS, SYSENTER/SYSEXIT to 64-bit code, 16-byte LDT/TSS descriptors,
//!   CMPXCHG16B. Entering/leaving long mode is `write_cr` in `exec.rs`; 4-level paging is in
//!   `mem.rs`.
//! * `sse.rs`, `sse_int.rs`, `sse_float.rs`: MMX, SSE, SSE2, SSE3 and SSSE3 (integer lanes and an
//!   f32/f64 soft-float with MXCSR rounding, flags, DAZ/FTZ and x86 NaN rules), checked against
//!   the host CPU by `tests/host_diff_sse.rs`.
//! * `exec.rs`: the general interpreter (one `match` on the mnemonic), string instructions,
//!   CPUID/MSRs/control registers.
//! * `prot.rs`: descriptors, segment loads with privilege checks, far JMP/CALL (including call
//!   gates with stack switch and parameter copy), RETF/IRET (also to outer rings), interrupt and
//!   exception delivery through the real-mode IVT or the protected-mode IDT (interrupt and trap
//!   gates with TSS stack switch, task gates), hardware task switches with 32-bit TSSs (far
//!   JMP/CALL to a TSS or task gate, task gates in the IDT, IRET with NT=1; e.g. Linux's double
//!   fault task), and the double-fault / triple-fault escalation.
//! * `vm86.rs`: virtual-8086 mode (entered by IRET or a task switch, left by interrupts and
//!   exceptions through ring-0 gates with the extended frame; IOPL-sensitive instructions).
//! * `fpu.rs`: the x87 FPU (every P6 x87 instruction, FSAVE/FSTENV images in all four layouts,
//!   FXSAVE/FXRSTOR, #NM/#MF rules, last-instruction pointers); `softfloat.rs`: the 80-bit
//!   software floating point behind it (x87 rounding/precision control, exception responses,
//!   transcendental functions in 128-bit internal precision). The x87 runs on the generic path
//!   only: integer instructions pay nothing for it.
//!
//! Flags are evaluated eagerly. A fault leaves EIP, ESP and EFLAGS as they were before the
//! instruction (the step saves and restores them); instructions write memory before registers so
//! that no partial register update survives a fault.
//!
//! Plugins (later issue): the natural place for per-instruction / per-block callbacks is `step`
//! in `exec.rs` (one flag tested per instruction, or per decode-cache entry), and `phys_read` /
//! `phys_write` in `mem.rs` for memory callbacks; nothing is there yet, so nothing is paid.
//!
//! # Instruction counting
//!
//! `icount` counts retired instructions (see `docs/ARCHITECTURE.md`, "Program point"):
//! * a faulting instruction does not retire; delivering an exception or interrupt is not an
//!   instruction;
//! * `int n`, `int3`, `into` (when it traps), `int1` retire, then the event is delivered (if the
//!   gate check itself fails, e.g. DPL < CPL, the INT faults and does not retire);
//! * `hlt` retires, then the CPU waits with `icount` unchanged;
//! * each iteration of a `rep`-prefixed string instruction retires as one instruction, and a `rep`
//!   instruction whose count register is zero retires once. External interrupts are taken between
//!   iterations; EIP stays on the instruction until the last iteration. (For speed, several
//!   iterations of REP MOVS/STOS/LODS may run inside one step when no interrupt is deliverable, no
//!   single-step is active, no Platform call or code write happens and `stop_at` is not reached;
//!   each still counts as one instruction, so this is invisible.)
//! * a single-step trap (EFLAGS.TF) is delivered after the instruction retired.
//!
//! # Known limitations
//! * Task switches to 16-bit (286) TSSs raise #GP/#TS; the I/O bitmap is read from 32-bit TSSs
//!   only. The TSS T (debug trap) bit is ignored.
//! * Virtual-8086 mode (`vm86.rs`) has no virtual-mode extensions: CR4.VME/PVI are not
//!   advertised and cannot be set, so VIF/VIP are never used (IRET to VM86 leaves them clear)
//!   and there is no interrupt redirection bitmap.
//! * x87 FPU, FXSAVE/FXRSTOR (and the 64-bit forms), MMX, SSE, SSE2, SSE3 and SSSE3 are
//!   implemented. RCPPS/RSQRTPS and their scalar forms return the exact result rounded to 12
//!   bits (within the architectural 1.5*2^-12 bound; the hardware's tables are not reproduced).
//!   An unmasked x87 exception is
//!   delivered as #MF at the next waiting x87 instruction also when CR0.NE=0: the FERR#/IRQ13
//!   (PIC) path of a PC is not modelled. Arithmetic, conversions, compares, FPREM/FPREM1,
//!   FSCALE, FXTRACT, BCD, stack faults and the masked/unmasked exception responses match a real
//!   x87 bit for bit in the differential tests; the transcendental instructions are correctly
//!   rounded from a 128-bit internal result (within 1 ulp of, and usually identical to, the
//!   hardware; see `softfloat.rs`). Where x87 vendors differ, the CPU follows Intel (it presents
//!   itself as GenuineIntel; the differential tests now run on an Intel Xeon, earlier on AMD
//!   EPYC, where both agree the choice is theirs): e.g. F2XM1 outside [-1, 1] returns its operand
//!   with PE, and FSCALE of a true denormal by ±0 returns it unchanged with only DE (no
//!   underflow, even unmasked).
//! * Debug registers (`debug.rs`): instruction, data and I/O breakpoints, general detect,
//!   single-step, RF. Data breakpoints match accesses made by instructions through segmentation
//!   (including pushes and string instructions), not implicit supervisor accesses (descriptor
//!   tables, TSS, IDT) nor page walks. The TSS T bit, DR7.LE/GE and branch trace are ignored.
//!   No #AC alignment checks.
//! * A20 is always enabled; no SMM.
//! * Long mode (x86_64 model only): CR8 is the local APIC's TPR (an MMIO access of the TPR
//!   through the Platform); far CALL/JMP through 64-bit call gates; no 1-GiB pages (not advertised; PS in a PDPTE is a
//!   reserved bit), no LA57/PCID/SMEP/SMAP, no RDTSCP/TSC_AUX. SYSCALL/SYSRET follow Intel (#UD
//!   outside 64-bit mode).
//! * Paging: no PSE-36 (PSE pages stay below 4 GiB). MAXPHYADDR is 36 (i386 model: no leaf
//!   0x8000_0008, for which the SDM says that is the width with PAE; x86_64 model: leaf
//!   0x8000_0008 says 36 physical / 48 linear). Page attributes (PAT/PCD/PWT) do not affect
//!   caching. The host-difference tests run user-mode instructions natively, so they cannot
//!   cover paging: the unit tests and the Linux boots do.
//! * CPUID leaves other than 0, 1, 0x8000_0000, 0x8000_0001 and (x86_64) 0x8000_0008 return
//!   zeros.
//! * LOCK is accepted on any instruction (single CPU); RDPMC raises #UD.

#[cfg(test)]
mod conf_tests;
mod debug;
mod exec;
mod fast;
mod flags;
mod fpu;
#[cfg(test)]
mod fpu_tests;
mod jit;
#[cfg(test)]
mod jit_tests;
mod legacy;
mod lift;
mod long;
#[cfg(test)]
mod long_tests;
mod mem;
mod msr;
mod observe;
mod prot;
mod softfloat;
#[cfg(test)]
mod softfloat_tests;
mod sse;
mod sse_float;
mod sse_int;
#[cfg(test)]
mod sse_tests;
#[cfg(test)]
mod tests;
mod vm86;
#[cfg(test)]
mod vm86_tests;

use std::fmt::Write as _;

pub use jit::{Engine, JitStats, DEFAULT_JIT_HOT};

pub use ailuro_bus::observe::{CpuObserver, NoObserver};
pub use ailuro_bus::{GuestRam, Platform, ProgramPoint};
pub use observe::X86_REG_NAMES;
use serde::{Deserialize, Serialize};

/// CPU model selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CpuModel {
    /// 32-bit P6-class CPU without long mode.
    #[default]
    I386,
    /// x86_64: the same core with long mode, SYSCALL and CMPXCHG16B advertised.
    X86_64,
}

/// Static configuration of a [`Cpu`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuConfig {
    /// Which CPU model to emulate.
    pub model: CpuModel,
}

impl CpuConfig {
    /// A 32-bit P6-class CPU.
    pub fn i386() -> Self {
        Self { model: CpuModel::I386 }
    }
}

/// Why [`Cpu::run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunExit {
    /// `icount` reached `stop_at`.
    Limit,
    /// The last instruction (or interrupt delivery) made a [`Platform`] call.
    Platform,
    /// The CPU is halted (HLT) and no interrupt can be taken (INTR low or IF=0). An HLT executed
    /// while INTR is high and IF=1 does not stop the run: the interrupt is delivered at once.
    Halted,
    /// Triple fault or an unsupported condition (e.g. instruction fetch from non-RAM).
    Shutdown {
        /// Human-readable cause.
        reason: String,
    },
}

/// Errors of [`Cpu::load_state`].
#[derive(Debug, thiserror::Error)]
pub enum CpuStateError {
    /// The bytes are not a serialized CPU state.
    #[error("malformed x86 CPU state: {0}")]
    Decode(#[from] postcard::Error),
    /// The state has an unknown format version.
    #[error("unsupported x86 CPU state version {found} (expected {expected})")]
    Version {
        /// Version found in the bytes.
        found: u32,
        /// Version this build understands.
        expected: u32,
    },
    /// The state decodes but is inconsistent.
    #[error("invalid x86 CPU state: {0}")]
    Invalid(String),
}

/// General-purpose registers (64-bit names; 32-bit code uses the low halves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Gpr {
    Rax,
    Rcx,
    Rdx,
    Rbx,
    Rsp,
    Rbp,
    Rsi,
    Rdi,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

/// Segment registers in encoding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum SegReg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

/// A segment register with its hidden descriptor cache.
///
/// `attr` holds descriptor bits 40..=47 (type, S, DPL, P) in bits 0..=7 and bits 52..=55 (AVL, L,
/// D/B, G) in bits 12..=15, like QEMU. An unusable (null) segment has P=0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Visible selector.
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit in bytes (granularity already applied).
    pub limit: u32,
    /// Attributes (see type docs).
    pub attr: u16,
}

/// GDTR/IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescTable {
    /// Linear base.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u32,
}

pub(crate) const ATTR_P: u16 = 0x80;
pub(crate) const ATTR_S: u16 = 0x10;
/// Descriptor L bit (64-bit code segment) in [`Segment::attr`].
pub(crate) const ATTR_L: u16 = 0x2000;
pub(crate) const ATTR_DB: u16 = 0x4000;
pub(crate) const ATTR_G: u16 = 0x8000;

pub(crate) const CF: u64 = 1;
pub(crate) const PF: u64 = 1 << 2;
pub(crate) const AF: u64 = 1 << 4;
pub(crate) const ZF: u64 = 1 << 6;
pub(crate) const SF: u64 = 1 << 7;
pub(crate) const TF: u64 = 1 << 8;
pub(crate) const IF: u64 = 1 << 9;
pub(crate) const DF: u64 = 1 << 10;
pub(crate) const OF: u64 = 1 << 11;
pub(crate) const IOPL: u64 = 3 << 12;
pub(crate) const NT: u64 = 1 << 14;
pub(crate) const RF: u64 = 1 << 16;
pub(crate) const VM: u64 = 1 << 17;
pub(crate) const AC: u64 = 1 << 18;
pub(crate) const ID: u64 = 1 << 21;
/// Arithmetic status flags.
pub(crate) const STATUS: u64 = CF | PF | AF | ZF | SF | OF;

pub(crate) const CR0_PE: u64 = 1;
pub(crate) const CR0_MP: u64 = 1 << 1;
pub(crate) const CR0_EM: u64 = 1 << 2;
pub(crate) const CR0_TS: u64 = 1 << 3;
pub(crate) const CR0_ET: u64 = 1 << 4;
pub(crate) const CR0_WP: u64 = 1 << 16;
pub(crate) const CR0_NW: u64 = 1 << 29;
pub(crate) const CR0_CD: u64 = 1 << 30;
pub(crate) const CR0_PG: u64 = 1 << 31;
pub(crate) const CR4_TSD: u64 = 1 << 2;
pub(crate) const CR4_DE: u64 = 1 << 3;
pub(crate) const CR4_PSE: u64 = 1 << 4;
pub(crate) const CR4_PAE: u64 = 1 << 5;
pub(crate) const CR4_PGE: u64 = 1 << 7;
pub(crate) const CR4_OSFXSR: u64 = 1 << 9;
pub(crate) const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// IA32_EFER.SCE: SYSCALL/SYSRET enabled.
pub(crate) const EFER_SCE: u64 = 1;
/// IA32_EFER.LME: long mode enabled (takes effect when paging is turned on).
pub(crate) const EFER_LME: u64 = 1 << 8;
/// IA32_EFER.LMA: long mode active (read-only; set by the CR0.PG write that enters long mode).
pub(crate) const EFER_LMA: u64 = 1 << 10;
/// IA32_EFER.NXE: execute-disable (bit 63 of PAE entries) enabled.
pub(crate) const EFER_NXE: u64 = 1 << 11;

/// Version 3 added IA32_MISC_ENABLE, IA32_PAT, the NMI latch/blocking, the MOV SS debug-trap
/// shadow and pending debug traps; version 4 the PAE PDPTE registers; version 5 the long-mode
/// MSRs ([`LongModeRegs`]) and the SSE registers ([`SseRegs`]). Versions 2 to 4 still load (see
/// `legacy.rs`).
const STATE_VERSION: u32 = 5;

/// The MSRs of long mode and SYSCALL that have no other home (FS.base and GS.base live in the
/// segment registers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LongModeRegs {
    /// IA32_STAR (0xc000_0081): SYSCALL/SYSRET selectors (bits 47:32, 63:48) and the legacy-mode
    /// SYSCALL EIP (bits 31:0).
    pub star: u64,
    /// IA32_LSTAR (0xc000_0082): 64-bit SYSCALL entry.
    pub lstar: u64,
    /// IA32_CSTAR (0xc000_0083): compatibility-mode SYSCALL entry (AMD; stored only on Intel).
    pub cstar: u64,
    /// IA32_FMASK (0xc000_0084): RFLAGS bits SYSCALL clears.
    pub fmask: u64,
    /// IA32_KERNEL_GS_BASE (0xc000_0102): swapped with GS.base by SWAPGS.
    pub kernel_gs_base: u64,
}

/// XMM0-15 and MXCSR (MMX registers alias the x87 registers in `fpu`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SseRegs {
    /// XMM registers, element 0 in the low bits.
    pub xmm: [u128; 16],
    /// MXCSR.
    pub mxcsr: u32,
}

impl Default for SseRegs {
    fn default() -> Self {
        SseRegs { xmm: [0; 16], mxcsr: 0x1f80 }
    }
}

/// Every architecturally visible bit of the CPU, plus the run-state the record/replay design
/// depends on. This is what `save_state` serializes and `state_hash` hashes; caches live outside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    pub version: u32,
    pub model: CpuModel,
    pub regs: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub seg: [Segment; 6],
    pub ldtr: Segment,
    pub tr: Segment,
    pub gdtr: DescTable,
    pub idtr: DescTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub dr: [u64; 8],
    /// Current privilege level (kept explicitly: after setting CR0.PE the CS selector is stale).
    pub cpl: u8,
    pub tsc_offset: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub apic_base: u64,
    pub icount: u64,
    pub halted: bool,
    /// Set after a triple fault; the CPU stays dead until reset.
    pub shutdown: bool,
    pub intr: bool,
    /// Interrupts are inhibited before the next instruction (after STI, MOV SS, POP SS).
    pub shadow: bool,
    /// x87 FPU registers, control/status/tag words and last-instruction pointers.
    pub fpu: fpu::Fpu,
    /// IA32_MISC_ENABLE (MSR 0x1a0).
    pub misc_enable: u64,
    /// IA32_PAT (MSR 0x277).
    pub pat: u64,
    /// An NMI was raised ([`Cpu::raise_nmi`]) and not yet delivered.
    pub nmi_pending: bool,
    /// An NMI handler is running: further NMIs wait until the next IRET.
    pub nmi_blocked: bool,
    /// The last instruction was MOV SS / POP SS: debug traps (single-step, data breakpoints) and
    /// instruction breakpoints wait until after the next instruction, like interrupts.
    pub ss_shadow: bool,
    /// Debug-trap conditions (DR6 B0..B3) of the current instruction not yet delivered.
    pub dbg_pending: u32,
    /// The four PAE page-directory-pointer-table entries, loaded from memory by MOV CR3 (and by
    /// the CR0/CR4 writes that enter PAE paging, and task switches) like the processor's internal
    /// PDPTE registers: later writes to the PDPT in memory do not matter until the next load, so
    /// they are architectural state and part of the snapshot.
    pub pdpte: [u64; 4],
    /// Long-mode MSRs (version 5).
    pub lm: LongModeRegs,
    /// SSE registers (version 5).
    pub sse: SseRegs,
    /// Flags a compiled block left pending at a side exit (see `jit.rs`); folded into RFLAGS
    /// before anything else runs, so never part of the saved state.
    #[serde(skip)]
    pub lazy: jit::LazyFlags,
}

impl State {
    fn reset(model: CpuModel) -> Self {
        let data = Segment { selector: 0, base: 0, limit: 0xffff, attr: ATTR_P | ATTR_S | 0x3 };
        let mut seg = [data; 6];
        seg[SegReg::Cs as usize] =
            Segment { selector: 0xf000, base: 0xffff_0000, limit: 0xffff, attr: ATTR_P | ATTR_S | 0xb };
        let mut regs = [0u64; 16];
        // EDX holds the processor signature after reset.
        regs[2] = CPUID_SIGNATURE as u64;
        State {
            version: STATE_VERSION,
            model,
            regs,
            rip: 0xfff0,
            rflags: 0x2,
            seg,
            ldtr: Segment { selector: 0, base: 0, limit: 0xffff, attr: ATTR_P | 0x2 },
            tr: Segment { selector: 0, base: 0, limit: 0xffff, attr: ATTR_P | 0xb },
            gdtr: DescTable { base: 0, limit: 0xffff },
            idtr: DescTable { base: 0, limit: 0xffff },
            cr0: CR0_ET | CR0_CD | CR0_NW,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            dr: [0, 0, 0, 0, debug::DR6_FIXED, 0x400, debug::DR6_FIXED, 0x400],
            cpl: 0,
            tsc_offset: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            apic_base: msr::APIC_BASE_RESET,
            icount: 0,
            halted: false,
            shutdown: false,
            intr: false,
            shadow: false,
            fpu: fpu::Fpu::reset(),
            misc_enable: msr::MISC_ENABLE_RESET,
            pat: msr::PAT_RESET,
            nmi_pending: false,
            nmi_blocked: false,
            ss_shadow: false,
            dbg_pending: 0,
            pdpte: [0; 4],
            lm: LongModeRegs::default(),
            sse: SseRegs::default(),
            lazy: jit::LazyFlags::default(),
        }
    }
}

/// CPUID leaf 1 EAX: family 6, model 6, stepping 5 (a P6-class part).
pub(crate) const CPUID_SIGNATURE: u32 = 0x0665;

/// Fault raised while executing an instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// An architectural exception.
    Ex { vector: u8, code: Option<u32> },
    /// Something the emulator cannot continue from.
    Shutdown(String),
}

pub(crate) type Res<T> = Result<T, Fault>;

/// Raise an exception without error code.
pub(crate) fn ex<T>(vector: u8) -> Res<T> {
    Err(Fault::Ex { vector, code: None })
}

/// Whether a 64-bit linear address is canonical (bits 63:47 all equal: 48-bit virtual
/// addresses, CPUID 0x8000_0008 EAX[15:8] = 48).
#[inline]
pub(crate) fn canonical(a: u64) -> bool {
    ((a as i64) << 16 >> 16) as u64 == a
}

/// Raise an exception with an error code.
pub(crate) fn exc<T>(vector: u8, code: u32) -> Res<T> {
    Err(Fault::Ex { vector, code: Some(code) })
}

/// The x86 CPU.
pub struct Cpu {
    pub(crate) s: State,
    /// Linear address of the instruction being executed (ProgramPoint::pc of Platform calls).
    pub(crate) cur_pc: u64,
    /// The next instruction starts a basic block (observers only; not architectural).
    pub(crate) block_start: bool,
    /// Blocks started while block hooks were wanted (observers only; not architectural).
    pub(crate) blocks: u64,
    /// EIP of the instruction being executed.
    pub(crate) cur_eip: u64,
    /// `stop_at` of the current `run` call.
    pub(crate) stop_at: u64,
    pub(crate) tlb: mem::Tlb,
    pub(crate) icache: mem::DecodeCache,
    /// DR7 enables at least one breakpoint (cached from DR7; see `debug.rs`). While it is false
    /// breakpoints cost one predictable branch per memory access and nothing per instruction.
    pub(crate) bp_active: bool,
    /// The translating engine (None: the interpreter runs everything).
    pub(crate) jit: Option<Box<jit::JitEngine>>,
    /// Tests: nonzero = PRNG state making compiled memory accesses take the helper and fail at
    /// random (side exits at arbitrary instructions).
    #[cfg(test)]
    pub(crate) jit_chaos: u64,
}

impl Cpu {
    /// A CPU in the state after RESET (real mode, CS:IP = F000:FFF0).
    pub fn new(config: CpuConfig) -> Cpu {
        Cpu {
            s: State::reset(config.model),
            cur_pc: 0,
            block_start: true,
            blocks: 0,
            stop_at: 0,
            cur_eip: 0,
            tlb: mem::Tlb::new(),
            icache: mem::DecodeCache::new(),
            bp_active: false,
            jit: None,
            #[cfg(test)]
            jit_chaos: 0,
        }
    }

    /// Back to the RESET state (icount and the interrupt pin level are kept: they are not CPU
    /// registers but run-state owned by the run loop).
    pub fn reset(&mut self) {
        let icount = self.s.icount;
        let intr = self.s.intr;
        self.s = State::reset(self.s.model);
        self.s.icount = icount;
        self.s.intr = intr;
        self.flush_all_caches();
        self.update_bp_active();
    }

    /// Retired-instruction count.
    pub fn icount(&self) -> u64 {
        self.s.icount
    }

    /// Set the INTR pin level (only between `run` calls).
    pub fn set_intr(&mut self, level: bool) {
        self.s.intr = level;
    }

    /// Latch an NMI (edge-triggered, like the NMI pin): it is delivered through vector 2 at the
    /// next instruction boundary where NMIs are not blocked (blocked from the delivery of an NMI
    /// until the next IRET, and for one instruction after STI/MOV SS/POP SS). Several calls before
    /// the delivery are one NMI. Call it only between `run` calls, like [`Cpu::set_intr`].
    pub fn raise_nmi(&mut self) {
        self.s.nmi_pending = true;
    }

    /// Whether an NMI is latched and not yet delivered.
    pub fn nmi_pending(&self) -> bool {
        self.s.nmi_pending
    }

    /// Whether NMIs are blocked (an NMI handler has not executed IRET yet).
    pub fn nmi_blocked(&self) -> bool {
        self.s.nmi_blocked
    }

    /// An NMI is latched and not blocked by a running NMI handler.
    pub(crate) fn nmi_deliverable(&self) -> bool {
        self.s.nmi_pending && !self.s.nmi_blocked
    }

    /// An interrupt or NMI may be delivered at some boundary of this `run` call (INTR and NMI
    /// only change between calls): REP batching and fast-path chaining must stop at boundaries.
    pub(crate) fn event_possible(&self) -> bool {
        (self.s.intr && self.s.rflags & IF != 0) || self.s.nmi_pending
    }

    /// Current INTR pin level.
    pub fn intr(&self) -> bool {
        self.s.intr
    }

    /// Whether the CPU is waiting in HLT.
    pub fn is_halted(&self) -> bool {
        self.s.halted
    }

    /// Linear address of the next instruction (CS.base + EIP).
    pub fn pc(&self) -> u64 {
        self.lin_pc()
    }

    pub(crate) fn lin_pc(&self) -> u64 {
        if self.long64() {
            // 64-bit mode ignores CS.base.
            self.s.rip
        } else {
            self.s.seg[SegReg::Cs as usize].base.wrapping_add(self.s.rip) & 0xffff_ffff
        }
    }

    /// Long mode is active (IA32_EFER.LMA): 4-level paging, 64-bit IDT, and either 64-bit mode
    /// or compatibility mode depending on CS.L.
    #[inline]
    pub(crate) fn lma(&self) -> bool {
        self.s.efer & EFER_LMA != 0
    }

    /// 64-bit mode: long mode active and CS.L = 1.
    #[inline]
    pub(crate) fn long64(&self) -> bool {
        self.s.efer & EFER_LMA != 0 && self.s.seg[SegReg::Cs as usize].attr & ATTR_L != 0
    }

    /// Linear address of a system structure (GDT, LDT, IDT, TSS) at `a`: 64 bits wide in long
    /// mode, 32 bits otherwise.
    #[inline]
    pub(crate) fn sys_lin(&self, a: u64) -> u64 {
        if self.lma() {
            a
        } else {
            a & 0xffff_ffff
        }
    }

    /// Machine state a multiboot loader hands over: flat 4 GiB ring-0 32-bit code (selector 0x10)
    /// and data (0x18) segments, CR0 = PE|ET, paging off, EFLAGS = 0x2 (IF=0), GDTR/IDTR limit 0.
    pub fn enter_flat_protected_mode(&mut self, eip: u32) {
        let code =
            Segment { selector: 0x10, base: 0, limit: 0xffff_ffff, attr: ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0xb };
        let data =
            Segment { selector: 0x18, base: 0, limit: 0xffff_ffff, attr: ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0x3 };
        for (i, s) in self.s.seg.iter_mut().enumerate() {
            *s = if i == SegReg::Cs as usize { code } else { data };
        }
        self.s.cr0 = CR0_PE | CR0_ET;
        self.s.cr4 = 0;
        self.s.rflags = 0x2;
        self.s.rip = u64::from(eip);
        self.s.gdtr = DescTable { base: 0, limit: 0 };
        self.s.idtr = DescTable { base: 0, limit: 0 };
        self.s.cpl = 0;
        self.s.halted = false;
        self.s.shadow = false;
        self.flush_all_caches();
    }

    /// Machine state of a 64-bit boot hand-over (e.g. the Linux boot protocol's 64-bit entry):
    /// IA-32e mode with paging on (CR0 = PE|ET|PG, CR4.PAE, EFER.LME|LMA), CR3 = `cr3` (4-level
    /// page tables the caller built), a flat ring-0 64-bit code segment (selector 0x10) and flat
    /// data segments (0x18), EFLAGS = 0x2, RIP = `rip`, GDTR/IDTR limit 0.
    pub fn enter_flat_long_mode(&mut self, cr3: u64, rip: u64) {
        self.enter_flat_protected_mode(0);
        let s = &mut self.s.seg[SegReg::Cs as usize];
        s.attr = (s.attr & !ATTR_DB) | ATTR_L;
        self.s.cr0 = CR0_PE | CR0_ET | CR0_PG;
        self.s.cr4 = CR4_PAE;
        self.s.cr3 = cr3;
        self.s.efer = EFER_LME | EFER_LMA;
        self.s.rip = rip;
        self.flush_all_caches();
    }

    /// One instruction with the per-instruction and per-block callbacks around it.
    fn observed_step<P: Platform + ?Sized>(&mut self, b: &mut mem::Bus<P>) -> Res<()> {
        use ailuro_bus::observe::hook;
        let pc = self.lin_pc();
        // Block start first (PANDA order: before_block_exec, then insn_exec).
        if self.block_start && b.hooks & mem::BLOCK_HOOKS != 0 {
            self.cur_pc = pc;
            self.report_block_start(b);
        }
        if b.hooks & hook::BEFORE_INSN != 0 {
            let v = self.view(pc);
            b.obs.before_insn(&v, b.ram);
        }
        let before = self.s.icount;
        self.step(b)?;
        if self.s.icount == before {
            // A REP iteration that did not retire, or an INT n that faulted: nothing to report.
            return Ok(());
        }
        if b.hooks & hook::AFTER_INSN != 0 {
            let v = self.view(self.lin_pc());
            b.obs.after_insn(&v, b.ram, pc);
        }
        Ok(())
    }

    /// Tell the observer about an address-space change (CR3 write, task switch).
    pub(crate) fn note_asid<P: Platform + ?Sized>(&mut self, b: &mut mem::Bus<P>, old: u64) {
        let new = self.asid();
        if new != old && b.hooks & ailuro_bus::observe::hook::ASID_CHANGE != 0 {
            let v = self.view(self.cur_pc);
            b.obs.asid_change(&v, b.ram, old, new);
        }
    }

    /// Set GDTR (loaders that hand over a GDT, e.g. the Linux boot protocol's 0x10/0x18 one).
    /// The segment registers' hidden parts are not reloaded.
    pub fn set_gdtr(&mut self, table: DescTable) {
        self.s.gdtr = table;
    }

    /// Set a general-purpose register.
    pub fn set_gpr(&mut self, reg: Gpr, value: u64) {
        self.s.regs[reg as usize] = value;
    }

    /// Read a general-purpose register.
    pub fn gpr(&self, reg: Gpr) -> u64 {
        self.s.regs[reg as usize]
    }

    /// Instruction pointer (EIP/RIP, offset in CS).
    pub fn rip(&self) -> u64 {
        self.s.rip
    }

    /// Set the instruction pointer (offset in CS).
    pub fn set_rip(&mut self, rip: u64) {
        self.s.rip = rip;
    }

    /// EFLAGS/RFLAGS.
    pub fn rflags(&self) -> u64 {
        self.s.rflags
    }

    /// Set EFLAGS/RFLAGS (bit 1 always reads as 1).
    pub fn set_rflags(&mut self, v: u64) {
        self.s.rflags = v | 2;
    }

    /// Debug register `n` (0..=7).
    pub fn dr(&self, n: usize) -> u64 {
        self.s.dr.get(n).copied().unwrap_or(0)
    }

    /// Control register `n` (0, 2, 3, 4); other numbers read as 0.
    pub fn cr(&self, n: u8) -> u64 {
        match n {
            0 => self.s.cr0,
            2 => self.s.cr2,
            3 => self.s.cr3,
            4 => self.s.cr4,
            _ => 0,
        }
    }

    /// A segment register with its descriptor cache.
    pub fn segment(&self, seg: SegReg) -> Segment {
        self.s.seg[seg as usize]
    }

    /// GDTR.
    pub fn gdtr(&self) -> DescTable {
        self.s.gdtr
    }

    /// IDTR.
    pub fn idtr(&self) -> DescTable {
        self.s.idtr
    }

    /// Current privilege level.
    pub fn cpl(&self) -> u8 {
        self.s.cpl
    }

    /// Serialize the complete architectural state (postcard).
    pub fn save_state(&self) -> Vec<u8> {
        postcard::to_stdvec(&self.s).expect("serializing plain data into a Vec cannot fail")
    }

    /// Restore a state produced by [`Cpu::save_state`]. Flushes every cache.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<(), CpuStateError> {
        // The version is the first field: read it alone, then decode the matching layout.
        let (version, _): (u32, &[u8]) = postcard::take_from_bytes(bytes)?;
        let (st, rest): (State, &[u8]) = match version {
            STATE_VERSION => postcard::take_from_bytes(bytes)?,
            4 => {
                let (old, rest): (legacy::StateV4, &[u8]) = postcard::take_from_bytes(bytes)?;
                (old.into(), rest)
            }
            3 => {
                let (old, rest): (legacy::StateV3, &[u8]) = postcard::take_from_bytes(bytes)?;
                (legacy::StateV4::from(old).into(), rest)
            }
            2 => {
                let (old, rest): (legacy::StateV2, &[u8]) = postcard::take_from_bytes(bytes)?;
                (legacy::StateV4::from(legacy::StateV3::from(old)).into(), rest)
            }
            found => return Err(CpuStateError::Version { found, expected: STATE_VERSION }),
        };
        if !rest.is_empty() {
            return Err(CpuStateError::Invalid(format!("{} trailing bytes after the state", rest.len())));
        }
        if st.cpl > 3 {
            return Err(CpuStateError::Invalid(format!("CPL {} out of range", st.cpl)));
        }
        if st.cr0 & CR0_PG != 0 && st.cr0 & CR0_PE == 0 {
            return Err(CpuStateError::Invalid("CR0.PG set without CR0.PE".into()));
        }
        self.s = st;
        self.flush_all_caches();
        self.update_bp_active();
        Ok(())
    }

    /// BLAKE3 of the serialized architectural state (caches excluded).
    pub fn state_hash(&self) -> [u8; 32] {
        *blake3::hash(&self.save_state()).as_bytes()
    }

    /// RAM `[paddr, paddr+len)` was written from outside the CPU: drop decoded code there.
    pub fn invalidate_code(&mut self, paddr: u64, len: u64) {
        self.icache.invalidate_range(paddr, len);
    }

    pub(crate) fn flush_all_caches(&mut self) {
        self.tlb.flush_all();
        self.icache.flush();
    }

    /// Multi-line register dump in the style of QEMU's `info registers`.
    pub fn info_registers(&self) -> String {
        if self.long64() {
            return self.info_registers64();
        }
        let s = &self.s;
        let r = |i: usize| s.regs[i] as u32;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "EAX={:08x} EBX={:08x} ECX={:08x} EDX={:08x}\nESI={:08x} EDI={:08x} EBP={:08x} ESP={:08x}",
            r(0),
            r(3),
            r(1),
            r(2),
            r(6),
            r(7),
            r(5),
            r(4)
        );
        let f = s.rflags;
        let fl = |bit: u64, c: char| if f & bit != 0 { c } else { '-' };
        let _ = writeln!(
            o,
            "EIP={:08x} EFL={:08x} [{}{}{}{}{}{}{}] CPL={} II={} A20=1 SMM=0 HLT={}",
            s.rip as u32,
            f as u32,
            fl(DF, 'D'),
            fl(OF, 'O'),
            fl(SF, 'S'),
            fl(ZF, 'Z'),
            fl(AF, 'A'),
            fl(PF, 'P'),
            fl(CF, 'C'),
            s.cpl,
            u8::from(s.shadow),
            u8::from(s.halted)
        );
        let seg = |o: &mut String, name: &str, g: &Segment| {
            let _ =
                writeln!(o, "{name} ={:04x} {:08x} {:08x} {:08x}", g.selector, g.base, g.limit, u32::from(g.attr) << 8);
        };
        for (i, name) in ["ES", "CS", "SS", "DS", "FS", "GS"].iter().enumerate() {
            seg(&mut o, name, &s.seg[i]);
        }
        seg(&mut o, "LDT", &s.ldtr);
        seg(&mut o, "TR ", &s.tr);
        let _ = writeln!(o, "GDT=     {:08x} {:08x}", s.gdtr.base, s.gdtr.limit);
        let _ = writeln!(o, "IDT=     {:08x} {:08x}", s.idtr.base, s.idtr.limit);
        let _ = writeln!(o, "CR0={:08x} CR2={:08x} CR3={:08x} CR4={:08x}", s.cr0, s.cr2, s.cr3, s.cr4);
        let _ = writeln!(
            o,
            "DR0={:08x} DR1={:08x} DR2={:08x} DR3={:08x}\nDR6={:08x} DR7={:08x}",
            s.dr[0], s.dr[1], s.dr[2], s.dr[3], s.dr[6], s.dr[7]
        );
        let _ = writeln!(o, "EFER={:016x} ICOUNT={} INTR={}", s.efer, s.icount, u8::from(s.intr));
        o
    }

    /// `info registers` in 64-bit mode (QEMU's 64-bit layout).
    fn info_registers64(&self) -> String {
        let s = &self.s;
        let mut o = String::new();
        let names = ["RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP"];
        let idx = [0usize, 3, 1, 2, 6, 7, 5, 4];
        for row in 0..4 {
            let line: Vec<String> = (0..4)
                .map(|c| {
                    let k = row * 4 + c;
                    let (name, v) =
                        if k < 8 { (names[k].to_string(), s.regs[idx[k]]) } else { (format!("R{k}"), s.regs[k]) };
                    format!("{name:<3}={v:016x}")
                })
                .collect();
            let _ = writeln!(o, "{}", line.join(" "));
        }
        let f = s.rflags;
        let fl = |bit: u64, c: char| if f & bit != 0 { c } else { '-' };
        let _ = writeln!(
            o,
            "RIP={:016x} RFL={:08x} [{}{}{}{}{}{}{}] CPL={} II={} A20=1 SMM=0 HLT={}",
            s.rip,
            f as u32,
            fl(DF, 'D'),
            fl(OF, 'O'),
            fl(SF, 'S'),
            fl(ZF, 'Z'),
            fl(AF, 'A'),
            fl(PF, 'P'),
            fl(CF, 'C'),
            s.cpl,
            u8::from(s.shadow),
            u8::from(s.halted)
        );
        let seg = |o: &mut String, name: &str, g: &Segment| {
            let _ = writeln!(
                o,
                "{name} ={:04x} {:016x} {:08x} {:08x}",
                g.selector,
                g.base,
                g.limit,
                u32::from(g.attr) << 8
            );
        };
        for (i, name) in ["ES", "CS", "SS", "DS", "FS", "GS"].iter().enumerate() {
            seg(&mut o, name, &s.seg[i]);
        }
        seg(&mut o, "LDT", &s.ldtr);
        seg(&mut o, "TR ", &s.tr);
        let _ = writeln!(o, "GDT=     {:016x} {:08x}", s.gdtr.base, s.gdtr.limit);
        let _ = writeln!(o, "IDT=     {:016x} {:08x}", s.idtr.base, s.idtr.limit);
        let _ = writeln!(o, "CR0={:08x} CR2={:016x} CR3={:016x} CR4={:08x}", s.cr0, s.cr2, s.cr3, s.cr4);
        let _ = writeln!(
            o,
            "DR0={:016x} DR1={:016x} DR2={:016x} DR3={:016x}\nDR6={:016x} DR7={:016x}",
            s.dr[0], s.dr[1], s.dr[2], s.dr[3], s.dr[6], s.dr[7]
        );
        let _ = writeln!(
            o,
            "EFER={:016x} KERNEL_GS_BASE={:016x} ICOUNT={} INTR={}",
            s.efer,
            s.lm.kernel_gs_base,
            s.icount,
            u8::from(s.intr)
        );
        o
    }

    /// Execute until `icount == stop_at`, a Platform call, HLT or shutdown (see [`RunExit`]).
    pub fn run<P: Platform + ?Sized>(&mut self, ram: &mut GuestRam, p: &mut P, stop_at: u64) -> RunExit {
        self.run_observed(ram, p, stop_at, &mut NoObserver)
    }

    /// [`Cpu::run`] reporting to `obs` the events it asks for ([`CpuObserver::hooks`], read once
    /// here). Observers cannot change guest state, so the execution is the same as `run`'s.
    pub fn run_observed<P: Platform + ?Sized>(
        &mut self,
        ram: &mut GuestRam,
        p: &mut P,
        stop_at: u64,
        obs: &mut dyn CpuObserver,
    ) -> RunExit {
        self.icache.attach(ram);
        self.stop_at = stop_at;
        let hooks = obs.hooks();
        let mut b = mem::Bus { ram, p, touched: false, obs, hooks };
        self.block_start = true;
        let jit_ok = self.jit_allowed(&b);
        if self.s.shutdown {
            return RunExit::Shutdown { reason: "CPU is in shutdown state (triple fault); reset required".into() };
        }
        loop {
            if self.s.icount >= stop_at {
                return RunExit::Limit;
            }
            // NMI first: it has priority over INTR and ignores IF.
            if self.s.nmi_pending && !self.s.nmi_blocked && !self.s.shadow {
                self.s.halted = false;
                self.s.nmi_pending = false;
                self.s.nmi_blocked = true;
                self.cur_pc = self.lin_pc();
                if let Err(reason) = self.deliver_with_escalation(&mut b, 2, None, prot::Event::External) {
                    return RunExit::Shutdown { reason };
                }
                continue;
            }
            if self.s.intr && !self.s.shadow && self.s.rflags & IF != 0 {
                self.s.halted = false;
                self.cur_pc = self.lin_pc();
                let at = ProgramPoint { icount: self.s.icount, pc: self.cur_pc };
                let vector = b.p.interrupt_ack(at) as u8;
                if let Err(reason) = self.deliver_with_escalation(&mut b, vector, None, prot::Event::External) {
                    return RunExit::Shutdown { reason };
                }
                return RunExit::Platform;
            }
            if self.s.halted {
                return RunExit::Halted;
            }
            if self.bp_active && self.s.rflags & RF == 0 && !self.s.ss_shadow {
                // Instruction breakpoints: a fault-class #DB before the instruction executes.
                // The pushed RF stays as it is (0): the handler sets it to resume.
                let hits = self.code_bp_hits(self.lin_pc());
                if hits != 0 {
                    self.cur_pc = self.lin_pc();
                    self.s.dr[6] = (self.s.dr[6] & !0xf) | u64::from(hits);
                    if let Err(reason) = self.deliver_with_escalation(&mut b, 1, None, prot::Event::Exception) {
                        return RunExit::Shutdown { reason };
                    }
                    continue;
                }
            }
            if jit_ok {
                self.jit_run(&mut b);
                if b.touched {
                    // Compiled code called the platform (a time-stamp read): the machine looks
                    // at its devices, as after the interpreter's platform calls.
                    return RunExit::Platform;
                }
                if self.s.icount >= stop_at {
                    return RunExit::Limit;
                }
            }
            let tf = self.s.rflags & TF != 0;
            let pending0 = self.s.dbg_pending;
            let step = if b.hooks & mem::STEP_HOOKS != 0 { self.observed_step(&mut b) } else { self.step(&mut b) };
            match step {
                Ok(()) => {
                    // INT n clears TF on delivery and is not followed by a single-step trap.
                    let single_step = tf && self.s.rflags & TF != 0;
                    // After MOV SS / POP SS the traps wait for the end of the next instruction.
                    if (single_step || self.s.dbg_pending != 0) && !self.s.ss_shadow {
                        // Trap-class #DB after the instruction retired: data breakpoints report
                        // in B0..B3 (replacing older B bits), single-step in BS.
                        let mut dr6 = self.s.dr[6];
                        if self.s.dbg_pending != 0 {
                            dr6 = (dr6 & !0xf) | u64::from(self.s.dbg_pending);
                        }
                        if single_step {
                            dr6 |= debug::DR6_BS;
                        }
                        self.s.dr[6] = dr6;
                        self.s.dbg_pending = 0;
                        if let Err(reason) = self.deliver_with_escalation(&mut b, 1, None, prot::Event::Exception) {
                            return RunExit::Shutdown { reason };
                        }
                    }
                }
                Err(Fault::Ex { vector, code }) => {
                    // The instruction did not complete: its data breakpoints do not count. Every
                    // fault-class exception pushes RF=1 so that the restarted instruction does not
                    // hit its instruction breakpoint again (SDM Vol. 3 17.3.1.1).
                    self.s.dbg_pending = pending0;
                    self.s.rflags |= RF;
                    if let Err(reason) = self.deliver_with_escalation(&mut b, vector, code, prot::Event::Exception) {
                        return RunExit::Shutdown { reason };
                    }
                }
                Err(Fault::Shutdown(reason)) => return RunExit::Shutdown { reason },
            }
            if b.touched {
                return RunExit::Platform;
            }
            // After HLT, wait only if no interrupt can wake the CPU right away (INTR already high
            // with IF=1: the loop delivers it at this same boundary).
            if self.s.halted && !(self.s.intr && self.s.rflags & IF != 0) && !self.nmi_deliverable() {
                return RunExit::Halted;
            }
        }
    }
}
