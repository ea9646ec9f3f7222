//! The translating engine against the interpreter: random hot loops (32- and 64-bit, with and
//! without paging) stopped at arbitrary instruction counts, interrupts at every boundary of a
//! compiled block, faults and device accesses in the middle of blocks, self-modifying code and
//! a code cache that fills up. The interpreter is the reference: after every stop the whole CPU
//! state and RAM must be identical.

use super::long_tests::{long_env, DATA};
use super::tests::{paging_env, Env};
use super::*;
use iced_x86::code_asm::*;
use iced_x86::IcedError;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The translator, compiling after a few executions (the tests' loops are short).
fn jit_on(e: &mut Env) {
    e.cpu.set_engine(Engine::Jit);
    e.cpu.jit.as_mut().expect("translator available").set_hot_threshold(4);
}

/// Run until `target` instructions, HLT or shutdown (device exits continue).
fn run_to(e: &mut Env, target: u64) -> RunExit {
    loop {
        match e.cpu.run(&mut e.ram, &mut e.p, target) {
            RunExit::Platform if e.cpu.icount() < target => continue,
            RunExit::Platform => return RunExit::Limit,
            x => return x,
        }
    }
}

fn same(a: &Env, b: &Env, what: &str) {
    assert_eq!(a.cpu.icount(), b.cpu.icount(), "{what}: icount");
    assert_eq!(a.cpu.info_registers(), b.cpu.info_registers(), "{what}");
    assert_eq!(a.cpu.state_hash(), b.cpu.state_hash(), "{what}: state");
    assert_eq!(a.ram.hash(), b.ram.hash(), "{what}: RAM");
    assert_eq!(a.p.acks, b.p.acks, "{what}: interrupt acknowledges");
    assert_eq!(a.p.mmio_writes, b.p.mmio_writes, "{what}: MMIO writes");
    assert_eq!(a.p.calls, b.p.calls, "{what}: device calls");
    assert_eq!(a.p.tsc_reads, b.p.tsc_reads, "{what}: time-stamp reads");
}

/// Run `make()` with the interpreter and with the translator, stopping both every few
/// instructions (random chunk sizes from 1 up) and comparing. Returns the translator's env.
fn compare(make: &dyn Fn() -> Env, seed: u64, max_chunk: u64, what: &str) -> Env {
    compare_with(make, seed, max_chunk, what, 0)
}

/// [`compare`], with compiled memory accesses failing at random when `chaos` is nonzero.
fn compare_with(make: &dyn Fn() -> Env, seed: u64, max_chunk: u64, what: &str, chaos: u64) -> Env {
    let mut r = Rng(seed | 1);
    let mut i = make();
    let mut j = make();
    i.cpu.set_engine(Engine::Interpreter);
    jit_on(&mut j);
    j.cpu.jit_chaos = chaos;
    for step in 0.. {
        let target = j.cpu.icount() + 1 + r.below(max_chunk);
        let xj = run_to(&mut j, target);
        let xi = run_to(&mut i, target);
        assert_eq!(xj, xi, "{what}: stop {step} at {target}");
        same(&i, &j, &format!("{what}: stop {step} at {target}"));
        if xj != RunExit::Limit || step > 100_000 {
            break;
        }
    }
    j
}

/// One random instruction of the translator's forms (32-bit code; EBP = data, ESP = stack are
/// kept).
fn insn32(a: &mut CodeAssembler, r: &mut Rng) -> Result<(), IcedError> {
    let r32 = [eax, ecx, edx, ebx, esi, edi];
    let r16 = [ax, cx, dx, bx, si, di];
    let lo8 = [al, cl, dl, bl];
    let (x, y) = (r.next(), r.next());
    let d = r32[(x >> 4) as usize % 6];
    let s = r32[(x >> 8) as usize % 6];
    let b8 = lo8[(x >> 12) as usize % 4];
    let imm = y as i32;
    let disp = ((y >> 8) & 0xffc) as i32;
    let mem = dword_ptr(ebp + disp);
    let (d16, s16) = (r16[(x >> 4) as usize % 6], r16[(x >> 8) as usize % 6]);
    let c8 = lo8[(y >> 4) as usize % 4];
    match x % 72 {
        0 => a.mov(d, s),
        1 => a.mov(d, imm),
        2 => a.mov(d, mem),
        3 => a.mov(mem, s),
        4 => a.mov(mem, imm),
        5 => a.add(d, s),
        6 => a.adc(d, imm),
        7 => a.sbb(d, mem),
        8 => a.sub(mem, s),
        9 => a.xor(mem, imm),
        10 => a.cmp(d, s),
        11 => a.test(d, imm),
        12 => a.and(d, s),
        13 => a.or(d, imm & 0x7f),
        14 => a.shl(d, (y % 40) as u32),
        15 => a.shr(d, (y % 33) as u32),
        16 => a.sar(d, (y % 32) as u32),
        17 => a.rol(d, (y % 35) as u32),
        18 => a.ror(d, (y % 32) as u32),
        19 => a.rcl(d, (y % 34) as u32),
        20 => a.inc(d),
        21 => a.dec(mem),
        22 => a.neg(d),
        23 => a.not(d),
        24 => a.lea(d, ptr(s + d * 4 + disp)),
        25 => a.imul_3(d, s, imm),
        26 => a.imul_2(d, s),
        27 => a.movzx(d, byte_ptr(ebp + disp)),
        28 => a.movsx(d, word_ptr(ebp + disp)),
        29 => a.movsx(d, b8),
        30 => a.movzx(d, r16[(x >> 12) as usize % 6]),
        31 => a.mov(b8, byte_ptr(ebp + disp)),
        32 => a.mov(byte_ptr(ebp + disp), b8),
        33 => a.add(byte_ptr(ebp + disp), (y & 0xff) as i32),
        34 => a.cmp(b8, (y & 0xff) as i32),
        35 => a.setl(b8),
        36 => a.cmovbe(d, s),
        37 => a.cmovg(d, mem),
        38 => a.adc(mem, s),
        39 => a.sbb(d, imm),
        40 => a.setp(b8),
        41 => a.seto(b8),
        42 => a.inc(dword_ptr(ebp + disp)),
        43 => a.sete(b8),
        44 => a.seta(b8),
        45 => a.cmovs(d, s),
        // Forms only the translator runs (the interpreter's generic path is the reference).
        53 => a.mov(word_ptr(ebp + disp), s16),
        54 => a.mov(d16, word_ptr(ebp + disp)),
        55 => {
            // 16-bit shifts/rotates by immediates (0 and 16..39 stay generic), then maybe a
            // flag consumer.
            let c = ((y >> 8) % 40) as u32;
            match y % 5 {
                0 => a.shl(d16, c)?,
                1 => a.shr(d16, c)?,
                2 => a.sar(d16, c)?,
                3 => a.rol(d16, c)?,
                _ => a.ror(d16, c)?,
            }
            match (y >> 16) % 3 {
                0 => a.setb(c8),
                1 => a.seto(c8),
                _ => Ok(()),
            }
        }
        56 => {
            let m8 = byte_ptr(ebp + disp);
            match y % 8 {
                0 => a.add(b8, m8),
                1 => a.or(b8, m8),
                2 => a.adc(b8, m8),
                3 => a.sbb(b8, m8),
                4 => a.and(b8, m8),
                5 => a.sub(b8, m8),
                6 => a.xor(b8, m8),
                _ => a.cmp(b8, m8),
            }
        }
        57 => {
            let m8 = byte_ptr(ebp + disp);
            match y % 9 {
                0 => a.add(m8, c8),
                1 => a.lock().or(m8, c8),
                2 => a.adc(m8, c8),
                3 => a.sbb(m8, c8),
                4 => a.and(m8, c8),
                5 => a.sub(m8, c8),
                6 => a.lock().xor(m8, c8),
                7 => a.cmp(m8, c8),
                _ => a.test(m8, c8),
            }
        }
        58 => {
            a.push(mem)?;
            a.pop(d)
        }
        59 => {
            if y & 1 == 0 {
                a.bt(d, ((y >> 8) & 0x3f) as i32)?;
            } else {
                a.bt(mem, ((y >> 8) & 0x3f) as i32)?;
            }
            // CF from the bit; the other flags keep what the previous instruction left.
            if (y >> 16) & 1 == 0 {
                a.setb(b8)
            } else {
                a.sete(b8)
            }
        }
        60 => {
            a.push(ebp)?;
            a.mov(ebp, esp)?;
            a.push(s)?;
            a.leave()
        }
        61 => {
            // STI (generic) then CLI (compiled once hot): CLI clears a set IF.
            a.sti()?;
            a.cli()
        }
        62 => {
            a.mul(s)?;
            match (y >> 16) % 3 {
                0 => a.setb(c8),
                1 => a.sets(c8),
                _ => a.setp(c8),
            }
        }
        63 => {
            a.pushfd()?;
            a.pop(d)
        }
        64 => {
            if y & 1 == 0 {
                // Often equal: EAX holds the memory value.
                a.mov(eax, mem)?;
            }
            if (y >> 1) & 1 == 0 {
                a.lock().cmpxchg(mem, s)
            } else {
                a.cmpxchg(mem, s)
            }
        }
        65 => a.lock().add(mem, s),
        67 => a.rdtsc(),
        71 => {
            // SHLD/SHRD by immediates (0 stays generic) or by CL (0..63: zero and masked
            // counts), then a flag consumer or none.
            a.push(s)?;
            let c = ((y >> 8) % 34) as i32;
            match y % 4 {
                0 => a.shld(d, s, c)?,
                1 => a.shrd(d, s, c)?,
                2 => {
                    a.mov(cl, (y >> 16) as u8 as i32 & 0x3f)?;
                    a.shld(d, s, cl)?
                }
                _ => {
                    a.mov(cl, (y >> 16) as u8 as i32 & 0x3f)?;
                    a.shrd(d, s, cl)?
                }
            }
            match (y >> 24) % 4 {
                0 => a.setb(c8)?,
                1 => a.seto(c8)?,
                2 => a.setp(c8)?,
                _ => {}
            }
            a.pop(s)
        }
        68 => a.mov([al, ch, dh, bl, ah, bh][(y >> 4) as usize % 6], (y >> 8) as u8 as i32),
        69 => {
            let h = [ah, ch, dh, bh][(y >> 4) as usize % 4];
            let v = (y >> 8) as u8 as i32;
            match y % 5 {
                0 => a.or(h, v),
                1 => a.and(h, v),
                2 => a.test(h, v),
                3 => a.sub(h, v),
                _ => a.cmp(h, v),
            }
        }
        70 => {
            let h = [ah, ch, dh, bh][(y >> 4) as usize % 4];
            if y & 1 == 0 {
                a.movzx(d, h)
            } else {
                a.movsx(d, h)
            }
        }
        66 => a.lock().inc(mem),
        49 => a.xor(b8, lo8[(y >> 4) as usize % 4]),
        50 => a.test(b8, lo8[(y >> 4) as usize % 4]),
        51 => a.mov(b8, lo8[(y >> 4) as usize % 4]),
        46 => {
            a.push(s)?;
            a.pop(d)
        }
        47 | 48 => {
            // Shifts and rotates by CL (counts 0..63: zero and masked counts included).
            a.push(s)?;
            a.mov(cl, (y & 0x3f) as i32)?;
            match (y >> 8) % 5 {
                0 => a.shl(d, cl)?,
                1 => a.shr(d, cl)?,
                2 => a.sar(d, cl)?,
                3 => a.rol(d, cl)?,
                _ => a.ror(d, cl)?,
            }
            // A flag consumer inside the block (or none: the flags stay pending).
            if (y >> 16) & 1 == 0 {
                a.setb(b8)?;
                a.seto(cl)?;
            }
            a.pop(s)
        }
        _ => {
            // A generic (interpreted) instruction in the middle of compiled code.
            a.push(s)?;
            a.mov(cl, (y & 0x3f) as i32)?;
            a.rcr(d, cl)?;
            a.pop(s)
        }
    }
}

/// A loop of `body` random instructions with conditional forward branches, run `iters` times
/// (counter in memory at `counter`).
fn loop32(
    seed: u64,
    body: usize,
    iters: u32,
    data: u32,
    counter: u32,
) -> impl Fn(&mut CodeAssembler) -> Result<(), IcedError> {
    move |a: &mut CodeAssembler| {
        let mut r = Rng(seed | 1);
        a.mov(ebp, data)?;
        a.mov(dword_ptr(counter), iters)?;
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        for _ in 0..body {
            insn32(a, &mut r)?;
            if r.below(6) == 0 {
                let mut skip = a.create_label();
                match r.below(4) {
                    0 => a.jl(skip)?,
                    1 => a.jbe(skip)?,
                    2 => a.jp(skip)?,
                    _ => a.jo(skip)?,
                }
                insn32(a, &mut r)?;
                a.set_label(&mut skip)?;
            }
        }
        a.dec(dword_ptr(counter))?;
        a.jnz(top)?;
        a.hlt()
    }
}

fn seed_data(e: &mut Env, base: u64) {
    for k in 0..1024u64 {
        e.ram.write_u32(base + 4 * k, (k as u32).wrapping_mul(0x9e37_79b9) ^ 0x5a5a_1234).unwrap();
    }
}

#[test]
fn random_hot_loops_32_bit_flat() {
    for round in 0..12u64 {
        let make = || {
            let mut e = Env::flat(loop32(round * 77 + 1, 40, 60, 0x40_0000, 0x40_2000));
            seed_data(&mut e, 0x40_0000);
            e
        };
        let j = compare(&make, round, if round % 2 == 0 { 5000 } else { 97 }, &format!("flat round {round}"));
        let st = j.cpu.jit_stats();
        assert!(st.insns_compiled > j.cpu.icount() / 2, "round {round}: {st:?} of {}", j.cpu.icount());
        // Blocks of the loop body hand over to each other in compiled code (the run stops at
        // most every 97 instructions in odd rounds, which the chaining budget must respect).
        assert!(st.chained > 0, "round {round}: {st:?}");
    }
}

#[test]
fn random_hot_loops_32_bit_paged() {
    for round in 0..12u64 {
        let make = || {
            // Data and counter on 4 KiB pages (TLB misses, accessed/dirty bits).
            let mut e = paging_env(loop32(round * 31 + 5, 40, 60, 0x20_0000, 0x20_3000));
            seed_data(&mut e, 0x20_0000);
            e
        };
        let j = compare(&make, round + 100, if round % 2 == 0 { 3000 } else { 61 }, &format!("paged round {round}"));
        assert!(j.cpu.jit_stats().insns_compiled > j.cpu.icount() / 2);
    }
}

/// One random instruction of 64-bit code (RBP = data, RSP = stack kept).
fn insn64(a: &mut CodeAssembler, r: &mut Rng) -> Result<(), IcedError> {
    let r64 = [rax, rcx, rdx, rbx, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15];
    let r32 = [eax, ecx, edx, ebx, esi, edi, r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d];
    let r8s = [al, cl, dl, bl, sil, dil, r8b, r9b, r10b, r11b, r12b, r13b, r14b, r15b];
    let (x, y) = (r.next(), r.next());
    let k = (x >> 8) as usize % r64.len();
    let j = (x >> 16) as usize % r64.len();
    let (d, s, d32, s32) = (r64[k], r64[j], r32[k], r32[j]);
    let disp = ((y >> 20) & 0xff8) as i32;
    let imm = (y >> 32) as i32;
    let r16s = [ax, cx, dx, bx, si, di, r8w, r9w, r10w, r11w, r12w, r13w, r14w, r15w];
    let m64 = qword_ptr(rbp + disp);
    match x % 54 {
        53 => {
            // 32-bit SHLD/SHRD in 64-bit code (the upper halves are cleared).
            if y & 1 == 0 {
                a.shld(d32, s32, ((y >> 8) % 33) as i32)?;
            } else {
                a.shrd(d32, s32, ((y >> 8) % 33) as i32)?;
            }
            a.seto(r8s[j])
        }
        // Forms only the translator runs (the interpreter's generic path is the reference).
        43 => a.mov(word_ptr(rbp + disp), r16s[j]),
        44 => a.mov(r16s[k], word_ptr(rbp + disp)),
        45 => {
            let c = ((y >> 8) % 20) as u32;
            match y % 3 {
                0 => a.shr(r16s[k], c)?,
                1 => a.rol(r16s[k], c)?,
                _ => a.sar(r16s[k], c)?,
            }
            a.setb(r8s[j])
        }
        46 => a.xor(r8s[k], byte_ptr(rbp + disp)),
        47 => a.sub(byte_ptr(rbp + disp), r8s[j]),
        48 => {
            a.push(m64)?;
            a.pop(d)
        }
        49 => {
            a.bt(m64, ((y >> 8) & 0x7f) as i32)?;
            a.setb(r8s[j])
        }
        50 => {
            a.mul(s)?;
            a.seto(r8s[j])
        }
        51 => {
            a.pushfq()?;
            a.pop(d)
        }
        52 => {
            if y & 1 == 0 {
                a.mov(rax, m64)?;
            }
            if (y >> 1) & 1 == 0 {
                a.lock().cmpxchg(m64, s)
            } else {
                a.cmpxchg(dword_ptr(rbp + disp), s32)
            }
        }
        39 => a.xor(r8s[k], r8s[j]),
        40 => a.mov(r8s[k], r8s[j]),
        41 => a.cmp(r8s[k], r8s[j]),
        0 => a.mov(d, s),
        1 => a.mov(d32, s32),
        2 => a.mov(d, imm as i64),
        3 => a.mov(d32, imm as u32),
        4 => a.mov(d, qword_ptr(rbp + disp)),
        5 => a.mov(qword_ptr(rbp + disp), s),
        6 => a.mov(dword_ptr(rbp + disp), s32),
        7 => a.add(d, s),
        8 => a.sub(d32, s32),
        9 => a.xor(d, imm),
        10 => a.and(d32, imm),
        11 => a.cmp(d, qword_ptr(rbp + disp)),
        12 => a.adc(qword_ptr(rbp + disp), s),
        13 => a.or(qword_ptr(rbp + disp), imm),
        14 => a.shl(d, (y & 0x3f) as u32),
        15 => a.sar(d32, (y & 0x1f) as u32),
        16 => a.ror(d, (y & 0x3f) as u32),
        17 => a.inc(d),
        18 => a.dec(dword_ptr(rbp + disp)),
        19 => a.neg(d),
        20 => a.not(d32),
        21 => a.lea(d, ptr(s + d * 4 + disp)),
        22 => a.imul_3(d, s, imm),
        23 => a.imul_2(d32, s32),
        24 => a.movzx(d, byte_ptr(rbp + disp)),
        25 => a.movsxd(d, dword_ptr(rbp + disp)),
        26 => a.movsx(d32, r8s[j]),
        27 => a.mov(r8s[k], byte_ptr(rbp + disp)),
        28 => a.add(r8s[k], (y & 0xff) as i32),
        29 => a.setg(r8s[k]),
        30 => a.cmovbe(d32, s32),
        31 => a.cmovl(d, qword_ptr(rbp + disp)),
        32 => a.sbb(d, s),
        33 => a.imul_2(d, s),
        34 => a.shr(d, (y & 0x3f) as u32),
        35 => a.rol(d32, (y & 0x1f) as u32),
        36 => {
            a.push(s)?;
            a.pop(d)
        }
        37 | 38 => {
            // Shifts and rotates by CL, 64- and 32-bit (counts 0..127: masked to 6 or 5 bits).
            a.push(s)?;
            a.mov(cl, (y & 0x7f) as i32)?;
            match ((y >> 8) % 5, (y >> 12) & 1 == 0) {
                (0, true) => a.shl(d, cl)?,
                (0, false) => a.shl(d32, cl)?,
                (1, true) => a.shr(d, cl)?,
                (1, false) => a.shr(d32, cl)?,
                (2, true) => a.sar(d, cl)?,
                (2, false) => a.sar(d32, cl)?,
                (3, true) => a.rol(d, cl)?,
                (3, false) => a.rol(d32, cl)?,
                (_, true) => a.ror(d, cl)?,
                (_, false) => a.ror(d32, cl)?,
            }
            if (y >> 16) & 1 == 0 {
                a.setb(r8s[j])?;
                a.seto(cl)?;
            }
            a.pop(s)
        }
        _ => {
            // A generic (interpreted) instruction in the middle of compiled code.
            a.push(s)?;
            a.mov(cl, (y & 0x3f) as i32)?;
            a.rcl(d, cl)?;
            a.pop(d)
        }
    }
}

fn loop64(round: u64) -> impl Fn(&mut CodeAssembler) -> Result<(), IcedError> {
    move |a: &mut CodeAssembler| -> Result<(), IcedError> {
        let mut r = Rng(round * 1009 + 3);
        let counter = DATA + 0x1800;
        a.mov(rbp, DATA)?;
        a.mov(dword_ptr(counter), 50)?;
        let mut top = a.create_label();
        let mut func = a.create_label();
        a.set_label(&mut top)?;
        for _ in 0..40 {
            insn64(a, &mut r)?;
            match r.below(8) {
                0 => {
                    let mut skip = a.create_label();
                    if r.below(2) == 0 {
                        a.jl(skip)?;
                    } else {
                        a.jns(skip)?;
                    }
                    insn64(a, &mut r)?;
                    a.set_label(&mut skip)?;
                }
                1 => a.call(func)?,
                _ => {}
            }
        }
        a.dec(dword_ptr(counter))?;
        a.jnz(top)?;
        a.hlt()?;
        a.set_label(&mut func)?;
        a.add(r15, 3)?;
        a.ret()
    }
}

#[test]
fn random_hot_loops_64_bit() {
    for round in 0..12u64 {
        let make = || {
            let mut e = long_env(loop64(round));
            seed_data(&mut e, DATA);
            e
        };
        let j = compare(&make, round + 200, if round % 2 == 0 { 4000 } else { 53 }, &format!("64-bit round {round}"));
        assert!(j.cpu.jit_stats().insns_compiled > j.cpu.icount() / 2);
    }
}

#[test]
fn side_exits_at_random_accesses_leave_exact_state() {
    // Compiled accesses fail at random (as a fault or device access would), so blocks leave
    // through exit stubs after every kind of instruction with every kind of pending flags.
    for round in 0..8u64 {
        let flat = || {
            let mut e = Env::flat(loop32(round * 13 + 7, 40, 80, 0x40_0000, 0x40_2000));
            seed_data(&mut e, 0x40_0000);
            e
        };
        let j = compare_with(&flat, round, 1 << 20, &format!("chaos 32 round {round}"), round * 2 + 1);
        assert!(j.cpu.jit_stats().side_exits > 50, "{:?}", j.cpu.jit_stats());
        let long = || {
            let mut e = long_env(loop64(round + 50));
            seed_data(&mut e, DATA);
            e
        };
        let j = compare_with(&long, round, 1 << 20, &format!("chaos 64 round {round}"), round * 2 + 3);
        assert!(j.cpu.jit_stats().side_exits > 50, "{:?}", j.cpu.jit_stats());
    }
}

#[test]
fn interrupts_at_every_boundary_of_compiled_blocks() {
    // IF=1 and a hot loop; the interrupt pin rises at instruction count X (between run calls,
    // as the machine does). The handler stub halts: the pushed EIP and EFLAGS and all state must
    // be the interpreter's for every X.
    let make = || {
        let mut e = Env::flat(|a| {
            a.sti()?;
            loop32(9, 12, 1000, 0x40_0000, 0x40_2000)(a)
        });
        seed_data(&mut e, 0x40_0000);
        e.p.vector = 0x40;
        e
    };
    for x in 300..700u64 {
        let j = interrupt_at(&make, x);
        assert_eq!(j.p.acks[0].icount, x);
    }
}

/// Run `make()` with both engines to count `x`, raise the interrupt pin, run on until the
/// handler halts and compare; returns the translator's env.
fn interrupt_at(make: &dyn Fn() -> Env, x: u64) -> Env {
    let mut i = make();
    let mut j = make();
    jit_on(&mut j);
    for e in [&mut i, &mut j] {
        assert_eq!(run_to(e, x), RunExit::Limit);
        e.cpu.set_intr(true);
        assert_eq!(run_to(e, x + 100), RunExit::Halted);
    }
    same(&i, &j, &format!("interrupt at {x}"));
    j
}

#[test]
fn sti_shadow_and_time_stamp_reads_in_compiled_blocks() {
    // A hot loop that masks interrupts, reads the TSC (a helper call at the instruction's exact
    // count and PC; the block ends after it) and unmasks them (STI ends its block: a pending
    // interrupt waits one more instruction). The pin rises at every count of a window: delivery
    // point, pushed state and time-stamp reads must be the interpreter's.
    let make = || {
        let mut e = Env::flat(|a| {
            a.mov(ebp, 0x40_0000)?;
            a.mov(dword_ptr(0x40_2000), 1000)?;
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.cli()?;
            a.add(esi, 3)?;
            a.rdtsc()?;
            a.mov(dword_ptr(ebp + 8), eax)?;
            a.add(edi, edx)?;
            a.sti()?;
            a.add(ebx, eax)?;
            a.xor(ecx, ebx)?;
            a.dec(dword_ptr(0x40_2000))?;
            a.jnz(top)?;
            a.hlt()
        });
        e.p.vector = 0x40;
        e
    };
    for x in 300..420u64 {
        let j = interrupt_at(&make, x);
        assert_eq!(j.p.acks.len(), 1);
        assert!(j.cpu.jit_stats().insns_compiled > x / 2, "{:?}", j.cpu.jit_stats());
    }
}

#[test]
fn faults_and_device_accesses_inside_compiled_blocks() {
    // The loop runs hot, then on iteration `when` an access in the middle of the block faults
    // (#PF on a not-present page, #GP on a 4 GiB wrap) or reaches a device; the interrupted
    // state (pushed EIP, error code, materialized flags, CR2) must be the interpreter's.
    for (kind, when) in [(0, 3u32), (0, 17), (1, 9), (2, 12), (3, 20)] {
        let make = move || {
            let mut e = paging_env(move |a: &mut CodeAssembler| {
                a.mov(ebp, 0x20_0000)?;
                a.mov(dword_ptr(0x20_3000), 40)?;
                a.mov(edi, 0x30_0010)?;
                let mut top = a.create_label();
                a.set_label(&mut top)?;
                a.mov(esi, 0x20_1000)?;
                a.cmp(dword_ptr(0x20_3000), when)?;
                a.cmove(esi, edi)?;
                a.add(eax, 0x7fff_fff0)?;
                a.add(ebx, dword_ptr(ebp + 8))?;
                a.adc(ecx, eax)?;
                match kind {
                    0 => a.mov(edx, dword_ptr(esi))?,
                    1 => a.mov(dword_ptr(esi + 4), eax)?,
                    2 => {
                        // ESI = 0x30_0010 only on that iteration: a read of the device at
                        // 0xFEE0_0000 (beyond RAM) instead.
                        a.cmp(esi, edi)?;
                        let mut no = a.create_label();
                        a.jne(no)?;
                        a.mov(edx, dword_ptr(0xfee0_0000u32))?;
                        a.set_label(&mut no)?;
                        a.nop()?
                    }
                    _ => {
                        a.cmp(esi, edi)?;
                        let mut no = a.create_label();
                        a.jne(no)?;
                        a.mov(edx, dword_ptr(0xffff_fffeu32))?;
                        a.set_label(&mut no)?;
                        a.nop()?
                    }
                }
                a.sub(edx, ecx)?;
                a.dec(dword_ptr(0x20_3000))?;
                a.jnz(top)?;
                a.hlt()
            });
            e.p.mmio_read_value = 0x1234_5678;
            e
        };
        compare(&make, 7 + u64::from(when), 1 << 20, &format!("kind {kind} at {when}"));
    }
}

/// The self-modifying loop: every 16th iteration a store rewrites the immediate of the `add eax`
/// that directly follows it in the same block (`near`, the immediate's address), every 8th the
/// immediate of the loop's first instruction (`far`, an earlier block).
fn smc_loop(near: u32, far: u32) -> impl Fn(&mut CodeAssembler) -> Result<(), IcedError> {
    move |a: &mut CodeAssembler| {
        let mut top = a.create_label();
        let mut patch = a.create_label();
        let mut skip = a.create_label();
        a.set_label(&mut top)?;
        a.add(ebx, 0x2222_2222)?;
        a.mov(ecx, dword_ptr(0x40_2000))?;
        a.add(edx, ecx)?;
        a.test(ecx, 15)?;
        a.jnz(patch)?;
        a.mov(dword_ptr(near), ecx)?;
        a.set_label(&mut patch)?;
        a.add(eax, 0x1111_1111)?;
        a.add(edx, eax)?;
        a.test(ecx, 7)?;
        a.jnz(skip)?;
        a.mov(dword_ptr(far), edx)?;
        a.set_label(&mut skip)?;
        a.dec(dword_ptr(0x40_2000))?;
        a.jnz(top)?;
        a.hlt()
    }
}

#[test]
fn self_modifying_code_in_a_hot_loop() {
    // Find where the immediates are (the layout does not depend on the addresses stored to).
    let code = tests::asm(32, tests::CODE, smc_loop(0, 0));
    let dec = iced_x86::Decoder::with_ip(32, &code, tests::CODE, iced_x86::DecoderOptions::NONE);
    let listing: Vec<iced_x86::Instruction> = dec.into_iter().collect();
    let imm_at = |text: &str| {
        let i = listing.iter().find(|i| i.to_string().starts_with(text)).expect("instruction present");
        // The imm32 is the instruction's last four bytes.
        (i.ip() + i.len() as u64 - 4) as u32
    };
    let (near, far) = (imm_at("add eax"), imm_at("add ebx"));
    let make = || {
        let mut e = Env::flat(smc_loop(near, far));
        e.ram.write_u32(0x40_2000, 400).unwrap();
        e
    };
    for (seed, chunk) in [(2, 100_000), (3, 7)] {
        let j = compare(&make, seed, chunk, "self-modifying");
        let st = j.cpu.jit_stats();
        // Every patch invalidates the whole code page (all blocks on it are compiled again).
        assert!(st.insns_compiled > j.cpu.icount() / 10, "{st:?}");
        assert!(st.side_exits >= 5, "stores into compiled code leave the block: {st:?}");
    }
    let mut e = make();
    run_to(&mut e, 1 << 20);
    assert_ne!(e.ram.read_u32(u64::from(near)).unwrap(), 0x1111_1111, "the code was patched");
}

#[test]
fn code_written_from_outside_invalidates_compiled_blocks() {
    // DMA (RAM written by a device between run calls) replaces a compiled instruction.
    let make = || {
        Env::flat(|a: &mut CodeAssembler| {
            let mut top = a.create_label();
            a.mov(dword_ptr(0x40_2000), 400)?;
            a.set_label(&mut top)?;
            a.add(eax, 3)?;
            a.dec(dword_ptr(0x40_2000))?;
            a.jnz(top)?;
            a.hlt()
        })
    };
    let mut i = make();
    let mut j = make();
    jit_on(&mut j);
    for e in [&mut i, &mut j] {
        assert_eq!(run_to(e, 300), RunExit::Limit);
        // `add eax, 3` is 05 03 00 00 00 at CODE + 10: make it `add eax, 5`.
        let at = tests::CODE + 10;
        assert_eq!(e.ram.read_u32(at).unwrap(), 0x0000_0305);
        e.ram.write(at + 1, &[5]).unwrap();
        e.cpu.invalidate_code(at + 1, 1);
        assert_eq!(run_to(e, 10_000), RunExit::Halted);
    }
    same(&i, &j, "after DMA into code");
    assert!(j.cpu.jit_stats().insns_compiled > 0);
}

#[test]
fn a_full_code_cache_is_flushed_and_refilled() {
    let make = || {
        let mut e = Env::flat(loop32(4242, 60, 80, 0x40_0000, 0x40_2000));
        seed_data(&mut e, 0x40_0000);
        e
    };
    let mut i = make();
    let mut j = make();
    jit_on(&mut j);
    j.cpu.jit.as_mut().unwrap().shrink_code_cache_for_tests(8 * 1024);
    assert_eq!(run_to(&mut i, 1 << 22), RunExit::Halted);
    assert_eq!(run_to(&mut j, 1 << 22), RunExit::Halted);
    same(&i, &j, "tiny code cache");
    let st = j.cpu.jit_stats();
    assert!(st.flushes > 2, "{st:?}");
    assert!(st.insns_compiled > 0, "{st:?}");
}

#[test]
fn one_block_serves_every_virtual_address_of_its_page() {
    // The same physical code page mapped at two virtual addresses (a library in two processes,
    // a PIE under ASLR): a hot function with internal branches is called through both. Blocks
    // are position-independent, so branch targets, return addresses and exits follow the
    // address it runs at.
    const FUNC: u64 = tests::CODE + 0x800;
    const ALIAS: u64 = 0x3f_0000;
    let make = || {
        let mut e = paging_env(|a: &mut CodeAssembler| {
            let mut top = a.create_label();
            let mut second = a.create_label();
            a.mov(dword_ptr(0x20_3000), 600)?;
            a.mov(edi, FUNC as u32)?;
            a.set_label(&mut top)?;
            a.cmp(dword_ptr(0x20_3000), 300)?;
            a.jne(second)?;
            a.mov(edi, (ALIAS + 0x800) as u32)?;
            a.set_label(&mut second)?;
            a.call(edi)?;
            a.dec(dword_ptr(0x20_3000))?;
            a.jnz(top)?;
            a.hlt()
        });
        let func = tests::asm(32, FUNC, |a: &mut CodeAssembler| {
            let mut odd = a.create_label();
            let mut done = a.create_label();
            a.add(eax, dword_ptr(0x20_3000))?;
            a.test(eax, 1)?;
            a.jnz(odd)?;
            a.add(ebx, 3)?;
            a.jmp(done)?;
            a.set_label(&mut odd)?;
            a.sub(ebx, eax)?;
            a.set_label(&mut done)?;
            a.mov(ecx, dword_ptr(esp))?;
            a.add(edx, ecx)?;
            a.ret()
        });
        e.ram.write(FUNC, &func).unwrap();
        // The alias page: virtual ALIAS -> the physical page of CODE.
        e.ram.write_u32(0x11000 + 4 * (ALIAS >> 12), (tests::CODE as u32) | 3).unwrap();
        e
    };
    let j = compare(&make, 5, 1 << 20, "aliased code page");
    let st = j.cpu.jit_stats();
    assert!(st.insns_compiled > j.cpu.icount() / 2, "{st:?}");
    // EDX summed return addresses through both mappings.
    assert_ne!(j.cpu.gpr(Gpr::Rdx), 0);
}

#[test]
fn a_tight_loop_iterates_inside_compiled_code_and_stops_exactly() {
    // One block that branches to its own start: it iterates inside compiled code, and still
    // stops at any instruction count and takes an interrupt at any boundary.
    let make = || {
        let mut e = Env::flat(|a: &mut CodeAssembler| {
            let mut top = a.create_label();
            a.sti()?;
            a.mov(ecx, 5000)?;
            a.set_label(&mut top)?;
            a.mov(eax, esi)?;
            a.shl(eax, 13)?;
            a.xor(esi, eax)?;
            a.add(dword_ptr(0x40_0000), esi)?;
            a.imul_3(edx, esi, 33)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        });
        e.cpu.set_gpr(Gpr::Rsi, 0x1234_5678);
        e
    };
    for (seed, chunk) in [(1, 1 << 20), (2, 1000), (3, 9)] {
        let j = compare(&make, seed, chunk, "tight loop");
        let st = j.cpu.jit_stats();
        // With stops every few instructions the whole loop rarely fits before the next one.
        if chunk >= 1000 {
            assert!(st.insns_compiled > j.cpu.icount() * 9 / 10, "{st:?}");
            assert!(st.loop_iterations > 100, "iterations without the dispatcher: {st:?}");
        }
    }
    for x in (1000..1400).step_by(7) {
        let mut i = make();
        let mut j = make();
        jit_on(&mut j);
        for e in [&mut i, &mut j] {
            e.p.vector = 0x41;
            assert_eq!(run_to(e, x), RunExit::Limit);
            e.cpu.set_intr(true);
            assert_eq!(run_to(e, x + 10), RunExit::Halted);
        }
        same(&i, &j, &format!("interrupt at {x} in a compiled loop"));
    }
}
