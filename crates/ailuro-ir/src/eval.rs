//! The reference interpreter: the meaning of every IR operation, written plainly. Compiled code
//! must agree with it on every block (the back end's differential tests check this).

use crate::{BinOp, Block, CmpOp, IrError, Op, Ty, UnOp, Val};

/// Guest memory as a block sees it: `None` / `false` means "cannot do this access here" (the
/// block then leaves through the access's exit stub).
pub trait GuestMem {
    /// Read `size` bytes (1, 2, 4, 8) at virtual address `addr` with access class `acc`.
    fn load(&mut self, addr: u64, size: u32, acc: u8) -> Option<u64>;
    /// Write the low `size` bytes of `v` at `addr`.
    fn store(&mut self, addr: u64, size: u32, v: u64, acc: u8) -> bool;
    /// The front end's helper `id` ([`crate::Op::Helper`]).
    fn helper(&mut self, id: u32, a: u64, b: u64) -> u64;
}

/// How an evaluated block ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `Block::end_code` or the taken exit's `code`.
    pub code: u32,
    /// The exit taken (None: the main path ran to its end).
    pub exit: Option<u32>,
}

fn sext(v: u64, ty: Ty) -> i64 {
    let sh = 64 - ty.bits();
    ((v << sh) as i64) >> sh
}

/// Evaluate one binary operation on `ty`-wide operands (already masked).
pub fn bin(op: BinOp, ty: Ty, a: u64, b: u64) -> u64 {
    let bits = ty.bits();
    let m = ty.mask();
    let sh = (b as u32) & (bits - 1);
    let r = match op {
        BinOp::Add => a.wrapping_add(b),
        BinOp::Sub => a.wrapping_sub(b),
        BinOp::Mul => a.wrapping_mul(b),
        BinOp::And => a & b,
        BinOp::Or => a | b,
        BinOp::Xor => a ^ b,
        BinOp::Shl => a << sh,
        BinOp::Lshr => a >> sh,
        BinOp::Ashr => (sext(a, ty) >> sh) as u64,
        BinOp::Rotl => {
            if sh == 0 {
                a
            } else {
                (a << sh) | (a >> (bits - sh))
            }
        }
        BinOp::Rotr => {
            if sh == 0 {
                a
            } else {
                (a >> sh) | (a << (bits - sh))
            }
        }
        BinOp::UMulHi => ((u128::from(a) * u128::from(b)) >> bits) as u64,
        BinOp::SMulHi => ((i128::from(sext(a, ty)) * i128::from(sext(b, ty))) >> bits) as u64,
    };
    r & m
}

/// Evaluate one comparison.
pub fn cmp(op: CmpOp, ty: Ty, a: u64, b: u64) -> bool {
    let (sa, sb) = (sext(a, ty), sext(b, ty));
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Ult => a < b,
        CmpOp::Ule => a <= b,
        CmpOp::Ugt => a > b,
        CmpOp::Uge => a >= b,
        CmpOp::Slt => sa < sb,
        CmpOp::Sle => sa <= sb,
        CmpOp::Sgt => sa > sb,
        CmpOp::Sge => sa >= sb,
    }
}

fn ctx_read(ctx: &[u8], off: u32, ty: Ty) -> u64 {
    let o = off as usize;
    let n = ty.bytes() as usize;
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&ctx[o..o + n]);
    u64::from_le_bytes(b)
}

fn ctx_write(ctx: &mut [u8], off: u32, ty: Ty, v: u64) {
    let o = off as usize;
    let n = ty.bytes() as usize;
    ctx[o..o + n].copy_from_slice(&v.to_le_bytes()[..n]);
}

/// Run `block` against the context bytes `ctx` (little-endian guest state) and `mem`, with an
/// instruction budget `budget` for [`crate::LoopBack`] (the compiled code's `MemEnv::budget`).
///
/// Every `Get`/`Put` offset must lie inside `ctx` (checked: a violation is an error, not a
/// panic). The main path and stubs run exactly as the back end's compiled code does.
pub fn eval(block: &Block, ctx: &mut [u8], mem: &mut dyn GuestMem) -> Result<Outcome, IrError> {
    eval_with_budget(block, ctx, mem, 0)
}

/// [`eval`] with a loop budget.
pub fn eval_with_budget(
    block: &Block,
    ctx: &mut [u8],
    mem: &mut dyn GuestMem,
    budget: u64,
) -> Result<Outcome, IrError> {
    let in_ctx = |ctx: &[u8], off: u32| (off as usize).checked_add(8).is_some_and(|e| e <= ctx.len());
    let entry_pc = match block.loop_back {
        Some(lb) if in_ctx(ctx, lb.pc_off) && in_ctx(ctx, lb.icount_off) => Some(ctx_read(ctx, lb.pc_off, Ty::I64)),
        Some(lb) => return Err(IrError::BadOffset(lb.pc_off.max(lb.icount_off))),
        None => None,
    };
    loop {
        let out = eval_once(block, ctx, mem)?;
        let (Some(lb), Some(entry_pc), None) = (block.loop_back, entry_pc, out.exit) else { return Ok(out) };
        let n = u64::from(block.guest_insns);
        let ic = ctx_read(ctx, lb.icount_off, Ty::I64);
        if ctx_read(ctx, lb.pc_off, Ty::I64) != entry_pc || ic.saturating_add(2 * n) > budget {
            return Ok(out);
        }
        ctx_write(ctx, lb.icount_off, Ty::I64, ic + n);
    }
}

fn eval_once(block: &Block, ctx: &mut [u8], mem: &mut dyn GuestMem) -> Result<Outcome, IrError> {
    let mut vals = vec![0u64; block.insts.len()];
    for &v in &block.main {
        if let Some(exit) = step(block, v, &mut vals, ctx, mem)? {
            for &x in &block.exits[exit as usize].body {
                step(block, x, &mut vals, ctx, mem)?;
            }
            return Ok(Outcome { code: block.exits[exit as usize].code, exit: Some(exit) });
        }
    }
    Ok(Outcome { code: block.end_code, exit: None })
}

/// One operation; returns the exit to take, if any.
fn step(
    block: &Block,
    v: Val,
    vals: &mut [u64],
    ctx: &mut [u8],
    mem: &mut dyn GuestMem,
) -> Result<Option<u32>, IrError> {
    let inst = block.insts[v.0 as usize];
    let ty = |x: Val| block.insts[x.0 as usize].ty.unwrap_or(Ty::I64);
    let g = |x: Val| vals[x.0 as usize];
    let in_ctx = |off: u32, t: Ty| (off as usize).checked_add(t.bytes() as usize).is_some_and(|e| e <= ctx.len());
    let r = match inst.op {
        Op::Const { v: c, .. } => c,
        Op::Get { ty: t, off } => {
            if !in_ctx(off, t) {
                return Err(IrError::BadOffset(off));
            }
            ctx_read(ctx, off, t)
        }
        Op::Put { off, v: x } => {
            let t = ty(x);
            if !in_ctx(off, t) {
                return Err(IrError::BadOffset(off));
            }
            ctx_write(ctx, off, t, g(x));
            0
        }
        Op::Bin { op, a, b } => bin(op, ty(a), g(a), g(b)),
        Op::Un { op, a } => {
            let t = ty(a);
            match op {
                UnOp::Not => !g(a) & t.mask(),
                UnOp::Neg => g(a).wrapping_neg() & t.mask(),
                UnOp::Popcnt => u64::from(g(a).count_ones()),
            }
        }
        Op::Cmp { op, a, b } => u64::from(cmp(op, ty(a), g(a), g(b))),
        Op::Select { c, a, b } => {
            if g(c) != 0 {
                g(a)
            } else {
                g(b)
            }
        }
        Op::Zext { a, .. } => g(a),
        Op::Sext { to, a } => (sext(g(a), ty(a)) as u64) & to.mask(),
        Op::Trunc { to, a } => g(a) & to.mask(),
        Op::Load { ty: t, addr, acc, exit } => match mem.load(g(addr), t.bytes(), acc) {
            Some(x) => x & t.mask(),
            None => return Ok(Some(exit.0)),
        },
        Op::Store { addr, v: x, acc, exit } => {
            if !mem.store(g(addr), ty(x).bytes(), g(x), acc) {
                return Ok(Some(exit.0));
            }
            0
        }
        Op::Guard { c, exit } => {
            if g(c) == 0 {
                return Ok(Some(exit.0));
            }
            0
        }
        Op::Helper { id, a, b } => mem.helper(id, g(a), g(b)),
    };
    vals[v.0 as usize] = r;
    Ok(None)
}
