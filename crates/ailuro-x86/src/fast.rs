//! Pre-decoded fast paths for the most common integer instructions of 32-bit code and of 64-bit
//! code (32- and 64-bit operand sizes).
//!
//! When an instruction enters the decode cache, [`Uop::build`] extracts what the hot instruction
//! forms need (register numbers, immediate, memory operand parts) into a small `Uop`. `step` runs
//! such instructions through [`Cpu::exec_fast`] without touching iced's `Instruction` accessors or
//! the generic operand machinery; everything else (`Kind::Generic`) takes the general path in
//! `exec.rs`. Both paths must have identical architectural effects; the unit tests and the guest
//! programs exercise both.
//!
//! One implementation serves both modes: [`Cpu::exec_fast`] dispatches once on the operand size
//! and mode to `exec_fast_w::<W, L>` (W = operand bytes 4 or 8, L = 64-bit mode with 64-bit
//! addresses, RIP-relative operands and canonical branch targets), so the 32-bit instantiation
//! is the same code as before and pays nothing for 64-bit mode.

use ailuro_bus::Platform;
use iced_x86::{Code, ConditionCode, Instruction, Mnemonic as M, OpKind, Register};

use crate::flags::{self, Alu, Shift};
use crate::mem::Bus;
use crate::{exc, Cpu, Res};

// No `repr`: the compiler packs `Lift(LiftOnly)` into the same byte as the other kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Kind {
    #[default]
    Generic,
    Nop,
    MovRR,
    MovRI,
    MovRM,
    MovMR,
    MovMI,
    AluRR,
    AluRI,
    AluRM,
    AluMR,
    AluMI,
    ShiftRI,
    IncR,
    DecR,
    Lea,
    Jcc,
    Jmp,
    CallRel,
    Ret,
    PushR,
    PushI,
    PopR,
    ImulRRI,
    ImulRR,
    /// MOVZX/MOVSX r32, m8/m16 (`op` = source size, `s` = 1 for sign extension).
    MovxRM,
    /// MOVZX/MOVSX r32, r8 (AL..BL) / r16 (`op` = source size, `s` = source reg, `imm` = 1 sign).
    MovxRR,
    /// MOV r8 (AL..BL), m8.
    MovR8M,
    /// MOV m8, r8 (AL..BL).
    MovM8R,
    /// MOV m8, imm8.
    MovM8I,
    /// ALU m8, imm8.
    AluM8I,
    /// ALU r8 (AL..BL), imm8.
    AluR8I,
    /// ALU r8, r8 / MOV r8, r8 (low bytes: AL..BL, and SPL.. R15B in 64-bit code).
    AluR8R,
    MovR8R,
    /// CALL r32 / JMP r32.
    CallR,
    JmpR,
    /// CALL m32 / JMP m32.
    CallM,
    JmpM,
    /// SETcc r8 (AL..BL).
    SetccR8,
    /// CMOVcc r32, r32 / r32, m32.
    CmovRR,
    CmovRM,
    /// Shift/rotate r32 by CL.
    ShiftRCl,
    /// INC/DEC m32.
    IncM,
    DecM,
    /// NEG/NOT r32.
    NegR,
    NotR,
    /// A form only the translator compiles ([`LiftOnly`]).
    Lift(LiftOnly),
}

/// Forms only the translator compiles: the interpreter runs them through its generic path
/// (`Kind::lift_only`), which stays their single definition and the reference the
/// translator's differential tests compare against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LiftOnly {
    /// MOV m16, r16 / MOV r16, m16 (AX..DI; R8W..R15W in 64-bit code).
    MovM16R,
    MovR16M,
    /// SHL/SHR/SAR/ROL/ROR r16, imm8 whose masked count (`imm`) is 1..=15.
    ShiftR16I,
    /// ALU r8, m8 (ADD..CMP) and ALU m8, r8 (ADD..CMP, TEST; LOCK for the writing ones).
    AluR8M,
    AluM8R,
    /// PUSH m32 (m64 in 64-bit code).
    PushM,
    /// BT r, imm8 / BT m, imm8 (`imm` = the bit, reduced modulo the operand width).
    BtRI,
    BtMI,
    /// LEAVE (32-bit stack / 64-bit code).
    Leave,
    /// CLI (compiled only outside CPL 3; the block checks CPL <= IOPL).
    Cli,
    /// MUL r (rDX:rAX = rAX * r).
    MulR,
    /// PUSHFD / PUSHFQ.
    Pushf,
    /// [LOCK] CMPXCHG m, r.
    CmpxchgMR,
    /// RDTSC (a time-stamp read through a helper; the block ends after it).
    Rdtsc,
    /// STI (compiled only outside CPL 3; the block ends after it).
    Sti,
    /// MOV r8, imm8 (`d` a byte register: [`BYTE_HIGH`] | 0..=3 for AH..BH).
    MovR8I,
    /// ALU AH..BH, imm8 (`d` = [`BYTE_HIGH`] | 0..=3; `op` as AluR8I).
    AluRh8I,
    /// MOVZX/MOVSX r, AH..BH (`s` = [`BYTE_HIGH`] | 0..=3, `imm` = 1 for sign extension).
    MovxRh8,
    /// SHLD (`op` 0) / SHRD (`op` 1) r32, r32 by an immediate count 1..=31 (`imm`) or by CL
    /// (`imm` = 0).
    ShiftDbl,
}

/// Marks a byte register operand of a lift-only form as the high byte (AH, CH, DH, BH) of
/// register `n & 3`.
pub(crate) const BYTE_HIGH: u8 = 0x10;

/// A pre-decoded instruction (only meaningful when `kind != Generic`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Uop {
    pub kind: Kind,
    /// ALU op (0..=7 as `Alu`, 8 = TEST), shift op, or condition code.
    pub op: u8,
    pub d: u8,
    pub s: u8,
    /// Memory operand: base/index GPR numbers (0xff = none), scale, segment register number.
    pub base: u8,
    pub index: u8,
    pub scale: u8,
    pub seg: u8,
    pub disp: u32,
    /// Immediate, or the relative branch displacement from the instruction start (sign-extended
    /// to 64 bits where the operand size is 64 or in 64-bit mode).
    pub imm: u32,
    /// 64-bit operand size (64-bit mode only).
    pub q: bool,
    /// Built for 64-bit mode.
    pub long: bool,
}

pub(crate) const NONE: u8 = 0xff;
/// `base` of a RIP-relative memory operand (`disp` is then relative to the instruction start).
pub(crate) const RIPREL: u8 = 0xfe;
const ALU_TEST: u8 = 8;

/// AL, CL, DL, BL (low bytes of the first four GPRs).
fn gpr8lo(r: Register) -> Option<u8> {
    let n = r as u32;
    if (Register::AL as u32..=Register::BL as u32).contains(&n) {
        Some((n - Register::AL as u32) as u8)
    } else {
        None
    }
}

/// AH, CH, DH, BH as [`BYTE_HIGH`] | 0..=3 (no REX prefix: the decoder names them only then).
fn high8(r: Register) -> Option<u8> {
    let n = r as u32;
    if (Register::AH as u32..=Register::BH as u32).contains(&n) {
        Some(BYTE_HIGH | (n - Register::AH as u32) as u8)
    } else {
        None
    }
}

fn gpr16(r: Register) -> Option<u8> {
    let n = r as u32;
    if (Register::AX as u32..=Register::DI as u32).contains(&n) {
        Some((n - Register::AX as u32) as u8)
    } else {
        None
    }
}

fn gpr32(r: Register) -> Option<u8> {
    let n = r as u32;
    if (Register::EAX as u32..=Register::EDI as u32).contains(&n) {
        Some((n - Register::EAX as u32) as u8)
    } else {
        None
    }
}

/// EAX..R15D (64-bit mode: the 32-bit names of all sixteen registers).
fn gpr32x(r: Register) -> Option<u8> {
    let n = r as u32;
    if (Register::EAX as u32..=Register::R15D as u32).contains(&n) {
        Some((n - Register::EAX as u32) as u8)
    } else {
        None
    }
}

fn gpr64(r: Register) -> Option<u8> {
    let n = r as u32;
    if (Register::RAX as u32..=Register::R15 as u32).contains(&n) {
        Some((n - Register::RAX as u32) as u8)
    } else {
        None
    }
}

/// The low byte of a register in 64-bit mode: AL..BL, SPL..DIL, R8L..R15L (not AH..BH).
fn gpr8x(r: Register) -> Option<u8> {
    let n = r as u32;
    if let Some(x) = gpr8lo(r) {
        return Some(x);
    }
    if (Register::SPL as u32..=Register::R15L as u32).contains(&n) {
        Some((n - Register::SPL as u32 + 4) as u8)
    } else {
        None
    }
}

fn gpr16x(r: Register) -> Option<u8> {
    let n = r as u32;
    if (Register::AX as u32..=Register::R15W as u32).contains(&n) {
        Some((n - Register::AX as u32) as u8)
    } else {
        None
    }
}

/// An i64 that fits a sign-extended 32-bit field.
fn fits32(v: u64) -> Option<u32> {
    let x = v as i64;
    (x == i64::from(x as i32)).then_some(x as u32)
}

fn alu_op(m: M) -> Option<u8> {
    Some(match m {
        M::Add => 0,
        M::Or => 1,
        M::Adc => 2,
        M::Sbb => 3,
        M::And => 4,
        M::Sub => 5,
        M::Xor => 6,
        M::Cmp => 7,
        M::Test => ALU_TEST,
        _ => return None,
    })
}

fn alu_from(op: u8) -> Alu {
    match op {
        0 => Alu::Add,
        1 => Alu::Or,
        2 => Alu::Adc,
        3 => Alu::Sbb,
        4 | ALU_TEST => Alu::And,
        5 => Alu::Sub,
        6 => Alu::Xor,
        _ => Alu::Cmp,
    }
}

fn shift_from(op: u8) -> Shift {
    match op {
        0 => Shift::Rol,
        1 => Shift::Ror,
        2 => Shift::Rcl,
        3 => Shift::Rcr,
        4 => Shift::Shl,
        5 => Shift::Shr,
        _ => Shift::Sar,
    }
}

fn cc_from(op: u8) -> ConditionCode {
    use ConditionCode as C;
    [C::None, C::o, C::no, C::b, C::ae, C::e, C::ne, C::be, C::a, C::s, C::ns, C::p, C::np, C::l, C::ge, C::le, C::g]
        [op as usize]
}

impl Kind {
    /// A form the translator lifts but the interpreter executes through its generic path.
    #[inline]
    pub(crate) fn lift_only(self) -> bool {
        matches!(self, Kind::Lift(_))
    }

    /// Does an instruction of this kind end a basic block (a control transfer)?
    #[inline]
    pub(crate) fn ends_block(self) -> bool {
        matches!(
            self,
            Kind::Jcc | Kind::Jmp | Kind::CallRel | Kind::Ret | Kind::CallR | Kind::JmpR | Kind::CallM | Kind::JmpM
        )
    }
}

impl Uop {
    /// Whether the translator can compile this form (see `lift.rs`; memory operands may still
    /// need a segment the current mode allows).
    #[inline]
    pub(crate) fn liftable(&self) -> bool {
        match self.kind {
            Kind::Generic => false,
            // RCL/RCR stay with the interpreter.
            Kind::ShiftRI | Kind::ShiftRCl => !matches!(self.op, 2 | 3),
            _ => true,
        }
    }
}

/// What differs between 32-bit and 64-bit code for the pre-decoder: register names, memory
/// operand forms, branch and stack widths. (16-bit code always takes the generic path.)
#[derive(Clone, Copy)]
struct Mode {
    long: bool,
}

impl Mode {
    /// A general-purpose register operand: its number and whether it is 64 bits wide (32-bit
    /// code: EAX..EDI only).
    fn reg(self, r: Register) -> Option<(u8, bool)> {
        if self.long {
            gpr64(r).map(|x| (x, true)).or_else(|| gpr32x(r).map(|x| (x, false)))
        } else {
            gpr32(r).map(|x| (x, false))
        }
    }

    /// A register of the stack width (pushes, pops, indirect branches).
    fn wide(self, r: Register) -> Option<u8> {
        if self.long {
            gpr64(r)
        } else {
            gpr32(r)
        }
    }

    /// A low-byte register (never AH..BH).
    fn reg8(self, r: Register) -> Option<u8> {
        if self.long {
            gpr8x(r)
        } else {
            gpr8lo(r)
        }
    }

    /// A byte register, low ([`Mode::reg8`]) or high (AH..BH, [`BYTE_HIGH`]).
    fn byte_any(self, r: Register) -> Option<u8> {
        self.reg8(r).or_else(|| high8(r))
    }

    fn reg16(self, r: Register) -> Option<u8> {
        if self.long {
            gpr16x(r)
        } else {
            gpr16(r)
        }
    }

    /// Operand kind of a near relative branch.
    fn near(self) -> OpKind {
        if self.long {
            OpKind::NearBranch64
        } else {
            OpKind::NearBranch32
        }
    }

    /// Displacement of a relative branch from the instruction start (the decode cache decodes
    /// at IP 0): 32 bits, sign-extended to 64 in 64-bit mode.
    fn rel(self, i: &Instruction) -> Option<u32> {
        if self.long {
            fits32(i.near_branch_target())
        } else {
            Some(i.near_branch_target() as u32)
        }
    }

    /// Stack slot size in bytes.
    fn stack(self) -> u32 {
        if self.long {
            8
        } else {
            4
        }
    }

    /// Immediate kinds of the fast ALU forms with a 32/64-bit destination.
    fn imm_ok(self, k: OpKind) -> bool {
        matches!(k, OpKind::Immediate32 | OpKind::Immediate8to32)
            || (self.long && matches!(k, OpKind::Immediate8to64 | OpKind::Immediate32to64))
    }

    fn push_imm(self, c: Code) -> bool {
        if self.long {
            matches!(c, Code::Pushq_imm32 | Code::Pushq_imm8)
        } else {
            matches!(c, Code::Pushd_imm32 | Code::Pushd_imm8)
        }
    }

    fn ret(self) -> Code {
        if self.long {
            Code::Retnq
        } else {
            Code::Retnd
        }
    }

    /// The memory operand: 32-bit base/index and displacement in 32-bit code; 64-bit base/index
    /// or RIP-relative with a sign-extended 32-bit displacement in 64-bit code (no 0x67 forms).
    fn mem(self, u: &mut Uop, i: &Instruction) -> Option<()> {
        let base = i.memory_base();
        let index = i.memory_index();
        if self.long {
            u.base = match base {
                Register::None => NONE,
                Register::RIP => RIPREL,
                r => gpr64(r)?,
            };
            u.index = if index == Register::None { NONE } else { gpr64(index)? };
            if u.base == RIPREL && u.index != NONE {
                return None;
            }
            if u.base == NONE && u.index == NONE && i.memory_displ_size() != 8 {
                // [disp32] with a 0x67 prefix: a 32-bit address.
                return None;
            }
            u.disp = fits32(i.memory_displacement64())?;
        } else {
            u.base = if base == Register::None { NONE } else { gpr32(base)? };
            u.index = if index == Register::None { NONE } else { gpr32(index)? };
            u.disp = i.memory_displacement64() as u32;
        }
        u.scale = i.memory_index_scale() as u8;
        let seg = i.memory_segment() as u32;
        u.seg = seg.wrapping_sub(Register::ES as u32).min(0xff) as u8;
        if u.seg > 5 {
            return None;
        }
        Some(())
    }

    /// A 32-bit (or, in 64-bit mode, 64-bit) memory operand: sets `u.q`; None for other sizes.
    fn mem_sized(self, u: &mut Uop, i: &Instruction) -> Option<()> {
        let size = i.memory_size().size();
        u.q = self.long && size == 8;
        if size != if u.q { 8 } else { 4 } {
            return None;
        }
        self.mem(u, i)
    }
}

impl Uop {
    /// Pre-decode `i` if it is one of the fast forms of `bits`-bit code (32 or 64; 16-bit code
    /// always takes the generic path).
    pub(crate) fn build(i: &Instruction, bits: u32) -> Uop {
        let mode = match bits {
            32 => Mode { long: false },
            64 => Mode { long: true },
            _ => return Uop::default(),
        };
        Self::try_build(i, mode).unwrap_or_default()
    }

    fn try_build(i: &Instruction, md: Mode) -> Option<Uop> {
        let m = i.mnemonic();
        // PAUSE is F3 90: the REP prefix is its encoding (spin-wait loops run it constantly).
        if m == M::Pause && !i.has_lock_prefix() {
            return Some(Uop { base: NONE, index: NONE, long: md.long, kind: Kind::Nop, ..Uop::default() });
        }
        if i.has_rep_prefix() || i.has_repne_prefix() {
            return None;
        }
        let u = Self::try_build_unlocked(i, md, m)?;
        // LOCK is valid only on read-modify-write forms with a memory destination (elsewhere
        // it is #UD, which the generic path raises); with one CPU it changes nothing else.
        let lockable = match u.kind {
            Kind::AluMR | Kind::AluMI | Kind::Lift(LiftOnly::AluM8R) => u.op < 7,
            Kind::IncM | Kind::DecM | Kind::Lift(LiftOnly::CmpxchgMR) => true,
            _ => false,
        };
        if i.has_lock_prefix() && !lockable {
            return None;
        }
        Some(u)
    }

    fn try_build_unlocked(i: &Instruction, md: Mode, m: M) -> Option<Uop> {
        let mut u = Uop { base: NONE, index: NONE, long: md.long, ..Uop::default() };
        let n = i.op_count();
        let k0 = if n > 0 { i.op0_kind() } else { OpKind::Register };
        let k1 = if n > 1 { i.op1_kind() } else { OpKind::Register };
        if let Some(b) = Self::try_build_byte(i, u, md, m, k0, k1) {
            return Some(b);
        }
        if let Some(b) = Self::try_build_lift_only(i, u, md, m, k0, k1) {
            return Some(b);
        }
        // Two register operands of the same width.
        let pair = |u: &mut Uop, a: Register, b: Register| -> Option<()> {
            let (d, q) = md.reg(a)?;
            let (s, q2) = md.reg(b)?;
            if q != q2 {
                return None;
            }
            (u.d, u.s, u.q) = (d, s, q);
            Some(())
        };
        match m {
            // Fences order memory for other agents; with one CPU and no concurrent DMA they do
            // nothing (the interpreter's generic path treats them the same way).
            M::Nop | M::Lfence | M::Mfence | M::Sfence => u.kind = Kind::Nop,
            M::Mov => {
                if n != 2 {
                    return None;
                }
                let imm = |k: OpKind| k == OpKind::Immediate32 || (md.long && k == OpKind::Immediate32to64);
                match (k0, k1) {
                    (OpKind::Register, OpKind::Register) => {
                        pair(&mut u, i.op0_register(), i.op1_register())?;
                        u.kind = Kind::MovRR;
                    }
                    (OpKind::Register, k) if imm(k) => {
                        (u.d, u.q) = md.reg(i.op0_register())?;
                        u.imm = i.immediate(1) as u32;
                        u.kind = Kind::MovRI;
                    }
                    (OpKind::Register, OpKind::Memory) => {
                        (u.d, u.q) = md.reg(i.op0_register())?;
                        md.mem(&mut u, i)?;
                        u.kind = Kind::MovRM;
                    }
                    (OpKind::Memory, OpKind::Register) => {
                        (u.s, u.q) = md.reg(i.op1_register())?;
                        md.mem(&mut u, i)?;
                        u.kind = Kind::MovMR;
                    }
                    (OpKind::Memory, k) if imm(k) => {
                        md.mem_sized(&mut u, i)?;
                        u.imm = i.immediate(1) as u32;
                        u.kind = Kind::MovMI;
                    }
                    _ => return None,
                }
            }
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => {
                u.op = alu_op(m)?;
                match (k0, k1) {
                    (OpKind::Register, OpKind::Register) => {
                        pair(&mut u, i.op0_register(), i.op1_register())?;
                        u.kind = Kind::AluRR;
                    }
                    (OpKind::Register, k) if md.imm_ok(k) => {
                        (u.d, u.q) = md.reg(i.op0_register())?;
                        u.imm = i.immediate(1) as u32;
                        u.kind = Kind::AluRI;
                    }
                    (OpKind::Register, OpKind::Memory) => {
                        (u.d, u.q) = md.reg(i.op0_register())?;
                        md.mem(&mut u, i)?;
                        u.kind = Kind::AluRM;
                    }
                    (OpKind::Memory, OpKind::Register) => {
                        (u.s, u.q) = md.reg(i.op1_register())?;
                        md.mem(&mut u, i)?;
                        u.kind = Kind::AluMR;
                    }
                    (OpKind::Memory, k) if md.imm_ok(k) => {
                        md.mem_sized(&mut u, i)?;
                        u.imm = i.immediate(1) as u32;
                        u.kind = Kind::AluMI;
                    }
                    _ => return None,
                }
            }
            M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shl | M::Sal | M::Shr | M::Sar => {
                if k0 != OpKind::Register {
                    return None;
                }
                let by_cl = k1 == OpKind::Register && i.op1_register() == Register::CL;
                if k1 != OpKind::Immediate8 && !by_cl {
                    return None;
                }
                (u.d, u.q) = md.reg(i.op0_register())?;
                u.imm = if by_cl { 0 } else { u32::from(i.immediate8()) };
                u.op = match m {
                    M::Rol => 0,
                    M::Ror => 1,
                    M::Rcl => 2,
                    M::Rcr => 3,
                    M::Shl | M::Sal => 4,
                    M::Shr => 5,
                    _ => 6,
                };
                u.kind = if by_cl { Kind::ShiftRCl } else { Kind::ShiftRI };
            }
            M::Inc | M::Dec if k0 == OpKind::Memory => {
                md.mem_sized(&mut u, i)?;
                u.kind = if m == M::Inc { Kind::IncM } else { Kind::DecM };
            }
            M::Neg | M::Not if k0 == OpKind::Register => {
                (u.d, u.q) = md.reg(i.op0_register())?;
                u.kind = if m == M::Neg { Kind::NegR } else { Kind::NotR };
            }
            M::Inc | M::Dec if k0 == OpKind::Register => {
                (u.d, u.q) = md.reg(i.op0_register())?;
                u.kind = if m == M::Inc { Kind::IncR } else { Kind::DecR };
            }
            M::Lea => {
                (u.d, u.q) = md.reg(i.op0_register())?;
                md.mem(&mut u, i)?;
                u.kind = Kind::Lea;
            }
            M::Jmp if k0 == md.near() => {
                u.imm = md.rel(i)?;
                u.kind = Kind::Jmp;
            }
            M::Call if k0 == md.near() => {
                u.imm = md.rel(i)?;
                u.kind = Kind::CallRel;
            }
            M::Ret if i.code() == md.ret() => u.kind = Kind::Ret,
            M::Push if k0 == OpKind::Register => {
                u.s = md.wide(i.op0_register())?;
                u.kind = Kind::PushR;
            }
            M::Push if md.push_imm(i.code()) => {
                u.imm = i.immediate(0) as u32;
                u.kind = Kind::PushI;
            }
            M::Pop if k0 == OpKind::Register => {
                u.d = md.wide(i.op0_register())?;
                u.kind = Kind::PopR;
            }
            M::Imul if n == 3 && k1 == OpKind::Register => {
                pair(&mut u, i.op0_register(), i.op1_register())?;
                u.imm = i.immediate(2) as u32;
                u.kind = Kind::ImulRRI;
            }
            M::Imul if n == 2 && k1 == OpKind::Register => {
                pair(&mut u, i.op0_register(), i.op1_register())?;
                u.kind = Kind::ImulRR;
            }
            M::Movzx | M::Movsx | M::Movsxd => {
                (u.d, u.q) = md.reg(i.op0_register())?;
                u.s = u8::from(m != M::Movzx);
                if k1 == OpKind::Memory {
                    u.op = i.memory_size().size() as u8;
                    if u.op > 4 || (m == M::Movsxd && !u.q) {
                        return None;
                    }
                    md.mem(&mut u, i)?;
                    u.kind = Kind::MovxRM;
                } else {
                    let r = i.op1_register();
                    let (src, size) = match (md.reg8(r), md.reg16(r)) {
                        (Some(x), _) => (x, 1),
                        (_, Some(x)) => (x, 2),
                        _ if md.long && m == M::Movsxd && u.q => (gpr32x(r)?, 4),
                        _ => return None,
                    };
                    u.imm = u32::from(m != M::Movzx);
                    u.s = src;
                    u.op = size;
                    u.kind = Kind::MovxRR;
                }
            }
            M::Call | M::Jmp if k0 == OpKind::Register => {
                u.s = md.wide(i.op0_register())?;
                u.kind = if m == M::Call { Kind::CallR } else { Kind::JmpR };
            }
            M::Call | M::Jmp if k0 == OpKind::Memory && i.memory_size().size() as u32 == md.stack() => {
                md.mem(&mut u, i)?;
                u.kind = if m == M::Call { Kind::CallM } else { Kind::JmpM };
            }
            _ if i.is_jcc_short_or_near() && k0 == md.near() => {
                u.op = i.condition_code() as u8;
                u.imm = md.rel(i)?;
                u.kind = Kind::Jcc;
            }
            _ => return None,
        }
        Some(u)
    }

    /// The translator-only forms ([`Kind::lift_only`]).
    fn try_build_lift_only(i: &Instruction, mut u: Uop, md: Mode, m: M, k0: OpKind, k1: OpKind) -> Option<Uop> {
        let n = i.op_count();
        let msize = || i.memory_size().size();
        match m {
            M::Mov if n == 2 && k0 == OpKind::Memory && k1 == OpKind::Register && msize() == 2 => {
                u.s = md.reg16(i.op1_register())?;
                md.mem(&mut u, i)?;
                u.kind = Kind::Lift(LiftOnly::MovM16R);
            }
            M::Mov if n == 2 && k0 == OpKind::Register && k1 == OpKind::Memory && msize() == 2 => {
                u.d = md.reg16(i.op0_register())?;
                md.mem(&mut u, i)?;
                u.kind = Kind::Lift(LiftOnly::MovR16M);
            }
            M::Rol | M::Ror | M::Shl | M::Sal | M::Shr | M::Sar
                if k0 == OpKind::Register && k1 == OpKind::Immediate8 =>
            {
                u.d = md.reg16(i.op0_register())?;
                // Counts of 16..=31 (defined but unusual for 16-bit operands) stay generic.
                let c = u32::from(i.immediate8()) & 31;
                if !(1..=15).contains(&c) {
                    return None;
                }
                u.imm = c;
                u.op = match m {
                    M::Rol => 0,
                    M::Ror => 1,
                    M::Shl | M::Sal => 4,
                    M::Shr => 5,
                    _ => 6,
                };
                u.kind = Kind::Lift(LiftOnly::ShiftR16I);
            }
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp
                if k0 == OpKind::Register && k1 == OpKind::Memory && msize() == 1 =>
            {
                u.d = md.reg8(i.op0_register())?;
                u.op = alu_op(m)?;
                md.mem(&mut u, i)?;
                u.kind = Kind::Lift(LiftOnly::AluR8M);
            }
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test
                if k0 == OpKind::Memory && k1 == OpKind::Register && msize() == 1 =>
            {
                u.s = md.reg8(i.op1_register())?;
                u.op = alu_op(m)?;
                md.mem(&mut u, i)?;
                u.kind = Kind::Lift(LiftOnly::AluM8R);
            }
            M::Push if n == 1 && k0 == OpKind::Memory && msize() as u32 == md.stack() => {
                md.mem(&mut u, i)?;
                u.kind = Kind::Lift(LiftOnly::PushM);
            }
            M::Bt if k1 == OpKind::Immediate8 => {
                let bits = if k0 == OpKind::Register {
                    (u.d, u.q) = md.reg(i.op0_register())?;
                    u.kind = Kind::Lift(LiftOnly::BtRI);
                    if u.q {
                        64
                    } else {
                        32
                    }
                } else {
                    md.mem_sized(&mut u, i)?;
                    u.kind = Kind::Lift(LiftOnly::BtMI);
                    if u.q {
                        64
                    } else {
                        32
                    }
                };
                u.imm = u32::from(i.immediate8()) & (bits - 1);
            }
            M::Leave if i.code() == if md.long { Code::Leaveq } else { Code::Leaved } => {
                u.kind = Kind::Lift(LiftOnly::Leave)
            }
            M::Mov if n == 2 && k0 == OpKind::Register && k1 == OpKind::Immediate8 => {
                u.d = md.byte_any(i.op0_register())?;
                u.imm = u32::from(i.immediate8());
                u.kind = Kind::Lift(LiftOnly::MovR8I);
            }
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test
                if k0 == OpKind::Register && k1 == OpKind::Immediate8 =>
            {
                u.d = high8(i.op0_register())?;
                u.op = alu_op(m)?;
                u.imm = u32::from(i.immediate8());
                u.kind = Kind::Lift(LiftOnly::AluRh8I);
            }
            M::Movzx | M::Movsx if k1 == OpKind::Register => {
                (u.d, u.q) = md.reg(i.op0_register())?;
                u.s = high8(i.op1_register())?;
                u.imm = u32::from(m == M::Movsx);
                u.kind = Kind::Lift(LiftOnly::MovxRh8);
            }
            M::Shld | M::Shrd if n == 3 && k0 == OpKind::Register && k1 == OpKind::Register => {
                (u.d, u.q) = md.reg(i.op0_register())?;
                let (src, q2) = md.reg(i.op1_register())?;
                if u.q || q2 {
                    return None;
                }
                u.s = src;
                u.op = u8::from(m == M::Shrd);
                u.imm = match i.op2_kind() {
                    OpKind::Immediate8 => {
                        let c = u32::from(i.immediate8()) & 31;
                        if c == 0 {
                            return None;
                        }
                        c
                    }
                    OpKind::Register if i.op2_register() == Register::CL => 0,
                    _ => return None,
                };
                u.kind = Kind::Lift(LiftOnly::ShiftDbl);
            }
            M::Cli => u.kind = Kind::Lift(LiftOnly::Cli),
            M::Sti => u.kind = Kind::Lift(LiftOnly::Sti),
            M::Rdtsc => u.kind = Kind::Lift(LiftOnly::Rdtsc),
            M::Mul if n == 1 && k0 == OpKind::Register => {
                (u.s, u.q) = md.reg(i.op0_register())?;
                u.kind = Kind::Lift(LiftOnly::MulR);
            }
            M::Pushfd if !md.long => u.kind = Kind::Lift(LiftOnly::Pushf),
            M::Pushfq if md.long => u.kind = Kind::Lift(LiftOnly::Pushf),
            M::Cmpxchg if k0 == OpKind::Memory && k1 == OpKind::Register => {
                (u.s, u.q) = md.reg(i.op1_register())?;
                if msize() != if u.q { 8 } else { 4 } {
                    return None;
                }
                md.mem(&mut u, i)?;
                u.kind = Kind::Lift(LiftOnly::CmpxchgMR);
            }
            _ => return None,
        }
        Some(u)
    }

    /// Byte-sized forms and conditional moves/sets.
    fn try_build_byte(i: &Instruction, mut u: Uop, md: Mode, m: M, k0: OpKind, k1: OpKind) -> Option<Uop> {
        let byte_mem = |i: &Instruction| i.memory_size().size() == 1;
        match m {
            M::Mov if i.op_count() == 2 => match (k0, k1) {
                (OpKind::Register, OpKind::Register) => {
                    u.d = md.reg8(i.op0_register())?;
                    u.s = md.reg8(i.op1_register())?;
                    u.kind = Kind::MovR8R;
                }
                (OpKind::Register, OpKind::Memory) => {
                    u.d = md.reg8(i.op0_register())?;
                    md.mem(&mut u, i)?;
                    u.kind = Kind::MovR8M;
                }
                (OpKind::Memory, OpKind::Register) => {
                    u.s = md.reg8(i.op1_register())?;
                    md.mem(&mut u, i)?;
                    u.kind = Kind::MovM8R;
                }
                (OpKind::Memory, OpKind::Immediate8) if byte_mem(i) => {
                    md.mem(&mut u, i)?;
                    u.imm = u32::from(i.immediate8());
                    u.kind = Kind::MovM8I;
                }
                _ => return None,
            },
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test
                if k0 == OpKind::Register && k1 == OpKind::Register =>
            {
                u.d = md.reg8(i.op0_register())?;
                u.s = md.reg8(i.op1_register())?;
                u.op = alu_op(m)?;
                u.kind = Kind::AluR8R;
            }
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test
                if k1 == OpKind::Immediate8 =>
            {
                u.op = alu_op(m)?;
                u.imm = u32::from(i.immediate8());
                if k0 == OpKind::Memory && byte_mem(i) {
                    md.mem(&mut u, i)?;
                    u.kind = Kind::AluM8I;
                } else if k0 == OpKind::Register {
                    u.d = md.reg8(i.op0_register())?;
                    u.kind = Kind::AluR8I;
                } else {
                    return None;
                }
            }
            _ if k0 == OpKind::Register && i.condition_code() != ConditionCode::None && i.op_count() == 1 => {
                // SETcc r8
                u.d = md.reg8(i.op0_register())?;
                u.op = i.condition_code() as u8;
                u.kind = Kind::SetccR8;
            }
            _ if k0 == OpKind::Register && i.condition_code() != ConditionCode::None && i.op_count() == 2 => {
                // CMOVcc r, r/m
                (u.d, u.q) = md.reg(i.op0_register())?;
                u.op = i.condition_code() as u8;
                if k1 == OpKind::Register {
                    let (s, q2) = md.reg(i.op1_register())?;
                    if q2 != u.q {
                        return None;
                    }
                    u.s = s;
                    u.kind = Kind::CmovRR;
                } else if k1 == OpKind::Memory {
                    md.mem(&mut u, i)?;
                    u.kind = Kind::CmovRM;
                } else {
                    return None;
                }
            }
            _ => return None,
        }
        Some(u)
    }
}

impl Cpu {
    /// Register `r` as a W-byte operand.
    #[inline(always)]
    fn rw<const W: u32>(&self, r: u8) -> u64 {
        let v = self.s.regs[r as usize];
        if W == 8 {
            v
        } else {
            v & 0xffff_ffff
        }
    }

    /// Write a W-byte result to register `r` (a 32-bit write zero-extends).
    #[inline(always)]
    fn ww<const W: u32>(&mut self, r: u8, v: u64) {
        self.s.regs[r as usize] = if W == 8 { v } else { v & 0xffff_ffff };
    }

    /// The immediate as a W-byte operand: 64-bit operands sign-extend their 32-bit immediate.
    #[inline(always)]
    fn immw<const W: u32>(imm: u32) -> u64 {
        if W == 8 {
            imm as i32 as i64 as u64
        } else {
            u64::from(imm)
        }
    }

    #[inline(always)]
    fn alu_w<const W: u32>(&mut self, op: Alu, a: u64, v: u64) -> u64 {
        if W == 8 {
            self.alu(op, a, v, 8)
        } else {
            u64::from(self.alu32(op, a as u32, v as u32))
        }
    }

    #[inline(always)]
    fn uop_ea<const L: bool>(&self, u: &Uop) -> u64 {
        if L {
            let mut a = u.disp as i32 as i64 as u64;
            if u.base == RIPREL {
                return self.cur_eip.wrapping_add(a);
            }
            if u.base != NONE {
                a = a.wrapping_add(self.s.regs[u.base as usize]);
            }
            if u.index != NONE {
                a = a.wrapping_add(self.s.regs[u.index as usize].wrapping_mul(u64::from(u.scale)));
            }
            return a;
        }
        let mut a = u.disp;
        if u.base != NONE {
            a = a.wrapping_add(self.s.regs[u.base as usize] as u32);
        }
        if u.index != NONE {
            a = a.wrapping_add((self.s.regs[u.index as usize] as u32).wrapping_mul(u32::from(u.scale)));
        }
        u64::from(a)
    }

    /// Near branch: a canonical target in 64-bit mode, within the CS limit otherwise.
    #[inline(always)]
    fn near<const L: bool>(&mut self, target: u64) -> Res<()> {
        if L {
            if !crate::canonical(target) {
                return exc(13, 0);
            }
        } else if target > u64::from(self.s.seg[1].limit) {
            return exc(13, 0);
        }
        self.s.rip = target;
        Ok(())
    }

    /// Target of a relative branch whose displacement from the instruction start is `imm`.
    #[inline(always)]
    fn rel<const L: bool>(&self, imm: u32) -> u64 {
        if L {
            self.cur_eip.wrapping_add(imm as i32 as i64 as u64)
        } else {
            u64::from((self.cur_eip as u32).wrapping_add(imm))
        }
    }

    /// Execute a pre-decoded instruction. `self.s.rip` is already the next instruction's EIP and
    /// `self.cur_eip` this one's. Same contract as the generic `exec`.
    #[inline(always)]
    pub(crate) fn exec_fast<P: Platform + ?Sized>(&mut self, b: &mut Bus<P>, u: &Uop) -> Res<()> {
        match (u.long, u.q) {
            (false, _) => self.exec_fast_w::<P, 4, false>(b, u),
            (true, false) => self.exec_fast_w::<P, 4, true>(b, u),
            (true, true) => self.exec_fast_w::<P, 8, true>(b, u),
        }
    }

    /// [`Cpu::exec_fast`] for operand size `W` bytes in 64-bit mode (`L`) or 32-bit code.
    #[inline(always)]
    fn exec_fast_w<P: Platform + ?Sized, const W: u32, const L: bool>(&mut self, b: &mut Bus<P>, u: &Uop) -> Res<()> {
        // Stack slots: 8 bytes in 64-bit mode, 4 in 32-bit code.
        let sw: u32 = if L { 8 } else { 4 };
        match u.kind {
            Kind::Generic | Kind::Nop => {}
            Kind::Lift(_) => unreachable!("lift-only forms take the generic path (Kind::lift_only)"),
            Kind::MovRR => {
                let v = self.rw::<W>(u.s);
                self.ww::<W>(u.d, v);
            }
            Kind::MovRI => self.ww::<W>(u.d, Self::immw::<W>(u.imm)),
            Kind::MovRM => {
                let ea = self.uop_ea::<L>(u);
                let v = self.rd(b, u.seg as usize, ea, W)?;
                self.ww::<W>(u.d, v);
            }
            Kind::MovMR => {
                let ea = self.uop_ea::<L>(u);
                self.wr(b, u.seg as usize, ea, W, self.rw::<W>(u.s))?;
            }
            Kind::MovMI => {
                let ea = self.uop_ea::<L>(u);
                self.wr(b, u.seg as usize, ea, W, Self::immw::<W>(u.imm))?;
            }
            Kind::AluRR | Kind::AluRI => {
                let a = self.rw::<W>(u.d);
                let v = if u.kind == Kind::AluRR { self.rw::<W>(u.s) } else { Self::immw::<W>(u.imm) };
                let r = self.alu_w::<W>(alu_from(u.op), a, v);
                if u.op < 7 {
                    self.ww::<W>(u.d, r);
                }
            }
            Kind::AluRM => {
                let ea = self.uop_ea::<L>(u);
                let v = self.rd(b, u.seg as usize, ea, W)?;
                let a = self.rw::<W>(u.d);
                let r = self.alu_w::<W>(alu_from(u.op), a, v);
                if u.op < 7 {
                    self.ww::<W>(u.d, r);
                }
            }
            Kind::AluMR | Kind::AluMI => {
                let ea = self.uop_ea::<L>(u);
                let a = self.rd(b, u.seg as usize, ea, W)?;
                let v = if u.kind == Kind::AluMR { self.rw::<W>(u.s) } else { Self::immw::<W>(u.imm) };
                let r = self.alu_w::<W>(alu_from(u.op), a, v);
                if u.op < 7 {
                    self.wr(b, u.seg as usize, ea, W, r)?;
                }
            }
            Kind::ShiftRI if W == 8 => {
                let a = self.rw::<W>(u.d);
                let r = self.shift(shift_from(u.op), a, u64::from(u.imm), 8);
                self.ww::<W>(u.d, r);
            }
            Kind::ShiftRI => {
                let a = self.rw::<W>(u.d) as u32;
                let c = u.imm & 31;
                let r = match u.op {
                    4..=6 if c != 0 => {
                        // SHL/SHR/SAR r32, imm (count 1..=31) specialised; same flags as `shift`.
                        let (r, cf, of) = match u.op {
                            4 => {
                                let r = a << c;
                                let cf = (a >> (32 - c)) & 1;
                                (r, cf, (r >> 31) ^ cf)
                            }
                            5 => (a >> c, (a >> (c - 1)) & 1, a >> 31),
                            _ => (((a as i32) >> c) as u32, ((a as i32) >> (c - 1)) as u32 & 1, 0),
                        };
                        let mut f = u64::from(cf) | (u64::from(of) << 11) | flags::pf_bit(u64::from(r));
                        f |= u64::from(r >> 31) << 7;
                        if r == 0 {
                            f |= crate::ZF;
                        }
                        self.s.rflags = (self.s.rflags & !crate::STATUS) | f;
                        r
                    }
                    0 | 1 if c != 0 => {
                        // ROL/ROR r32, imm: only CF and OF change.
                        let (r, cf, of) = if u.op == 0 {
                            let r = a.rotate_left(c);
                            (r, r & 1, (r >> 31) ^ (r & 1))
                        } else {
                            let r = a.rotate_right(c);
                            (r, r >> 31, (r >> 31) ^ ((r >> 30) & 1))
                        };
                        let fl = self.s.rflags & !(crate::CF | crate::OF);
                        self.s.rflags = fl | u64::from(cf) | (u64::from(of) << 11);
                        r
                    }
                    _ => self.shift(shift_from(u.op), u64::from(a), u64::from(u.imm), 4) as u32,
                };
                self.ww::<W>(u.d, u64::from(r));
            }
            Kind::ShiftRCl => {
                let a = self.rw::<W>(u.d);
                let c = self.s.regs[1] & 0xff;
                let r = self.shift(shift_from(u.op), a, c, W);
                self.ww::<W>(u.d, r);
            }
            Kind::IncM | Kind::DecM => {
                let ea = self.uop_ea::<L>(u);
                let a = self.rd(b, u.seg as usize, ea, W)?;
                let cf = self.s.rflags & crate::CF;
                let r = self.alu_w::<W>(if u.kind == Kind::DecM { Alu::Sub } else { Alu::Add }, a, 1);
                self.s.rflags = (self.s.rflags & !crate::CF) | cf;
                // A faulting write: the step restores EFLAGS.
                self.wr(b, u.seg as usize, ea, W, r)?;
            }
            Kind::NegR => {
                let a = self.rw::<W>(u.d);
                let r = self.alu_w::<W>(Alu::Sub, 0, a);
                self.ww::<W>(u.d, r);
            }
            Kind::NotR => {
                let a = self.rw::<W>(u.d);
                self.ww::<W>(u.d, !a);
            }
            Kind::IncR | Kind::DecR => {
                let a = self.rw::<W>(u.d);
                let cf = self.s.rflags & crate::CF;
                let r = self.alu_w::<W>(if u.kind == Kind::DecR { Alu::Sub } else { Alu::Add }, a, 1);
                self.s.rflags = (self.s.rflags & !crate::CF) | cf;
                self.ww::<W>(u.d, r);
            }
            Kind::Lea => {
                let ea = self.uop_ea::<L>(u);
                self.ww::<W>(u.d, ea);
            }
            Kind::Jcc => {
                if self.cond(cc_from(u.op)) {
                    let t = self.rel::<L>(u.imm);
                    self.near::<L>(t)?;
                }
            }
            Kind::Jmp => {
                let t = self.rel::<L>(u.imm);
                self.near::<L>(t)?;
            }
            Kind::CallRel => {
                let t = self.rel::<L>(u.imm);
                let next = self.s.rip;
                self.push(b, next, sw)?;
                self.near::<L>(t)?;
            }
            Kind::Ret => {
                let t = self.peek(b, 0, sw)?;
                self.near::<L>(t)?;
                let sp = self.s.regs[4];
                self.set_sp(sp.wrapping_add(u64::from(sw)));
            }
            Kind::PushR => {
                let v = self.s.regs[u.s as usize] & crate::mem::mask(sw);
                self.push(b, v, sw)?;
            }
            Kind::PushI => {
                let v = if L { u.imm as i32 as i64 as u64 } else { u64::from(u.imm) };
                self.push(b, v, sw)?;
            }
            Kind::PopR => {
                let v = self.peek(b, 0, sw)?;
                let sp = self.s.regs[4];
                self.set_sp(sp.wrapping_add(u64::from(sw)));
                self.s.regs[u.d as usize] = v;
            }
            Kind::MovxRM => {
                let ea = self.uop_ea::<L>(u);
                let size = u32::from(u.op);
                let v = self.rd(b, u.seg as usize, ea, size)?;
                let v = if u.s != 0 { flags::sext(v, size) as u64 } else { v };
                self.ww::<W>(u.d, v);
            }
            Kind::MovxRR => {
                let size = u32::from(u.op);
                let v = self.s.regs[u.s as usize] & crate::mem::mask(size);
                let v = if u.imm != 0 { flags::sext(v, size) as u64 } else { v };
                self.ww::<W>(u.d, v);
            }
            Kind::MovR8M => {
                let ea = self.uop_ea::<L>(u);
                let v = self.rd(b, u.seg as usize, ea, 1)?;
                let r = &mut self.s.regs[u.d as usize];
                *r = (*r & !0xff) | v;
            }
            Kind::MovM8R => {
                let ea = self.uop_ea::<L>(u);
                let v = self.s.regs[u.s as usize] & 0xff;
                self.wr(b, u.seg as usize, ea, 1, v)?;
            }
            Kind::MovM8I => {
                let ea = self.uop_ea::<L>(u);
                self.wr(b, u.seg as usize, ea, 1, u64::from(u.imm))?;
            }
            Kind::AluM8I => {
                let ea = self.uop_ea::<L>(u);
                let a = self.rd(b, u.seg as usize, ea, 1)?;
                let r = self.alu(alu_from(u.op), a, u64::from(u.imm), 1);
                if u.op < 7 {
                    self.wr(b, u.seg as usize, ea, 1, r)?;
                }
            }
            Kind::AluR8R => {
                let a = self.s.regs[u.d as usize] & 0xff;
                let v = self.s.regs[u.s as usize] & 0xff;
                let r = self.alu(alu_from(u.op), a, v, 1);
                if u.op < 7 {
                    let x = &mut self.s.regs[u.d as usize];
                    *x = (*x & !0xff) | r;
                }
            }
            Kind::MovR8R => {
                let v = self.s.regs[u.s as usize] & 0xff;
                let x = &mut self.s.regs[u.d as usize];
                *x = (*x & !0xff) | v;
            }
            Kind::AluR8I => {
                let a = self.s.regs[u.d as usize] & 0xff;
                let r = self.alu(alu_from(u.op), a, u64::from(u.imm), 1);
                if u.op < 7 {
                    let x = &mut self.s.regs[u.d as usize];
                    *x = (*x & !0xff) | r;
                }
            }
            Kind::CallR | Kind::JmpR | Kind::CallM | Kind::JmpM => {
                let t = if matches!(u.kind, Kind::CallR | Kind::JmpR) {
                    self.s.regs[u.s as usize] & crate::mem::mask(sw)
                } else {
                    let ea = self.uop_ea::<L>(u);
                    self.rd(b, u.seg as usize, ea, sw)?
                };
                if matches!(u.kind, Kind::CallR | Kind::CallM) {
                    let next = self.s.rip;
                    self.push(b, next, sw)?;
                }
                self.near::<L>(t)?;
            }
            Kind::SetccR8 => {
                let v = u64::from(self.cond(cc_from(u.op)));
                let x = &mut self.s.regs[u.d as usize];
                *x = (*x & !0xff) | v;
            }
            Kind::CmovRR => {
                if self.cond(cc_from(u.op)) {
                    let v = self.rw::<W>(u.s);
                    self.ww::<W>(u.d, v);
                } else if L && W == 4 {
                    // A 32-bit CMOVcc clears the upper half even when it does not move (SDM).
                    let v = self.rw::<W>(u.d);
                    self.ww::<W>(u.d, v);
                }
            }
            Kind::CmovRM => {
                // The source is read (and may fault) whatever the condition.
                let ea = self.uop_ea::<L>(u);
                let v = self.rd(b, u.seg as usize, ea, W)?;
                if self.cond(cc_from(u.op)) {
                    self.ww::<W>(u.d, v);
                } else if L && W == 4 {
                    let v = self.rw::<W>(u.d);
                    self.ww::<W>(u.d, v);
                }
            }
            Kind::ImulRRI | Kind::ImulRR if W == 8 => {
                let a = i128::from(self.s.regs[u.s as usize] as i64);
                let v = if u.kind == Kind::ImulRRI {
                    i128::from(u.imm as i32)
                } else {
                    i128::from(self.s.regs[u.d as usize] as i64)
                };
                let full = a * v;
                let r = full as u64;
                let ovf = i128::from(r as i64) != full;
                let f = Self::szp(r, 8) | if ovf { crate::CF | crate::OF } else { 0 };
                self.set_status(f);
                self.s.regs[u.d as usize] = r;
            }
            Kind::ImulRRI | Kind::ImulRR => {
                let a = i64::from(self.s.regs[u.s as usize] as u32 as i32);
                let v = if u.kind == Kind::ImulRRI {
                    i64::from(u.imm as i32)
                } else {
                    i64::from(self.s.regs[u.d as usize] as u32 as i32)
                };
                let full = a * v;
                let r = full as u32;
                let ovf = i64::from(r as i32) != full;
                let f = Self::szp(u64::from(r), 4) | if ovf { crate::CF | crate::OF } else { 0 };
                self.set_status(f);
                self.ww::<W>(u.d, u64::from(r));
            }
        }
        Ok(())
    }
}
