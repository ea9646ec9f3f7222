//! The x86 front end of the translator: pre-decoded instructions ([`Uop`]s, the forms the
//! interpreter's fast path runs) lifted into an [`ailuro_ir::Block`].
//!
//! Rules the lifted code keeps (so that a compiled block is indistinguishable from the
//! interpreter):
//!
//! * **Registers are cached** in IR values for the whole block and written back at every exit.
//! * **Flags are lazy**: a flag-setting instruction records its operation and operands; a
//!   consumer (Jcc, SETcc, CMOVcc, ADC/SBB, INC/DEC's kept CF) computes only what it needs, and
//!   exits materialize RFLAGS. Flags nobody reads are never computed. The formulas are those of
//!   `flags.rs`, including the values of flags the SDM leaves undefined.
//! * **Every instruction does its memory accesses before it changes a register or a flag**, so
//!   an access that cannot complete in compiled code leaves through an exit stub holding exactly
//!   the state at the start of that instruction (registers, RFLAGS, RIP); the interpreter then
//!   executes the instruction, faults included. Its count is the exit code minus one.
//! * **Mode facts are compile-time constants** checked at dispatch ([`JitMode`]): 64-bit or
//!   flat 32-bit protected-mode code (CS base 0, limit 4 GiB), CPL 3 or not, paging, and per data
//!   segment whether it is usable without checks and whether its base is zero.

use std::mem::offset_of;

use ailuro_ir::{BinOp, Block, Builder, CmpOp, ExitId, Ty, UnOp, Val};

use crate::fast::{Kind, LiftOnly, Uop, BYTE_HIGH, NONE, RIPREL};
use crate::mem::{PERM_SW, PERM_UR, PERM_UW};
use crate::{Segment, State, AF, CF, IF, OF, PF, RF, SF, VM, ZF};

/// The mode facts a block was compiled for (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct JitMode(pub u32);

impl JitMode {
    pub const LONG: u32 = 1;
    pub const USER: u32 = 2;
    pub const PAGING: u32 = 4;
    /// Segment `i` can be used for data accesses without limit or type checks.
    pub fn usable(i: usize) -> u32 {
        8 << (2 * i)
    }
    /// Segment `i` has base 0.
    pub fn base0(i: usize) -> u32 {
        16 << (2 * i)
    }
    fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

/// Flag order used internally (bit positions in RFLAGS).
const FLAGS: [u64; 6] = [CF, PF, AF, ZF, SF, OF];
const F_CF: usize = 0;
const F_PF: usize = 1;
const F_AF: usize = 2;
const F_ZF: usize = 3;
const F_SF: usize = 4;
const F_OF: usize = 5;

/// Operation whose flags are pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CcOp {
    Add,
    Adc,
    Sub,
    Sbb,
    Logic,
    /// Shifts by a count known at compile time (1..width-1), or by the count in `Lazy::b`
    /// (a shift by CL; never zero: a zero count leaves the block first) when it is 0.
    Shl(u32),
    Shr(u32),
    Sar(u32),
    Rol,
    Ror,
    Imul,
    /// Every flag is in `kept` (BT: CF from the bit, the others as they were).
    Known,
}

/// Lazy flags: `op` on `a`, `b` (of type `ty`) gave `res`; `extra` is the carry-in (ADC/SBB)
/// or the overflow bit (IMUL); `kept[f]` is the value of a flag the operation left unchanged.
#[derive(Clone, Copy, Debug)]
struct Lazy {
    op: CcOp,
    ty: Ty,
    res: Val,
    a: Val,
    b: Val,
    extra: Option<Val>,
    kept: [Option<Val>; 6],
}

#[derive(Clone, Copy, Debug)]
enum Flags {
    /// As at block entry (in RFLAGS).
    Entry,
    Lazy(Lazy),
}

const fn reg_off(r: usize) -> u32 {
    (offset_of!(State, regs) + 8 * r) as u32
}
const RIP: u32 = offset_of!(State, rip) as u32;
const ICOUNT: u32 = offset_of!(State, icount) as u32;
const LAZY_OP: u32 = (offset_of!(State, lazy) + offset_of!(crate::jit::LazyFlags, op)) as u32;
const LAZY_A: u32 = (offset_of!(State, lazy) + offset_of!(crate::jit::LazyFlags, a)) as u32;
const LAZY_B: u32 = (offset_of!(State, lazy) + offset_of!(crate::jit::LazyFlags, b)) as u32;
const LAZY_EXTRA: u32 = (offset_of!(State, lazy) + offset_of!(crate::jit::LazyFlags, extra)) as u32;
const LAZY_KEPT: u32 = (offset_of!(State, lazy) + offset_of!(crate::jit::LazyFlags, kept)) as u32;
const RFLAGS: u32 = offset_of!(State, rflags) as u32;
const CPL: u32 = offset_of!(State, cpl) as u32;
const CR4: u32 = offset_of!(State, cr4) as u32;
const SHADOW: u32 = offset_of!(State, shadow) as u32;
fn seg_base_off(i: usize) -> u32 {
    (offset_of!(State, seg) + i * std::mem::size_of::<Segment>() + offset_of!(Segment, base)) as u32
}

/// Condition codes in the pre-decoder's numbering (`fast::cc_from`): 1 = o .. 16 = g.
mod cc {
    pub const O: u8 = 1;
    pub const NO: u8 = 2;
    pub const B: u8 = 3;
    pub const AE: u8 = 4;
    pub const E: u8 = 5;
    pub const NE: u8 = 6;
    pub const BE: u8 = 7;
    pub const A: u8 = 8;
    pub const S: u8 = 9;
    pub const NS: u8 = 10;
    pub const P: u8 = 11;
    pub const NP: u8 = 12;
    pub const L: u8 = 13;
    pub const GE: u8 = 14;
    pub const LE: u8 = 15;
    pub const G: u8 = 16;
}

/// A lifted block and what the dispatcher needs to know about it.
pub(crate) struct Lifted {
    pub block: Block,
    pub insns: u32,
    /// It ends with a control transfer.
    pub ends_block: bool,
    /// It reads flags it did not compute itself (pending flags must be folded first).
    pub reads_flags: bool,
    /// It ends with an instruction after which an interrupt may have become deliverable (STI)
    /// or a device may have acted (RDTSC): the dispatcher checks before going on.
    pub check_events: bool,
}

/// Lifts one block.
pub(crate) struct Lifter {
    b: Builder,
    mode: JitMode,
    long: bool,
    regs: [Option<Val>; 16],
    dirty: u16,
    /// RFLAGS at entry (read on first use).
    fl0: Option<Val>,
    /// The block reads flags it did not compute (the dispatcher folds pending flags first).
    reads_flags: bool,
    flags: Flags,
    /// Index of the instruction being lifted, its RIP, and its exit stub (shared by its accesses).
    k: u32,
    eip: u64,
    exit: Option<ExitId>,
    /// Linear address of the block's first instruction at compile time, and RIP read at entry:
    /// every address derived from the code's position is `rip0 + (a - pc0)`, so one compiled
    /// block serves every virtual address its physical page is mapped at (shared libraries,
    /// position-independent executables under ASLR).
    pc0: u64,
    rip0: Option<Val>,
}

/// What a lifted instruction does to control flow.
enum Flow {
    Next,
    /// The block ends here; RIP is this value.
    End(Val),
    /// The block ends after this instruction (not a control transfer) and the dispatcher
    /// checks for deliverable events before going on.
    Stop,
}

impl Lifter {
    pub fn new(mode: JitMode) -> Lifter {
        Lifter {
            b: Builder::new(),
            mode,
            long: mode.has(JitMode::LONG),
            regs: [None; 16],
            dirty: 0,
            fl0: None,
            reads_flags: false,
            flags: Flags::Entry,
            k: 0,
            eip: 0,
            exit: None,
            pc0: 0,
            rip0: None,
        }
    }

    /// The run-time value of compile-time linear address `a` of this block's code (see
    /// `rip0`), as an I64 (wrapping at 4 GiB outside 64-bit mode).
    fn at(&mut self, a: u64) -> Val {
        let rip0 = self.rip0.expect("RIP is read at block entry");
        if self.long {
            let d = self.c(Ty::I64, a.wrapping_sub(self.pc0));
            return self.b.bin(BinOp::Add, rip0, d);
        }
        let r = self.b.zext(Ty::I32, rip0);
        let d = self.c(Ty::I32, a.wrapping_sub(self.pc0) & 0xffff_ffff);
        let x = self.b.bin(BinOp::Add, r, d);
        self.b.zext(Ty::I64, x)
    }

    /// Leave (before this instruction) if `t` is not canonical (64-bit mode) and `c` (if any)
    /// holds: the interpreter raises the #GP of a branch to a non-canonical address.
    fn guard_canonical(&mut self, t: Val, c: Option<Val>) {
        if !self.long {
            return;
        }
        let s = self.c(Ty::I64, 16);
        let x = self.b.bin(BinOp::Shl, t, s);
        let x = self.b.bin(BinOp::Ashr, x, s);
        let mut ok = self.b.cmp(CmpOp::Eq, x, t);
        if let Some(c) = c {
            let zero = self.c(self.b.ty(c), 0);
            let not_taken = self.b.cmp(CmpOp::Eq, c, zero);
            ok = self.b.bin(BinOp::Or, ok, not_taken);
        }
        let e = self.exit();
        self.b.guard(ok, e);
    }

    /// Can `u` be lifted in this mode? (Checked before anything is emitted for it.)
    pub fn supported(&self, u: &Uop) -> bool {
        let mem = matches!(
            u.kind,
            Kind::MovRM
                | Kind::MovMR
                | Kind::MovMI
                | Kind::AluRM
                | Kind::AluMR
                | Kind::AluMI
                | Kind::IncM
                | Kind::DecM
                | Kind::MovxRM
                | Kind::MovR8M
                | Kind::MovM8R
                | Kind::MovM8I
                | Kind::AluM8I
                | Kind::CallM
                | Kind::JmpM
                | Kind::CmovRM
                | Kind::Lift(LiftOnly::MovM16R)
                | Kind::Lift(LiftOnly::MovR16M)
                | Kind::Lift(LiftOnly::AluR8M)
                | Kind::Lift(LiftOnly::AluM8R)
                | Kind::Lift(LiftOnly::PushM)
                | Kind::Lift(LiftOnly::BtMI)
                | Kind::Lift(LiftOnly::CmpxchgMR)
        );
        if u.long != self.long {
            return false;
        }
        if mem && !self.long && !self.mode.has(JitMode::usable(u.seg as usize)) {
            return false;
        }
        let stack = matches!(
            u.kind,
            Kind::PushR
                | Kind::PushI
                | Kind::PopR
                | Kind::CallRel
                | Kind::CallR
                | Kind::CallM
                | Kind::Ret
                | Kind::Lift(LiftOnly::PushM)
                | Kind::Lift(LiftOnly::Leave)
                | Kind::Lift(LiftOnly::Pushf)
        );
        if stack && !self.long && !self.mode.has(JitMode::usable(2)) {
            return false;
        }
        if !u.liftable() {
            return false;
        }
        // CLI at CPL 3 may mean a #GP or (PVI) VIF: the interpreter's.
        !(matches!(u.kind, Kind::Lift(LiftOnly::Cli) | Kind::Lift(LiftOnly::Sti)) && self.mode.has(JitMode::USER))
    }

    fn rel_target(&self, eip: u64, imm: u32) -> u64 {
        if self.long {
            eip.wrapping_add(imm as i32 as i64 as u64)
        } else {
            u64::from((eip as u32).wrapping_add(imm))
        }
    }

    // ---- registers -------------------------------------------------------------------------

    fn reg(&mut self, r: u8) -> Val {
        let r = r as usize;
        if let Some(v) = self.regs[r] {
            return v;
        }
        let v = self.b.get(Ty::I64, reg_off(r));
        self.regs[r] = Some(v);
        v
    }

    fn set_reg(&mut self, r: u8, v: Val) {
        debug_assert_eq!(self.b.ty(v), Ty::I64);
        self.regs[r as usize] = Some(v);
        self.dirty |= 1 << r;
    }

    /// Register `r` as a `ty` operand.
    fn reg_as(&mut self, r: u8, ty: Ty) -> Val {
        let v = self.reg(r);
        self.b.zext(ty, v)
    }

    /// A `ty` result into register `r`: 32-bit writes zero-extend, 64-bit replace.
    fn write_w(&mut self, r: u8, v: Val) {
        let v = self.b.zext(Ty::I64, v);
        self.set_reg(r, v);
    }

    /// Replace the low 8 or 16 bits of register `r` by `v` (an I8 or I16).
    fn write_low(&mut self, r: u8, v: Val) {
        let old = self.reg(r);
        let m = self.b.iconst(Ty::I64, !self.b.ty(v).mask());
        let hi = self.b.bin(BinOp::And, old, m);
        let lo = self.b.zext(Ty::I64, v);
        let x = self.b.bin(BinOp::Or, hi, lo);
        self.set_reg(r, x);
    }

    /// Byte register `r` of a lift-only form (low byte, or bits 8..15 with [`BYTE_HIGH`]).
    fn byte_reg(&mut self, r: u8) -> Val {
        if r & BYTE_HIGH == 0 {
            return self.reg_as(r, Ty::I8);
        }
        let v = self.reg(r & 3);
        let s = self.c(Ty::I64, 8);
        let x = self.b.bin(BinOp::Lshr, v, s);
        self.b.zext(Ty::I8, x)
    }

    /// Write byte register `r` (see [`Lifter::byte_reg`]).
    fn write_byte_reg(&mut self, r: u8, v8: Val) {
        if r & BYTE_HIGH == 0 {
            return self.write_low(r, v8);
        }
        let old = self.reg(r & 3);
        let m = self.c(Ty::I64, !0xff00);
        let keep = self.b.bin(BinOp::And, old, m);
        let v = self.b.zext(Ty::I64, v8);
        let s = self.c(Ty::I64, 8);
        let v = self.b.bin(BinOp::Shl, v, s);
        let x = self.b.bin(BinOp::Or, keep, v);
        self.set_reg(r & 3, x);
    }

    fn c(&mut self, ty: Ty, v: u64) -> Val {
        self.b.iconst(ty, v)
    }

    // ---- exits ----------------------------------------------------------------------------

    /// The exit stub of the current instruction: the state at its start.
    fn exit(&mut self) -> ExitId {
        if let Some(e) = self.exit {
            return e;
        }
        let e = self.b.begin_exit(self.k, 1 + self.k);
        // Registers are already in the context as they were at this instruction's start
        // (`store_through`); only flags are still pending.
        self.write_flags();
        let rip = self.at(self.eip);
        self.b.put(RIP, rip);
        self.b.end_exit();
        self.exit = Some(e);
        e
    }

    /// Write-back at every exit (stubs and the block end): registers, and pending flags as an
    /// operation for the dispatcher to fold into RFLAGS when something needs them
    /// (`Cpu::jit_fold_flags`) rather than computed here: blocks stay small and flags no one
    /// reads are never computed.
    fn write_back(&mut self) {
        self.store_through();
        self.write_flags();
    }

    /// Registers written by the instruction just lifted go to the context at its end, so that
    /// an exit stub needs to write only RIP and flags: stubs stay a few operations long instead
    /// of growing with the number of registers the block has written (the stores are cheap;
    /// exits are rare but there is one per memory access).
    fn store_through(&mut self) {
        for r in 0..16 {
            if self.dirty & (1 << r) != 0 {
                let v = self.regs[r].expect("dirty registers are cached");
                self.b.put(reg_off(r), v);
            }
        }
        self.dirty = 0;
    }

    /// Pending flags, as an operation for the dispatcher to fold.
    fn write_flags(&mut self) {
        let Flags::Lazy(z) = self.flags else { return };
        use crate::jit::*;
        let w = u64::from(z.ty.bytes()) << 8;
        let (kind, a, b) = match z.op {
            CcOp::Add if z.kept[F_CF].is_some() => (LAZY_INC, z.a, z.b),
            CcOp::Sub if z.kept[F_CF].is_some() => (LAZY_DEC, z.a, z.b),
            CcOp::Add => (LAZY_ADD, z.a, z.b),
            CcOp::Adc => (LAZY_ADC, z.a, z.b),
            CcOp::Sub => (LAZY_SUB, z.a, z.b),
            CcOp::Sbb => (LAZY_SBB, z.a, z.b),
            CcOp::Logic => (LAZY_AND, z.res, z.res),
            CcOp::Shl(_) => (LAZY_SHL, z.a, z.b),
            CcOp::Shr(_) => (LAZY_SHR, z.a, z.b),
            CcOp::Sar(_) => (LAZY_SAR, z.a, z.b),
            CcOp::Rol => (LAZY_ROL, z.a, z.b),
            CcOp::Ror => (LAZY_ROR, z.a, z.b),
            CcOp::Imul => (LAZY_IMUL, z.res, z.res),
            CcOp::Known => (LAZY_SET, z.res, z.res),
        };
        let op = self.c(Ty::I64, kind | w);
        self.b.put(LAZY_OP, op);
        let a = self.b.zext(Ty::I64, a);
        self.b.put(LAZY_A, a);
        let b = self.b.zext(Ty::I64, b);
        self.b.put(LAZY_B, b);
        if let Some(x) = z.extra {
            self.b.put(LAZY_EXTRA, x);
        }
        let mut kept: Option<Val> = None;
        for (f, bit) in FLAGS.iter().enumerate() {
            if let Some(v) = z.kept[f] {
                let s = self.c(Ty::I64, u64::from(bit.trailing_zeros()));
                let x = self.b.bin(BinOp::Shl, v, s);
                kept = Some(match kept {
                    Some(k) => self.b.bin(BinOp::Or, k, x),
                    None => x,
                });
            }
        }
        if let Some(k) = kept {
            self.b.put(LAZY_KEPT, k);
        }
    }

    // ---- flags ----------------------------------------------------------------------------

    fn msb(&mut self, v: Val) -> Val {
        let ty = self.b.ty(v);
        let s = self.c(ty, u64::from(ty.bits() - 1));
        let x = self.b.bin(BinOp::Lshr, v, s);
        let one = self.c(ty, 1);
        let x = self.b.bin(BinOp::And, x, one);
        self.b.zext(Ty::I64, x)
    }

    /// Bit `n` of `v` as an I64 0/1.
    fn bit(&mut self, v: Val, n: u32) -> Val {
        let s = self.c(self.b.ty(v), u64::from(n));
        self.bit_at(v, s, BinOp::Lshr)
    }

    /// The bit position of a shift's carry-out: `w - count` (SHL) or `count - 1` (SHR, SAR,
    /// `w` = 0), with the count `c` known at compile time or (0) the run-time count in `z.b`.
    fn count_minus(&mut self, z: Lazy, w: u32, c: u32) -> Val {
        if c != 0 {
            let n = if w != 0 { w - c } else { c - 1 };
            return self.c(z.ty, u64::from(n));
        }
        if w != 0 {
            let wv = self.c(z.ty, u64::from(w));
            self.b.bin(BinOp::Sub, wv, z.b)
        } else {
            let one = self.c(z.ty, 1);
            self.b.bin(BinOp::Sub, z.b, one)
        }
    }

    /// Bit `n` (a run-time value of `v`'s type) of `v`, as an I64 0/1.
    fn bit_at(&mut self, v: Val, n: Val, shift: BinOp) -> Val {
        let ty = self.b.ty(v);
        let x = self.b.bin(shift, v, n);
        let one = self.c(ty, 1);
        let x = self.b.bin(BinOp::And, x, one);
        self.b.zext(Ty::I64, x)
    }

    fn bool64(&mut self, c: Val) -> Val {
        self.b.zext(Ty::I64, c)
    }

    /// Value (I64 0/1) of flag `f` in the current state. Emits at the current position (main
    /// path or exit stub) and caches nothing.
    fn flag(&mut self, f: usize) -> Val {
        let z = match self.flags {
            Flags::Entry => {
                // Only ever reached on the main path (exit stubs do not compute flags).
                self.reads_flags = true;
                let fl0 = match self.fl0 {
                    Some(v) => v,
                    None => {
                        let v = self.b.get(Ty::I64, RFLAGS);
                        self.fl0 = Some(v);
                        v
                    }
                };
                return self.bit(fl0, FLAGS[f].trailing_zeros());
            }
            Flags::Lazy(z) => z,
        };
        if let Some(v) = z.kept[f] {
            return v;
        }
        let w = z.ty.bits();
        let zero = self.c(Ty::I64, 0);
        match f {
            F_ZF => {
                let c0 = self.c(z.ty, 0);
                let c = self.b.cmp(CmpOp::Eq, z.res, c0);
                self.bool64(c)
            }
            F_SF => self.msb(z.res),
            F_PF => {
                let lo = self.b.zext(Ty::I8, z.res);
                let n = self.b.un(UnOp::Popcnt, lo);
                let one = self.c(Ty::I8, 1);
                let odd = self.b.bin(BinOp::And, n, one);
                let even = self.b.bin(BinOp::Xor, odd, one);
                self.bool64(even)
            }
            F_AF => match z.op {
                CcOp::Add | CcOp::Adc | CcOp::Sub | CcOp::Sbb => {
                    let x = self.b.bin(BinOp::Xor, z.a, z.b);
                    let x = self.b.bin(BinOp::Xor, x, z.res);
                    self.bit(x, 4)
                }
                _ => zero,
            },
            F_CF => match z.op {
                CcOp::Add => {
                    let c = self.b.cmp(CmpOp::Ult, z.res, z.a);
                    self.bool64(c)
                }
                CcOp::Sub => {
                    let c = self.b.cmp(CmpOp::Ult, z.a, z.b);
                    self.bool64(c)
                }
                CcOp::Adc | CcOp::Sbb => {
                    // carry = r < a || (cin && r == a)  /  borrow = a < b || (cin && a == b)
                    let (p, q, r2) = if z.op == CcOp::Adc { (z.res, z.a, z.a) } else { (z.a, z.b, z.b) };
                    let lt = self.b.cmp(CmpOp::Ult, p, q);
                    let eq = self.b.cmp(CmpOp::Eq, p, r2);
                    let cin = z.extra.expect("carry-in recorded");
                    let cin8 = self.b.zext(Ty::I8, cin);
                    let t = self.b.bin(BinOp::And, eq, cin8);
                    let c = self.b.bin(BinOp::Or, lt, t);
                    self.bool64(c)
                }
                CcOp::Logic => zero,
                CcOp::Shl(c) => {
                    // The last bit shifted out: bit (w - count) of the operand.
                    let n = self.count_minus(z, w, c);
                    self.bit_at(z.a, n, BinOp::Lshr)
                }
                CcOp::Shr(c) => {
                    let n = self.count_minus(z, 0, c);
                    self.bit_at(z.a, n, BinOp::Lshr)
                }
                CcOp::Sar(c) => {
                    let n = self.count_minus(z, 0, c);
                    self.bit_at(z.a, n, BinOp::Ashr)
                }
                CcOp::Rol => self.bit(z.res, 0),
                CcOp::Ror => self.msb(z.res),
                CcOp::Imul => z.extra.expect("overflow recorded"),
                CcOp::Known => unreachable!("every flag of a Known state is kept"),
            },
            _ => match z.op {
                // OF
                CcOp::Add | CcOp::Adc => {
                    let x = self.b.bin(BinOp::Xor, z.a, z.res);
                    let y = self.b.bin(BinOp::Xor, z.b, z.res);
                    let t = self.b.bin(BinOp::And, x, y);
                    self.msb(t)
                }
                CcOp::Sub | CcOp::Sbb => {
                    let x = self.b.bin(BinOp::Xor, z.a, z.b);
                    let y = self.b.bin(BinOp::Xor, z.a, z.res);
                    let t = self.b.bin(BinOp::And, x, y);
                    self.msb(t)
                }
                CcOp::Logic | CcOp::Sar(_) => zero,
                CcOp::Shl(c) => {
                    let m = self.msb(z.res);
                    let n = self.count_minus(z, w, c);
                    let cf = self.bit_at(z.a, n, BinOp::Lshr);
                    self.b.bin(BinOp::Xor, m, cf)
                }
                CcOp::Shr(_) => self.msb(z.a),
                CcOp::Rol => {
                    let m = self.msb(z.res);
                    let cf = self.bit(z.res, 0);
                    self.b.bin(BinOp::Xor, m, cf)
                }
                CcOp::Ror => {
                    let m = self.msb(z.res);
                    let n = self.bit(z.res, w - 2);
                    self.b.bin(BinOp::Xor, m, n)
                }
                CcOp::Imul => z.extra.expect("overflow recorded"),
                CcOp::Known => unreachable!("every flag of a Known state is kept"),
            },
        }
    }

    /// All six status flags as an RFLAGS-positioned I64 (for PUSHF).
    fn status_flags(&mut self) -> Val {
        let mut acc: Option<Val> = None;
        for (f, bit) in FLAGS.iter().enumerate() {
            let v = self.flag(f);
            let s = self.c(Ty::I64, u64::from(bit.trailing_zeros()));
            let x = self.b.bin(BinOp::Shl, v, s);
            acc = Some(match acc {
                Some(a) => self.b.bin(BinOp::Or, a, x),
                None => x,
            });
        }
        acc.expect("six flags")
    }

    /// Leave unless CPL <= IOPL (CLI/STI would #GP, or under PVI touch VIF: the interpreter's);
    /// returns RFLAGS as in the context.
    fn guard_iopl(&mut self) -> Val {
        let fl = self.b.get(Ty::I64, RFLAGS);
        let s = self.c(Ty::I64, 12);
        let iopl = self.b.bin(BinOp::Lshr, fl, s);
        let three = self.c(Ty::I64, 3);
        let iopl = self.b.bin(BinOp::And, iopl, three);
        let cpl = self.b.get(Ty::I8, CPL);
        let cpl = self.b.zext(Ty::I64, cpl);
        let ok = self.b.cmp(CmpOp::Ule, cpl, iopl);
        let e = self.exit();
        self.b.guard(ok, e);
        fl
    }

    /// CF becomes `cf` (an I64 0/1); the other flags keep their values (BT).
    fn set_cf_only(&mut self, cf: Val) {
        let mut kept = [None; 6];
        for (f, k) in kept.iter_mut().enumerate() {
            if f != F_CF {
                *k = Some(self.flag(f));
            }
        }
        kept[F_CF] = Some(cf);
        self.set_flags(Lazy { op: CcOp::Known, ty: Ty::I64, res: cf, a: cf, b: cf, extra: None, kept });
    }

    fn set_flags(&mut self, z: Lazy) {
        self.flags = Flags::Lazy(z);
    }

    fn not1(&mut self, v: Val) -> Val {
        let one = self.c(Ty::I64, 1);
        self.b.bin(BinOp::Xor, v, one)
    }

    /// Condition `code` (1..=16) as a value that is nonzero when true.
    fn cond(&mut self, code: u8) -> Val {
        if let Flags::Lazy(z) = self.flags {
            let direct = match z.op {
                CcOp::Sub if z.kept[F_CF].is_none() => {
                    let (a, b) = (z.a, z.b);
                    let c0 = self.c(z.ty, 0);
                    match code {
                        cc::E => Some(self.b.cmp(CmpOp::Eq, a, b)),
                        cc::NE => Some(self.b.cmp(CmpOp::Ne, a, b)),
                        cc::B => Some(self.b.cmp(CmpOp::Ult, a, b)),
                        cc::AE => Some(self.b.cmp(CmpOp::Uge, a, b)),
                        cc::BE => Some(self.b.cmp(CmpOp::Ule, a, b)),
                        cc::A => Some(self.b.cmp(CmpOp::Ugt, a, b)),
                        cc::L => Some(self.b.cmp(CmpOp::Slt, a, b)),
                        cc::GE => Some(self.b.cmp(CmpOp::Sge, a, b)),
                        cc::LE => Some(self.b.cmp(CmpOp::Sle, a, b)),
                        cc::G => Some(self.b.cmp(CmpOp::Sgt, a, b)),
                        cc::S => Some(self.b.cmp(CmpOp::Slt, z.res, c0)),
                        cc::NS => Some(self.b.cmp(CmpOp::Sge, z.res, c0)),
                        _ => None,
                    }
                }
                CcOp::Logic => {
                    let r = z.res;
                    let c0 = self.c(z.ty, 0);
                    match code {
                        cc::E | cc::BE => Some(self.b.cmp(CmpOp::Eq, r, c0)),
                        cc::NE | cc::A => Some(self.b.cmp(CmpOp::Ne, r, c0)),
                        cc::S | cc::L => Some(self.b.cmp(CmpOp::Slt, r, c0)),
                        cc::NS | cc::GE => Some(self.b.cmp(CmpOp::Sge, r, c0)),
                        cc::LE => Some(self.b.cmp(CmpOp::Sle, r, c0)),
                        cc::G => Some(self.b.cmp(CmpOp::Sgt, r, c0)),
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(v) = direct {
                return v;
            }
        }
        match code {
            cc::O => self.flag(F_OF),
            cc::NO => {
                let f = self.flag(F_OF);
                self.not1(f)
            }
            cc::B => self.flag(F_CF),
            cc::AE => {
                let f = self.flag(F_CF);
                self.not1(f)
            }
            cc::E => self.flag(F_ZF),
            cc::NE => {
                let f = self.flag(F_ZF);
                self.not1(f)
            }
            cc::BE | cc::A => {
                let c = self.flag(F_CF);
                let z = self.flag(F_ZF);
                let v = self.b.bin(BinOp::Or, c, z);
                if code == cc::A {
                    self.not1(v)
                } else {
                    v
                }
            }
            cc::S => self.flag(F_SF),
            cc::NS => {
                let f = self.flag(F_SF);
                self.not1(f)
            }
            cc::P => self.flag(F_PF),
            cc::NP => {
                let f = self.flag(F_PF);
                self.not1(f)
            }
            cc::L | cc::GE => {
                let s = self.flag(F_SF);
                let o = self.flag(F_OF);
                let v = self.b.bin(BinOp::Xor, s, o);
                if code == cc::GE {
                    self.not1(v)
                } else {
                    v
                }
            }
            _ => {
                // LE / G
                let s = self.flag(F_SF);
                let o = self.flag(F_OF);
                let x = self.b.bin(BinOp::Xor, s, o);
                let z = self.flag(F_ZF);
                let v = self.b.bin(BinOp::Or, x, z);
                if code == cc::G {
                    self.not1(v)
                } else {
                    v
                }
            }
        }
    }

    // ---- memory ---------------------------------------------------------------------------

    fn acc_read(&self) -> u8 {
        if self.mode.has(JitMode::USER) {
            PERM_UR
        } else {
            0
        }
    }

    fn acc_write(&self) -> u8 {
        if self.mode.has(JitMode::USER) {
            PERM_UW
        } else {
            PERM_SW
        }
    }

    /// Effective address of the memory operand (I64 in 64-bit mode, I32 otherwise).
    fn ea(&mut self, u: &Uop) -> Val {
        if self.long {
            if u.base == RIPREL {
                let a = self.eip.wrapping_add(u.disp as i32 as i64 as u64);
                return self.at(a);
            }
            let mut a = self.c(Ty::I64, u.disp as i32 as i64 as u64);
            if u.base != NONE {
                let r = self.reg(u.base);
                a = self.b.bin(BinOp::Add, a, r);
            }
            if u.index != NONE {
                let r = self.reg(u.index);
                let s = self.c(Ty::I64, u64::from(u.scale));
                let x = self.b.bin(BinOp::Mul, r, s);
                a = self.b.bin(BinOp::Add, a, x);
            }
            return a;
        }
        let mut a = self.c(Ty::I32, u64::from(u.disp));
        if u.base != NONE {
            let r = self.reg_as(u.base, Ty::I32);
            a = self.b.bin(BinOp::Add, a, r);
        }
        if u.index != NONE {
            let r = self.reg_as(u.index, Ty::I32);
            let s = self.c(Ty::I32, u64::from(u.scale));
            let x = self.b.bin(BinOp::Mul, r, s);
            a = self.b.bin(BinOp::Add, a, x);
        }
        a
    }

    /// Linear address of `size` bytes at offset `ea` (I64 or I32 as [`Lifter::ea`] gives) in
    /// segment `seg`, with the checks a usable flat segment still needs.
    fn linear(&mut self, seg: usize, ea: Val, size: u32) -> Val {
        if self.long {
            if seg >= 4 {
                let base = self.b.get(Ty::I64, seg_base_off(seg));
                return self.b.bin(BinOp::Add, base, ea);
            }
            // Non-canonical addresses never hit the TLB; the slow path refuses them.
            return ea;
        }
        if self.mode.has(JitMode::base0(seg)) {
            // Offset == linear address: an access past 4 GiB (a limit violation) crosses a
            // page and the slow path refuses it.
            return self.b.zext(Ty::I64, ea);
        }
        if size > 1 {
            let e = self.exit();
            let lim = self.c(Ty::I32, u64::from(u32::MAX - (size - 1)));
            let ok = self.b.cmp(CmpOp::Ule, ea, lim);
            self.b.guard(ok, e);
        }
        let base = self.b.get(Ty::I64, seg_base_off(seg));
        let base = self.b.zext(Ty::I32, base);
        let lin = self.b.bin(BinOp::Add, base, ea);
        self.b.zext(Ty::I64, lin)
    }

    fn load_at(&mut self, lin: Val, ty: Ty) -> Val {
        let e = self.exit();
        let acc = self.acc_read();
        self.b.load(ty, lin, acc, e)
    }

    fn store_at(&mut self, lin: Val, v: Val) {
        let e = self.exit();
        let acc = self.acc_write();
        self.b.store(lin, v, acc, e);
    }

    /// Linear address of the memory operand of `u` for a `size`-byte access.
    fn mem_lin(&mut self, u: &Uop, size: u32) -> Val {
        let ea = self.ea(u);
        self.linear(u.seg as usize, ea, size)
    }

    /// Stack slot size, and the stack pointer after moving it by `delta` slots bytes.
    fn sw(&self) -> u32 {
        if self.long {
            8
        } else {
            4
        }
    }

    /// RSP plus `delta` with the stack-address-size wrap (32-bit stacks keep RSP's upper half).
    fn sp_plus(&mut self, delta: i64) -> (Val, Val) {
        let sp = self.reg(4);
        let d = self.c(Ty::I64, delta as u64);
        let n = self.b.bin(BinOp::Add, sp, d);
        if self.long {
            return (n, n);
        }
        let lo_m = self.c(Ty::I64, 0xffff_ffff);
        let off = self.b.bin(BinOp::And, n, lo_m);
        let hi_m = self.c(Ty::I64, !0xffff_ffff);
        let hi = self.b.bin(BinOp::And, sp, hi_m);
        let full = self.b.bin(BinOp::Or, hi, off);
        (off, full)
    }

    /// Linear address of the stack slot at offset `off` (I64, already wrapped) in SS.
    fn stack_lin(&mut self, off: Val) -> Val {
        if self.long {
            return off;
        }
        let o32 = self.b.zext(Ty::I32, off);
        self.linear(2, o32, self.sw())
    }

    /// Check a 64-bit branch target (non-canonical: the interpreter raises #GP).
    fn branch_target(&mut self, t: Val) -> Val {
        if self.long {
            let s = self.c(Ty::I64, 16);
            let x = self.b.bin(BinOp::Shl, t, s);
            let x = self.b.bin(BinOp::Ashr, x, s);
            let ok = self.b.cmp(CmpOp::Eq, x, t);
            let e = self.exit();
            self.b.guard(ok, e);
        }
        t
    }

    // ---- instructions ---------------------------------------------------------------------

    /// ALU operation `op` (0..=7 as `flags::Alu`, 8 = TEST) on `a`, `v`; returns the result and
    /// records the flags.
    fn alu(&mut self, op: u8, a: Val, v: Val) -> Val {
        let ty = self.b.ty(a);
        let none = [None; 6];
        match op {
            0 | 2 => {
                let mut r = self.b.bin(BinOp::Add, a, v);
                let mut extra = None;
                if op == 2 {
                    let cin = self.flag(F_CF);
                    let c = self.b.zext(ty, cin);
                    r = self.b.bin(BinOp::Add, r, c);
                    extra = Some(cin);
                }
                self.set_flags(Lazy {
                    op: if op == 2 { CcOp::Adc } else { CcOp::Add },
                    ty,
                    res: r,
                    a,
                    b: v,
                    extra,
                    kept: none,
                });
                r
            }
            3 | 5 | 7 => {
                let mut r = self.b.bin(BinOp::Sub, a, v);
                let mut extra = None;
                if op == 3 {
                    let cin = self.flag(F_CF);
                    let c = self.b.zext(ty, cin);
                    r = self.b.bin(BinOp::Sub, r, c);
                    extra = Some(cin);
                }
                self.set_flags(Lazy {
                    op: if op == 3 { CcOp::Sbb } else { CcOp::Sub },
                    ty,
                    res: r,
                    a,
                    b: v,
                    extra,
                    kept: none,
                });
                r
            }
            _ => {
                let bop = match op {
                    1 => BinOp::Or,
                    6 => BinOp::Xor,
                    _ => BinOp::And, // AND, TEST
                };
                let r = self.b.bin(bop, a, v);
                self.set_flags(Lazy { op: CcOp::Logic, ty, res: r, a, b: v, extra: None, kept: none });
                r
            }
        }
    }

    /// ALU `op` on the memory operand at `lin` (loaded as `a`) and `v`; the result is stored
    /// unless the operation only sets flags (CMP, TEST). The flags are recorded after the store
    /// (a store that cannot complete leaves with the old ones).
    fn alu_to_mem(&mut self, op: u8, lin: Val, a: Val, v: Val) {
        let saved = self.flags;
        let r = self.alu(op, a, v);
        if op < 7 {
            let new = self.flags;
            self.flags = saved;
            self.store_at(lin, r);
            self.flags = new;
        }
    }

    /// INC/DEC: ADD/SUB 1 keeping CF.
    fn incdec(&mut self, a: Val, dec: bool) -> Val {
        let ty = self.b.ty(a);
        let cf = self.flag(F_CF);
        let one = self.c(ty, 1);
        let r = self.b.bin(if dec { BinOp::Sub } else { BinOp::Add }, a, one);
        let mut kept = [None; 6];
        kept[F_CF] = Some(cf);
        self.set_flags(Lazy { op: if dec { CcOp::Sub } else { CcOp::Add }, ty, res: r, a, b: one, extra: None, kept });
        r
    }

    fn opnd_ty(u: &Uop) -> Ty {
        if u.q {
            Ty::I64
        } else {
            Ty::I32
        }
    }

    /// The immediate as a `ty` operand (64-bit operands sign-extend it).
    fn imm(&mut self, ty: Ty, imm: u32) -> Val {
        let v = if ty == Ty::I64 { imm as i32 as i64 as u64 } else { u64::from(imm) };
        self.c(ty, v)
    }

    /// ROL/ROR/SHL/SHR/SAR (`u.op` 0, 1, 4, 5, 6) of `a` by the nonzero count `cv`; `c` is
    /// that count when known at compile time, else 0. Returns the result (flags recorded).
    fn shift_rotate(&mut self, u: &Uop, ty: Ty, a: Val, cv: Val, c: u32) -> Val {
        let (op, cc) = match u.op {
            0 => (BinOp::Rotl, CcOp::Rol),
            1 => (BinOp::Rotr, CcOp::Ror),
            4 => (BinOp::Shl, CcOp::Shl(c)),
            5 => (BinOp::Lshr, CcOp::Shr(c)),
            _ => (BinOp::Ashr, CcOp::Sar(c)),
        };
        let r = self.b.bin(op, a, cv);
        let mut kept = [None; 6];
        if matches!(cc, CcOp::Rol | CcOp::Ror) {
            // Rotates keep PF, AF, ZF and SF.
            for f in [F_PF, F_AF, F_ZF, F_SF] {
                kept[f] = Some(self.flag(f));
            }
        }
        self.set_flags(Lazy { op: cc, ty, res: r, a, b: cv, extra: None, kept });
        r
    }

    /// Lift one instruction at `eip` of length `len`.
    fn insn(&mut self, u: &Uop, eip: u64, len: u64) -> Flow {
        self.eip = eip;
        self.exit = None;
        let next = if self.long { eip.wrapping_add(len) } else { (eip + len) & 0xffff_ffff };
        let ty = Self::opnd_ty(u);
        let wb = ty.bytes();
        // 7 = CMP and 8 = TEST (`fast::ALU_TEST`) only set flags.
        let alu_writes = |op: u8| op < 7;
        match u.kind {
            Kind::Generic | Kind::Nop => {}
            Kind::ShiftRCl => {
                let bits = ty.bits();
                let a = self.reg_as(u.d, ty);
                let cx = self.reg_as(1, ty);
                let m = self.c(ty, u64::from(bits - 1));
                let cv = self.b.bin(BinOp::And, cx, m);
                // A zero count changes no flag (and is rare): the interpreter does that one.
                let z = self.c(ty, 0);
                let nz = self.b.cmp(CmpOp::Ne, cv, z);
                let e = self.exit();
                self.b.guard(nz, e);
                // Count 0 in the flags operation: the run-time count `cv`.
                let r = self.shift_rotate(u, ty, a, cv, 0);
                self.write_w(u.d, r);
            }
            Kind::MovRR => {
                let v = self.reg_as(u.s, ty);
                self.write_w(u.d, v);
            }
            Kind::MovRI => {
                let v = self.imm(ty, u.imm);
                self.write_w(u.d, v);
            }
            Kind::MovRM => {
                let lin = self.mem_lin(u, wb);
                let v = self.load_at(lin, ty);
                self.write_w(u.d, v);
            }
            Kind::MovMR => {
                let lin = self.mem_lin(u, wb);
                let v = self.reg_as(u.s, ty);
                self.store_at(lin, v);
            }
            Kind::MovMI => {
                let lin = self.mem_lin(u, wb);
                let v = self.imm(ty, u.imm);
                self.store_at(lin, v);
            }
            Kind::AluRR | Kind::AluRI => {
                let a = self.reg_as(u.d, ty);
                let v = if u.kind == Kind::AluRR { self.reg_as(u.s, ty) } else { self.imm(ty, u.imm) };
                let r = self.alu(u.op, a, v);
                if alu_writes(u.op) {
                    self.write_w(u.d, r);
                }
            }
            Kind::AluRM => {
                let lin = self.mem_lin(u, wb);
                let v = self.load_at(lin, ty);
                let a = self.reg_as(u.d, ty);
                let r = self.alu(u.op, a, v);
                if alu_writes(u.op) {
                    self.write_w(u.d, r);
                }
            }
            Kind::AluMR | Kind::AluMI => {
                let lin = self.mem_lin(u, wb);
                let a = self.load_at(lin, ty);
                let v = if u.kind == Kind::AluMR { self.reg_as(u.s, ty) } else { self.imm(ty, u.imm) };
                self.alu_to_mem(u.op, lin, a, v);
            }
            Kind::ShiftRI => {
                let bits = ty.bits();
                let c = u.imm & (bits - 1);
                let a = self.reg_as(u.d, ty);
                if c == 0 {
                    // No flag change; the 32-bit write still zero-extends.
                    self.write_w(u.d, a);
                } else {
                    let cv = self.c(ty, u64::from(c));
                    let r = self.shift_rotate(u, ty, a, cv, c);
                    self.write_w(u.d, r);
                }
            }
            Kind::IncM | Kind::DecM => {
                let lin = self.mem_lin(u, wb);
                let a = self.load_at(lin, ty);
                let saved = self.flags;
                let r = self.incdec(a, u.kind == Kind::DecM);
                let new = self.flags;
                self.flags = saved;
                self.store_at(lin, r);
                self.flags = new;
            }
            Kind::NegR => {
                let a = self.reg_as(u.d, ty);
                let z = self.c(ty, 0);
                let r = self.alu(5, z, a);
                self.write_w(u.d, r);
            }
            Kind::NotR => {
                let a = self.reg_as(u.d, ty);
                let r = self.b.un(UnOp::Not, a);
                self.write_w(u.d, r);
            }
            Kind::IncR | Kind::DecR => {
                let a = self.reg_as(u.d, ty);
                let r = self.incdec(a, u.kind == Kind::DecR);
                self.write_w(u.d, r);
            }
            Kind::Lea => {
                let ea = self.ea(u);
                let v = self.b.zext(ty, ea);
                self.write_w(u.d, v);
            }
            Kind::Jcc => {
                let t = self.rel_target(eip, u.imm);
                let c = self.cond(u.op);
                let tv = self.at(t);
                self.guard_canonical(tv, Some(c));
                let nv = self.at(next);
                let rip = self.b.select(c, tv, nv);
                return Flow::End(rip);
            }
            Kind::Jmp => {
                let t = self.rel_target(eip, u.imm);
                let tv = self.at(t);
                self.guard_canonical(tv, None);
                return Flow::End(tv);
            }
            Kind::CallRel => {
                let t = self.rel_target(eip, u.imm);
                let tv = self.at(t);
                self.guard_canonical(tv, None);
                self.push(next);
                return Flow::End(tv);
            }
            Kind::Ret => {
                let sw = self.sw();
                let (off, _) = self.sp_plus(0);
                let lin = self.stack_lin(off);
                let t = self.load_at(lin, Ty::of_bytes(sw).expect("4 or 8"));
                let t = self.b.zext(Ty::I64, t);
                let t = self.branch_target(t);
                let (_, full) = self.sp_plus(i64::from(sw));
                self.set_reg(4, full);
                return Flow::End(t);
            }
            Kind::PushR => {
                let sty = Ty::of_bytes(self.sw()).expect("4 or 8");
                let v = self.reg_as(u.s, sty);
                self.push_val(v);
            }
            Kind::PushI => {
                let sty = Ty::of_bytes(self.sw()).expect("4 or 8");
                let v = self.imm(sty, u.imm);
                self.push_val(v);
            }
            Kind::PopR => {
                let sw = self.sw();
                let (off, _) = self.sp_plus(0);
                let lin = self.stack_lin(off);
                let v = self.load_at(lin, Ty::of_bytes(sw).expect("4 or 8"));
                let v = self.b.zext(Ty::I64, v);
                let (_, full) = self.sp_plus(i64::from(sw));
                self.set_reg(4, full);
                self.set_reg(u.d, v);
            }
            Kind::MovxRM => {
                let size = u32::from(u.op);
                let sty = Ty::of_bytes(size).expect("1, 2 or 4");
                let lin = self.mem_lin(u, size);
                let v = self.load_at(lin, sty);
                let v = if u.s != 0 { self.b.sext(ty, v) } else { self.b.zext(ty, v) };
                self.write_w(u.d, v);
            }
            Kind::MovxRR => {
                let sty = Ty::of_bytes(u32::from(u.op)).expect("1, 2 or 4");
                let v = self.reg_as(u.s, sty);
                let v = if u.imm != 0 { self.b.sext(ty, v) } else { self.b.zext(ty, v) };
                self.write_w(u.d, v);
            }
            Kind::MovR8M => {
                let lin = self.mem_lin(u, 1);
                let v = self.load_at(lin, Ty::I8);
                self.write_low(u.d, v);
            }
            Kind::MovM8R => {
                let lin = self.mem_lin(u, 1);
                let v = self.reg_as(u.s, Ty::I8);
                self.store_at(lin, v);
            }
            Kind::MovM8I => {
                let lin = self.mem_lin(u, 1);
                let v = self.c(Ty::I8, u64::from(u.imm));
                self.store_at(lin, v);
            }
            Kind::AluM8I => {
                let lin = self.mem_lin(u, 1);
                let a = self.load_at(lin, Ty::I8);
                let v = self.c(Ty::I8, u64::from(u.imm));
                self.alu_to_mem(u.op, lin, a, v);
            }
            Kind::AluR8R => {
                let a = self.reg_as(u.d, Ty::I8);
                let v = self.reg_as(u.s, Ty::I8);
                let r = self.alu(u.op, a, v);
                if alu_writes(u.op) {
                    self.write_low(u.d, r);
                }
            }
            Kind::MovR8R => {
                let v = self.reg_as(u.s, Ty::I8);
                self.write_low(u.d, v);
            }
            Kind::AluR8I => {
                let a = self.reg_as(u.d, Ty::I8);
                let v = self.c(Ty::I8, u64::from(u.imm));
                let r = self.alu(u.op, a, v);
                if alu_writes(u.op) {
                    self.write_low(u.d, r);
                }
            }
            Kind::CallR | Kind::JmpR | Kind::CallM | Kind::JmpM => {
                let sty = Ty::of_bytes(self.sw()).expect("4 or 8");
                let t = if matches!(u.kind, Kind::CallR | Kind::JmpR) {
                    self.reg_as(u.s, sty)
                } else {
                    let lin = self.mem_lin(u, self.sw());
                    self.load_at(lin, sty)
                };
                let t = self.b.zext(Ty::I64, t);
                let t = self.branch_target(t);
                if matches!(u.kind, Kind::CallR | Kind::CallM) {
                    self.push(next);
                }
                return Flow::End(t);
            }
            Kind::SetccR8 => {
                let c = self.cond(u.op);
                let one = self.c(Ty::I8, 1);
                let zero = self.c(Ty::I8, 0);
                let v = self.b.select(c, one, zero);
                self.write_low(u.d, v);
            }
            Kind::CmovRR | Kind::CmovRM => {
                let src = if u.kind == Kind::CmovRR {
                    self.reg_as(u.s, ty)
                } else {
                    let lin = self.mem_lin(u, wb);
                    self.load_at(lin, ty)
                };
                let c = self.cond(u.op);
                if self.long || ty == Ty::I64 {
                    // 64-bit mode: a 32-bit CMOVcc zero-extends even when it does not move.
                    let old = self.reg_as(u.d, ty);
                    let v = self.b.select(c, src, old);
                    self.write_w(u.d, v);
                } else {
                    let old = self.reg(u.d);
                    let src64 = self.b.zext(Ty::I64, src);
                    let v = self.b.select(c, src64, old);
                    self.set_reg(u.d, v);
                }
            }
            Kind::Lift(LiftOnly::MovM16R) => {
                let lin = self.mem_lin(u, 2);
                let v = self.reg_as(u.s, Ty::I16);
                self.store_at(lin, v);
            }
            Kind::Lift(LiftOnly::MovR16M) => {
                let lin = self.mem_lin(u, 2);
                let v = self.load_at(lin, Ty::I16);
                self.write_low(u.d, v);
            }
            Kind::Lift(LiftOnly::ShiftR16I) => {
                let a = self.reg_as(u.d, Ty::I16);
                let cv = self.c(Ty::I16, u64::from(u.imm));
                let r = self.shift_rotate(u, Ty::I16, a, cv, u.imm);
                self.write_low(u.d, r);
            }
            Kind::Lift(LiftOnly::AluR8M) => {
                let lin = self.mem_lin(u, 1);
                let v = self.load_at(lin, Ty::I8);
                let a = self.reg_as(u.d, Ty::I8);
                let r = self.alu(u.op, a, v);
                if alu_writes(u.op) {
                    self.write_low(u.d, r);
                }
            }
            Kind::Lift(LiftOnly::AluM8R) => {
                let lin = self.mem_lin(u, 1);
                let a = self.load_at(lin, Ty::I8);
                let v = self.reg_as(u.s, Ty::I8);
                self.alu_to_mem(u.op, lin, a, v);
            }
            Kind::Lift(LiftOnly::PushM) => {
                let sw = self.sw();
                let lin = self.mem_lin(u, sw);
                let v = self.load_at(lin, Ty::of_bytes(sw).expect("4 or 8"));
                self.push_val(v);
            }
            Kind::Lift(LiftOnly::BtRI) | Kind::Lift(LiftOnly::BtMI) => {
                let v = if u.kind == Kind::Lift(LiftOnly::BtRI) {
                    self.reg_as(u.d, ty)
                } else {
                    let lin = self.mem_lin(u, wb);
                    self.load_at(lin, ty)
                };
                let cf = self.bit(v, u.imm);
                self.set_cf_only(cf);
            }
            Kind::Lift(LiftOnly::Leave) => {
                // rSP = rBP, then pop rBP (a 32-bit stack wraps and keeps RSP's upper half).
                let sw = self.sw();
                let bp = self.reg(5);
                let off = if self.long {
                    bp
                } else {
                    let m = self.c(Ty::I64, 0xffff_ffff);
                    self.b.bin(BinOp::And, bp, m)
                };
                let lin = self.stack_lin(off);
                let v = self.load_at(lin, Ty::of_bytes(sw).expect("4 or 8"));
                let d = self.c(Ty::I64, u64::from(sw));
                let top = self.b.bin(BinOp::Add, off, d);
                let sp = if self.long {
                    top
                } else {
                    let m = self.c(Ty::I64, 0xffff_ffff);
                    let lo = self.b.bin(BinOp::And, top, m);
                    let sp0 = self.reg(4);
                    let hm = self.c(Ty::I64, !0xffff_ffff);
                    let hi = self.b.bin(BinOp::And, sp0, hm);
                    self.b.bin(BinOp::Or, hi, lo)
                };
                self.set_reg(4, sp);
                self.write_w(5, v);
            }
            Kind::Lift(LiftOnly::ShiftDbl) => {
                // As flags.rs `shiftd` for 32-bit operands and counts 1..=31: SHLD
                // r = dst << c | src >> (32 - c), CF = dst bit (32 - c), OF = dst[31] ^ dst[30];
                // SHRD r = dst >> c | src << (32 - c), CF = dst bit (c - 1), OF = src[0] ^ dst[31];
                // SF, ZF, PF of the result, AF = 0.
                let t = Ty::I32;
                let dst = self.reg_as(u.d, t);
                let src = self.reg_as(u.s, t);
                let c = if u.imm != 0 {
                    self.c(t, u64::from(u.imm))
                } else {
                    // By CL: a zero count changes nothing (and is rare): the interpreter's.
                    let cx = self.reg_as(1, t);
                    let m = self.c(t, 31);
                    let cv = self.b.bin(BinOp::And, cx, m);
                    let z = self.c(t, 0);
                    let nz = self.b.cmp(CmpOp::Ne, cv, z);
                    let e = self.exit();
                    self.b.guard(nz, e);
                    cv
                };
                let w = self.c(t, 32);
                let wc = self.b.bin(BinOp::Sub, w, c);
                let one = self.c(t, 1);
                let (r, cf, of) = if u.op == 0 {
                    let hi = self.b.bin(BinOp::Shl, dst, c);
                    let lo = self.b.bin(BinOp::Lshr, src, wc);
                    let r = self.b.bin(BinOp::Or, hi, lo);
                    let cf = self.bit_at(dst, wc, BinOp::Lshr);
                    let m31 = self.bit(dst, 31);
                    let m30 = self.bit(dst, 30);
                    (r, cf, self.b.bin(BinOp::Xor, m31, m30))
                } else {
                    let lo = self.b.bin(BinOp::Lshr, dst, c);
                    let hi = self.b.bin(BinOp::Shl, src, wc);
                    let r = self.b.bin(BinOp::Or, lo, hi);
                    let cm1 = self.b.bin(BinOp::Sub, c, one);
                    let cf = self.bit_at(dst, cm1, BinOp::Lshr);
                    let s0 = self.bit(src, 0);
                    let m31 = self.bit(dst, 31);
                    (r, cf, self.b.bin(BinOp::Xor, s0, m31))
                };
                // SF, ZF, PF as of a logical result, then every flag known.
                self.set_flags(Lazy { op: CcOp::Logic, ty: t, res: r, a: r, b: r, extra: None, kept: [None; 6] });
                let mut kept = [None; 6];
                for f in [F_PF, F_ZF, F_SF] {
                    kept[f] = Some(self.flag(f));
                }
                kept[F_AF] = Some(self.c(Ty::I64, 0));
                kept[F_CF] = Some(cf);
                kept[F_OF] = Some(of);
                self.set_flags(Lazy { op: CcOp::Known, ty: Ty::I64, res: cf, a: cf, b: cf, extra: None, kept });
                self.write_w(u.d, r);
            }
            Kind::Lift(LiftOnly::MovR8I) => {
                let v = self.c(Ty::I8, u64::from(u.imm));
                self.write_byte_reg(u.d, v);
            }
            Kind::Lift(LiftOnly::AluRh8I) => {
                let a = self.byte_reg(u.d);
                let v = self.c(Ty::I8, u64::from(u.imm));
                let r = self.alu(u.op, a, v);
                if alu_writes(u.op) {
                    self.write_byte_reg(u.d, r);
                }
            }
            Kind::Lift(LiftOnly::MovxRh8) => {
                let v = self.byte_reg(u.s);
                let v = if u.imm != 0 { self.b.sext(ty, v) } else { self.b.zext(ty, v) };
                self.write_w(u.d, v);
            }
            Kind::Lift(LiftOnly::Cli) => {
                let fl = self.guard_iopl();
                let m = self.c(Ty::I64, !IF);
                let v = self.b.bin(BinOp::And, fl, m);
                self.b.put(RFLAGS, v);
            }
            Kind::Lift(LiftOnly::Sti) => {
                // IF = 1; setting it (not already set) inhibits interrupts for one instruction.
                let fl = self.guard_iopl();
                let ifv = self.c(Ty::I64, IF);
                let was = self.b.bin(BinOp::And, fl, ifv);
                let z = self.c(Ty::I64, 0);
                let shadow = self.b.cmp(CmpOp::Eq, was, z);
                self.b.put(SHADOW, shadow);
                let v = self.b.bin(BinOp::Or, fl, ifv);
                self.b.put(RFLAGS, v);
                return Flow::Stop;
            }
            Kind::Lift(LiftOnly::Rdtsc) => {
                // CR4.TSD outside CPL 0 is a #GP: the interpreter's.
                let cr4 = self.b.get(Ty::I64, CR4);
                let tsd = self.c(Ty::I64, crate::CR4_TSD);
                let t = self.b.bin(BinOp::And, cr4, tsd);
                let z = self.c(Ty::I64, 0);
                let ok_tsd = self.b.cmp(CmpOp::Eq, t, z);
                let cpl = self.b.get(Ty::I8, CPL);
                let z8 = self.c(Ty::I8, 0);
                let ok_cpl = self.b.cmp(CmpOp::Eq, cpl, z8);
                let ok = self.b.bin(BinOp::Or, ok_tsd, ok_cpl);
                let e = self.exit();
                self.b.guard(ok, e);
                let k = self.c(Ty::I64, u64::from(self.k));
                let pc = self.at(eip);
                let v = self.b.helper(crate::jit::HELPER_RDTSC, k, pc);
                let lo_m = self.c(Ty::I64, 0xffff_ffff);
                let lo = self.b.bin(BinOp::And, v, lo_m);
                let s32 = self.c(Ty::I64, 32);
                let hi = self.b.bin(BinOp::Lshr, v, s32);
                self.set_reg(0, lo);
                self.set_reg(2, hi);
                return Flow::Stop;
            }
            Kind::Lift(LiftOnly::MulR) => {
                let a = self.reg_as(0, ty);
                let v = self.reg_as(u.s, ty);
                let lo = self.b.bin(BinOp::Mul, a, v);
                let hi = self.b.bin(BinOp::UMulHi, a, v);
                let z = self.c(ty, 0);
                let ovf = self.b.cmp(CmpOp::Ne, hi, z);
                let ovf = self.bool64(ovf);
                // Flags as IMUL's: SF, ZF, PF of the low half, CF = OF = a nonzero high half.
                self.set_flags(Lazy { op: CcOp::Imul, ty, res: lo, a, b: v, extra: Some(ovf), kept: [None; 6] });
                self.write_w(0, lo);
                self.write_w(2, hi);
            }
            Kind::Lift(LiftOnly::Pushf) => {
                // VM and RF read as zero in the pushed image.
                let status = self.status_flags();
                let fl = self.b.get(Ty::I64, RFLAGS);
                let keep = self.c(Ty::I64, !(CF | PF | AF | ZF | SF | OF | VM | RF));
                let rest = self.b.bin(BinOp::And, fl, keep);
                let v = self.b.bin(BinOp::Or, rest, status);
                let sty = Ty::of_bytes(self.sw()).expect("4 or 8");
                let v = self.b.zext(sty, v);
                self.push_val(v);
            }
            Kind::Lift(LiftOnly::CmpxchgMR) => {
                let lin = self.mem_lin(u, wb);
                let d = self.load_at(lin, ty);
                let acc = self.reg_as(0, ty);
                let src = self.reg_as(u.s, ty);
                let eq = self.b.cmp(CmpOp::Eq, acc, d);
                // The destination is written either way (the old value when not equal).
                let nv = self.b.select(eq, src, d);
                self.store_at(lin, nv);
                self.alu(7, acc, d);
                // Not equal: rAX = the old value (a 32-bit write zero-extends); equal: untouched.
                let old = self.reg(0);
                let d64 = self.b.zext(Ty::I64, d);
                let rax = self.b.select(eq, old, d64);
                self.set_reg(0, rax);
            }
            Kind::ImulRRI | Kind::ImulRR => {
                let a = self.reg_as(u.s, ty);
                let v = if u.kind == Kind::ImulRRI { self.imm(ty, u.imm) } else { self.reg_as(u.d, ty) };
                let lo = self.b.bin(BinOp::Mul, a, v);
                let hi = self.b.bin(BinOp::SMulHi, a, v);
                let s = self.c(ty, u64::from(ty.bits() - 1));
                let sign = self.b.bin(BinOp::Ashr, lo, s);
                let ovf = self.b.cmp(CmpOp::Ne, hi, sign);
                let ovf = self.bool64(ovf);
                self.set_flags(Lazy { op: CcOp::Imul, ty, res: lo, a, b: v, extra: Some(ovf), kept: [None; 6] });
                self.write_w(u.d, lo);
            }
        }
        Flow::Next
    }

    /// Push the return address `next`.
    fn push(&mut self, next: u64) {
        let sty = Ty::of_bytes(self.sw()).expect("4 or 8");
        let v = self.at(next);
        let v = self.b.zext(sty, v);
        self.push_val(v);
    }

    fn push_val(&mut self, v: Val) {
        let sw = self.sw();
        let (off, full) = self.sp_plus(-i64::from(sw));
        let lin = self.stack_lin(off);
        self.store_at(lin, v);
        self.set_reg(4, full);
    }

    /// Lift instructions `(uop, eip, len)` in order until one ends the block or is not supported;
    /// returns the block (None if not even the first instruction could be lifted) and whether it
    /// ends with a control transfer.
    pub fn lift(mut self, insns: &[(Uop, u64, u64)]) -> Option<Lifted> {
        let mut n = 0u32;
        let mut end = None;
        let mut stop = false;
        let mut next = 0;
        let first = insns.first()?;
        self.pc0 = first.1;
        self.rip0 = Some(self.b.get(Ty::I64, RIP));
        for (u, eip, len) in insns {
            if !self.supported(u) {
                break;
            }
            self.k = n;
            n += 1;
            next = if self.long { eip.wrapping_add(*len) } else { (eip + len) & 0xffff_ffff };
            match self.insn(u, *eip, *len) {
                Flow::Next => {}
                Flow::End(rip) => {
                    end = Some(rip);
                    break;
                }
                Flow::Stop => {
                    stop = true;
                    self.store_through();
                    break;
                }
            }
            self.store_through();
        }
        if n == 0 {
            return None;
        }
        let ends_block = end.is_some();
        // A branch back to the block's own start (a tight loop): the block may run its next
        // iteration directly, unless it reads flags left pending by the previous iteration
        // (only the dispatcher folds them).
        let last = &insns[n as usize - 1];
        if ends_block
            && !self.reads_flags
            && matches!(last.0.kind, Kind::Jcc | Kind::Jmp)
            && self.rel_target(last.1, last.0.imm) == self.pc0
        {
            self.b.set_loop_back(ailuro_ir::LoopBack { pc_off: RIP, icount_off: ICOUNT });
        }
        // Every block may hand over to a compiled successor on its page (the engine decides
        // which ones, through the block's chain cells), except one after which the dispatcher
        // must look for events.
        if !stop {
            self.b.set_chain(ailuro_ir::Chain { pc_off: RIP, icount_off: ICOUNT });
        }
        let rip = match end {
            Some(v) => v,
            None => self.at(next),
        };
        self.write_back();
        self.b.put(RIP, rip);
        let reads_flags = self.reads_flags;
        self.b.finish(n, 0).ok().map(|block| Lifted { block, insns: n, ends_block, reads_flags, check_events: stop })
    }
}
