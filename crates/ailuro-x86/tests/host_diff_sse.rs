//! Differential test of MMX, SSE, SSE2, SSE3 and SSSE3 against the host CPU.
//!
//! Every legacy-encoded opcode whose iced CPUID features are only MMX/SSE/SSE2/SSE3/SSSE3 is a
//! template (prefix, opcode map, opcode, ModRM.reg, register or memory form). A case picks a
//! template, random ModRM.rm / displacement / immediate bytes, and a random machine state:
//! an FXRSTOR image (x87 registers = MMX registers with random TOP and tags, XMM0-7 and MXCSR
//! with all exceptions masked but random rounding mode, FZ, DAZ and pre-set flags), random
//! general registers and flags, and a random data buffer. Operand values are weighted towards
//! floating-point and integer edge cases (signed zeros, denormals, infinities, SNaN/QNaN with
//! payloads, values with short significands so that ties are common, values next to the integer
//! conversion limits, tiny and huge exponents, saturation limits, small shift counts).
//!
//! The same stub — FXRSTOR, load registers, the instruction, store registers, FXSAVE — runs
//! natively and in the interpreter, twice: as 32-bit code (the interpreter in flat protected mode
//! runs the original bytes, the host the instruction re-encoded for 64-bit mode by iced, where
//! 32-bit addresses keep a 0x67 prefix; the buffer is mapped at the same low address) and as
//! 64-bit code (the same bytes on both sides, with random REX prefixes: REX.W forms, XMM8-15,
//! R8-R14; the interpreter in flat long mode). Compared: FCW, FSW, the abridged tag word, the
//! eight x87/MMX registers, MXCSR, XMM0-7 (XMM0-15), the general registers (all but RSP and the
//! host stub's R15), the arithmetic flags and DF, and the whole buffer.
//!
//! RCPPS/RCPSS/RSQRTPS/RSQRTSS are table-driven approximations whose exact values differ between
//! implementations: for them the destination is checked against the architectural error bound
//! (|rel err| <= 1.5 * 2^-12, computed in f64 on the host) and the special-value behaviour, and
//! everything else is compared bit for bit.
//!
//! `AILURO_SSE_DIFF_ITERS` sets the number of cases (default 40000), `AILURO_SSE_DIFF_SEED` the
//! random seed (per mode); `AILURO_SSE_DIFF_VERBOSE` prints each case.

#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

mod host;

use ailuro_x86::{Cpu, CpuConfig, CpuModel, GuestRam, RunExit};
use host::{host_is_intel, HostCode, NoDevices};
use iced_x86::code_asm::*;
use iced_x86::{CpuidFeature, Decoder, DecoderOptions, Encoder, EncodingKind, Instruction, Mnemonic, OpKind, Register};

/// Data buffer, at the same address on both sides.
const BUF: u64 = 0x0040_0000;
const BUF_LEN: u64 = 0x2000;
/// Interpreter layout.
const CODE: u64 = 0x0010_0000;
const IMG_IN: u64 = 0x0020_0000;
const IMG_OUT: u64 = 0x0020_0400;
const GPR_OUT: u64 = 0x0020_0800;
const STACK: u64 = 0x0030_0000;

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
    fn bits(&mut self, n: u32) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() >> (64 - n)
        }
    }
}

/// A single-precision value weighted towards edge cases.
fn f32v(r: &mut Rng) -> u32 {
    let sign = (r.bits(1) as u32) << 31;
    let mag = match r.below(22) {
        0 => 0,
        1 => 0x7f80_0000,
        2 => 0x7fc0_0000 | r.bits(22) as u32,
        3 => 0x7f80_0000 | (r.bits(22) as u32).max(1),
        4 => r.bits(23) as u32,
        5 => {
            let n = 1 + r.below(8) as u32;
            r.bits(n) as u32
        }
        6 => ((1 + r.below(30) as u32) << 23) | r.bits(23) as u32,
        7 => ((225 + r.below(30) as u32) << 23) | r.bits(23) as u32,
        8 | 9 => {
            // Short significand: exact ties and exact results are common.
            let e = 100 + r.below(56) as u32;
            let keep = r.below(12) as u32;
            (e << 23) | ((r.bits(keep) as u32) << (23 - keep))
        }
        10 | 11 => {
            let base = [0f64, 1.0, 2147483647.0, 2147483648.0, 9.223_372_036_854_776e18, 65535.0, 127.0, 32767.0];
            let k = base[r.below(8) as usize] + [0.0, 0.5, 1.5, -0.5, 0.25, 0.75, -1.0, 1.0][r.below(8) as usize];
            (k as f32).to_bits() & 0x7fff_ffff
        }
        12 => 0x3f80_0000,
        13 => 0x7f7f_ffff,
        14 => 0x0080_0000,
        15 => 0x007f_ffff,
        _ => ((r.below(254) as u32 + 1) << 23) | r.bits(23) as u32,
    };
    sign | mag
}

/// A double-precision value weighted towards edge cases.
fn f64v(r: &mut Rng) -> u64 {
    let sign = r.bits(1) << 63;
    let mag = match r.below(24) {
        0 => 0,
        1 => 0x7ff0_0000_0000_0000,
        2 => 0x7ff8_0000_0000_0000 | r.bits(51),
        3 => 0x7ff0_0000_0000_0000 | r.bits(51).max(1),
        4 => r.bits(52),
        5 => {
            let n = 1 + r.below(8) as u32;
            r.bits(n)
        }
        6 => ((1 + r.below(60)) << 52) | r.bits(52),
        7 => ((1990 + r.below(57)) << 52) | r.bits(52),
        8 | 9 => {
            let e = 900 + r.below(250);
            let keep = r.below(26) as u32;
            (e << 52) | (r.bits(keep) << (52 - keep))
        }
        10 | 11 => {
            let base = [0f64, 1.0, 2147483647.0, 2147483648.0, 9.223_372_036_854_776e18, 4294967296.0, 127.0];
            let k = base[r.below(7) as usize] + [0.0, 0.5, 1.5, -0.5, 0.25, 0.75, -1.0, 1.0][r.below(8) as usize];
            k.to_bits() & 0x7fff_ffff_ffff_ffff
        }
        12 => {
            // Within the single-precision range edges (CVTSD2SS overflow/underflow).
            let e = [1023 - 126, 1023 - 127, 1023 - 149, 1023 - 150, 1023 + 127, 1023 + 128, 1023 - 140]
                [r.below(7) as usize];
            (e << 52) | r.bits(52)
        }
        13 => 0x3ff0_0000_0000_0000,
        14 => 0x7fef_ffff_ffff_ffff,
        15 => 0x0010_0000_0000_0000,
        16 => 0x000f_ffff_ffff_ffff,
        _ => ((r.below(2046) + 1) << 52) | r.bits(52),
    };
    sign | mag
}

/// An integer lane pattern.
fn intv(r: &mut Rng) -> u64 {
    match r.below(8) {
        0 => r.below(80),
        1 => [0, u64::MAX, 0x8000_0000_8000_0000, 0x7fff_ffff_7fff_ffff, 0x8000_7fff_0080_ff7f][r.below(5) as usize],
        2 => {
            let mut v = 0u64;
            for k in 0..4 {
                v |= [0u64, 0x7fff, 0x8000, 0xffff, 0x00ff, 0xff00, 0x7f80, 1][r.below(8) as usize] << (16 * k);
            }
            v
        }
        3 => {
            let mut v = 0u64;
            for k in 0..8 {
                v |= [0u64, 0x7f, 0x80, 0xff, 1, 0x0f, 0x8f, 0x70][r.below(8) as usize] << (8 * k);
            }
            v
        }
        _ => r.next(),
    }
}

/// A 64-bit chunk: two singles, a double, or integers.
fn chunk(r: &mut Rng) -> u64 {
    match r.below(4) {
        0 => u64::from(f32v(r)) | (u64::from(f32v(r)) << 32),
        1 => f64v(r),
        2 => {
            // Related singles (same magnitude region) so that sums cancel and ties appear.
            let a = f32v(r);
            let b = if r.below(2) == 0 { a ^ (r.bits(3) as u32) } else { a ^ 0x8000_0000 };
            u64::from(a) | (u64::from(b) << 32)
        }
        _ => intv(r),
    }
}

/// An instruction template.
#[derive(Clone, Debug)]
struct Template {
    prefix: Vec<u8>,
    op: Vec<u8>,
    reg: u8,
    mem: bool,
    mnemonic: Mnemonic,
}

/// The instructions under test: legacy-encoded MMX/SSE/SSE2/SSE3/SSSE3 ones, plus the SSE3 x87
/// instruction FISTTP.
fn simd_only(i: &Instruction) -> bool {
    let f = i.cpuid_features();
    if i.mnemonic() == Mnemonic::Fisttp {
        return true;
    }
    i.encoding() == EncodingKind::Legacy
        && !f.is_empty()
        && f.iter().all(|x| {
            matches!(
                x,
                CpuidFeature::MMX | CpuidFeature::SSE | CpuidFeature::SSE2 | CpuidFeature::SSE3 | CpuidFeature::SSSE3
            )
        })
}

fn templates(bits: u32) -> Vec<Template> {
    let mut out = Vec::new();
    let prefixes: [&[u8]; 4] = [&[], &[0x66], &[0xf2], &[0xf3]];
    let maps: [&[u8]; 3] = [&[0x0f], &[0x0f, 0x38], &[0x0f, 0x3a]];
    // FISTTP m16/m32/m64: DF /1, DB /1, DD /1.
    for op in [0xdfu8, 0xdb, 0xdd] {
        out.push(Template { prefix: vec![], op: vec![op], reg: 1, mem: true, mnemonic: Mnemonic::Fisttp });
    }
    for p in prefixes {
        for map in maps {
            for op in 0..=255u8 {
                if map.len() == 1 && (op == 0x38 || op == 0x3a || op == 0x0f) {
                    continue;
                }
                for reg in 0..8u8 {
                    for mem in [false, true] {
                        let modrm = if mem { (reg << 3) | 7 } else { 0xc0 | (reg << 3) };
                        let mut bytes = p.to_vec();
                        bytes.extend_from_slice(map);
                        bytes.push(op);
                        bytes.push(modrm);
                        bytes.extend_from_slice(&[0x11, 0, 0, 0]);
                        let i = Decoder::with_ip(bits, &bytes, 0, DecoderOptions::NONE).decode();
                        if i.is_invalid() || !simd_only(&i) {
                            continue;
                        }
                        let mut opb = map.to_vec();
                        opb.push(op);
                        out.push(Template { prefix: p.to_vec(), op: opb, reg, mem, mnemonic: i.mnemonic() });
                    }
                }
            }
        }
    }
    out
}

/// The host side: a 64-byte aligned block the stub works on through r15.
#[repr(C, align(64))]
struct Block {
    gpr: [u64; 16],
    flags: u64,
    _pad: [u64; 7],
    img_in: [u8; 512],
    img_out: [u8; 512],
    saved: [u8; 512],
}

const B_FLAGS: i32 = 128;
const B_IN: i32 = 192;
const B_OUT: i32 = 704;
const B_SAVED: i32 = 1216;

fn gpr64(n: usize) -> AsmRegister64 {
    [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15][n]
}

/// Registers the stubs load and store: all but RSP and R15 (the host stub's block pointer).
fn live(n: usize) -> bool {
    n != 4 && n != 15
}

fn host_stub(insn: &[u8]) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    for r in [rbx, rbp, r12, r13, r14, r15] {
        a.push(r).unwrap();
    }
    a.mov(r15, rdi).unwrap();
    a.fxsave(ptr(r15 + B_SAVED)).unwrap();
    a.fxrstor(ptr(r15 + B_IN)).unwrap();
    a.push(qword_ptr(r15 + B_FLAGS)).unwrap();
    a.popfq().unwrap();
    for n in (0..16).filter(|&n| live(n)) {
        a.mov(gpr64(n), qword_ptr(r15 + 8 * n as i32)).unwrap();
    }
    a.db(insn).unwrap();
    a.pushfq().unwrap();
    a.pop(qword_ptr(r15 + B_FLAGS)).unwrap();
    a.cld().unwrap();
    for n in (0..16).filter(|&n| live(n)) {
        a.mov(qword_ptr(r15 + 8 * n as i32), gpr64(n)).unwrap();
    }
    a.fxsave(ptr(r15 + B_OUT)).unwrap();
    a.fxrstor(ptr(r15 + B_SAVED)).unwrap();
    for r in [r15, r14, r13, r12, rbp, rbx] {
        a.pop(r).unwrap();
    }
    a.ret().unwrap();
    a.assemble(0).unwrap()
}

/// The shared buffer, mapped once per process (both tests use it, one at a time).
fn buffer() -> &'static std::sync::Mutex<&'static mut [u8]> {
    static BUFFER: std::sync::OnceLock<std::sync::Mutex<&'static mut [u8]>> = std::sync::OnceLock::new();
    BUFFER.get_or_init(|| std::sync::Mutex::new(host::map_buffer(BUF, BUF_LEN)))
}

/// Number (RAX = 0 .. R15 = 15) of a general register of any size.
fn gpr_number(r: Register) -> Option<usize> {
    let f = r.full_register();
    if (Register::RAX..=Register::R15).contains(&f) {
        Some(f as usize - Register::RAX as usize)
    } else {
        None
    }
}

fn reg_value(gpr: &[u64; 16], r: Register) -> Option<u64> {
    let v = gpr[gpr_number(r)?];
    Some(if r.size() == 4 { v & 0xffff_ffff } else { v })
}

/// Interpreter layout: 4-level page tables identity-mapping 8 MiB for 64-bit mode.
const PML4: u64 = 0x1_0000;

/// The interpreter side: one CPU and RAM reused for every case.
struct Emu {
    cpu: Cpu,
    ram: GuestRam,
    bits: u32,
}

impl Emu {
    fn new(bits: u32) -> Emu {
        let model = if bits == 64 { CpuModel::X86_64 } else { CpuModel::I386 };
        let mut ram = GuestRam::new(0, 8 << 20).unwrap();
        ram.write_u64(PML4, (PML4 + 0x1000) | 3).unwrap();
        ram.write_u64(PML4 + 0x1000, (PML4 + 0x2000) | 3).unwrap();
        for k in 0..4u64 {
            ram.write_u64(PML4 + 0x2000 + 8 * k, (k << 21) | 0x83).unwrap();
        }
        Emu { cpu: Cpu::new(CpuConfig { model }), ram, bits }
    }

    /// Run the stub around `insn`; `None` if the interpreter did not reach the end (a fault).
    fn run(
        &mut self,
        insn: &[u8],
        img: &[u8; 512],
        gpr: &[u64; 16],
        flags: u64,
    ) -> Option<([u8; 512], [u64; 16], u64)> {
        let mut a = CodeAssembler::new(self.bits).unwrap();
        let code = if self.bits == 64 {
            a.mov(rax, cr4).unwrap();
            a.or(rax, 0x600).unwrap();
            a.mov(cr4, rax).unwrap();
            a.fxrstor(ptr(IMG_IN)).unwrap();
            a.mov(rsp, STACK).unwrap();
            a.mov(rax, flags).unwrap();
            a.push(rax).unwrap();
            a.popfq().unwrap();
            for n in (0..16).filter(|&n| live(n)) {
                a.mov(gpr64(n), gpr[n]).unwrap();
            }
            a.db(insn).unwrap();
            a.pushfq().unwrap();
            a.pop(qword_ptr(GPR_OUT + 8 * 16)).unwrap();
            for n in (0..16).filter(|&n| live(n)) {
                a.mov(qword_ptr(GPR_OUT + 8 * n as u64), gpr64(n)).unwrap();
            }
            a.fxsave(ptr(IMG_OUT)).unwrap();
            a.hlt().unwrap();
            a.assemble(CODE).unwrap()
        } else {
            let regs32 = [eax, ecx, edx, ebx, esp, ebp, esi, edi];
            a.mov(eax, cr4).unwrap();
            a.or(eax, 0x600).unwrap();
            a.mov(cr4, eax).unwrap();
            a.fxrstor(ptr(IMG_IN as u32)).unwrap();
            a.mov(esp, STACK as u32).unwrap();
            a.push(flags as u32 as i32).unwrap();
            a.popfd().unwrap();
            for (n, r) in regs32.iter().enumerate() {
                if n != 4 {
                    a.mov(*r, gpr[n] as u32).unwrap();
                }
            }
            a.db(insn).unwrap();
            a.pushfd().unwrap();
            a.pop(dword_ptr(GPR_OUT as u32 + 8 * 16)).unwrap();
            for (n, r) in regs32.iter().enumerate() {
                if n != 4 {
                    a.mov(dword_ptr(GPR_OUT as u32 + 8 * n as u32), *r).unwrap();
                }
            }
            a.fxsave(ptr(IMG_OUT as u32)).unwrap();
            a.hlt().unwrap();
            a.assemble(CODE).unwrap()
        };
        self.ram.write(CODE, &code).unwrap();
        self.ram.write(IMG_IN, img).unwrap();
        self.ram.write(GPR_OUT, &[0u8; 8 * 17]).unwrap();
        self.cpu.invalidate_code(CODE, code.len() as u64);
        if self.bits == 64 {
            self.cpu.enter_flat_long_mode(PML4, CODE);
        } else {
            self.cpu.enter_flat_protected_mode(CODE as u32);
        }
        let stop = self.cpu.icount() + 100;
        let x = self.cpu.run(&mut self.ram, &mut NoDevices, stop);
        if x != RunExit::Halted || self.cpu.rip() != CODE + code.len() as u64 {
            return None;
        }
        let mut out = [0u8; 512];
        self.ram.read(IMG_OUT, &mut out).unwrap();
        let mut g = [0u64; 16];
        for (n, v) in g.iter_mut().enumerate() {
            *v = if live(n) { self.ram.read_u64(GPR_OUT + 8 * n as u64).unwrap() } else { 0 };
        }
        let fl = self.ram.read_u64(GPR_OUT + 8 * 16).unwrap();
        Some((out, g, fl))
    }
}

const CF: u64 = 1;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const DF: u64 = 1 << 10;
const OF: u64 = 1 << 11;
const CHECKED: u64 = CF | PF | AF | ZF | SF | DF | OF;

/// The compared parts of an FXSAVE image, as (name, byte range).
fn fx_fields(nxmm: usize) -> Vec<(String, std::ops::Range<usize>)> {
    let mut v = vec![
        ("FCW".to_string(), 0..2),
        ("FSW".to_string(), 2..4),
        ("FTW".to_string(), 4..5),
        ("MXCSR".to_string(), 24..28),
    ];
    for k in 0..8 {
        v.push((format!("ST{k}/MM"), 32 + 16 * k..42 + 16 * k));
    }
    for k in 0..nxmm {
        v.push((format!("XMM{k}"), 160 + 16 * k..176 + 16 * k));
    }
    v
}

/// Whether `m` is one of the approximations checked against the error bound only.
fn approx(m: Mnemonic) -> bool {
    matches!(m, Mnemonic::Rcpps | Mnemonic::Rcpss | Mnemonic::Rsqrtps | Mnemonic::Rsqrtss)
}

/// Check one RCP/RSQRT result lane against the exact value: `Err` with a reason if outside the
/// bound or wrong for a special input.
fn check_approx(sqrt: bool, x: u32, y: u32) -> Result<(), String> {
    let xf = f32::from_bits(x);
    let yf = f32::from_bits(y);
    let exp = x >> 23 & 0xff;
    if xf.is_nan() {
        return if y == x | 0x40_0000 { Ok(()) } else { Err(format!("NaN in {x:#x} -> {y:#x}")) };
    }
    let neg = x >> 31 != 0;
    if exp == 0 {
        // Zero or denormal: treated as zero, signed infinity.
        return if y == (x & 0x8000_0000) | 0x7f80_0000 {
            Ok(())
        } else {
            Err(format!("zero/denormal {x:#x} -> {y:#x}"))
        };
    }
    if sqrt && neg {
        return if y == 0xffc0_0000 { Ok(()) } else { Err(format!("negative {x:#x} -> {y:#x}")) };
    }
    let exact = if sqrt { 1.0 / (f64::from(xf)).sqrt() } else { 1.0 / f64::from(xf) };
    if exact.abs() < f64::from(f32::MIN_POSITIVE) {
        // Results below the normal range: zero (hardware flushes) or the smallest normal.
        return if yf == 0.0 || yf.abs() == f32::MIN_POSITIVE || yf.is_subnormal() {
            Ok(())
        } else {
            Err(format!("tiny {x:#x} -> {y:#x}"))
        };
    }
    let err = ((f64::from(yf) - exact) / exact).abs();
    if err <= 1.5 / 4096.0 {
        Ok(())
    } else {
        Err(format!("{x:#x} -> {y:#x}: rel err {err:e}"))
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn simd_instructions_match_the_host_cpu_32() {
    diff(32);
}

#[test]
fn simd_instructions_match_the_host_cpu_64() {
    diff(64);
}

/// The differential test in 32-bit (instructions re-encoded for the 64-bit host) or 64-bit mode
/// (the same bytes on both sides; random REX prefixes, XMM8-15, R8-R14, the REX.W forms).
fn diff(bits: u32) {
    let iters = env_u64("AILURO_SSE_DIFF_ITERS", 40_000);
    let seed = env_u64("AILURO_SSE_DIFF_SEED", 0x2545_f491_4f6c_dd1d) ^ u64::from(bits);
    let verbose = std::env::var_os("AILURO_SSE_DIFF_VERBOSE").is_some();
    let mut guard = buffer().lock().unwrap_or_else(|e| e.into_inner());
    let buf: &mut [u8] = &mut guard;
    let host = HostCode::new();
    let mut blk =
        Box::new(Block { gpr: [0; 16], flags: 0, _pad: [0; 7], img_in: [0; 512], img_out: [0; 512], saved: [0; 512] });
    let tpl = templates(bits);
    let mut groups = std::collections::BTreeMap::<String, Vec<usize>>::new();
    for (k, t) in tpl.iter().enumerate() {
        groups.entry(format!("{:?}", t.mnemonic)).or_default().push(k);
    }
    let mnemonics: Vec<String> = groups.keys().cloned().collect();
    let by_mnemonic: Vec<Vec<usize>> = groups.into_values().collect();
    eprintln!("{bits}-bit: {} templates, {} mnemonics", tpl.len(), mnemonics.len());
    let mut rng = Rng(seed | 1);
    let mut emu = Emu::new(bits);
    let nxmm = if bits == 64 { 16 } else { 8 };
    let fields = fx_fields(nxmm);
    // Registers that may serve as memory bases (pointed into the buffer).
    let ptr_regs: &[usize] = if bits == 64 { &[3, 6, 7, 11, 14] } else { &[3, 6, 7] };
    let mut tested = 0u64;
    let mut tries = 0u64;
    let mut per_mnemonic = std::collections::BTreeMap::<String, u64>::new();
    let mut rex_w = 0u64;
    let mut failed_by = std::collections::BTreeMap::<String, u64>::new();
    let mut failures = Vec::new();
    while tested < iters && tries < iters * 20 {
        tries += 1;
        // Uniform over mnemonics, then over that mnemonic's templates.
        let mn = &by_mnemonic[rng.below(by_mnemonic.len() as u64) as usize];
        let t = &tpl[mn[rng.below(mn.len() as u64) as usize]];
        // Bytes: prefix, REX (64-bit), opcode, ModRM with a random r/m, displacement, immediate.
        let mut bytes = t.prefix.clone();
        if bits == 64 && rng.below(4) != 0 {
            bytes.push(0x40 | rng.below(16) as u8);
        }
        bytes.extend_from_slice(&t.op);
        let (modrm, disp): (u8, Option<u8>) = if t.mem {
            match rng.below(3) {
                0 => ((t.reg << 3) | 7, None),
                1 => ((t.reg << 3) | 6, None),
                _ => (0x40 | (t.reg << 3) | [3u8, 6, 7][rng.below(3) as usize], Some(rng.next() as u8 & 0xf0)),
            }
        } else {
            (0xc0 | (t.reg << 3) | rng.below(8) as u8, None)
        };
        bytes.push(modrm);
        if let Some(d) = disp {
            bytes.push(d);
        }
        let imm = match rng.below(4) {
            0 => rng.below(8) as u8,
            1 => rng.below(32) as u8,
            _ => rng.next() as u8,
        };
        bytes.extend_from_slice(&[imm, 0, 0, 0]);
        let insn = Decoder::with_ip(bits, &bytes, 0, DecoderOptions::NONE).decode();
        if insn.is_invalid() || !simd_only(&insn) {
            continue;
        }
        let len = insn.len();
        let m = insn.mnemonic();
        let bad_reg = |r: Register| matches!(gpr_number(r), Some(4) | Some(15));
        let uses_bad = (0..insn.op_count())
            .any(|n| insn.op_kind(n) == OpKind::Register && bad_reg(insn.op_register(n)))
            || bad_reg(insn.memory_base())
            || bad_reg(insn.memory_index());
        if uses_bad {
            continue;
        }

        // Random state.
        let mut gpr = [0u64; 16];
        for g in gpr.iter_mut() {
            *g = match rng.below(5) {
                0 => intv(&mut rng),
                1 => u64::from(f32v(&mut rng)),
                2 => f64v(&mut rng),
                _ => rng.next(),
            };
            if bits == 32 {
                *g &= 0xffff_ffff;
            }
        }
        for &n in ptr_regs {
            gpr[n] = BUF + 0x400 + 16 * rng.below(0x100) + if rng.below(4) == 0 { rng.below(16) } else { 0 };
        }
        gpr[4] = 0;
        gpr[15] = 0;
        let flags = (rng.next() & (CF | PF | AF | ZF | SF | OF)) | 2;
        // Memory operand inside the buffer; 16-byte operands aligned unless the form allows not.
        let mut size = 0;
        let mem_op = (0..insn.op_count()).find(|&n| {
            matches!(
                insn.op_kind(n),
                OpKind::Memory | OpKind::MemorySegEDI | OpKind::MemorySegDI | OpKind::MemorySegRDI
            )
        });
        if let Some(n) = mem_op {
            size = insn.memory_size().size() as u64;
            let (addr, base) = if insn.op_kind(n) == OpKind::Memory {
                if insn.memory_base() == Register::None || insn.memory_base() == Register::RIP {
                    continue;
                }
                let a = insn.virtual_address(n, 0, |r, _, _| reg_value(&gpr, r).or(Some(0))).unwrap_or(0);
                (a, insn.memory_base())
            } else {
                (gpr[7], Register::RDI)
            };
            let bn = gpr_number(base).unwrap_or(4);
            if !ptr_regs.contains(&bn) {
                continue;
            }
            let unaligned_ok = matches!(
                m,
                Mnemonic::Movups | Mnemonic::Movupd | Mnemonic::Movdqu | Mnemonic::Lddqu | Mnemonic::Maskmovdqu
            );
            if size == 16 && !unaligned_ok && addr & 15 != 0 {
                gpr[bn] -= addr & 15;
            }
        }
        // Random buffer and FXRSTOR image.
        for c in buf.chunks_mut(8) {
            c.copy_from_slice(&chunk(&mut rng).to_le_bytes());
        }
        if m == Mnemonic::Ldmxcsr {
            // Only valid MXCSR values with every exception masked (the host must not trap).
            let a = insn.virtual_address(0, 0, |r, _, _| reg_value(&gpr, r).or(Some(0))).unwrap_or(0);
            let v = (rng.next() as u32 & 0xffff) | 0x1f80;
            let o = (a - BUF) as usize;
            buf[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        let mut img = [0u8; 512];
        let fsw = ((rng.below(8) as u16) << 11) | (rng.next() as u16 & 0x4700);
        img[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        img[2..4].copy_from_slice(&fsw.to_le_bytes());
        img[4] = rng.next() as u8;
        let mxcsr = 0x1f80
            | (rng.next() as u32 & 0x3f)
            | ((rng.below(4) as u32) << 13)
            | if rng.below(3) == 0 { 0x40 } else { 0 }
            | if rng.below(3) == 0 { 0x8000 } else { 0 };
        img[24..28].copy_from_slice(&mxcsr.to_le_bytes());
        for k in 0..8 {
            let at = 32 + 16 * k;
            img[at..at + 8].copy_from_slice(&chunk(&mut rng).to_le_bytes());
            let se = if rng.below(2) == 0 { 0xffff } else { rng.next() as u16 };
            img[at + 8..at + 10].copy_from_slice(&se.to_le_bytes());
        }
        for k in 0..2 * nxmm {
            let at = 160 + 8 * k;
            img[at..at + 8].copy_from_slice(&chunk(&mut rng).to_le_bytes());
        }
        let mut ram_buf = buf.to_vec();

        // The interpreter.
        emu.ram.write(BUF, &ram_buf).unwrap();
        let Some((emu_img, mut emu_gpr, emu_flags)) = emu.run(&bytes[..len], &img, &gpr, flags) else {
            *failed_by.entry(format!("{m:?}")).or_default() += 1;
            if failures.len() < 60 {
                failures.push(format!(
                    "{insn} ({:02x?}): interpreter faulted\n{}",
                    &bytes[..len],
                    emu.cpu.info_registers()
                ));
            }
            tested += 1;
            continue;
        };
        emu.ram.read(BUF, &mut ram_buf).unwrap();

        // The host: the same bytes in 64-bit mode, re-encoded from 32-bit code otherwise.
        let insn64 = if bits == 64 {
            bytes[..len].to_vec()
        } else {
            let mut enc = Encoder::new(64);
            if enc.encode(&insn, 0).is_err() {
                continue;
            }
            let b = enc.take_buffer();
            let check = Decoder::with_ip(64, &b, 0, DecoderOptions::NONE).decode();
            if check.mnemonic() != m || check.op_count() != insn.op_count() {
                continue;
            }
            b
        };
        if verbose {
            eprintln!("{insn} {:02x?} -> {:02x?} mxcsr {mxcsr:#x}", &bytes[..len], insn64);
        }
        blk.gpr = gpr;
        blk.flags = flags;
        blk.img_in = img;
        // SAFETY: the stub follows the SysV ABI (saves rbx, rbp, r12-r15, restores the x87/SSE
        // state and DF) and only touches the block and the shared buffer. `&mut *blk`: the
        // block itself, not the Box holding it.
        unsafe { host.run(&host_stub(&insn64), &mut *blk) };
        let host_img = blk.img_out;
        let mut host_gpr = blk.gpr;
        for (n, (h, e)) in host_gpr.iter_mut().zip(emu_gpr.iter_mut()).enumerate() {
            if !live(n) || (bits == 32 && n >= 8) {
                *h = 0;
                *e = 0;
            } else if bits == 32 {
                *h &= 0xffff_ffff;
                *e &= 0xffff_ffff;
            }
        }
        let mut emu_img = emu_img;

        let mut diffs = Vec::new();
        if approx(m) {
            // Bound check of the destination lanes, then take the host's destination.
            let dst = insn.op0_register();
            let k = (dst as usize - Register::XMM0 as usize) & 15;
            let src: u128 = if insn.op1_kind() == OpKind::Register {
                let s = (insn.op1_register() as usize - Register::XMM0 as usize) & 15;
                u128::from_le_bytes(img[160 + 16 * s..176 + 16 * s].try_into().unwrap())
            } else {
                let a = insn.virtual_address(1, 0, |r, _, _| reg_value(&gpr, r).or(Some(0))).unwrap_or(0);
                let o = (a - BUF) as usize;
                let mut v = [0u8; 16];
                let n = size as usize;
                v[..n].copy_from_slice(&ram_buf[o..o + n]);
                u128::from_le_bytes(v)
            };
            let lanes = if matches!(m, Mnemonic::Rcpps | Mnemonic::Rsqrtps) { 4 } else { 1 };
            let sqrt = matches!(m, Mnemonic::Rsqrtps | Mnemonic::Rsqrtss);
            for l in 0..lanes {
                let x = (src >> (32 * l)) as u32;
                let at = 160 + 16 * k + 4 * l;
                let ye = u32::from_le_bytes(emu_img[at..at + 4].try_into().unwrap());
                let yh = u32::from_le_bytes(host_img[at..at + 4].try_into().unwrap());
                if let Err(e) = check_approx(sqrt, x, ye) {
                    diffs.push(format!("emu {e}"));
                }
                if let Err(e) = check_approx(sqrt, x, yh) {
                    eprintln!("note: host outside the model for {m:?}: {e}");
                }
                emu_img[at..at + 4].copy_from_slice(&yh.to_le_bytes());
            }
        }
        // Known vendor difference: the SDM says CVTPI2PS enters MMX state also with a memory
        // source (the interpreter follows it); AMD hosts leave the x87 state alone there.
        let x87_skip = m == Mnemonic::Cvtpi2ps && insn.op1_kind() == OpKind::Memory && !host_is_intel();
        for (name, r) in &fields {
            if x87_skip && (name.starts_with("ST") || name == "FSW" || name == "FTW") {
                continue;
            }
            if emu_img[r.clone()] != host_img[r.clone()] {
                diffs.push(format!("{name}: emu {:02x?} host {:02x?}", &emu_img[r.clone()], &host_img[r.clone()]));
            }
        }
        if emu_gpr != host_gpr {
            diffs.push(format!("GPR: emu {emu_gpr:x?} host {host_gpr:x?}"));
        }
        if emu_flags & CHECKED != blk.flags & CHECKED {
            diffs.push(format!("flags: emu {:#x} host {:#x}", emu_flags & CHECKED, blk.flags & CHECKED));
        }
        if ram_buf[..] != buf[..] {
            let first = ram_buf.iter().zip(buf.iter()).position(|(a, b)| a != b).unwrap_or(0);
            diffs.push(format!("memory differs at +{first:#x}"));
        }
        *per_mnemonic.entry(format!("{m:?}")).or_default() += 1;
        let code = format!("{:?}", insn.code());
        if code.contains("r64") || code.contains("rm64") {
            rex_w += 1;
        }
        tested += 1;
        if !diffs.is_empty() {
            *failed_by.entry(format!("{m:?}")).or_default() += 1;
            if failures.len() < 60 {
                let xin: Vec<String> = (0..nxmm)
                    .map(|k| {
                        format!("{:032x}", u128::from_le_bytes(img[160 + 16 * k..176 + 16 * k].try_into().unwrap()))
                    })
                    .collect();
                failures.push(format!(
                    "{insn} ({:02x?}) mxcsr {mxcsr:#x} gpr {gpr:x?}\n  xmm in {xin:?}\n  {}",
                    &bytes[..len],
                    diffs.join("\n  ")
                ));
            }
        }
    }
    let missing: Vec<&String> = mnemonics.iter().filter(|n| !per_mnemonic.contains_key(*n)).collect();
    eprintln!(
        "{bits}-bit: tested {tested} cases ({tries} tries, {rex_w} REX.W general-register forms), {} mnemonics: {per_mnemonic:?}",
        per_mnemonic.len()
    );
    if !missing.is_empty() {
        eprintln!("never tested: {missing:?}");
    }
    assert!(tested >= iters / 2, "too few cases: {tested}");
    assert!(
        failures.is_empty(),
        "mismatches by mnemonic {failed_by:?}; first {}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
