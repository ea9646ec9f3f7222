//! The compiling back end: Ailuro IR blocks ([`ailuro_ir::Block`]) to host code with Cranelift.
//!
//! A compiled block is a host function `fn(ctx, env) -> u32`: `ctx` points at the guest
//! context the block's `Get`/`Put` offsets refer to (the CPU's register file), `env` at a
//! [`MemEnv`] describing guest memory. Memory accesses take an inline fast path through the
//! front end's soft TLB (layout [`TlbEntry`], shared with the interpreter) straight into guest
//! RAM, and call the front end's slow-path helpers on a miss; a helper that cannot do the access
//! (fault, device memory, a store into translated code) makes the block leave through the
//! access's exit stub, with the guest state of the instruction's start.
//!
//! Compiled code needs no relocations (helpers are called through pointers in `MemEnv`), so a
//! block is copied into one executable arena; a full arena is reset as a whole ([`Jit::flush`]).

mod arena;
mod compile;

use std::time::Instant;

use ailuro_ir::Block;

pub use compile::CompileOpts;

/// What a block returns when it handed over to a chained successor ([`ChainCell`]): it retired
/// all its instructions and advanced the instruction count itself; [`MemEnv::next`] is the
/// successor to call and [`MemEnv::cur`] its identifier.
pub const CHAINED: u32 = u32::MAX;

/// Chain cells per block: the successors (on its own page) a block may continue with.
pub const CHAIN_CELLS: usize = 2;

/// A successor a compiled block may hand over to without its caller (`ailuro_ir::Chain`). The
/// engine fills cells; a block with cells reads them at the end of its main path. An empty cell
/// has `page_off == u64::MAX`. The engine must only store a successor that is valid whenever the
/// block itself is (same page, same code generation, same mode), and keep cells alive and in
/// place as long as the code that reads them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ChainCell {
    /// The successor's code.
    pub next: Option<BlockFn>,
    /// Offset in its 4 KiB page of the successor's start (its program counter's low 12 bits).
    pub page_off: u64,
    /// Guest instructions the successor's main path retires: it is entered only if the count
    /// after it stays within [`MemEnv::chain_budget`].
    pub insns: u64,
    /// The engine's identifier of the successor, stored in [`MemEnv::cur`] when it is entered.
    pub id: u64,
}

impl ChainCell {
    /// A cell that matches no program counter.
    pub const EMPTY: ChainCell = ChainCell { next: None, page_off: u64::MAX, insns: 0, id: 0 };
}

/// One soft-TLB entry, as the interpreter's TLB stores it and compiled code reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlbEntry {
    /// `vpn | TLB_VALID` of the cached linear page.
    pub tag: u64,
    /// Physical address of the page.
    pub ppage: u64,
    /// Permission bits the walk approved; an access needing bits `n` hits when `perm & n == n`.
    pub perm: u8,
}

/// Entries in a soft TLB (direct-mapped, indexed by [`tlb_index`]).
pub const TLB_SIZE: usize = 1024;
/// Valid bit of [`TlbEntry::tag`] (above any 52-bit virtual page number).
pub const TLB_VALID: u64 = 1 << 63;

/// TLB slot of virtual page number `vpn`.
#[inline(always)]
pub fn tlb_index(vpn: u64) -> usize {
    ((vpn ^ (vpn >> 10)) as usize) & (TLB_SIZE - 1)
}

/// Slow-path load: returns the value, or sets [`MemEnv::failed`] to leave the block.
pub type SlowLoad = unsafe extern "C" fn(env: *mut MemEnv, addr: u64, size: u32, acc: u32) -> u64;
/// Slow-path store: returns 1 when done, 0 to leave the block.
pub type SlowStore = unsafe extern "C" fn(env: *mut MemEnv, addr: u64, size: u32, acc: u32, v: u64) -> u32;
/// The front end's helpers (`ailuro_ir::Op::Helper`): helper `id` of `a` and `b`.
pub type HelperFn = unsafe extern "C" fn(env: *mut MemEnv, id: u32, a: u64, b: u64) -> u64;

/// Guest memory for compiled code: RAM, the soft TLB, the translated-code page map and the
/// front end's slow paths. The front end fills it before calling blocks.
#[repr(C)]
pub struct MemEnv {
    /// `TLB_SIZE` data-TLB entries.
    pub tlb: *const TlbEntry,
    /// Host address of guest RAM.
    pub ram: *mut u8,
    /// Guest-physical address of `ram[0]`.
    pub ram_base: u64,
    /// Bytes of RAM.
    pub ram_size: u64,
    /// One byte per 4 KiB RAM page: nonzero when the page holds translated code (stores to
    /// it take the slow path).
    pub code_pages: *const u8,
    pub slow_load: SlowLoad,
    pub slow_store: SlowStore,
    pub helper: HelperFn,
    /// Set by `slow_load` when the access cannot be done here.
    pub failed: u32,
    /// Instruction budget for blocks that loop back to their own start (`ailuro_ir::LoopBack`):
    /// the count they may run up to (the caller's `stop_at`).
    pub budget: u64,
    /// Back-edges taken by looping blocks (the caller adds these iterations to its statistics).
    pub loops: u64,
    /// Instruction count up to which blocks may chain (0: never chain, e.g. when every block
    /// start must be seen by the caller).
    pub chain_budget: u64,
    /// Set by a block that returns [`CHAINED`]: the successor to run next and its identifier.
    pub next: Option<BlockFn>,
    pub cur: u64,
    /// Hand-overs to chained successors (statistics).
    pub chained: u64,
    /// The front end's own data for its helpers.
    pub owner: *mut std::ffi::c_void,
}

/// A compiled block.
pub type BlockFn = unsafe extern "C" fn(ctx: *mut u8, env: *mut MemEnv) -> u32;

/// Back-end errors.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    #[error("the host ISA is not supported by Cranelift: {0}")]
    Host(String),
    #[error("could not map {0} bytes of executable memory")]
    NoCodeMemory(usize),
    #[error("invalid IR: {0}")]
    Ir(#[from] ailuro_ir::IrError),
    #[error("a compiled block of {0} bytes does not fit the code memory")]
    TooBig(usize),
    #[error("Cranelift rejected a block: {0}")]
    Codegen(String),
}

/// Compilation statistics (reported, never guest-visible).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub blocks: u64,
    pub guest_insns: u64,
    pub code_bytes: u64,
    pub compile_ns: u64,
    pub flushes: u64,
}

/// The compiler and its code arena.
pub struct Jit {
    c: compile::Compiler,
    arena: arena::Arena,
    stats: Stats,
}

impl Jit {
    /// A compiler for the host with `code_bytes` of code memory.
    pub fn new(code_bytes: usize) -> Result<Jit, JitError> {
        Ok(Jit { c: compile::Compiler::new()?, arena: arena::Arena::new(code_bytes)?, stats: Stats::default() })
    }

    /// Compile `block`. `Ok(None)`: the code arena is full; call [`Jit::flush`] (after dropping
    /// every [`BlockFn`] handed out) and compile again.
    pub fn compile(&mut self, block: &Block, opts: CompileOpts) -> Result<Option<BlockFn>, JitError> {
        let t0 = Instant::now();
        block.validate()?;
        let code = self.c.compile(block, opts)?;
        if code.len() > self.arena.capacity() {
            return Err(JitError::TooBig(code.len()));
        }
        let Some(p) = self.arena.alloc(code) else {
            return Ok(None);
        };
        self.stats.blocks += 1;
        self.stats.guest_insns += u64::from(block.guest_insns);
        self.stats.code_bytes += code.len() as u64;
        self.stats.compile_ns += t0.elapsed().as_nanos() as u64;
        // SAFETY: `p` holds the complete, relocation-free machine code of a function with the
        // `BlockFn` signature (checked by `Compiler::compile`), in executable memory.
        Ok(Some(unsafe { std::mem::transmute::<*const u8, BlockFn>(p) }))
    }

    /// Drop all compiled code.
    pub fn flush(&mut self) {
        self.arena.reset();
        self.stats.flushes += 1;
    }

    /// Bytes of code memory in use and in all.
    pub fn code_usage(&self) -> (usize, usize) {
        (self.arena.used(), self.arena.capacity())
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
