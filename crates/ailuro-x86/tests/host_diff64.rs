//! Differential test of the 64-bit-mode integer instruction set against the host CPU.
//!
//! Random byte strings (biased towards REX, 0x66, 0x67, 0x0f and the common opcodes) are decoded
//! as 64-bit code with iced-x86; those that are user-mode, non-control-flow integer instructions
//! run natively on the x86-64 host and, from the same state, in the interpreter in 64-bit mode
//! (4-level paging, 2 MiB pages). Both sides run the same bytes at the same virtual address, so
//! RIP-relative operands mean the same thing; their displacement (and that of absolute `[disp32]`
//! and `moffs` operands) is patched so that the operand lands in a shared buffer. All 16
//! registers but RSP (full 64 bits), the architecturally defined flags and two shared data
//! buffers (mapped at the same virtual addresses on both sides: one below 4 GiB for 32-bit
//! addressing, one far above it, each straddling a page boundary that is a 2 MiB page boundary
//! on the interpreter side with non-adjacent physical pages behind it) must be identical.
//! Results and flags the Intel SDM calls undefined are masked. The filtered instructions cannot
//! fault on the host, so any exception in the interpreter is a failure, except DIV/IDIV, whose #DE
//! is predicted (and then neither side runs). A panic in the interpreter is reported as a failure.
//!
//! `AILURO_DIFF64_ITERS` sets the number of instructions tested (default 800000, about 6 s in
//! release);
//! `AILURO_DIFF64_SEED` the random seed; `AILURO_DIFF64_SKIP` a comma-separated list of mnemonic
//! prefixes (iced names, e.g. `Cmov,Bt`) not to test; `AILURO_DIFF_VERBOSE` prints every
//! instruction.

#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::collections::BTreeMap;

mod host;

use ailuro_x86::{Cpu, CpuConfig, CpuModel, Gpr, GuestRam, RunExit};
use host::{map_fixed, NoDevices};
use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

const MB2: u64 = 0x20_0000;
/// A 2 MiB-aligned address; the instruction is placed just below or at it, so that it sometimes
/// straddles the page boundary. The host maps one 4 KiB page on each side of it.
const CODE_EDGE: u64 = 0x3f12_3440_0000;
/// Data buffer far above 4 GiB, within RIP-relative reach (1 GiB below) of the code.
const BUF_HI: u64 = 0x3f11_f440_0000 - 0x1000;
/// Data buffer below 4 GiB (reachable with 32-bit addressing and `[disp32]`), straddling 1 GiB.
const BUF_LO: u64 = 0x4000_0000 - 0x1000;
const BUF_LEN: u64 = 0x2000;
/// Interpreter-only stack (not used by the tested instructions).
const STACK_TOP: u64 = 0x0110_0000;
/// Guest-physical address of the PML4.
const PML4: u64 = 0x1000;
/// 2 MiB pages of the interpreter: virtual -> physical (deliberately not in address order).
const MAPPINGS: [(u64, u64); 7] = [
    (CODE_EDGE - MB2, 0x0020_0000),
    (CODE_EDGE, 0x0060_0000),
    (BUF_HI & !(MB2 - 1), 0x00a0_0000),
    ((BUF_HI & !(MB2 - 1)) + MB2, 0x0080_0000),
    (BUF_LO & !(MB2 - 1), 0x00c0_0000),
    ((BUF_LO & !(MB2 - 1)) + MB2, 0x00e0_0000),
    (0x0100_0000, 0x0100_0000),
];
const RAM_SIZE: u64 = 0x0200_0000;

/// Host stub layout (all inside the two host pages around `CODE_EDGE`).
const STUB_ENTRY: u64 = CODE_EDGE - 0x1000;
/// Where the stub's prologue keeps the `Regs` pointer while the instruction runs.
const STUB_SCRATCH: u64 = CODE_EDGE + 0xf00;
const STUB_EPILOGUE: u64 = CODE_EDGE + 0x400;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Regs {
    r: [u64; 16],
    flags: u64,
}

const GPRS: [Gpr; 16] = [
    Gpr::Rax,
    Gpr::Rcx,
    Gpr::Rdx,
    Gpr::Rbx,
    Gpr::Rsp,
    Gpr::Rbp,
    Gpr::Rsi,
    Gpr::Rdi,
    Gpr::R8,
    Gpr::R9,
    Gpr::R10,
    Gpr::R11,
    Gpr::R12,
    Gpr::R13,
    Gpr::R14,
    Gpr::R15,
];
const RCX: usize = 1;
const RBX: usize = 3;
const RSP: usize = 4;
const RSI: usize = 6;
const RDI: usize = 7;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Register values that exercise edge cases often.
    fn value(&mut self) -> u64 {
        let v = self.next();
        match v % 13 {
            0 => 0,
            1 => u64::MAX,
            2 => 0xffff_ffff,
            3 => 0x8000_0000,
            4 => 0x8000_0000_0000_0000,
            5 => 0x7fff_ffff_ffff_ffff,
            6 => {
                const EDGE: [u64; 8] = [0x80, 0x7f, 0x8000, 0x7fff, 0xff, 0xffff, 0x1_0000_0000, 0xffff_ffff_0000_0000];
                EDGE[((v >> 8) % 8) as usize]
            }
            7 => v >> 60,
            8 => (v >> 8) & 0xff,
            9 => v & 0xffff_ffff,
            10 => (v >> 16) & 0xffff,
            // Random upper half, edge-case lower half.
            11 => (v & 0xffff_ffff_0000_0000) | [0, 0xffff_ffff, 0x8000_0000, 1][((v >> 4) % 4) as usize],
            _ => v,
        }
    }
}

const CF: u64 = 1;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const DF: u64 = 1 << 10;
const OF: u64 = 1 << 11;
const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
const CHECKED: u64 = STATUS | DF;

/// Width in bits of operand 0 (the destination of every tested instruction that has one).
fn op0_bits(i: &Instruction) -> u64 {
    if i.op_count() == 0 {
        return 0;
    }
    let bytes = match i.op_kind(0) {
        OpKind::Register => i.op_register(0).size(),
        _ => i.memory_size().size(),
    };
    8 * bytes as u64
}

/// The masked shift/rotate count of a shift, rotate or double shift (`None` for other
/// instructions).
fn shift_count(i: &Instruction, regs: &Regs) -> Option<u64> {
    use Mnemonic as M;
    let n = match i.mnemonic() {
        M::Shld | M::Shrd => 2,
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr => 1,
        _ => return None,
    };
    let raw = match i.op_kind(n) {
        OpKind::Register => regs.r[RCX] & 0xff,
        OpKind::Immediate8 => u64::from(i.immediate8()),
        k => panic!("unexpected count operand {k:?} in {i}"),
    };
    Some(raw & if op0_bits(i) == 64 { 63 } else { 31 })
}

/// Flags an instruction leaves undefined (Intel SDM), given the masked shift/rotate count.
fn undefined_flags(i: &Instruction, count: Option<u64>) -> u64 {
    use Mnemonic as M;
    let count = count.unwrap_or(1);
    let bits = op0_bits(i);
    match i.mnemonic() {
        M::Mul | M::Imul => SF | ZF | AF | PF,
        M::Div | M::Idiv => STATUS,
        M::And | M::Or | M::Xor | M::Test => AF,
        // SDM SHLD/SHRD: OF undefined for counts above 1, AF whenever a shift occurs, everything
        // when the count exceeds the operand size.
        M::Shld | M::Shrd => match count {
            0 => 0,
            1 => AF,
            c if c > bits => STATUS,
            _ => AF | OF,
        },
        // SDM SAL/SAR/SHL/SHR: CF undefined for SHL/SHR when count >= size.
        M::Shl | M::Sal | M::Shr | M::Sar => {
            let cf = if i.mnemonic() != M::Sar && count >= bits { CF } else { 0 };
            match count {
                0 => 0,
                1 => AF | cf,
                _ => AF | OF | cf,
            }
        }
        // SDM RCL/RCR/ROL/ROR: OF is defined only for 1-bit rotates; a 0-bit rotate affects no
        // flags.
        M::Rol | M::Ror | M::Rcl | M::Rcr => {
            if count <= 1 {
                0
            } else {
                OF
            }
        }
        M::Bsf | M::Bsr => CF | OF | SF | AF | PF,
        M::Bt | M::Bts | M::Btr | M::Btc => OF | SF | AF | PF,
        _ => 0,
    }
}

fn is_string(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Movsb
            | M::Movsw
            | M::Movsd
            | M::Movsq
            | M::Stosb
            | M::Stosw
            | M::Stosd
            | M::Stosq
            | M::Lodsb
            | M::Lodsw
            | M::Lodsd
            | M::Lodsq
            | M::Cmpsb
            | M::Cmpsw
            | M::Cmpsd
            | M::Cmpsq
            | M::Scasb
            | M::Scasw
            | M::Scasd
            | M::Scasq
    )
}

fn allowed(m: Mnemonic) -> bool {
    use Mnemonic as M;
    is_string(m)
        || matches!(
            m,
            M::Add
                | M::Adc
                | M::Sub
                | M::Sbb
                | M::And
                | M::Or
                | M::Xor
                | M::Cmp
                | M::Test
                | M::Inc
                | M::Dec
                | M::Neg
                | M::Not
                | M::Mul
                | M::Imul
                | M::Div
                | M::Idiv
                | M::Shl
                | M::Sal
                | M::Shr
                | M::Sar
                | M::Rol
                | M::Ror
                | M::Rcl
                | M::Rcr
                | M::Shld
                | M::Shrd
                | M::Bt
                | M::Bts
                | M::Btr
                | M::Btc
                | M::Bsf
                | M::Bsr
                | M::Bswap
                | M::Mov
                | M::Movzx
                | M::Movsx
                | M::Movsxd
                | M::Lea
                | M::Xchg
                | M::Xadd
                | M::Cmpxchg
                | M::Cmovo
                | M::Cmovno
                | M::Cmovb
                | M::Cmovae
                | M::Cmove
                | M::Cmovne
                | M::Cmovbe
                | M::Cmova
                | M::Cmovs
                | M::Cmovns
                | M::Cmovp
                | M::Cmovnp
                | M::Cmovl
                | M::Cmovge
                | M::Cmovle
                | M::Cmovg
                | M::Seto
                | M::Setno
                | M::Setb
                | M::Setae
                | M::Sete
                | M::Setne
                | M::Setbe
                | M::Seta
                | M::Sets
                | M::Setns
                | M::Setp
                | M::Setnp
                | M::Setl
                | M::Setge
                | M::Setle
                | M::Setg
                | M::Cbw
                | M::Cwde
                | M::Cdqe
                | M::Cwd
                | M::Cdq
                | M::Cqo
                | M::Clc
                | M::Stc
                | M::Cmc
                | M::Cld
                | M::Std
                | M::Lahf
                | M::Sahf
                | M::Xlatb
                | M::Nop
        )
}

/// Index (in `Regs::r`) of the 64-bit register containing `r`, if it is a GPR.
fn gpr_index(r: Register) -> Option<usize> {
    if !r.is_gpr() {
        return None;
    }
    let full = r.full_register();
    Some(full as usize - Register::RAX as usize)
}

fn reg_value(regs: &Regs, r: Register) -> Option<u64> {
    let v = regs.r[gpr_index(r)?];
    Some(match r.size() {
        1 if (Register::AH..=Register::BH).contains(&r) => (v >> 8) & 0xff,
        1 => v & 0xff,
        2 => v & 0xffff,
        4 => v & 0xffff_ffff,
        _ => v,
    })
}

/// Store `v` into the part of its 64-bit register that `r` names, keeping the other bits.
fn set_reg_part(regs: &mut Regs, r: Register, v: u64) {
    let i = gpr_index(r).unwrap();
    let mask = if r.size() == 8 { u64::MAX } else { reg_mask(r) & ((1u64 << (8 * r.size())) - 1) };
    let shift = if (Register::AH..=Register::BH).contains(&r) { 8 } else { 0 };
    let mask = if shift == 8 { 0xff00 } else { mask };
    regs.r[i] = (regs.r[i] & !mask) | ((v << shift) & mask);
}

/// Bits of the 64-bit register holding `r` that a write to `r` covers.
fn reg_mask(r: Register) -> u64 {
    match r.size() {
        1 if (Register::AH..=Register::BH).contains(&r) => 0xff00,
        1 => 0xff,
        2 => 0xffff,
        // 32-bit writes zero-extend: an undefined 32-bit result leaves all 64 bits undefined.
        _ => u64::MAX,
    }
}

/// Address of memory operand `n` in `regs`' state.
fn operand_address(i: &Instruction, n: u32, regs: &Regs) -> Option<u64> {
    i.virtual_address(n, 0, |r, _, _| if r.is_segment_register() { Some(0) } else { reg_value(regs, r) })
}

fn is_memory(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Memory
            | OpKind::MemorySegRSI
            | OpKind::MemorySegESI
            | OpKind::MemorySegRDI
            | OpKind::MemorySegEDI
            | OpKind::MemoryESRDI
            | OpKind::MemoryESEDI
            | OpKind::MemorySegSI
            | OpKind::MemorySegDI
            | OpKind::MemoryESDI
    )
}

/// The buffer `[lo, hi)` lies in, if any.
fn in_buffer(lo: i128, hi: i128) -> bool {
    [BUF_LO, BUF_HI].iter().any(|&b| lo >= b as i128 && hi <= (b + BUF_LEN) as i128)
}

/// Value of operand `n` (a register or a memory operand in one of the buffers) before the
/// instruction runs.
fn operand_value(i: &Instruction, n: u32, regs: &Regs, bufs: &[&mut [u8]; 2]) -> u64 {
    if i.op_kind(n) == OpKind::Register {
        return reg_value(regs, i.op_register(n)).unwrap();
    }
    let a = operand_address(i, n, regs).unwrap();
    let (k, base) = if a >= BUF_HI { (1, BUF_HI) } else { (0, BUF_LO) };
    let at = (a - base) as usize;
    let size = i.memory_size().size();
    let mut v = [0u8; 8];
    v[..size].copy_from_slice(&bufs[k][at..at + size]);
    u64::from_le_bytes(v)
}

/// Whether DIV/IDIV raise #DE (divisor 0 or quotient out of range) from this state.
fn divide_faults(i: &Instruction, regs: &Regs, bufs: &[&mut [u8]; 2]) -> bool {
    let bits = op0_bits(i) as u32;
    let divisor = operand_value(i, 0, regs, bufs);
    let m = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let dividend: u128 = match bits {
        8 => u128::from(regs.r[0] & 0xffff),
        _ => (u128::from(regs.r[2] & m) << bits) | u128::from(regs.r[0] & m),
    };
    if divisor == 0 {
        return true;
    }
    if i.mnemonic() == Mnemonic::Div {
        dividend / u128::from(divisor) > u128::from(m)
    } else {
        // Sign-extend the 2N-bit dividend and the N-bit divisor.
        let sx = |v: u128, w: u32| ((v << (128 - w)) as i128) >> (128 - w);
        let q = sx(dividend, 2 * bits).checked_div(sx(u128::from(divisor), bits));
        let lim = 1i128 << (bits - 1);
        !q.is_some_and(|q| (-lim..lim).contains(&q))
    }
}

/// Build the host stub's fixed parts at `STUB_ENTRY` and `STUB_EPILOGUE`. The prologue saves the
/// SysV callee-saved registers, stores the `Regs` pointer at `STUB_SCRATCH`, loads RFLAGS and
/// all registers but RSP, and jumps through the address at the end of the prologue (patched per
/// instruction). The instruction is followed by a jump to the epilogue, which stores everything
/// back, clears DF and returns.
fn host_stub_parts() -> (Vec<u8>, Vec<u8>) {
    let regs64 = [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15];
    let callee_saved = [rbx, rbp, r12, r13, r14, r15];
    let mut a = CodeAssembler::new(64).unwrap();
    for r in callee_saved {
        a.push(r).unwrap();
    }
    a.mov(rax, STUB_SCRATCH).unwrap();
    a.mov(qword_ptr(rax), rdi).unwrap();
    a.push(qword_ptr(rdi + 128)).unwrap();
    a.popfq().unwrap();
    for (n, r) in regs64.iter().enumerate() {
        if n != RSP && n != RDI {
            a.mov(*r, qword_ptr(rdi + 8 * n as i32)).unwrap();
        }
    }
    a.mov(rdi, qword_ptr(rdi + 8 * RDI as i32)).unwrap();
    let mut pro = a.assemble(STUB_ENTRY).unwrap();
    // jmp qword ptr [rip+0], followed by the 8-byte target.
    pro.extend_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
    pro.extend_from_slice(&[0; 8]);

    let mut a = CodeAssembler::new(64).unwrap();
    a.pushfq().unwrap();
    a.push(rax).unwrap();
    a.mov(rax, STUB_SCRATCH).unwrap();
    a.mov(rax, qword_ptr(rax)).unwrap();
    a.pop(qword_ptr(rax)).unwrap();
    a.pop(qword_ptr(rax + 128)).unwrap();
    for (n, r) in regs64.iter().enumerate() {
        if n != RSP && n != 0 {
            a.mov(qword_ptr(rax + 8 * n as i32), *r).unwrap();
        }
    }
    a.cld().unwrap();
    for r in callee_saved.iter().rev() {
        a.pop(*r).unwrap();
    }
    a.ret().unwrap();
    let epi = a.assemble(STUB_EPILOGUE).unwrap();
    (pro, epi)
}

struct Host {
    code: *mut u8,
    prologue_len: usize,
}

impl Host {
    fn new() -> Host {
        let code = map_fixed(STUB_ENTRY, 0x2000, libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC);
        let (pro, epi) = host_stub_parts();
        assert!(pro.len() < 0xf00 && epi.len() < 0xb00);
        // SAFETY: both parts fit in the 8 KiB RWX mapping (asserted above), at offsets 0 and
        // 0x1400.
        unsafe {
            std::ptr::copy_nonoverlapping(pro.as_ptr(), code, pro.len());
            std::ptr::copy_nonoverlapping(epi.as_ptr(), code.add((STUB_EPILOGUE - STUB_ENTRY) as usize), epi.len());
        }
        Host { code, prologue_len: pro.len() }
    }

    /// Run `insn` (placed at `addr`, just around `CODE_EDGE`) from `regs`.
    fn run(&self, insn: &[u8], addr: u64, regs: &mut Regs) {
        assert!(addr >= CODE_EDGE - 0x100 && addr + insn.len() as u64 + 14 <= STUB_EPILOGUE);
        let off = (addr - STUB_ENTRY) as usize;
        // SAFETY: every write stays inside the 8 KiB RWX mapping (the instruction and its jump
        // lie between the prologue and the epilogue, asserted above). The stub follows the SysV
        // ABI (saves rbx, rbp, r12-r15, leaves RSP and DF as it found them); the instruction was
        // checked to touch only the shared buffers and registers other than RSP, and to raise
        // no exception in the interpreter.
        unsafe {
            let target = self.code.add(self.prologue_len - 8);
            std::ptr::copy_nonoverlapping(addr.to_le_bytes().as_ptr(), target, 8);
            let at = self.code.add(off);
            std::ptr::copy_nonoverlapping(insn.as_ptr(), at, insn.len());
            let mut jmp = [0xff, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            jmp[6..].copy_from_slice(&STUB_EPILOGUE.to_le_bytes());
            std::ptr::copy_nonoverlapping(jmp.as_ptr(), at.add(insn.len()), jmp.len());
            let f: extern "C" fn(*mut Regs) = std::mem::transmute(self.code);
            f(regs as *mut Regs);
        }
    }
}

/// Guest-physical address of the interpreter's virtual address `v` (which must be mapped).
fn phys(v: u64) -> u64 {
    let (vp, pp) = MAPPINGS.iter().find(|(vp, _)| v & !(MB2 - 1) == *vp).expect("unmapped address");
    pp + (v - vp)
}

/// The part of `[v, v + len)` up to the next 2 MiB boundary.
fn first_chunk(v: u64, len: usize) -> usize {
    ((MB2 - (v & (MB2 - 1))) as usize).min(len)
}

fn virt_write(ram: &mut GuestRam, v: u64, bytes: &[u8]) {
    let (a, b) = bytes.split_at(first_chunk(v, bytes.len()));
    ram.write(phys(v), a).unwrap();
    if !b.is_empty() {
        ram.write(phys(v + a.len() as u64), b).unwrap();
    }
}

fn virt_read(ram: &GuestRam, v: u64, out: &mut [u8]) {
    let (a, b) = out.split_at_mut(first_chunk(v, out.len()));
    ram.read(phys(v), a).unwrap();
    if !b.is_empty() {
        ram.read(phys(v + a.len() as u64), b).unwrap();
    }
}

fn build_page_tables(ram: &mut GuestRam) {
    let mut next = PML4 + 0x1000;
    for &(v, p) in MAPPINGS.iter() {
        let idx = [(v >> 39) & 511, (v >> 30) & 511, (v >> 21) & 511];
        let mut table = PML4;
        for i in idx.iter().take(2) {
            let ea = table + i * 8;
            let e = ram.read_u64(ea).unwrap();
            table = if e & 1 == 0 {
                let t = next;
                next += 0x1000;
                ram.write_u64(ea, t | 7).unwrap();
                t
            } else {
                e & 0x000f_ffff_ffff_f000
            };
        }
        ram.write_u64(table + idx[2] * 8, p | 0x80 | 7).unwrap();
    }
    assert!(next <= 0x0020_0000);
}

/// Random instruction bytes: prefixes (REX, 0x66, 0x67, REP, segment) and a biased opcode.
fn random_bytes(rng: &mut Rng) -> [u8; 15] {
    // The opcode first (empty: a random byte), then the prefixes that suit it.
    let mut opcode = Vec::with_capacity(2);
    match rng.below(10) {
        0..=2 => {
            opcode.push(0x0f);
            if rng.below(2) == 0 {
                const HOT0F: [u8; 24] = [
                    0xaf, 0xa3, 0xab, 0xb3, 0xbb, 0xba, 0xbc, 0xbd, 0xbe, 0xbf, 0xb6, 0xb7, 0xa4, 0xa5, 0xac, 0xad,
                    0xb0, 0xb1, 0xc0, 0xc1, 0xc8, 0xcc, 0x1f, 0x44,
                ];
                let op = HOT0F[rng.below(24) as usize];
                // Spread the cmov/setcc/bswap families over their condition codes/registers.
                opcode.push(match op {
                    0x44 => [0x40, 0x90][rng.below(2) as usize] | rng.below(16) as u8,
                    0xc8 | 0xcc => 0xc8 | rng.below(8) as u8,
                    x => x,
                });
            }
        }
        3..=5 => {
            const HOT: [u8; 40] = [
                0xf6, 0xf7, 0xd0, 0xd1, 0xd2, 0xd3, 0xc0, 0xc1, 0x69, 0x6b, 0x63, 0x98, 0x99, 0xa4, 0xa5, 0xa6, 0xa7,
                0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf, 0xd7, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8d, 0x80, 0x81, 0x83,
                0x84, 0x85, 0xc6, 0xc7, 0xfe, 0xa1,
            ];
            opcode.push(HOT[rng.below(40) as usize]);
        }
        // mov r, imm (imm64 with REX.W), xchg r, rAX.
        6 => opcode.push([0xb0, 0xb8, 0x90][rng.below(3) as usize] | rng.below(8) as u8),
        _ => {}
    }
    let string = matches!(opcode[..], [0xa4..=0xa7] | [0xaa..=0xaf]);

    let mut bytes = Vec::with_capacity(15);
    if rng.below(8) == 0 {
        // A REX that a following legacy prefix cancels.
        bytes.push(0x40 | rng.below(16) as u8);
    }
    if rng.below(16) == 0 {
        const SEG: [u8; 4] = [0x26, 0x2e, 0x36, 0x3e];
        bytes.push(SEG[rng.below(4) as usize]);
    }
    if rng.below(20) == 0 {
        bytes.push(0xf0);
    }
    if rng.below(4) == 0 {
        bytes.push(0x66);
    }
    if rng.below(6) == 0 {
        bytes.push(0x67);
    }
    if rng.below(if string { 2 } else { 10 }) == 0 {
        bytes.push(if rng.below(2) == 0 { 0xf3 } else { 0xf2 });
    }
    if rng.below(3) != 0 {
        // REX.W half of the time.
        let w = if rng.below(2) == 0 { 8 } else { 0 };
        bytes.push(0x40 | w | rng.below(8) as u8);
    }
    bytes.extend_from_slice(&opcode);
    // The ModRM byte: often register-direct (register operands), sometimes RIP-relative.
    match rng.below(8) {
        0..=2 => bytes.push(0xc0 | rng.below(64) as u8),
        3 => bytes.push(0x05 | (rng.below(8) as u8) << 3),
        _ => {}
    }
    let mut out = [0u8; 15];
    for (n, b) in out.iter_mut().enumerate() {
        *b = bytes.get(n).copied().unwrap_or(rng.next() as u8);
    }
    out
}

#[derive(Default)]
struct Stats {
    tested: u64,
    rip_relative: u64,
    absolute: u64,
    addr32: u64,
    high_byte: u64,
    extended: u64,
    page_crossing_code: u64,
    locked: u64,
    by_size: [u64; 4],
}

#[test]
fn integer_instructions_match_the_host_cpu_in_64_bit_mode() {
    let iters: u64 = std::env::var("AILURO_DIFF64_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(800_000);
    let seed: u64 =
        std::env::var("AILURO_DIFF64_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x2545_f491_4f6c_dd1d);
    let verbose = std::env::var_os("AILURO_DIFF_VERBOSE").is_some();
    let skip: Vec<String> = std::env::var("AILURO_DIFF64_SKIP")
        .map(|v| v.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let split_lock_detect = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "split_lock_detect"))
    });
    let started = std::time::Instant::now();
    let lo_ptr = map_fixed(BUF_LO, BUF_LEN, libc::PROT_READ | libc::PROT_WRITE);
    let hi_ptr = map_fixed(BUF_HI, BUF_LEN, libc::PROT_READ | libc::PROT_WRITE);
    // SAFETY: just mapped, exclusively ours for the life of the process; only the host
    // instruction (inside `Host::run`) accesses them otherwise, never concurrently.
    let mut bufs: [&mut [u8]; 2] = unsafe {
        [
            std::slice::from_raw_parts_mut(lo_ptr, BUF_LEN as usize),
            std::slice::from_raw_parts_mut(hi_ptr, BUF_LEN as usize),
        ]
    };
    let host = Host::new();
    let mut rng = Rng(seed | 1);
    let mut ram = GuestRam::new(0, RAM_SIZE).unwrap();
    build_page_tables(&mut ram);
    let mut st = Stats::default();
    let mut per_mnemonic = BTreeMap::<String, u64>::new();
    let mut faulted = BTreeMap::<String, u64>::new();
    let mut failures = Vec::new();
    let mut failed_by = BTreeMap::<String, u64>::new();
    let mut tries = 0u64;
    let mut cpu_slot: Option<Cpu> = None;
    let mut cpu_uses = 0u32;
    while st.tested < iters && tries < iters * 400 {
        tries += 1;
        let mut bytes = random_bytes(&mut rng);
        // Mostly at the 2 MiB boundary or just after; sometimes straddling it.
        let addr = if rng.below(4) == 0 { CODE_EDGE - 1 - rng.below(14) } else { CODE_EDGE + rng.below(16) };
        let mut dec = Decoder::with_ip(64, &bytes, addr, DecoderOptions::NONE);
        let insn = dec.decode();
        // Where the displacement is, for patching (the decoder must have decoded `insn` last).
        let co = dec.get_constant_offsets(&insn);
        if insn.is_invalid() || !allowed(insn.mnemonic()) {
            continue;
        }
        let name = format!("{:?}", insn.mnemonic());
        if skip.iter().any(|p| name.starts_with(p.as_str())) {
            continue;
        }
        // FS/GS have a base on the host (TLS); CS/DS/ES/SS prefixes are ignored in 64-bit mode.
        if matches!(insn.segment_prefix(), Register::FS | Register::GS) {
            continue;
        }
        // Register operands: GPRs other than RSP only (no segment, control, SSE registers).
        let bad_reg = (0..insn.op_count()).any(|n| {
            insn.op_kind(n) == OpKind::Register
                && (!insn.op_register(n).is_gpr() || insn.op_register(n).full_register() == Register::RSP)
        }) || insn.memory_base().full_register() == Register::RSP
            || insn.memory_index().full_register() == Register::RSP;
        if bad_reg {
            continue;
        }
        // SSE CMPSD/MOVSD are excluded by the register check; this catches any leftover form.
        if is_string(insn.mnemonic()) && insn.op_count() > 2 {
            continue;
        }
        let len = insn.len();
        let addr32 = bytes[..len]
            .iter()
            .take_while(|b| {
                matches!(b, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf2 | 0xf3 | 0x40..=0x4f)
            })
            .any(|&b| b == 0x67);
        let mem_op = (0..insn.op_count()).find(|&n| insn.op_kind(n) == OpKind::Memory);
        let no_access = matches!(insn.mnemonic(), Mnemonic::Lea | Mnemonic::Nop);

        // Buffer the memory operands aim at: 32-bit addresses can only reach the low one.
        let region = if addr32 || rng.below(2) == 0 { BUF_LO } else { BUF_HI };
        let target = |rng: &mut Rng, region: u64| {
            if rng.below(3) == 0 {
                region + 0x1000 - rng.below(8)
            } else {
                region + 0x800 + rng.below(0x800)
            }
        };

        // RIP-relative, absolute [disp32] and moffs operands: patch the displacement so that the
        // operand lands in a buffer.
        let mut kind_rip = false;
        let mut kind_abs = false;
        let insn = match mem_op {
            Some(_)
                if matches!(insn.memory_base(), Register::None | Register::RIP | Register::EIP)
                    && insn.memory_index() == Register::None =>
            {
                if !co.has_displacement() {
                    continue;
                }
                let (off, size) = (co.displacement_offset(), co.displacement_size());
                let next = addr + len as u64;
                let disp = match insn.memory_base() {
                    Register::RIP => {
                        kind_rip = true;
                        target(&mut rng, BUF_HI).wrapping_sub(next)
                    }
                    Register::EIP => {
                        kind_rip = true;
                        target(&mut rng, BUF_LO).wrapping_sub(next) & 0xffff_ffff
                    }
                    _ => {
                        kind_abs = true;
                        // A 4-byte displacement is sign-extended (or zero-extended with 0x67):
                        // the low buffer; an 8-byte moffs reaches both.
                        target(&mut rng, if size == 8 { region } else { BUF_LO })
                    }
                };
                bytes[off..off + size].copy_from_slice(&disp.to_le_bytes()[..size]);
                let again = Decoder::with_ip(64, &bytes, addr, DecoderOptions::NONE).decode();
                if again.code() != insn.code() || again.len() != len {
                    continue;
                }
                again
            }
            _ => insn,
        };

        // Random state.
        let mut regs = Regs::default();
        for n in 0..16 {
            regs.r[n] = rng.value();
        }
        regs.r[RSP] = 0;
        regs.flags = (rng.next() & STATUS) | if rng.below(4) == 0 { DF } else { 0 } | 2;
        // With 32-bit addressing, random upper halves in the address registers must be ignored.
        let hi32 = |rng: &mut Rng| if addr32 && rng.below(2) == 0 { rng.next() << 32 } else { 0 };

        let m = insn.mnemonic();
        let bt_reg = matches!(m, Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc)
            && insn.op_kind(0) == OpKind::Memory
            && insn.op_kind(1) == OpKind::Register;
        if bt_reg && rng.below(2) == 0 {
            // A bit offset that stays near the operand (possibly negative).
            let r = gpr_index(insn.op_register(1)).unwrap();
            regs.r[r] = (rng.below(0x2000) as i64 - 0x1000) as u64;
        }
        if matches!(m, Mnemonic::Div | Mnemonic::Idiv) && insn.op_kind(0) == OpKind::Register && rng.below(3) == 0 {
            // The edges of #DE: the most negative dividends, quotients just in or out of range.
            let bits = op0_bits(&insn) as u32;
            let dividend: i128 = match rng.below(4) {
                0 => -(1i128 << (2 * bits - 1)),
                1 => -(1i128 << (bits - 1)),
                2 => (1i128 << (bits - 1)) - 1,
                _ => (1i128 << bits) - 1,
            } + rng.below(3) as i128
                - 1;
            let divisor: i64 = [-1, 1, 2, -2][rng.below(4) as usize];
            let regs16 = [Register::AX, Register::DX];
            if bits == 8 {
                set_reg_part(&mut regs, Register::AX, dividend as u64);
            } else {
                let m = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
                for (n, r) in [0usize, 2].iter().enumerate() {
                    let part = ((dividend >> (bits as usize * n)) as u64) & m;
                    if bits == 16 {
                        set_reg_part(&mut regs, regs16[n], part);
                    } else if bits == 32 {
                        regs.r[*r] = (regs.r[*r] & !m) | part;
                    } else {
                        regs.r[*r] = part;
                    }
                }
            }
            set_reg_part(&mut regs, insn.op_register(0), divisor as u64);
        }
        if is_string(m) {
            regs.r[RSI] = target(&mut rng, region) | hi32(&mut rng);
            regs.r[RDI] = target(&mut rng, region) | hi32(&mut rng);
            regs.r[RCX] = rng.below(24) | hi32(&mut rng);
        } else if m == Mnemonic::Xlatb {
            regs.r[RBX] = (region + 0x800) | hi32(&mut rng);
        } else if let (Some(_), false) = (mem_op, kind_rip || kind_abs) {
            // Aim base + index * scale + disp at the buffer.
            let t = target(&mut rng, region);
            let base = insn.memory_base();
            let index = insn.memory_index();
            let scale = insn.memory_index_scale() as u64;
            let disp = insn.memory_displacement64();
            let mut idx_val = 0;
            if let Some(i) = gpr_index(index) {
                idx_val = match rng.below(3) {
                    0 => 0,
                    1 => rng.below(64),
                    _ => (rng.below(64) as i64 - 64) as u64,
                };
                if addr32 {
                    idx_val &= 0xffff_ffff;
                }
                regs.r[i] = idx_val | hi32(&mut rng);
            }
            if let Some(b) = gpr_index(base) {
                let v = t.wrapping_sub(disp).wrapping_sub(idx_val.wrapping_mul(scale));
                regs.r[b] = if addr32 { (v & 0xffff_ffff) | hi32(&mut rng) } else { v };
            } else if let Some(i) = gpr_index(index) {
                // Index only: [index*scale + disp32].
                let v = t.wrapping_sub(disp) / scale;
                regs.r[i] = if addr32 { (v & 0xffff_ffff) | hi32(&mut rng) } else { v };
            }
        }

        // Every memory access must fall inside a buffer (string instructions move up to
        // 23 * 8 bytes either way).
        let mut mem_ok = true;
        for n in 0..insn.op_count() {
            let k = insn.op_kind(n);
            if !is_memory(k) || no_access {
                continue;
            }
            let Some(a) = operand_address(&insn, n, &regs) else {
                mem_ok = false;
                break;
            };
            let margin = if k == OpKind::Memory { 0 } else { 256 };
            if !in_buffer(a as i128 - margin, a as i128 + 16 + margin) {
                mem_ok = false;
            }
        }
        // BT* with a register bit offset reach (offset >> 3) bytes beyond the operand.
        if bt_reg && mem_ok {
            let r = insn.op_register(1);
            let off = reg_value(&regs, r).unwrap();
            let off = match r.size() {
                2 => off as i16 as i128,
                4 => off as i32 as i128,
                _ => off as i64 as i128,
            };
            let a = operand_address(&insn, 0, &regs).unwrap() as i128;
            if !in_buffer(a + (off >> 3) - 8, a + (off >> 3) + 16) {
                mem_ok = false;
            }
        }
        // Where the kernel detects split locks, a locked access across a cache line would be
        // throttled (or killed) on the host: keep those within a line there.
        let locked = insn.has_lock_prefix() || (m == Mnemonic::Xchg && mem_op.is_some());
        if locked && split_lock_detect && mem_ok {
            let n = mem_op.unwrap();
            let a = operand_address(&insn, n, &regs).unwrap();
            if a / 64 != (a + insn.memory_size().size() as u64 - 1) / 64 {
                continue;
            }
        }
        if !mem_ok {
            continue;
        }

        // Shared buffer contents.
        for b in bufs.iter_mut() {
            for c in b.chunks_mut(8) {
                c.copy_from_slice(&rng.next().to_le_bytes()[..c.len()]);
            }
        }
        virt_write(&mut ram, BUF_LO, bufs[0]);
        virt_write(&mut ram, BUF_HI, bufs[1]);

        // The interpreter.
        virt_write(&mut ram, addr, &bytes[..len]);
        // HLT after it, so that a run past its end cannot go unnoticed.
        virt_write(&mut ram, addr + len as u64, &[0xf4]);
        // A fresh CPU now and then (and after an exception); otherwise the previous one, with its
        // TLB and decode cache, moved to the new instruction.
        if cpu_uses >= 64 {
            cpu_slot = None;
        }
        let cpu = cpu_slot.get_or_insert_with(|| {
            cpu_uses = 0;
            let mut cpu = Cpu::new(CpuConfig { model: CpuModel::X86_64 });
            cpu.enter_flat_long_mode(PML4, addr);
            cpu
        });
        cpu_uses += 1;
        cpu.set_rip(addr);
        for (n, g) in GPRS.iter().enumerate() {
            cpu.set_gpr(*g, if n == RSP { STACK_TOP } else { regs.r[n] });
        }
        cpu.set_rflags(regs.flags);
        for page in [CODE_EDGE - 0x1000, CODE_EDGE] {
            cpu.invalidate_code(phys(page), 0x1000);
        }
        let start = cpu.icount();
        // REP string instructions retire once per iteration with RIP on the instruction. The run
        // must stop exactly at the end of the instruction: one step at a time, or, for REP
        // MOVS/STOS/LODS (whose iteration count is known), sometimes several iterations at once.
        let known_count = (insn.has_rep_prefix() || insn.has_repne_prefix())
            && matches!(
                m,
                Mnemonic::Movsb
                    | Mnemonic::Movsw
                    | Mnemonic::Movsd
                    | Mnemonic::Movsq
                    | Mnemonic::Stosb
                    | Mnemonic::Stosw
                    | Mnemonic::Stosd
                    | Mnemonic::Stosq
                    | Mnemonic::Lodsb
                    | Mnemonic::Lodsw
                    | Mnemonic::Lodsd
                    | Mnemonic::Lodsq
            );
        let mut exit = RunExit::Limit;
        let mut panicked = None;
        while cpu.rip() == addr && cpu.icount() - start < 100 && matches!(exit, RunExit::Limit) {
            let remaining = cpu.gpr(Gpr::Rcx) & if addr32 { 0xffff_ffff } else { u64::MAX };
            let step = if known_count && remaining > 1 { 1 + rng.below(remaining) } else { 1 };
            let stop_at = cpu.icount() + step;
            // A panic in the interpreter is a bug to report like a mismatch, not the end of the run.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cpu.run(&mut ram, &mut NoDevices, stop_at)))
            {
                Ok(e) => exit = e,
                Err(payload) => {
                    let msg = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    panicked = Some(msg);
                    break;
                }
            }
        }
        let faulted_here = !matches!(exit, RunExit::Limit) || cpu.rip() != addr + len as u64;
        if let Some(msg) = panicked {
            cpu_uses = u32::MAX;
            *failed_by.entry(format!("{m:?}")).or_default() += 1;
            failures.push(format!(
                "{insn} ({:02x?}) at {addr:#x} from {:x?} flags {:#x}: interpreter panicked: {msg}",
                &bytes[..len],
                regs.r,
                regs.flags
            ));
            continue;
        }
        // Everything tested runs on the host without an exception, except DIV/IDIV with a zero
        // divisor or an oversized quotient (#DE; the host would die of SIGFPE).
        let expect_de = matches!(m, Mnemonic::Div | Mnemonic::Idiv) && divide_faults(&insn, &regs, &bufs);
        if faulted_here || expect_de {
            // Possibly in shutdown: start afresh next time.
            cpu_uses = u32::MAX;
            *faulted.entry(format!("{m:?}")).or_default() += 1;
            if faulted_here != expect_de {
                let n = failed_by.entry(format!("{m:?}")).or_default();
                *n += 1;
                if *n <= 3 && failures.len() < 80 {
                    failures.push(format!(
                        "{insn} ({:02x?}) at {addr:#x} from {:x?} flags {:#x}: {} (exit {exit:?}, rip {:#x}, icount {})",
                        &bytes[..len],
                        regs.r,
                        regs.flags,
                        if expect_de { "no #DE in the interpreter" } else { "interpreter exception, none on the host" },
                        cpu.rip(),
                        cpu.icount()
                    ));
                }
            }
            continue;
        }

        // The host.
        let mut hregs = regs;
        if verbose {
            eprintln!("{insn} {:02x?} at {addr:#x} regs {:x?} fl {:#x}", &bytes[..len], regs.r, regs.flags);
        }
        host.run(&bytes[..len], addr, &mut hregs);

        // What the SDM leaves undefined.
        let count = shift_count(&insn, &regs);
        let mask = CHECKED & !undefined_flags(&insn, count);
        let mut reg_undef = [0u64; 16];
        let mut mem_undef: Option<(u64, usize)> = None;
        let mut undefined_dest = |insn: &Instruction, regs: &Regs| {
            if insn.op_kind(0) == OpKind::Register {
                let r = insn.op_register(0);
                reg_undef[gpr_index(r).unwrap()] |= reg_mask(r);
            } else {
                mem_undef = Some((operand_address(insn, 0, regs).unwrap(), insn.memory_size().size()));
            }
        };
        match m {
            // SDM BSF/BSR: the destination is undefined if the source is 0.
            Mnemonic::Bsf | Mnemonic::Bsr => {
                let src = operand_value(&insn, 1, &regs, &bufs);
                if src == 0 {
                    undefined_dest(&insn, &regs);
                }
            }
            // SDM BSWAP: undefined with a 16-bit register.
            Mnemonic::Bswap if insn.op_register(0).size() == 2 => undefined_dest(&insn, &regs),
            // SDM SHLD/SHRD: the result is undefined when the count exceeds the operand size.
            Mnemonic::Shld | Mnemonic::Shrd if count.unwrap() > op0_bits(&insn) => undefined_dest(&insn, &regs),
            _ => {}
        }

        let mut emu = Regs::default();
        for (n, g) in GPRS.iter().enumerate() {
            emu.r[n] = cpu.gpr(*g) & !reg_undef[n];
            hregs.r[n] &= !reg_undef[n];
        }
        emu.r[RSP] = 0;
        hregs.r[RSP] = 0;
        let mut emu_bufs = [vec![0u8; BUF_LEN as usize], vec![0u8; BUF_LEN as usize]];
        virt_read(&ram, BUF_LO, &mut emu_bufs[0]);
        virt_read(&ram, BUF_HI, &mut emu_bufs[1]);
        if let Some((a, size)) = mem_undef {
            for (n, base) in [BUF_LO, BUF_HI].iter().enumerate() {
                for x in a..a + size as u64 {
                    if x >= *base && x < base + BUF_LEN {
                        emu_bufs[n][(x - base) as usize] = bufs[n][(x - base) as usize];
                    }
                }
            }
        }
        let regs_ok = emu.r == hregs.r;
        let flags_ok = (cpu.rflags() & mask) == (hregs.flags & mask);
        let mem_ok = emu_bufs[0][..] == bufs[0][..] && emu_bufs[1][..] == bufs[1][..];

        *per_mnemonic.entry(format!("{m:?}")).or_default() += 1;
        st.tested += 1;
        st.rip_relative += u64::from(kind_rip);
        st.absolute += u64::from(kind_abs);
        st.addr32 += u64::from(addr32 && (mem_op.is_some() || is_string(m) || m == Mnemonic::Xlatb));
        st.locked += u64::from(insn.has_lock_prefix());
        st.page_crossing_code += u64::from(addr < CODE_EDGE && addr + len as u64 > CODE_EDGE);
        let regs_used: Vec<Register> = (0..insn.op_count())
            .filter(|&n| insn.op_kind(n) == OpKind::Register)
            .map(|n| insn.op_register(n))
            .collect();
        st.high_byte += u64::from(regs_used.iter().any(|r| (Register::AH..=Register::BH).contains(r)));
        st.extended += u64::from(regs_used.iter().chain([insn.memory_base(), insn.memory_index()].iter()).any(|r| {
            gpr_index(*r).is_some_and(|i| i >= 8)
                || matches!(r, Register::SPL | Register::BPL | Register::SIL | Register::DIL)
        }));
        match op0_bits(&insn) {
            8 => st.by_size[0] += 1,
            16 => st.by_size[1] += 1,
            32 => st.by_size[2] += 1,
            64 => st.by_size[3] += 1,
            _ => {}
        }
        if !(regs_ok && flags_ok && mem_ok) {
            let n = failed_by.entry(format!("{m:?}")).or_default();
            *n += 1;
            // A few examples of each mnemonic.
            if *n <= 3 && failures.len() < 80 {
                let diff: Vec<String> = (0..16)
                    .filter(|&n| emu.r[n] != hregs.r[n])
                    .map(|n| format!("{:?}: emu {:#x} host {:#x}", GPRS[n], emu.r[n], hregs.r[n]))
                    .collect();
                let mut mem_diff = String::new();
                for (n, base) in [BUF_LO, BUF_HI].iter().enumerate() {
                    if let Some(i) = (0..BUF_LEN as usize).find(|&i| emu_bufs[n][i] != bufs[n][i]) {
                        mem_diff = format!(
                            " memory differs at {:#x}: emu {:02x?} host {:02x?}",
                            base + i as u64,
                            &emu_bufs[n][i..(i + 8).min(BUF_LEN as usize)],
                            &bufs[n][i..(i + 8).min(BUF_LEN as usize)]
                        );
                        break;
                    }
                }
                failures.push(format!(
                    "{insn} ({:02x?}) at {addr:#x} from {:x?} flags {:#x}: {diff:?} flags emu {:#x} host {:#x}{mem_diff}",
                    &bytes[..len],
                    regs.r,
                    regs.flags,
                    cpu.rflags() & mask,
                    hregs.flags & mask,
                ));
            }
        }
    }
    eprintln!(
        "tested {} instructions ({tries} tries) in {:.1?}: {} RIP/EIP-relative, {} absolute/moffs, {} with \
         32-bit addressing, {} LOCKed, {} with AH..BH, {} with R8-R15/SPL-DIL, {} straddling a page; by operand size \
         8/16/32/64: {:?}",
        st.tested,
        started.elapsed(),
        st.rip_relative,
        st.absolute,
        st.addr32,
        st.locked,
        st.high_byte,
        st.extended,
        st.page_crossing_code,
        st.by_size
    );
    eprintln!("per mnemonic: {per_mnemonic:?}");
    eprintln!("exceptions (not compared): {faulted:?}");
    assert!(st.tested >= iters / 2, "too few instructions tested: {}", st.tested);
    assert!(
        failures.is_empty(),
        "mismatches by mnemonic {failed_by:?}; first {}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
