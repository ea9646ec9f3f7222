//! The translating engine: hot guest code is lifted to IR ([`crate::lift`]), compiled with
//! Cranelift (`ailuro-jit`) and run from a block cache; everything else stays with the
//! interpreter, which is also where every exit of compiled code lands.
//!
//! * **Tiering.** A block start is compiled after it has been reached [`DEFAULT_JIT_HOT`]
//!   times (or `-accel jit,hot=N`) from the dispatcher; cold code is never compiled.
//! * **Keys and validity.** A block is found by (physical PC, [`JitMode`]): its code computes
//!   every position-dependent value from RIP at entry, so it serves every virtual address of its
//!   page (shared libraries, PIE executables under ASLR). It is valid
//!   while the generation of its code page is the one it was compiled at (the decode cache's
//!   per-page counter, bumped by any write to a page holding code, from the CPU or from DMA) and
//!   the decode cache has not been flushed.
//! * **Chaining.** A block hands over to a compiled successor on its own page through its
//!   chain cells ([`JitEngine::link`]) without returning here; such a successor is valid
//!   whenever its predecessor is.
//! * **Exactness.** A block runs only when all of it fits before `stop_at` and no interrupt can
//!   become deliverable inside it (compiled instructions never change the pins, and the only
//!   one that sets IF, STI, ends its block: the dispatcher then returns if an interrupt may be
//!   deliverable); any access it cannot complete inline or in [`Cpu::jit_access`] leaves with
//!   the state at the start of that instruction, which the interpreter then executes.

use ailuro_bus::observe::hook;
use ailuro_bus::Platform;
use ailuro_jit::{BlockFn, ChainCell, CompileOpts, Jit, MemEnv, CHAINED, CHAIN_CELLS};
use iced_x86::{Decoder, DecoderOptions};

use crate::fast::Uop;
use crate::lift::{JitMode, Lifter};
use crate::mem::{Bus, ACC_U, ACC_W, ACC_X, PERM_UR, PERM_UW};
use crate::{Cpu, SegReg, ATTR_DB, ATTR_P, ATTR_S, CR0_PG, RF};

/// Which engine runs guest code. Not part of the machine state: a recording made with one
/// replays with the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// The interpreter alone.
    Interpreter,
    /// Hot code compiled to host code, the interpreter for the rest.
    #[default]
    Jit,
}

/// Flags of an operation a compiled block did not fold into RFLAGS before leaving through an
/// exit stub: the exit stores the operation and its operands, and [`Cpu::jit_fold_flags`]
/// recomputes the flags with the interpreter's own flag code (so the two cannot disagree).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct LazyFlags {
    /// 0: nothing pending; else `LAZY_*` | operand bytes << 8.
    pub op: u64,
    pub a: u64,
    pub b: u64,
    /// Carry-in (ADC/SBB), overflow (IMUL).
    pub extra: u64,
    /// RFLAGS bits of flags the operation keeps (INC/DEC: CF; ROL/ROR: PF, AF, ZF, SF).
    pub kept: u64,
}

pub(crate) const LAZY_ADD: u64 = 1;
pub(crate) const LAZY_ADC: u64 = 2;
pub(crate) const LAZY_SUB: u64 = 3;
pub(crate) const LAZY_SBB: u64 = 4;
pub(crate) const LAZY_AND: u64 = 5;
pub(crate) const LAZY_OR: u64 = 6;
pub(crate) const LAZY_XOR: u64 = 7;
pub(crate) const LAZY_INC: u64 = 8;
pub(crate) const LAZY_DEC: u64 = 9;
pub(crate) const LAZY_SHL: u64 = 10;
pub(crate) const LAZY_SHR: u64 = 11;
pub(crate) const LAZY_SAR: u64 = 12;
pub(crate) const LAZY_ROL: u64 = 13;
pub(crate) const LAZY_ROR: u64 = 14;
/// `a` is the result, `extra` the overflow bit.
pub(crate) const LAZY_IMUL: u64 = 15;
/// Every status flag is in `kept` (BT).
pub(crate) const LAZY_SET: u64 = 16;

/// Helper ids of the x86 front end (`ailuro_ir::Op::Helper`): RDTSC of instruction `a` of the
/// block (its index: the count at block entry plus `a` is its instruction count) at linear PC
/// `b`, through the platform like the interpreter's.
pub(crate) const HELPER_RDTSC: u32 = 0;

/// Dispatches from a block start before it is compiled. Cranelift takes ~0.2-0.5 ms per block
/// (as long as interpreting ~10,000 instructions), and a boot runs much code only a few
/// thousand times: measured on the i386 Linux replay (docs/BENCHMARKS.md), 256 compiled 87,000
/// blocks in 13 s of a 69 s run; 8192 compiles 6,300 in 1-2 s and still runs 91% of the
/// instructions compiled (the best whole-run time of 256-60000).
pub const DEFAULT_JIT_HOT: u16 = 8192;
/// Direct-mapped block table.
const SLOTS: usize = 1 << 15;
/// Longest block (guest instructions).
const MAX_INSNS: usize = 48;
/// Code memory; a full arena is flushed whole.
const CODE_BYTES: usize = 64 << 20;

/// Blocks compiled between two flushes (each has its chain cells; a full table is flushed
/// like a full code arena).
const MAX_BLOCKS: usize = 1 << 16;

#[derive(Clone, Copy)]
struct Slot {
    pa: u64,
    mode: u32,
    gen: u32,
    /// None: known not to be compilable (its first instruction is not liftable).
    f: Option<BlockFn>,
    /// Index in `JitEngine::blocks` and `JitEngine::cells` (when compiled).
    id: u32,
    n: u32,
    ends_block: bool,
    reads_flags: bool,
    /// After it, return to the run loop if an event may be deliverable (STI, RDTSC).
    check_events: bool,
    used: bool,
}

const EMPTY: Slot = Slot {
    pa: 0,
    mode: 0,
    gen: 0,
    f: None,
    id: 0,
    n: 0,
    ends_block: false,
    reads_flags: false,
    check_events: false,
    used: false,
};

/// Counters of the translating engine (reported, never guest-visible).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Compiled blocks executed (main path or exit).
    pub blocks_run: u64,
    /// Guest instructions retired in compiled code.
    pub insns_compiled: u64,
    /// Blocks that left through an exit stub.
    pub side_exits: u64,
    /// Iterations looping blocks ran without returning to the dispatcher.
    pub loop_iterations: u64,
    /// Blocks entered directly from the previous one's compiled code (chained: no return to
    /// the dispatcher).
    pub chained: u64,
    /// Blocks compiled, guest instructions in them, host code bytes.
    pub blocks_compiled: u64,
    pub guest_insns_compiled: u64,
    pub code_bytes: u64,
    /// Host time spent compiling, in nanoseconds.
    pub compile_ns: u64,
    /// Times the whole code cache was dropped (full arena, decode-cache flush).
    pub flushes: u64,
}

pub(crate) struct JitEngine {
    jit: Jit,
    /// Direct-mapped block table: (physical PC, mode) to the block's slot.
    slots: Vec<Slot>,
    /// Every block compiled since the last flush, by id (a slot of the table may have been
    /// taken over by another block since; its code can still be reached through chain cells).
    blocks: Vec<Slot>,
    /// Per compiled block (by id): its chain cells, read by its code. Allocated once and never
    /// moved: compiled code embeds their addresses.
    cells: Box<[[ChainCell; CHAIN_CELLS]]>,
    hot: Vec<u16>,
    /// Counts `clear` calls: a block id is meaningful only within one epoch.
    epoch: u64,
    flushes_seen: u64,
    stats: JitStats,
    hot_threshold: u16,
}

impl JitEngine {
    pub fn new() -> Option<JitEngine> {
        let jit = Jit::new(CODE_BYTES).ok()?;
        Some(JitEngine {
            jit,
            slots: vec![EMPTY; SLOTS],
            blocks: Vec::with_capacity(MAX_BLOCKS),
            cells: vec![[ChainCell::EMPTY; CHAIN_CELLS]; MAX_BLOCKS].into_boxed_slice(),
            hot: vec![0; SLOTS],
            epoch: 0,
            flushes_seen: 0,
            stats: JitStats::default(),
            hot_threshold: DEFAULT_JIT_HOT,
        })
    }

    /// Compile after `n` dispatches (at least 1).
    pub fn set_hot_threshold(&mut self, n: u16) {
        self.hot_threshold = n.max(1);
    }

    /// Replace the code arena by a tiny one (tests of the full-cache path).
    #[cfg(test)]
    pub fn shrink_code_cache_for_tests(&mut self, bytes: usize) {
        self.jit = Jit::new(bytes).expect("executable memory");
        self.slots.fill(EMPTY);
        self.blocks.clear();
        self.cells.fill([ChainCell::EMPTY; CHAIN_CELLS]);
        self.epoch += 1;
    }

    fn clear(&mut self) {
        self.slots.fill(EMPTY);
        // Only the cells in use can be non-empty.
        let used = self.blocks.len();
        self.cells[..used].fill([ChainCell::EMPTY; CHAIN_CELLS]);
        self.blocks.clear();
        self.epoch += 1;
        self.hot.fill(0);
        self.jit.flush();
        self.stats.flushes += 1;
    }

    /// Remember `s` (entered at `pc`) as a successor of block `p` (which ran from the page of
    /// `pc0`) in `p`'s chain cells, if chaining to it is always safe: the same physical page
    /// and code generation as `p` (so `s` is valid whenever `p` is: both were compiled from the
    /// page as it is; a store to it leaves compiled code and bumps the generation, which the
    /// block table checks before anything on the page runs again), and no flags to fold first.
    /// The mode is the same: the dispatcher runs blocks of one mode only.
    fn link(&mut self, p: usize, pc0: u64, pc: u64, s: &Slot) {
        let Some(f) = s.f else { return };
        let pb = &self.blocks[p];
        if (pc ^ pc0) >> 12 != 0 || (s.pa ^ pb.pa) >> 12 != 0 || s.gen != pb.gen || s.reads_flags {
            return;
        }
        let c = &mut self.cells[p];
        let off = pc & 0xfff;
        if c[0].page_off == off {
            return;
        }
        c[1] = c[0];
        c[0] = ChainCell { next: Some(f), page_off: off, insns: u64::from(s.n), id: u64::from(s.id) };
    }

    pub fn stats(&self) -> JitStats {
        let s = self.jit.stats();
        JitStats {
            blocks_compiled: s.blocks,
            guest_insns_compiled: s.guest_insns,
            code_bytes: s.code_bytes,
            compile_ns: s.compile_ns,
            ..self.stats
        }
    }
}

#[inline(always)]
fn slot_of(pa: u64, mode: u32) -> usize {
    let h = pa ^ (pa >> 15) ^ (u64::from(mode) << 7);
    (h as usize) & (SLOTS - 1)
}

/// How a call into compiled code ended.
struct CallEnd {
    /// The last block's return code: 0 (its main path ran to the end) or an exit's.
    code: u32,
    /// Id of the last block run (the first one, or where chaining ended).
    cur: usize,
    /// Loop-back iterations and chained hand-overs on the way.
    loops: u64,
    chained: u64,
}

/// What the helpers need: the CPU and the bus of the running `run` call.
struct Call<'a, P: Platform + ?Sized> {
    cpu: *mut Cpu,
    bus: *mut Bus<'a, P>,
}

/// # Safety
/// `env` is the `MemEnv` built by `Cpu::jit_run`, whose `owner` is a live `Call<P>` for the
/// same `P`; compiled code calls this only while that call frame runs.
unsafe extern "C" fn slow_load<P: Platform + ?Sized>(env: *mut MemEnv, addr: u64, size: u32, acc: u32) -> u64 {
    // SAFETY: see the function's contract; the CPU and bus are not otherwise borrowed while
    // compiled code runs.
    let (env, call) = unsafe { (&mut *env, &mut *(*env).owner.cast::<Call<'_, P>>()) };
    let (cpu, b) = unsafe { (&mut *call.cpu, &mut *call.bus) };
    match cpu.jit_access(b, addr, size, acc as u8, None) {
        Some(v) => {
            env.failed = 0;
            v
        }
        None => {
            env.failed = 1;
            0
        }
    }
}

/// # Safety
/// As [`slow_load`].
unsafe extern "C" fn slow_store<P: Platform + ?Sized>(env: *mut MemEnv, addr: u64, size: u32, acc: u32, v: u64) -> u32 {
    // SAFETY: as in slow_load.
    let call = unsafe { &mut *(*env).owner.cast::<Call<'_, P>>() };
    let (cpu, b) = unsafe { (&mut *call.cpu, &mut *call.bus) };
    u32::from(cpu.jit_access(b, addr, size, acc as u8, Some(v)).is_some())
}

/// # Safety
/// As [`slow_load`].
unsafe extern "C" fn helper<P: Platform + ?Sized>(env: *mut MemEnv, id: u32, a: u64, b: u64) -> u64 {
    // SAFETY: as in slow_load.
    let call = unsafe { &mut *(*env).owner.cast::<Call<'_, P>>() };
    let (cpu, bus) = unsafe { (&mut *call.cpu, &mut *call.bus) };
    match id {
        HELPER_RDTSC => {
            // The interpreter's read at this instruction's count and PC (the context's count is
            // the block's entry count while compiled code runs).
            let icount = cpu.s.icount;
            cpu.s.icount = icount + a;
            cpu.cur_pc = b;
            let t = cpu.read_tsc(bus);
            cpu.s.icount = icount;
            t
        }
        _ => unreachable!("the x86 front end emits no helper {id}"),
    }
}

impl Cpu {
    /// Choose the engine (see [`Engine`]). Compiled code is dropped when switching away.
    pub fn set_engine(&mut self, engine: Engine) {
        self.jit = match engine {
            Engine::Interpreter => None,
            // Without executable memory or a supported host ISA the interpreter runs alone.
            Engine::Jit => self.jit.take().or_else(|| JitEngine::new().map(Box::new)),
        };
    }

    /// Compile a block once it has been dispatched `n` times (None: [`DEFAULT_JIT_HOT`]); no
    /// effect on the interpreter. Changes only speed, never results.
    pub fn set_jit_hot_threshold(&mut self, n: Option<u16>) {
        if let Some(e) = self.jit.as_mut() {
            e.set_hot_threshold(n.unwrap_or(DEFAULT_JIT_HOT));
        }
    }

    /// The engine in use.
    pub fn engine(&self) -> Engine {
        if self.jit.is_some() {
            Engine::Jit
        } else {
            Engine::Interpreter
        }
    }

    /// Counters of the translating engine (zero with the interpreter).
    pub fn jit_stats(&self) -> JitStats {
        self.jit.as_ref().map(|e| e.stats()).unwrap_or_default()
    }

    /// The mode facts compiled code depends on, or None where nothing is compiled (real mode,
    /// VM86, 16-bit code, a CS that is not flat).
    fn jit_mode(&self) -> Option<u32> {
        let mut m = 0;
        if self.long64() {
            m |= JitMode::LONG;
        } else {
            let cs = &self.s.seg[SegReg::Cs as usize];
            if !self.pm() || self.vm86() || cs.attr & ATTR_DB == 0 || cs.base != 0 || cs.limit != 0xffff_ffff {
                return None;
            }
            for i in [0usize, 2, 3, 4, 5] {
                let s = &self.s.seg[i];
                let a = s.attr;
                // Present, writable, expand-up data with a 4 GiB limit (and a 32-bit stack for
                // SS): the interpreter's checks can only fail for accesses that wrap at 4 GiB.
                let usable = a & ATTR_P != 0
                    && a & ATTR_S != 0
                    && a & 0x8 == 0
                    && a & 0x2 != 0
                    && a & 0x4 == 0
                    && s.limit == 0xffff_ffff
                    && (i != SegReg::Ss as usize || a & ATTR_DB != 0);
                if usable {
                    m |= JitMode::usable(i);
                    if s.base == 0 {
                        m |= JitMode::base0(i);
                    }
                }
            }
        }
        if self.s.cpl == 3 {
            m |= JitMode::USER;
        }
        if self.s.cr0 & CR0_PG != 0 {
            m |= JitMode::PAGING;
        }
        Some(m)
    }

    /// Whether compiled code may run in this `run` call at all (observers that need every
    /// instruction or memory access, breakpoints and single-stepping keep the interpreter).
    pub(crate) fn jit_allowed<P: Platform + ?Sized>(&self, b: &Bus<P>) -> bool {
        self.jit.is_some()
            && b.hooks & !(hook::COUNT_BLOCKS | hook::ASID_CHANGE | hook::INTERRUPT) == 0
            && !self.bp_active
    }

    /// Run compiled blocks from the current instruction while possible; returns when the next
    /// instruction is the interpreter's (not compiled, not compilable, an exit, `stop_at` within
    /// the next block, or an event that needs the run loop).
    pub(crate) fn jit_run<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>) {
        let Some(mut eng) = self.jit.take() else { return };
        if self.icache.flushes != eng.flushes_seen {
            eng.flushes_seen = self.icache.flushes;
            eng.clear();
        }
        self.jit_loop(b, &mut eng);
        // Nothing outside compiled code knows about pending flags.
        self.jit_fold_flags();
        self.jit = Some(eng);
    }

    fn jit_loop<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, eng: &mut JitEngine) {
        if self.s.rflags & crate::TF != 0 || self.event_possible() || self.s.dbg_pending != 0 || self.s.halted {
            return;
        }
        let Some(mode) = self.jit_mode() else { return };
        let long = mode & JitMode::LONG != 0;
        let user = mode & JitMode::USER != 0;
        let count_blocks = b.hooks & crate::mem::BLOCK_HOOKS != 0;
        // Compiled code may run one block after another without coming back here (chaining)
        // unless every block start must be counted here.
        let chain_budget = if count_blocks { 0 } else { self.stop_at };
        // The block that ran last (its id, valid in the engine's epoch) and a program counter
        // on the page it ran from.
        let mut prev: Option<(usize, u64, u64)> = None;
        loop {
            let pc = self.s.rip;
            let Some(slot) = self.jit_find(b, eng, pc, mode, long, user) else { return };
            let Some(f) = slot.f else { return };
            if let Some((p, pc0, epoch)) = prev {
                if epoch == eng.epoch {
                    eng.link(p, pc0, pc, &slot);
                }
            }
            if self.s.icount + u64::from(slot.n) > self.stop_at {
                return;
            }
            // What `step` does at every instruction start (only the first one can differ).
            self.s.shadow = false;
            self.s.ss_shadow = false;
            self.s.rflags &= !RF;
            if slot.reads_flags {
                self.jit_fold_flags();
            }
            if count_blocks && self.block_start {
                self.block_start = false;
                self.blocks += 1;
            }
            let icount0 = self.s.icount;
            let r = self.jit_call(b, f, slot.id, chain_budget);
            if count_blocks {
                // Every further iteration started a block (the previous one ended with the
                // branch back), as the interpreter would have counted.
                self.blocks += r.loops;
            }
            eng.stats.blocks_run += 1 + r.loops + r.chained;
            eng.stats.loop_iterations += r.loops;
            eng.stats.chained += r.chained;
            // The block that ran last (chained blocks advanced the count themselves).
            let last = eng.blocks[r.cur];
            if r.code != 0 {
                self.s.icount += u64::from(r.code - 1);
                eng.stats.insns_compiled += self.s.icount - icount0;
                eng.stats.side_exits += 1;
                return;
            }
            self.s.icount += u64::from(last.n);
            eng.stats.insns_compiled += self.s.icount - icount0;
            if last.ends_block {
                self.block_start = true;
            }
            prev = Some((r.cur, pc, eng.epoch));
            // After STI an interrupt may be deliverable; after a platform call (RDTSC) the run
            // loop returns to the machine, as it does after the interpreter's.
            if last.check_events && (b.touched || self.event_possible()) {
                return;
            }
        }
    }

    /// The block table's entry for the block at `pc` (translating it first if the interpreter's
    /// fetch TLB holds another page), counting toward compiling it; None: the interpreter runs
    /// the next instruction (cold block, fault, not RAM).
    #[inline]
    fn jit_find<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        eng: &mut JitEngine,
        pc: u64,
        mode: u32,
        long: bool,
        user: bool,
    ) -> Option<Slot> {
        if long && !crate::canonical(pc) {
            return None;
        }
        // The instruction TLB's last translation (the interpreter keeps it filled).
        let acc = if user { ACC_U } else { 0 } | ACC_X;
        let ftag = ((pc & 0xffff_ffff_ffff) >> 12) | (u64::from(acc & ACC_U) << 40) | crate::mem::FETCH_VALID;
        if self.tlb.fetch_tag != ftag {
            // A branch to another page: translate as the interpreter's fetch would (the
            // same TLB fill and accessed bits); a fault is left to the interpreter.
            let cr2 = self.s.cr2;
            match self.translate(b, pc, acc) {
                Ok(pa) => {
                    self.tlb.fetch_tag = ftag;
                    self.tlb.fetch_ppage = pa & !0xfff;
                }
                Err(_) => {
                    self.s.cr2 = cr2;
                    return None;
                }
            }
        }
        let pa = self.tlb.fetch_ppage | (pc & 0xfff);
        let off = b.ram.offset_of(pa, 1)?;
        let page = off >> 12;
        // Blocks are position-independent: the physical PC and the mode find them.
        let k = slot_of(pa, mode);
        let s = eng.slots[k];
        if s.used && s.pa == pa && s.mode == mode && self.icache.gen[page] == s.gen {
            return Some(s);
        }
        let h = &mut eng.hot[k];
        *h = h.saturating_add(1);
        if *h < eng.hot_threshold {
            return None;
        }
        *h = 0;
        self.jit_compile(b, eng, pc, pa, mode)
    }

    /// Fold flags compiled code left pending into RFLAGS, with the interpreter's flag code.
    #[inline]
    fn jit_fold_flags(&mut self) {
        if self.s.lazy.op != 0 {
            self.jit_fold_flags_now();
        }
    }

    #[inline(never)]
    fn jit_fold_flags_now(&mut self) {
        use crate::flags::{Alu, Shift};
        let z = std::mem::take(&mut self.s.lazy);
        if z.op == 0 {
            return;
        }
        let size = (z.op >> 8) as u32;
        let kind = z.op & 0xff;
        let fl = self.s.rflags;
        match kind {
            LAZY_ADD | LAZY_ADC | LAZY_SUB | LAZY_SBB | LAZY_AND | LAZY_OR | LAZY_XOR => {
                let op = match kind {
                    LAZY_ADD => Alu::Add,
                    LAZY_ADC => Alu::Adc,
                    LAZY_SUB => Alu::Sub,
                    LAZY_SBB => Alu::Sbb,
                    LAZY_AND => Alu::And,
                    LAZY_OR => Alu::Or,
                    _ => Alu::Xor,
                };
                // The carry-in is read from CF.
                self.s.rflags = (fl & !crate::CF) | (z.extra & 1);
                self.alu(op, z.a, z.b, size);
            }
            LAZY_INC | LAZY_DEC => {
                self.alu(if kind == LAZY_DEC { Alu::Sub } else { Alu::Add }, z.a, 1, size);
                self.s.rflags = (self.s.rflags & !crate::CF) | (z.kept & crate::CF);
            }
            LAZY_SHL | LAZY_SHR | LAZY_SAR | LAZY_ROL | LAZY_ROR => {
                let op = match kind {
                    LAZY_SHL => Shift::Shl,
                    LAZY_SHR => Shift::Shr,
                    LAZY_SAR => Shift::Sar,
                    LAZY_ROL => Shift::Rol,
                    _ => Shift::Ror,
                };
                // Rotates keep PF, AF, ZF, SF: put the kept values in first.
                let keep = crate::PF | crate::AF | crate::ZF | crate::SF;
                self.s.rflags = (fl & !keep) | (z.kept & keep);
                self.shift(op, z.a, z.b, size);
            }
            LAZY_SET => self.set_status(z.kept),
            _ => {
                let f = Self::szp(z.a, size) | if z.extra & 1 != 0 { crate::CF | crate::OF } else { 0 };
                self.set_status(f);
            }
        }
    }

    /// Call compiled block `f` (id `id`) with this CPU's state and memory, and the blocks it
    /// chains to.
    fn jit_call<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, f: BlockFn, id: u32, chain_budget: u64) -> CallEnd {
        let cpu: *mut Cpu = self;
        let mut call = Call::<P> { cpu, bus: b };
        // SAFETY: the pointers come from live exclusive borrows held for the whole call; the
        // TLB, RAM and code-page vectors are not reallocated while compiled code runs (helpers
        // only fill TLB entries and write RAM in place).
        unsafe {
            let cpu = &mut *cpu;
            let bus = &mut *call.bus;
            let mut env = MemEnv {
                tlb: cpu.tlb.d.as_ptr(),
                ram: bus.ram.as_mut_slice().as_mut_ptr(),
                ram_base: bus.ram.base(),
                ram_size: bus.ram.size(),
                code_pages: cpu.icache.mark.as_ptr().cast(),
                slow_load: slow_load::<P>,
                slow_store: slow_store::<P>,
                helper: helper::<P>,
                failed: 0,
                budget: cpu.stop_at,
                loops: 0,
                chain_budget,
                next: None,
                cur: u64::from(id),
                chained: 0,
                owner: (&mut call as *mut Call<'_, P>).cast(),
            };
            #[cfg(test)]
            if cpu.jit_chaos != 0 {
                // Every access misses the inline path (and may fail in `jit_access`).
                env.ram_size = 0;
            }
            let ctx: *mut u8 = (&mut cpu.s as *mut crate::State).cast();
            let mut code = f(ctx, &mut env);
            while code == CHAINED {
                let next = env.next.take().expect("a chaining block names its successor");
                code = next(ctx, &mut env);
            }
            CallEnd { code, cur: env.cur as usize, loops: env.loops, chained: env.chained }
        }
    }

    /// Decode, lift and compile the block at `pc` (physical `pa`); records the result in the
    /// block table (also a "not compilable" result).
    fn jit_compile<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        eng: &mut JitEngine,
        pc: u64,
        pa: u64,
        mode: u32,
    ) -> Option<Slot> {
        let off = b.ram.offset_of(pa, 1)?;
        let page = off >> 12;
        let page_end = (page + 1) << 12;
        let long = mode & JitMode::LONG != 0;
        let bits = if long { 64 } else { 32 };
        let ram = b.ram.as_slice();
        let mut insns: Vec<(Uop, u64, u64)> = Vec::new();
        let mut o = off;
        let mut eip = pc;
        while insns.len() < MAX_INSNS && o < page_end {
            let avail = (page_end - o).min(15);
            let mut dec = Decoder::with_ip(bits, &ram[o..o + avail], 0, DecoderOptions::NONE);
            let ins = dec.decode();
            if ins.is_invalid() {
                break;
            }
            let u = Uop::build(&ins, bits);
            if u.kind == crate::fast::Kind::Generic {
                break;
            }
            let len = ins.len() as u64;
            insns.push((u, eip, len));
            if u.kind.ends_block() {
                break;
            }
            o += len as usize;
            eip = if long { eip.wrapping_add(len) } else { (eip + len) & 0xffff_ffff };
        }
        // Writes to this page must now invalidate the block.
        self.icache.mark[page] = true;
        let gen = self.icache.gen[page];
        let lifted = Lifter::new(JitMode(mode)).lift(&insns);
        let mut slot = Slot { pa, mode, gen, used: true, ..EMPTY };
        if let Some(l) = lifted {
            let (block, n, ends_block) = (l.block, l.insns, l.ends_block);
            if eng.blocks.len() == MAX_BLOCKS {
                eng.clear();
            }
            let paging = mode & JitMode::PAGING != 0;
            let opts = |eng: &JitEngine| CompileOpts { paging, cells: eng.cells[eng.blocks.len()].as_ptr() };
            let f = match eng.jit.compile(&block, opts(eng)) {
                Ok(Some(f)) => Some(f),
                Ok(None) => {
                    // Code memory full: drop everything and start again.
                    eng.clear();
                    eng.jit.compile(&block, opts(eng)).ok().flatten()
                }
                // A block Cranelift rejects stays with the interpreter.
                Err(_) => None,
            };
            slot = Slot { f, n, ends_block, reads_flags: l.reads_flags, check_events: l.check_events, ..slot };
            if f.is_some() {
                slot.id = eng.blocks.len() as u32;
                eng.blocks.push(slot);
            }
        }
        eng.slots[slot_of(pa, mode)] = slot;
        Some(slot)
    }

    /// A memory access compiled code could not do inline: translate (walking the page tables
    /// and filling the TLB), then do it if it is plain RAM (or ROM) on one page and not a store
    /// into code. `None`: leave the block; the interpreter redoes the instruction with every
    /// check and side effect (faults, MMIO, invalidation). Nothing architectural changes on
    /// `None` except page-table accessed/dirty bits the interpreter would set the same way.
    pub(crate) fn jit_access<P: Platform + ?Sized>(
        &mut self,
        b: &mut Bus<P>,
        lin: u64,
        size: u32,
        perm: u8,
        store: Option<u64>,
    ) -> Option<u64> {
        #[cfg(test)]
        if self.jit_chaos != 0 {
            self.jit_chaos ^= self.jit_chaos << 13;
            self.jit_chaos ^= self.jit_chaos >> 7;
            self.jit_chaos ^= self.jit_chaos << 17;
            if self.jit_chaos.is_multiple_of(5) {
                return None;
            }
        }
        let n = u64::from(size);
        if self.long64() {
            if !crate::canonical(lin) || !crate::canonical(lin.wrapping_add(n - 1)) {
                return None;
            }
        } else if lin + n > 1 << 32 {
            return None;
        }
        if (lin & 0xfff) + n > 0x1000 {
            return None;
        }
        let user = perm & (PERM_UR | PERM_UW) != 0;
        let acc = if user { ACC_U } else { 0 } | if store.is_some() { ACC_W } else { 0 };
        let (cr2, inv) = (self.s.cr2, self.icache.invalidations);
        let pa = match self.translate(b, lin, acc) {
            Ok(pa) => pa,
            Err(_) => {
                self.s.cr2 = cr2;
                return None;
            }
        };
        if self.icache.invalidations != inv {
            // The walk's accessed/dirty-bit writes hit a page holding code.
            return None;
        }
        // RAM or ROM only (a device access is the interpreter's: it is a Platform call), and
        // no store into a page holding translated code (the interpreter invalidates).
        let ram_off = b.ram.offset_of(pa, n);
        if ram_off.is_none() && b.ram.rom_at(pa, n).is_none() {
            return None;
        }
        match store {
            None => Some(self.phys_read(b, pa, size)),
            Some(v) => {
                if ram_off.is_some_and(|off| self.icache.mark.get(off >> 12).copied().unwrap_or(false)) {
                    return None;
                }
                // Writes to ROM are dropped by `phys_write`, as on the hardware.
                self.phys_write(b, pa, size, v);
                Some(0)
            }
        }
    }
}
