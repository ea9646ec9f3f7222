//! Compiled blocks against the IR's reference interpreter on random programs.

use ailuro_ir::eval::{eval_with_budget, GuestMem};
use ailuro_ir::{BinOp, Builder, CmpOp, Ty, UnOp, Val};

use super::*;

/// Guest memory for both engines: RAM at `RAM_BASE`, virtual pages mapped by a tiny page table
/// (virtual page v -> physical page `map[v]`), a soft TLB that may or may not hold a mapping
/// (the slow path fills it), pages that "hold code", and an unmapped hole (faults).
const RAM_BASE: u64 = 0x10_0000;
const PAGES: usize = 4;

struct World {
    ram: Vec<u8>,
    tlb: Vec<TlbEntry>,
    code: Vec<u8>,
    /// Virtual page -> physical page number (None: not mapped).
    map: Vec<Option<u64>>,
    paging: bool,
    slow_calls: u64,
}

impl World {
    fn translate(&self, addr: u64, size: u32) -> Option<usize> {
        let pa = if self.paging {
            let vp = usize::try_from(addr >> 12).ok()?;
            let p = (*self.map.get(vp)?)?;
            (p << 12) | (addr & 0xfff)
        } else {
            addr
        };
        let off = pa.checked_sub(RAM_BASE)? as usize;
        (off + size as usize <= self.ram.len() && (addr & 0xfff) + u64::from(size) <= 0x1000).then_some(off)
    }

    fn fill(&mut self, addr: u64) {
        if let Some(Some(p)) = self.map.get((addr >> 12) as usize) {
            let vpn = addr >> 12;
            self.tlb[tlb_index(vpn)] = TlbEntry { tag: vpn | TLB_VALID, ppage: p << 12, perm: 0xff };
        }
    }
}

/// The test helper: any deterministic function of its inputs.
fn helper_value(id: u32, a: u64, b: u64) -> u64 {
    a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.rotate_left(17) ^ u64::from(id)
}

unsafe extern "C" fn helper(_env: *mut MemEnv, id: u32, a: u64, b: u64) -> u64 {
    helper_value(id, a, b)
}

impl GuestMem for World {
    fn helper(&mut self, id: u32, a: u64, b: u64) -> u64 {
        helper_value(id, a, b)
    }
    fn load(&mut self, addr: u64, size: u32, _acc: u8) -> Option<u64> {
        let off = self.translate(addr, size)?;
        let mut b = [0u8; 8];
        b[..size as usize].copy_from_slice(&self.ram[off..off + size as usize]);
        Some(u64::from_le_bytes(b))
    }
    fn store(&mut self, addr: u64, size: u32, v: u64, _acc: u8) -> bool {
        let Some(off) = self.translate(addr, size) else { return false };
        if self.code[off >> 12] != 0 {
            return false;
        }
        self.ram[off..off + size as usize].copy_from_slice(&v.to_le_bytes()[..size as usize]);
        true
    }
}

unsafe extern "C" fn slow_load(env: *mut MemEnv, addr: u64, size: u32, acc: u32) -> u64 {
    // SAFETY: the test passes a MemEnv whose owner is the World, exclusively borrowed.
    let (env, w) = unsafe { (&mut *env, &mut *env.as_ref().unwrap().owner.cast::<World>()) };
    w.slow_calls += 1;
    w.fill(addr);
    match w.load(addr, size, acc as u8) {
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

unsafe extern "C" fn slow_store(env: *mut MemEnv, addr: u64, size: u32, acc: u32, v: u64) -> u32 {
    // SAFETY: as in slow_load.
    let w = unsafe { &mut *(*env).owner.cast::<World>() };
    w.slow_calls += 1;
    w.fill(addr);
    u32::from(w.store(addr, size, v, acc as u8))
}

/// The environment compiled code gets for world `w` (its RAM, TLB and code-page map, the test
/// helpers), with loop and chaining budgets.
fn env_for(w: &mut World, budget: u64, chain_budget: u64) -> MemEnv {
    MemEnv {
        tlb: w.tlb.as_ptr(),
        ram: w.ram.as_mut_ptr(),
        ram_base: RAM_BASE,
        ram_size: w.ram.len() as u64,
        code_pages: w.code.as_ptr(),
        slow_load,
        slow_store,
        helper,
        failed: 0,
        budget,
        loops: 0,
        chain_budget,
        next: None,
        cur: 0,
        chained: 0,
        owner: (w as *mut World).cast(),
    }
}

/// Tiny deterministic PRNG (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TYS: [Ty; 4] = [Ty::I8, Ty::I16, Ty::I32, Ty::I64];
const CTX: usize = 128;

/// A random block: context reads, arithmetic of every kind, context writes, memory accesses
/// with exit stubs that write a marker, guards.
fn random_block(r: &mut Rng) -> ailuro_ir::Block {
    let mut b = Builder::new();
    let mut pool: Vec<Val> = Vec::new();
    for _ in 0..4 {
        let t = TYS[r.below(4) as usize];
        pool.push(b.get(t, (r.below((CTX / 8) as u64) * 8) as u32));
    }
    let pick = |r: &mut Rng, pool: &Vec<Val>| pool[r.below(pool.len() as u64) as usize];
    let n = 5 + r.below(40);
    let mut insn = 0;
    for _ in 0..n {
        let a = pick(r, &pool);
        let t = b.ty(a);
        let v = match r.below(12) {
            0..=3 => {
                let ops = [
                    BinOp::Add,
                    BinOp::Sub,
                    BinOp::Mul,
                    BinOp::And,
                    BinOp::Or,
                    BinOp::Xor,
                    BinOp::Shl,
                    BinOp::Lshr,
                    BinOp::Ashr,
                    BinOp::Rotl,
                    BinOp::Rotr,
                    BinOp::UMulHi,
                    BinOp::SMulHi,
                ];
                let c = pick(r, &pool);
                let c = b.zext(t, c);
                b.bin(ops[r.below(ops.len() as u64) as usize], a, c)
            }
            4 => b.un([UnOp::Not, UnOp::Neg, UnOp::Popcnt][r.below(3) as usize], a),
            5 => {
                let ops = [
                    CmpOp::Eq,
                    CmpOp::Ne,
                    CmpOp::Ult,
                    CmpOp::Ule,
                    CmpOp::Ugt,
                    CmpOp::Uge,
                    CmpOp::Slt,
                    CmpOp::Sle,
                    CmpOp::Sgt,
                    CmpOp::Sge,
                ];
                let c = pick(r, &pool);
                let c = b.sext(t, c);
                b.cmp(ops[r.below(10) as usize], a, c)
            }
            6 => {
                let c = pick(r, &pool);
                let x = pick(r, &pool);
                let x = b.zext(t, x);
                b.select(c, a, x)
            }
            7 => {
                let to = TYS[r.below(4) as usize];
                if r.below(2) == 0 {
                    b.sext(to, a)
                } else {
                    b.zext(to, a)
                }
            }
            8 if r.below(4) == 0 => {
                let x = b.zext(Ty::I64, a);
                let y = pick(r, &pool);
                let y = b.sext(Ty::I64, y);
                b.helper(r.below(3) as u32, x, y)
            }
            8 => b.iconst(TYS[r.below(4) as usize], r.next()),
            9 | 10 => {
                // Memory: an address near the mapped pages (sometimes page-crossing, sometimes in
                // the hole), an exit stub writing a marker and one pool value.
                insn += 1;
                let page = r.below(PAGES as u64 + 1);
                let off = if r.below(4) == 0 { 0xffc + r.below(4) } else { r.below(0x1000) };
                let va = if r.below(8) == 0 { 0xdead_0000 } else { (page << 12) | off };
                let addr = b.iconst(Ty::I64, va);
                let keep = pick(r, &pool);
                let e = b.begin_exit(insn, 100 + insn);
                b.put(120, keep);
                b.end_exit();
                let t = TYS[r.below(4) as usize];
                if r.below(2) == 0 {
                    b.load(t, addr, 0, e)
                } else {
                    let v = b.zext(t, a);
                    b.store(addr, v, 0, e);
                    a
                }
            }
            _ => {
                let c = b.cmp(CmpOp::Ne, a, a);
                let c = b.un(UnOp::Not, c);
                let one = b.iconst(Ty::I8, 1);
                let c = b.bin(BinOp::And, c, one);
                let c = if r.below(16) == 0 { b.iconst(Ty::I8, 0) } else { c };
                insn += 1;
                let e = b.begin_exit(insn, 50);
                b.end_exit();
                b.guard(c, e);
                a
            }
        };
        pool.push(v);
        if r.below(3) == 0 {
            let x = pick(r, &pool);
            b.put((16 + r.below((CTX / 8 - 2) as u64) * 8) as u32, x);
        }
    }
    for _ in 0..3 {
        let x = pick(r, &pool);
        b.put((16 + r.below((CTX / 8 - 2) as u64) * 8) as u32, x);
    }
    if r.below(3) == 0 {
        // Loops while the "PC" at offset 0 is unchanged and the count at 8 fits the budget.
        b.set_loop_back(ailuro_ir::LoopBack { pc_off: 0, icount_off: 8 });
    }
    b.finish(insn + 1, 7).expect("generator builds valid IR")
}

fn world(r: &mut Rng, paging: bool) -> World {
    let mut ram = vec![0u8; PAGES * 4096];
    for x in ram.iter_mut() {
        *x = r.next() as u8;
    }
    let mut map: Vec<Option<u64>> =
        (0..PAGES).map(|p| Some((RAM_BASE >> 12) + ((p as u64 + 1) % PAGES as u64))).collect();
    map[1] = None;
    let mut code = vec![0u8; PAGES];
    code[2] = 1;
    let mut w = World { ram, tlb: vec![TlbEntry::default(); TLB_SIZE], code, map, paging, slow_calls: 0 };
    // Some pages already in the TLB.
    w.fill(0);
    w.fill(3 << 12);
    w
}

#[test]
fn compiled_blocks_match_the_reference_interpreter() {
    let mut jit = Jit::new(1 << 22).unwrap();
    let mut r = Rng(0x1234_5678_9abc_def1);
    let mut exits = 0;
    let mut slow = 0;
    let mut loops = 0;
    for case in 0..1500 {
        let blk = random_block(&mut r);
        let paging = case % 3 != 0;
        let mut ctx0 = vec![0u8; CTX];
        for x in ctx0.iter_mut() {
            *x = r.next() as u8;
        }
        let seed = r.next();
        let mut w_ref = world(&mut Rng(seed | 1), paging);
        let mut w_jit = world(&mut Rng(seed | 1), paging);
        // Without paging, addresses are physical: move them into RAM.
        if !paging {
            w_ref.map.clear();
            w_jit.map.clear();
        }
        // Instruction count at 8: a budget of up to ~40 iterations beyond it.
        let ic0 = u64::from_le_bytes(ctx0[8..16].try_into().unwrap());
        let budget = ic0.saturating_add(r.below(40 * u64::from(blk.guest_insns) + 1));
        let mut ctx_ref = ctx0.clone();
        let out = eval_with_budget(&blk, &mut ctx_ref, &mut w_ref, budget).unwrap();
        let f = match jit.compile(&blk, CompileOpts::plain(paging)).unwrap() {
            Some(f) => f,
            None => {
                jit.flush();
                jit.compile(&blk, CompileOpts::plain(paging)).unwrap().unwrap()
            }
        };
        let mut ctx_jit = ctx0.clone();
        let mut env = env_for(&mut w_jit, budget, 0);
        // SAFETY: ctx is CTX bytes (every offset the generator uses is inside), env describes
        // w_jit's live buffers.
        let code = unsafe { f(ctx_jit.as_mut_ptr(), &mut env) };
        assert_eq!(code, out.code, "case {case}: exit code\n{blk}");
        assert_eq!(ctx_jit, ctx_ref, "case {case}: context\n{blk}");
        assert_eq!(w_jit.ram, w_ref.ram, "case {case}: RAM\n{blk}");
        exits += u32::from(out.exit.is_some());
        loops += env.loops;
        slow += w_jit.slow_calls;
    }
    // The generator must exercise exits and both memory paths.
    assert!(exits > 300, "{exits} exits");
    assert!(slow > 300, "{slow} slow calls");
    assert!(jit.stats().blocks >= 1500);
    assert!(loops > 500, "{loops} back-edges");
}

#[test]
fn full_arena_asks_for_a_flush() {
    let mut jit = Jit::new(64 * 1024).unwrap();
    let mut r = Rng(7);
    let mut full = false;
    for _ in 0..400 {
        let blk = random_block(&mut r);
        if jit.compile(&blk, CompileOpts::plain(true)).unwrap().is_none() {
            full = true;
            jit.flush();
            assert!(jit.compile(&blk, CompileOpts::plain(true)).unwrap().is_some());
        }
    }
    assert!(full);
    assert!(jit.stats().flushes > 0);
    // A block bigger than all code memory is an error, not an endless "full".
    let mut tiny = Jit::new(64).unwrap();
    let mut b = Builder::new();
    let e = b.begin_exit(0, 1);
    b.end_exit();
    for k in 0..200 {
        let a = b.iconst(Ty::I64, k * 8);
        let v = b.load(Ty::I64, a, 0, e);
        b.put(0, v);
    }
    let blk = b.finish(1, 0).unwrap();
    assert!(matches!(tiny.compile(&blk, CompileOpts::plain(true)), Err(JitError::TooBig(_))));
}

#[test]
fn blocks_chain_to_successors_on_their_page_within_the_budget() {
    let mut jit = Jit::new(1 << 20).unwrap();
    // The successor: writes 42 at 16 and retires 4 instructions.
    let mut b = Builder::new();
    let v = b.iconst(Ty::I64, 42);
    b.put(16, v);
    b.set_chain(ailuro_ir::Chain { pc_off: 0, icount_off: 8 });
    let succ = jit.compile(&b.finish(4, 0).unwrap(), CompileOpts::plain(true)).unwrap().unwrap();
    // The block: sets the PC (offset 0) to `target` and retires 3 instructions; its cells live
    // here (boxed: the code embeds their address).
    let mut cells = Box::new([ChainCell::EMPTY; CHAIN_CELLS]);
    let block = |jit: &mut Jit, cells: &[ChainCell; CHAIN_CELLS], target: u64| {
        let mut b = Builder::new();
        let v = b.iconst(Ty::I64, target);
        b.put(0, v);
        b.set_chain(ailuro_ir::Chain { pc_off: 0, icount_off: 8 });
        jit.compile(&b.finish(3, 0).unwrap(), CompileOpts { paging: true, cells: cells.as_ptr() }).unwrap().unwrap()
    };
    let mut w = world(&mut Rng(3), true);
    // Runs `f` with PC `pc` and count 10; returns the code, the context and the environment.
    let run = |f: BlockFn, pc: u64, chain_budget: u64, w: &mut World| {
        let mut ctx = vec![0u8; CTX];
        ctx[0..8].copy_from_slice(&pc.to_le_bytes());
        ctx[8..16].copy_from_slice(&10u64.to_le_bytes());
        let mut env = env_for(w, 0, chain_budget);
        env.cur = 77;
        // SAFETY: the context is CTX bytes and the environment describes w's live buffers.
        let code = unsafe { f(ctx.as_mut_ptr(), &mut env) };
        let icount = u64::from_le_bytes(ctx[8..16].try_into().unwrap());
        (code, icount, env.next.map(|f| f as usize), env.cur, env.chained)
    };
    let s = Some(succ as usize);
    let f = block(&mut jit, &cells, 0x5123);
    // Empty cells: a normal end; the count is the caller's to advance.
    assert_eq!(run(f, 0x5000, 100, &mut w), (0, 10, None, 77, 0));
    cells[1] = ChainCell { next: Some(succ), page_off: 0x123, insns: 4, id: 9 };
    // A hit in the second cell with 10 + 3 + 4 <= 17 instructions of budget: chained.
    assert_eq!(run(f, 0x5000, 17, &mut w), (CHAINED, 13, s, 9, 1));
    assert_eq!(run(f, 0x5fff, 100, &mut w), (CHAINED, 13, s, 9, 1));
    // The successor does not fit; chaining is off; the PC is on another page than at entry.
    assert_eq!(run(f, 0x5000, 16, &mut w), (0, 10, None, 77, 0));
    assert_eq!(run(f, 0x5000, 0, &mut w), (0, 10, None, 77, 0));
    assert_eq!(run(f, 0x4fff, 100, &mut w), (0, 10, None, 77, 0));
    assert_eq!(run(f, 0x6000, 100, &mut w), (0, 10, None, 77, 0));
    // Another offset on the page matches no cell.
    let g = block(&mut jit, &cells, 0x5124);
    assert_eq!(run(g, 0x5000, 100, &mut w), (0, 10, None, 77, 0));
    // The successor itself runs to its end.
    let (code, icount, ..) = run(succ, 0x5123, 100, &mut w);
    assert_eq!((code, icount), (0, 10));
    // Without cells (null) a block with a chain point never chains.
    let mut b = Builder::new();
    let v = b.iconst(Ty::I64, 0x5123);
    b.put(0, v);
    b.set_chain(ailuro_ir::Chain { pc_off: 0, icount_off: 8 });
    let h = jit.compile(&b.finish(3, 0).unwrap(), CompileOpts::plain(true)).unwrap().unwrap();
    assert_eq!(run(h, 0x5000, 100, &mut w), (0, 10, None, 77, 0));
}
