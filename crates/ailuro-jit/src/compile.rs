//! IR to Cranelift IR, and Cranelift IR to machine code.

use std::mem::offset_of;

use ailuro_ir::{BinOp, Block, CmpOp, Op, Ty, UnOp, Val};
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, BlockArg, Function, InstBuilder, MemFlagsData, SigRef, Signature, Type, UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use crate::{JitError, MemEnv, TlbEntry, TLB_SIZE, TLB_VALID};

/// Per-block compilation options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileOpts {
    /// Virtual addresses go through the soft TLB; without paging they are physical.
    pub paging: bool,
    /// The block's [`crate::CHAIN_CELLS`] chain cells (used when the block has an
    /// `ailuro_ir::Chain`; null: the block never chains). The code embeds this address: the
    /// cells must stay in place while the code can run.
    pub cells: *const crate::ChainCell,
}

impl CompileOpts {
    /// Options without chaining.
    pub fn plain(paging: bool) -> CompileOpts {
        CompileOpts { paging, cells: std::ptr::null() }
    }
}

pub(crate) struct Compiler {
    isa: OwnedTargetIsa,
    ctx: Context,
    fctx: FunctionBuilderContext,
    code: Vec<u8>,
}

fn cty(t: Ty) -> Type {
    match t {
        Ty::I8 => types::I8,
        Ty::I16 => types::I16,
        Ty::I32 => types::I32,
        Ty::I64 => types::I64,
    }
}

fn cc(op: CmpOp) -> IntCC {
    match op {
        CmpOp::Eq => IntCC::Equal,
        CmpOp::Ne => IntCC::NotEqual,
        CmpOp::Ult => IntCC::UnsignedLessThan,
        CmpOp::Ule => IntCC::UnsignedLessThanOrEqual,
        CmpOp::Ugt => IntCC::UnsignedGreaterThan,
        CmpOp::Uge => IntCC::UnsignedGreaterThanOrEqual,
        CmpOp::Slt => IntCC::SignedLessThan,
        CmpOp::Sle => IntCC::SignedLessThanOrEqual,
        CmpOp::Sgt => IntCC::SignedGreaterThan,
        CmpOp::Sge => IntCC::SignedGreaterThanOrEqual,
    }
}

impl Compiler {
    pub fn new() -> Result<Compiler, JitError> {
        let mut fb = settings::builder();
        let set =
            |fb: &mut settings::Builder, k: &str, v: &str| fb.set(k, v).map_err(|e| JitError::Host(e.to_string()));
        // Blocks are small and straight-line: compile time matters more than what the
        // optimizer and the backtracking register allocator would gain (measured on the Linux
        // boot: speed + backtracking took ~3x the compile time of none + single_pass).
        set(&mut fb, "opt_level", "none")?;
        set(&mut fb, "regalloc_algorithm", "backtracking")?;
        set(&mut fb, "enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })?;
        let isa = cranelift_native::builder()
            .map_err(|e| JitError::Host(e.to_string()))?
            .finish(settings::Flags::new(fb))
            .map_err(|e| JitError::Host(e.to_string()))?;
        Ok(Compiler { isa, ctx: Context::new(), fctx: FunctionBuilderContext::new(), code: Vec::new() })
    }

    /// Compile one block; the returned code is valid until the next call.
    pub fn compile(&mut self, block: &Block, opts: CompileOpts) -> Result<&[u8], JitError> {
        self.ctx.clear();
        let ptr = types::I64;
        let mut sig = Signature::new(CallConv::SystemV);
        sig.params.push(AbiParam::new(ptr));
        sig.params.push(AbiParam::new(ptr));
        sig.returns.push(AbiParam::new(types::I32));
        self.ctx.func = Function::with_name_signature(UserFuncName::default(), sig);
        {
            let mut fb = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            Lower::new(&mut fb, block, opts).run();
            fb.seal_all_blocks();
            fb.finalize(self.isa.frontend_config());
        }
        let compiled = self
            .ctx
            .compile(&*self.isa, &mut ControlPlane::default())
            .map_err(|e| JitError::Codegen(format!("{:?}", e.inner)))?;
        if !compiled.buffer.relocs().is_empty() {
            return Err(JitError::Codegen("compiled code needs relocations".into()));
        }
        self.code.clear();
        self.code.extend_from_slice(compiled.code_buffer());
        Ok(&self.code)
    }
}

/// Lowering state of one block.
struct Lower<'a, 'b> {
    fb: &'a mut FunctionBuilder<'b>,
    block: &'a Block,
    opts: CompileOpts,
    vals: Vec<Option<Value>>,
    exit_blocks: Vec<Option<cranelift_codegen::ir::Block>>,
    ctx: Value,
    env: Value,
    tlb: Value,
    ram: Value,
    ram_base: Value,
    ram_size: Value,
    code_pages: Value,
    sig_load: SigRef,
    sig_store: SigRef,
    sig_helper: SigRef,
    fl: MemFlagsData,
    /// Program counter at entry and the main path's first block (blocks that loop back).
    entry_pc: Option<Value>,
    top: cranelift_codegen::ir::Block,
    /// Program counter at entry of a block that chains ([`Lower::chain_end`]).
    chain_pc: Option<Value>,
}

impl<'a, 'b> Lower<'a, 'b> {
    fn new(fb: &'a mut FunctionBuilder<'b>, block: &'a Block, opts: CompileOpts) -> Self {
        let entry = fb.create_block();
        fb.append_block_params_for_function_params(entry);
        fb.switch_to_block(entry);
        let ctx = fb.block_params(entry)[0];
        let env = fb.block_params(entry)[1];
        // Context, TLB, RAM and environment accesses are aligned and never trap.
        let fl = MemFlagsData::trusted();
        let ld = |fb: &mut FunctionBuilder<'b>, off: usize| fb.ins().load(types::I64, fl, env, off as i32);
        let tlb = ld(fb, offset_of!(MemEnv, tlb));
        let ram = ld(fb, offset_of!(MemEnv, ram));
        let ram_base = ld(fb, offset_of!(MemEnv, ram_base));
        let ram_size = ld(fb, offset_of!(MemEnv, ram_size));
        let code_pages = ld(fb, offset_of!(MemEnv, code_pages));
        let i64t = types::I64;
        let mut sl = Signature::new(CallConv::SystemV);
        for t in [i64t, i64t, types::I32, types::I32] {
            sl.params.push(AbiParam::new(t));
        }
        sl.returns.push(AbiParam::new(i64t));
        let mut ss = Signature::new(CallConv::SystemV);
        for t in [i64t, i64t, types::I32, types::I32, i64t] {
            ss.params.push(AbiParam::new(t));
        }
        ss.returns.push(AbiParam::new(types::I32));
        let mut sh = Signature::new(CallConv::SystemV);
        for t in [i64t, types::I32, i64t, i64t] {
            sh.params.push(AbiParam::new(t));
        }
        sh.returns.push(AbiParam::new(i64t));
        let sig_load = fb.import_signature(sl);
        let sig_store = fb.import_signature(ss);
        let sig_helper = fb.import_signature(sh);
        // A looping block re-enters here (after the environment loads).
        let entry_pc = block.loop_back.map(|lb| fb.ins().load(types::I64, fl, ctx, lb.pc_off as i32));
        // A chaining block compares the final program counter with its entry value.
        let chain = block.chain.filter(|_| !opts.cells.is_null());
        let chain_pc = chain.map(|ch| match (block.loop_back, entry_pc) {
            (Some(lb), Some(v)) if lb.pc_off == ch.pc_off => v,
            _ => fb.ins().load(types::I64, fl, ctx, ch.pc_off as i32),
        });
        let top = fb.create_block();
        fb.ins().jump(top, &[]);
        fb.switch_to_block(top);
        Lower {
            fb,
            block,
            opts,
            vals: vec![None; block.insts.len()],
            exit_blocks: vec![None; block.exits.len()],
            ctx,
            env,
            tlb,
            ram,
            ram_base,
            ram_size,
            code_pages,
            sig_load,
            sig_store,
            sig_helper,
            fl,
            entry_pc,
            top,
            chain_pc,
        }
    }

    fn v(&self, x: Val) -> Value {
        self.vals[x.0 as usize].expect("validated IR: operands are defined before use")
    }

    fn ty(&self, x: Val) -> Ty {
        self.block.insts[x.0 as usize].ty.expect("value-producing operation")
    }

    fn run(mut self) {
        for &x in &self.block.main {
            self.lower(x);
        }
        if let (Some(lb), Some(entry_pc)) = (self.block.loop_back, self.entry_pc) {
            let fl = self.fl;
            let n = i64::from(self.block.guest_insns);
            let pc = self.fb.ins().load(types::I64, fl, self.ctx, lb.pc_off as i32);
            let ic = self.fb.ins().load(types::I64, fl, self.ctx, lb.icount_off as i32);
            let budget = self.fb.ins().load(types::I64, fl, self.env, offset_of!(MemEnv, budget) as i32);
            let same = self.fb.ins().icmp(IntCC::Equal, pc, entry_pc);
            let ic2 = self.fb.ins().iadd_imm_s(ic, 2 * n);
            let fits = self.fb.ins().icmp(IntCC::UnsignedLessThanOrEqual, ic2, budget);
            let go = self.fb.ins().band(same, fits);
            let again = self.fb.create_block();
            let done = self.fb.create_block();
            self.fb.ins().brif(go, again, &[], done, &[]);
            self.fb.switch_to_block(again);
            let ic1 = self.fb.ins().iadd_imm_s(ic, n);
            self.fb.ins().store(fl, ic1, self.ctx, lb.icount_off as i32);
            let loops = self.fb.ins().load(types::I64, fl, self.env, offset_of!(MemEnv, loops) as i32);
            let loops = self.fb.ins().iadd_imm_s(loops, 1);
            self.fb.ins().store(fl, loops, self.env, offset_of!(MemEnv, loops) as i32);
            self.fb.ins().jump(self.top, &[]);
            self.fb.switch_to_block(done);
        }
        if let (Some(ch), Some(pc0)) = (self.block.chain, self.chain_pc) {
            self.chain_end(ch, pc0);
        }
        let code = self.fb.ins().iconst(types::I32, i64::from(self.block.end_code));
        self.fb.ins().return_(&[code]);
        // Exit stubs: their operands are main-path values that dominate every branch to them.
        for (k, blk) in self.exit_blocks.clone().into_iter().enumerate() {
            let Some(blk) = blk else { continue };
            self.fb.switch_to_block(blk);
            self.fb.set_cold_block(blk);
            for &x in &self.block.exits[k].body {
                self.lower(x);
            }
            let code = self.fb.ins().iconst(types::I32, i64::from(self.block.exits[k].code));
            self.fb.ins().return_(&[code]);
        }
    }

    /// Hand over to a successor from the block's chain cells if the program counter is on the
    /// entry page, matches a cell and the successor fits the budget: advance the count, store
    /// the successor in the environment and return [`crate::CHAINED`]. Falls through (to the
    /// normal return) otherwise.
    fn chain_end(&mut self, ch: ailuro_ir::Chain, pc0: Value) {
        let fl = self.fl;
        let i64t = types::I64;
        let pc = self.fb.ins().load(i64t, fl, self.ctx, ch.pc_off as i32);
        let x = self.fb.ins().bxor(pc, pc0);
        let far = self.fb.ins().ushr_imm_u(x, 12);
        let near = self.fb.create_block();
        let no = self.fb.create_block();
        self.fb.ins().brif(far, no, &[], near, &[]);
        self.fb.switch_to_block(near);
        let lo = self.fb.ins().band_imm_u(pc, 0xfff);
        let ic = self.fb.ins().load(i64t, fl, self.ctx, ch.icount_off as i32);
        let ic = self.fb.ins().iadd_imm_s(ic, i64::from(self.block.guest_insns));
        let budget = self.fb.ins().load(i64t, fl, self.env, offset_of!(MemEnv, chain_budget) as i32);
        let cells = self.fb.ins().iconst(i64t, self.opts.cells as i64);
        for j in 0..crate::CHAIN_CELLS {
            let base = (j * std::mem::size_of::<crate::ChainCell>()) as i32;
            let field = |f: usize| base + f as i32;
            let off = self.fb.ins().load(i64t, fl, cells, field(offset_of!(crate::ChainCell, page_off)));
            let hit = self.fb.ins().icmp(IntCC::Equal, off, lo);
            let cand = self.fb.create_block();
            let miss = self.fb.create_block();
            self.fb.ins().brif(hit, cand, &[], miss, &[]);
            self.fb.switch_to_block(cand);
            let n = self.fb.ins().load(i64t, fl, cells, field(offset_of!(crate::ChainCell, insns)));
            let end = self.fb.ins().iadd(ic, n);
            let fits = self.fb.ins().icmp(IntCC::UnsignedLessThanOrEqual, end, budget);
            let go = self.fb.create_block();
            self.fb.ins().brif(fits, go, &[], no, &[]);
            self.fb.switch_to_block(go);
            let next = self.fb.ins().load(i64t, fl, cells, field(offset_of!(crate::ChainCell, next)));
            let id = self.fb.ins().load(i64t, fl, cells, field(offset_of!(crate::ChainCell, id)));
            self.fb.ins().store(fl, ic, self.ctx, ch.icount_off as i32);
            self.fb.ins().store(fl, next, self.env, offset_of!(MemEnv, next) as i32);
            self.fb.ins().store(fl, id, self.env, offset_of!(MemEnv, cur) as i32);
            let k = self.fb.ins().load(i64t, fl, self.env, offset_of!(MemEnv, chained) as i32);
            let k = self.fb.ins().iadd_imm_s(k, 1);
            self.fb.ins().store(fl, k, self.env, offset_of!(MemEnv, chained) as i32);
            let code = self.fb.ins().iconst(types::I32, i64::from(crate::CHAINED));
            self.fb.ins().return_(&[code]);
            self.fb.switch_to_block(miss);
        }
        self.fb.ins().jump(no, &[]);
        self.fb.switch_to_block(no);
    }

    fn exit_block(&mut self, e: ailuro_ir::ExitId) -> cranelift_codegen::ir::Block {
        if let Some(b) = self.exit_blocks[e.0 as usize] {
            return b;
        }
        let b = self.fb.create_block();
        self.exit_blocks[e.0 as usize] = Some(b);
        b
    }

    fn lower(&mut self, x: Val) {
        let inst = self.block.insts[x.0 as usize];
        let fl = self.fl;
        let r = match inst.op {
            Op::Const { ty, v } => Some(self.fb.ins().iconst(cty(ty), (v & ty.mask()) as i64)),
            Op::Get { ty, off } => Some(self.fb.ins().load(cty(ty), fl, self.ctx, off as i32)),
            Op::Put { off, v } => {
                let v = self.v(v);
                self.fb.ins().store(fl, v, self.ctx, off as i32);
                None
            }
            Op::Bin { op, a, b } => {
                let (a, b) = (self.v(a), self.v(b));
                let i = self.fb.ins();
                Some(match op {
                    BinOp::Add => i.iadd(a, b),
                    BinOp::Sub => i.isub(a, b),
                    BinOp::Mul => i.imul(a, b),
                    BinOp::And => i.band(a, b),
                    BinOp::Or => i.bor(a, b),
                    BinOp::Xor => i.bxor(a, b),
                    BinOp::Shl => i.ishl(a, b),
                    BinOp::Lshr => i.ushr(a, b),
                    BinOp::Ashr => i.sshr(a, b),
                    BinOp::Rotl => i.rotl(a, b),
                    BinOp::Rotr => i.rotr(a, b),
                    BinOp::UMulHi => i.umulhi(a, b),
                    BinOp::SMulHi => i.smulhi(a, b),
                })
            }
            Op::Un { op, a } => {
                let a = self.v(a);
                let i = self.fb.ins();
                Some(match op {
                    UnOp::Not => i.bnot(a),
                    UnOp::Neg => i.ineg(a),
                    UnOp::Popcnt => i.popcnt(a),
                })
            }
            Op::Cmp { op, a, b } => {
                let (a, b) = (self.v(a), self.v(b));
                Some(self.fb.ins().icmp(cc(op), a, b))
            }
            Op::Select { c, a, b } => {
                let (c, a, b) = (self.v(c), self.v(a), self.v(b));
                Some(self.fb.ins().select(c, a, b))
            }
            Op::Zext { to, a } => {
                let a = self.v(a);
                Some(self.fb.ins().uextend(cty(to), a))
            }
            Op::Sext { to, a } => {
                let a = self.v(a);
                Some(self.fb.ins().sextend(cty(to), a))
            }
            Op::Trunc { to, a } => {
                let a = self.v(a);
                Some(self.fb.ins().ireduce(cty(to), a))
            }
            Op::Load { ty, addr, acc, exit } => Some(self.mem_access(ty, addr, None, acc, exit)),
            Op::Store { addr, v, acc, exit } => {
                let ty = self.ty(v);
                self.mem_access(ty, addr, Some(v), acc, exit);
                None
            }
            Op::Helper { id, a, b } => {
                let (a, b) = (self.v(a), self.v(b));
                let fp = self.fb.ins().load(types::I64, fl, self.env, offset_of!(MemEnv, helper) as i32);
                let idv = self.fb.ins().iconst(types::I32, i64::from(id));
                let call = self.fb.ins().call_indirect(self.sig_helper, fp, &[self.env, idv, a, b]);
                Some(self.fb.inst_results(call)[0])
            }
            Op::Guard { c, exit } => {
                let c = self.v(c);
                let eb = self.exit_block(exit);
                let cont = self.fb.create_block();
                self.fb.ins().brif(c, cont, &[], eb, &[]);
                self.fb.switch_to_block(cont);
                None
            }
        };
        self.vals[x.0 as usize] = r;
    }

    /// Inline soft-TLB fast path into RAM, helper call otherwise; returns the loaded value (or a
    /// dummy for stores).
    fn mem_access(&mut self, ty: Ty, addr: Val, store: Option<Val>, acc: u8, exit: ailuro_ir::ExitId) -> Value {
        let size = i64::from(ty.bytes());
        let a = self.v(addr);
        let sv = store.map(|s| self.v(s));
        let eb = self.exit_block(exit);
        let fast = self.fb.create_block();
        let slow = self.fb.create_block();
        let join = self.fb.create_block();
        let res = if store.is_none() { Some(self.fb.append_block_param(join, cty(ty))) } else { None };
        let fl = self.fl;
        let i64t = types::I64;
        let pa = if self.opts.paging {
            let vpn = self.fb.ins().ushr_imm_u(a, 12);
            let hi = self.fb.ins().ushr_imm_u(vpn, 10);
            let h = self.fb.ins().bxor(vpn, hi);
            let idx = self.fb.ins().band_imm_u(h, (TLB_SIZE - 1) as i64);
            let off = self.fb.ins().imul_imm_u(idx, std::mem::size_of::<TlbEntry>() as i64);
            let e = self.fb.ins().iadd(self.tlb, off);
            let tag = self.fb.ins().load(i64t, fl, e, std::mem::offset_of!(TlbEntry, tag) as i32);
            let want = self.fb.ins().bor_imm_u(vpn, TLB_VALID as i64);
            let mut ok = self.fb.ins().icmp(IntCC::Equal, tag, want);
            if acc != 0 {
                let perm = self.fb.ins().uload8(types::I32, fl, e, std::mem::offset_of!(TlbEntry, perm) as i32);
                let m = self.fb.ins().band_imm_u(perm, i64::from(acc));
                let okp = self.fb.ins().icmp_imm_s(IntCC::Equal, m, i64::from(acc));
                ok = self.fb.ins().band(ok, okp);
            }
            if size > 1 {
                let lo = self.fb.ins().band_imm_u(a, 0xfff);
                let okc = self.fb.ins().icmp_imm_s(IntCC::UnsignedLessThanOrEqual, lo, 0x1000 - size);
                ok = self.fb.ins().band(ok, okc);
            }
            let ppage = self.fb.ins().load(i64t, fl, e, std::mem::offset_of!(TlbEntry, ppage) as i32);
            let lo = self.fb.ins().band_imm_u(a, 0xfff);
            let pa = self.fb.ins().bor(ppage, lo);
            (pa, Some(ok))
        } else {
            (a, None)
        };
        let (pa, ok_tlb) = pa;
        // Inside RAM: pa - ram_base <= ram_size - size (unsigned; a tiny RAM makes the limit wrap
        // and the test fail, so such accesses take the slow path).
        let off = self.fb.ins().isub(pa, self.ram_base);
        let lim = self.fb.ins().iadd_imm_s(self.ram_size, -size);
        let mut ok = self.fb.ins().icmp(IntCC::UnsignedLessThanOrEqual, off, lim);
        let big = self.fb.ins().icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, self.ram_size, size);
        ok = self.fb.ins().band(ok, big);
        if let Some(t) = ok_tlb {
            ok = self.fb.ins().band(ok, t);
        }
        self.fb.ins().brif(ok, fast, &[], slow, &[]);

        // Fast path. Stores check the translated-code map first (a store into code must be seen
        // by the front end, which invalidates); that check can only be done once `off` is known
        // to be inside RAM.
        self.fb.switch_to_block(fast);
        let host = self.fb.ins().iadd(self.ram, off);
        match sv {
            None => {
                let v = self.fb.ins().load(cty(ty), fl, host, 0);
                self.fb.ins().jump(join, &[BlockArg::Value(v)]);
            }
            Some(v) => {
                let page = self.fb.ins().ushr_imm_u(off, 12);
                let mp = self.fb.ins().iadd(self.code_pages, page);
                let mark = self.fb.ins().uload8(types::I32, fl, mp, 0);
                let st = self.fb.create_block();
                self.fb.ins().brif(mark, slow, &[], st, &[]);
                self.fb.switch_to_block(st);
                self.fb.ins().store(fl, v, host, 0);
                self.fb.ins().jump(join, &[]);
            }
        }

        // Slow path through the front end's helper.
        self.fb.switch_to_block(slow);
        self.fb.set_cold_block(slow);
        let sz = self.fb.ins().iconst(types::I32, size);
        let ac = self.fb.ins().iconst(types::I32, i64::from(acc));
        match sv {
            None => {
                let fp = self.fb.ins().load(i64t, fl, self.env, offset_of!(MemEnv, slow_load) as i32);
                let call = self.fb.ins().call_indirect(self.sig_load, fp, &[self.env, a, sz, ac]);
                let r = self.fb.inst_results(call)[0];
                let failed = self.fb.ins().load(types::I32, fl, self.env, offset_of!(MemEnv, failed) as i32);
                let r = if ty == Ty::I64 { r } else { self.fb.ins().ireduce(cty(ty), r) };
                self.fb.ins().brif(failed, eb, &[], join, &[BlockArg::Value(r)]);
            }
            Some(v) => {
                let v64 = if ty == Ty::I64 { v } else { self.fb.ins().uextend(i64t, v) };
                let fp = self.fb.ins().load(i64t, fl, self.env, offset_of!(MemEnv, slow_store) as i32);
                let call = self.fb.ins().call_indirect(self.sig_store, fp, &[self.env, a, sz, ac, v64]);
                let done = self.fb.inst_results(call)[0];
                self.fb.ins().brif(done, join, &[], eb, &[]);
            }
        }
        self.fb.switch_to_block(join);
        res.unwrap_or(a)
    }
}
