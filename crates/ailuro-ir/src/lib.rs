//! The intermediate representation (IR) that guest front ends lift code into and execution
//! engines consume.
//!
//! A [`Block`] is one straight-line piece of guest code (typically one guest basic block) in SSA
//! form. It is architecture-neutral: guest state is a byte-addressed *context* (the CPU's register
//! file, read with [`Op::Get`] and written with [`Op::Put`] at byte offsets the front end
//! chooses), guest memory is reached only through [`Op::Load`] and [`Op::Store`] on guest
//! *virtual* addresses, and everything a front end cannot express directly (a fault, an MMIO
//! access, a page-crossing access) leaves the block through an *exit stub*: a list of IR
//! operations that writes back the guest state as it was at the start of the guest instruction
//! that could not complete, after which the caller's interpreter executes that instruction.
//!
//! Three consumers share this representation:
//!
//! * [`eval::eval`], the reference interpreter: the meaning of every operation, written plainly;
//!   differential tests trust it.
//! * the Cranelift back end (`ailuro-jit`), which compiles a block to host code;
//! * (planned) a taint engine: labels propagate per operation, so one implementation serves every
//!   guest architecture.
//!
//! See `docs/ARCHITECTURE.md`, "The IR", for the rules front ends follow.

pub mod eval;
mod print;

/// Integer value types. Booleans are `I8` values that are 0 or 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    I8,
    I16,
    I32,
    I64,
}

impl Ty {
    /// Width in bits.
    pub fn bits(self) -> u32 {
        match self {
            Ty::I8 => 8,
            Ty::I16 => 16,
            Ty::I32 => 32,
            Ty::I64 => 64,
        }
    }

    /// Width in bytes.
    pub fn bytes(self) -> u32 {
        self.bits() / 8
    }

    /// All-ones mask of the width.
    pub fn mask(self) -> u64 {
        if self == Ty::I64 {
            u64::MAX
        } else {
            (1u64 << self.bits()) - 1
        }
    }

    /// The type of a `bytes`-byte value (1, 2, 4 or 8).
    pub fn of_bytes(bytes: u32) -> Option<Ty> {
        Some(match bytes {
            1 => Ty::I8,
            2 => Ty::I16,
            4 => Ty::I32,
            8 => Ty::I64,
            _ => return None,
        })
    }
}

/// An SSA value: the result of the operation with this index in [`Block::insts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Val(pub u32);

/// An exit stub of a block (index into [`Block::exits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExitId(pub u32);

/// Two-operand operations; both operands and the result have the same type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    And,
    Or,
    Xor,
    /// Shifts and rotates take the count modulo the width (front ends mask architecturally).
    Shl,
    Lshr,
    Ashr,
    Rotl,
    Rotr,
    /// High half of the unsigned / signed double-width product.
    UMulHi,
    SMulHi,
}

/// One-operand operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Not,
    Neg,
    /// Number of set bits.
    Popcnt,
}

/// Comparisons; the result is an `I8` 0 or 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Ult,
    Ule,
    Ugt,
    Uge,
    Slt,
    Sle,
    Sgt,
    Sge,
}

/// One IR operation. Operands are values defined earlier (in the main list, or earlier in the
/// same exit stub).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A constant (the low `ty.bits()` bits of `v`).
    Const {
        ty: Ty,
        v: u64,
    },
    /// Read `ty` from the guest context at byte offset `off`.
    Get {
        ty: Ty,
        off: u32,
    },
    /// Write `v` (its own width) to the guest context at byte offset `off`.
    Put {
        off: u32,
        v: Val,
    },
    Bin {
        op: BinOp,
        a: Val,
        b: Val,
    },
    Un {
        op: UnOp,
        a: Val,
    },
    Cmp {
        op: CmpOp,
        a: Val,
        b: Val,
    },
    /// `c != 0 ? a : b` (`a` and `b` of one type, `c` of any type).
    Select {
        c: Val,
        a: Val,
        b: Val,
    },
    /// Zero-/sign-extend to a wider type, or truncate to a narrower one.
    Zext {
        to: Ty,
        a: Val,
    },
    Sext {
        to: Ty,
        a: Val,
    },
    Trunc {
        to: Ty,
        a: Val,
    },
    /// Read `ty` from guest virtual address `addr` (an `I64`) with access class `acc` (the
    /// front end's permission bits, checked against the soft TLB). If the access cannot be done
    /// here (fault, device memory, page crossing, ...), take `exit` instead.
    Load {
        ty: Ty,
        addr: Val,
        acc: u8,
        exit: ExitId,
    },
    /// Write `v` at guest virtual address `addr`; same rules as `Load`. A store to a page that
    /// holds translated code also takes `exit` (the interpreter does it and invalidates).
    Store {
        addr: Val,
        v: Val,
        acc: u8,
        exit: ExitId,
    },
    /// Take `exit` if `c == 0` (an architectural check that rarely fails: limits, alignment).
    Guard {
        c: Val,
        exit: ExitId,
    },
    /// Call the front end's helper `id` with two I64 arguments; the result is an I64. For what
    /// the IR cannot express and that cannot fail: inputs from outside CPU and RAM (a time-stamp
    /// read), whose values the front end knows how to produce (and to record). Opaque to the IR
    /// (a taint engine treats the result as a fresh input).
    Helper {
        id: u32,
        a: Val,
        b: Val,
    },
}

/// An operation and the type of its result (`None` for `Put`, `Store`, `Guard`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inst {
    pub op: Op,
    pub ty: Option<Ty>,
}

/// Leaving a block through a failed `Load`/`Store`/`Guard`: `body` writes the guest state back
/// (the state at the start of the guest instruction `insn`), then the block returns `code`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    pub body: Vec<Val>,
    /// Index of the guest instruction (within the block) that did not complete.
    pub insn: u32,
    pub code: u32,
}

/// A lifted block: `main` runs to its end and the block returns `end_code`; a failing memory
/// access or guard leaves through its exit stub instead.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Block {
    /// Every operation (value `Val(i)` is `insts[i]`), in definition order.
    pub insts: Vec<Inst>,
    /// The operations of the normal path, in execution order.
    pub main: Vec<Val>,
    pub exits: Vec<Exit>,
    pub end_code: u32,
    /// Number of guest instructions the main path retires.
    pub guest_insns: u32,
    /// The main path may run again directly (a loop that branches back to its own start):
    /// see [`LoopBack`].
    pub loop_back: Option<LoopBack>,
    /// The main path may continue directly with another compiled block: see [`Chain`].
    pub chain: Option<Chain>,
}

/// How a block that ends by branching to its own start runs its next iteration without
/// returning: if, after the main path, the program counter at context offset `pc_off` equals
/// its value at block entry and the instruction count at `icount_off` plus two iterations'
/// `guest_insns` stays within the engine's budget, the count is advanced by one iteration and
/// the main path runs again from the context. Otherwise the block returns `end_code` (the caller
/// then accounts for the last iteration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopBack {
    pub pc_off: u32,
    pub icount_off: u32,
}

/// Where a block keeps its program counter and instruction count, so that an engine may run
/// the next block without returning to its caller ("chaining"): after the main path (and any
/// [`LoopBack`] iterations), if the program counter at `pc_off` is on the same 4 KiB page as
/// at block entry and the engine knows a compiled block for that address, the block advances
/// the count at `icount_off` by its own `guest_insns` and hands over to it. Chaining changes
/// only who runs the next block, never what it does, so [`eval::eval`] ignores it; the engine
/// decides which successors are safe (same page, same code generation, same mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chain {
    pub pc_off: u32,
    pub icount_off: u32,
}

/// Malformed IR (a front-end bug): reported instead of compiling or evaluating it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IrError {
    #[error("value {0:?} used before its definition or out of range")]
    BadValue(Val),
    #[error("operand types disagree in {0:?}")]
    TypeMismatch(Val),
    #[error("exit {0:?} out of range")]
    BadExit(ExitId),
    #[error("context offset {0} out of range")]
    BadOffset(u32),
}

/// Where newly built operations go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Main,
    Exit(u32),
}

/// Builds a [`Block`]; operations are appended to the main list or, between
/// [`Builder::begin_exit`] and [`Builder::end_exit`], to an exit stub.
pub struct Builder {
    b: Block,
    target: Target,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Builder {
        Builder { b: Block::default(), target: Target::Main }
    }

    fn push(&mut self, op: Op, ty: Option<Ty>) -> Val {
        let v = Val(self.b.insts.len() as u32);
        self.b.insts.push(Inst { op, ty });
        match self.target {
            Target::Main => self.b.main.push(v),
            Target::Exit(e) => self.b.exits[e as usize].body.push(v),
        }
        v
    }

    /// Type of a value built so far.
    pub fn ty(&self, v: Val) -> Ty {
        self.b.insts[v.0 as usize].ty.expect("value-producing operation")
    }

    pub fn iconst(&mut self, ty: Ty, v: u64) -> Val {
        self.push(Op::Const { ty, v: v & ty.mask() }, Some(ty))
    }

    pub fn get(&mut self, ty: Ty, off: u32) -> Val {
        self.push(Op::Get { ty, off }, Some(ty))
    }

    pub fn put(&mut self, off: u32, v: Val) {
        self.push(Op::Put { off, v }, None);
    }

    pub fn bin(&mut self, op: BinOp, a: Val, b: Val) -> Val {
        let ty = self.ty(a);
        self.push(Op::Bin { op, a, b }, Some(ty))
    }

    pub fn un(&mut self, op: UnOp, a: Val) -> Val {
        let ty = self.ty(a);
        self.push(Op::Un { op, a }, Some(ty))
    }

    pub fn cmp(&mut self, op: CmpOp, a: Val, b: Val) -> Val {
        self.push(Op::Cmp { op, a, b }, Some(Ty::I8))
    }

    pub fn select(&mut self, c: Val, a: Val, b: Val) -> Val {
        let ty = self.ty(a);
        self.push(Op::Select { c, a, b }, Some(ty))
    }

    /// Zero-extend or truncate `a` to `to` (identity when the type already is `to`).
    pub fn zext(&mut self, to: Ty, a: Val) -> Val {
        let from = self.ty(a);
        if from == to {
            a
        } else if from.bits() < to.bits() {
            self.push(Op::Zext { to, a }, Some(to))
        } else {
            self.push(Op::Trunc { to, a }, Some(to))
        }
    }

    /// Sign-extend or truncate `a` to `to`.
    pub fn sext(&mut self, to: Ty, a: Val) -> Val {
        let from = self.ty(a);
        if from == to {
            a
        } else if from.bits() < to.bits() {
            self.push(Op::Sext { to, a }, Some(to))
        } else {
            self.push(Op::Trunc { to, a }, Some(to))
        }
    }

    pub fn load(&mut self, ty: Ty, addr: Val, acc: u8, exit: ExitId) -> Val {
        self.push(Op::Load { ty, addr, acc, exit }, Some(ty))
    }

    pub fn store(&mut self, addr: Val, v: Val, acc: u8, exit: ExitId) {
        self.push(Op::Store { addr, v, acc, exit }, None);
    }

    pub fn guard(&mut self, c: Val, exit: ExitId) {
        self.push(Op::Guard { c, exit }, None);
    }

    /// Call helper `id` with `a` and `b` (I64 values); returns its I64 result.
    pub fn helper(&mut self, id: u32, a: Val, b: Val) -> Val {
        self.push(Op::Helper { id, a, b }, Some(Ty::I64))
    }

    /// Start an exit stub for guest instruction `insn` returning `code`; operations go to it until
    /// [`Builder::end_exit`].
    pub fn begin_exit(&mut self, insn: u32, code: u32) -> ExitId {
        let id = self.b.exits.len() as u32;
        self.b.exits.push(Exit { body: Vec::new(), insn, code });
        self.target = Target::Exit(id);
        ExitId(id)
    }

    pub fn end_exit(&mut self) {
        self.target = Target::Main;
    }

    /// Let the block loop back to its start ([`LoopBack`]).
    pub fn set_loop_back(&mut self, lb: LoopBack) {
        self.b.loop_back = Some(lb);
    }

    /// Let the engine chain the block to its successors ([`Chain`]).
    pub fn set_chain(&mut self, ch: Chain) {
        self.b.chain = Some(ch);
    }

    /// Finish: the main path retires `guest_insns` instructions and returns `end_code`.
    pub fn finish(mut self, guest_insns: u32, end_code: u32) -> Result<Block, IrError> {
        self.b.guest_insns = guest_insns;
        self.b.end_code = end_code;
        self.b.validate()?;
        Ok(self.b)
    }
}

impl Block {
    /// Check that operands are defined before use (main list values are visible to every exit
    /// stub that follows their definition; a stub's own values only to that stub), that exits
    /// exist and operand types agree.
    pub fn validate(&self) -> Result<(), IrError> {
        let n = self.insts.len();
        let mut defined = vec![false; n];
        let check = |defined: &[bool], v: Val| -> Result<(), IrError> {
            if (v.0 as usize) < n && defined[v.0 as usize] {
                Ok(())
            } else {
                Err(IrError::BadValue(v))
            }
        };
        let ty = |v: Val| self.insts[v.0 as usize].ty;
        let visit = |defined: &mut Vec<bool>, v: Val| -> Result<(), IrError> {
            if v.0 as usize >= n {
                return Err(IrError::BadValue(v));
            }
            let i = self.insts[v.0 as usize];
            let same = |a: Val, b: Val| -> Result<(), IrError> {
                if ty(a) != ty(b) || ty(a).is_none() {
                    Err(IrError::TypeMismatch(v))
                } else {
                    Ok(())
                }
            };
            let exit_ok = |e: ExitId| -> Result<(), IrError> {
                if (e.0 as usize) < self.exits.len() {
                    Ok(())
                } else {
                    Err(IrError::BadExit(e))
                }
            };
            match i.op {
                Op::Const { .. } | Op::Get { .. } => {}
                Op::Put { v: a, .. }
                | Op::Un { a, .. }
                | Op::Zext { a, .. }
                | Op::Sext { a, .. }
                | Op::Trunc { a, .. } => check(defined, a)?,
                Op::Bin { a, b, .. } | Op::Cmp { a, b, .. } => {
                    check(defined, a)?;
                    check(defined, b)?;
                    same(a, b)?;
                }
                Op::Select { c, a, b } => {
                    check(defined, c)?;
                    check(defined, a)?;
                    check(defined, b)?;
                    same(a, b)?;
                }
                Op::Load { addr, exit, .. } => {
                    check(defined, addr)?;
                    exit_ok(exit)?;
                    if ty(addr) != Some(Ty::I64) {
                        return Err(IrError::TypeMismatch(v));
                    }
                }
                Op::Store { addr, v: x, exit, .. } => {
                    check(defined, addr)?;
                    check(defined, x)?;
                    exit_ok(exit)?;
                    if ty(addr) != Some(Ty::I64) {
                        return Err(IrError::TypeMismatch(v));
                    }
                }
                Op::Guard { c, exit } => {
                    check(defined, c)?;
                    exit_ok(exit)?;
                }
                Op::Helper { a, b, .. } => {
                    check(defined, a)?;
                    check(defined, b)?;
                    if ty(a) != Some(Ty::I64) || ty(b) != Some(Ty::I64) {
                        return Err(IrError::TypeMismatch(v));
                    }
                }
            }
            match i.op {
                Op::Zext { to, a } | Op::Sext { to, a } if ty(a).is_none_or(|t| t.bits() >= to.bits()) => {
                    return Err(IrError::TypeMismatch(v))
                }
                Op::Trunc { to, a } if ty(a).is_none_or(|t| t.bits() <= to.bits()) => {
                    return Err(IrError::TypeMismatch(v))
                }
                _ => {}
            }
            defined[v.0 as usize] = true;
            Ok(())
        };
        // Main-list values become visible in definition order; each exit stub may use the main
        // values defined before the first operation that refers to the exit.
        let mut exit_seen = vec![false; self.exits.len()];
        for &v in &self.main {
            if v.0 as usize >= n {
                return Err(IrError::BadValue(v));
            }
            let e = match self.insts[v.0 as usize].op {
                Op::Load { exit, .. } | Op::Store { exit, .. } | Op::Guard { exit, .. } => Some(exit),
                _ => None,
            };
            if let Some(e) = e {
                if (e.0 as usize) >= self.exits.len() {
                    return Err(IrError::BadExit(e));
                }
                if !exit_seen[e.0 as usize] {
                    exit_seen[e.0 as usize] = true;
                    let mut local = defined.clone();
                    for &x in &self.exits[e.0 as usize].body {
                        visit(&mut local, x)?;
                        if matches!(self.insts[x.0 as usize].op, Op::Load { .. } | Op::Store { .. } | Op::Guard { .. })
                        {
                            // Exit stubs only write state back; they cannot leave again.
                            return Err(IrError::BadValue(x));
                        }
                    }
                }
            }
            // The stub sees the state before this operation (not its result).
            visit(&mut defined, v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
