//! MMX/SSE tests the host-difference test (`tests/host_diff_sse.rs`) cannot do: exception
//! delivery (#UD/#NM/#MF/#GP alignment/#XM), the unmasked-exception responses, MXCSR loads,
//! MMX/x87 interplay, FXSAVE/FXRSTOR layout, fault atomicity, FISTTP, CPUID, the RCP/RSQRT error
//! bound, and some soft-float edge cases by hand.

use crate::softfloat::F80;
use crate::sse_float::{self as sf, Ctx, F32, F64};
use crate::sse_int::int_op;
use crate::tests::Env;
use crate::*;
use iced_x86::code_asm::*;
use iced_x86::Mnemonic as M;

const DATA: u64 = 0x40_0000;

/// A flat 32-bit machine with CR4.OSFXSR set (and `cr4` bits added).
fn env(cr4_bits: u64, f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Env {
    let mut e = Env::flat(f);
    e.cpu.s.cr4 |= CR4_OSFXSR | cr4_bits;
    e
}

fn run_ok(cr4_bits: u64, f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Env {
    let mut e = env(cr4_bits, f);
    let x = e.run();
    assert_eq!(x, RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!(e.stub_vector(), None, "unexpected exception\n{}", e.cpu.info_registers());
    e
}

fn xmm(e: &Env, n: usize) -> u128 {
    e.cpu.s.sse.xmm[n]
}

#[test]
fn cpuid_advertises_exactly_mmx_sse_sse2_sse3_ssse3() {
    let e = run_ok(0, |a| {
        a.mov(eax, 1)?;
        a.cpuid()?;
        a.hlt()
    });
    let (d, c) = (e.r(Gpr::Rdx), e.r(Gpr::Rcx));
    for bit in [0, 23, 24, 25, 26] {
        assert_ne!(d & (1 << bit), 0, "EDX bit {bit}");
    }
    assert_eq!(d & (1 << 19), 0, "no CLFLUSH");
    assert_eq!(c & 1, 1, "SSE3");
    assert_ne!(c & (1 << 9), 0, "SSSE3");
    assert_eq!(c & !(1 | (1 << 9)), 0, "nothing else in ECX (no MONITOR, no SSE4)");
}

#[test]
fn sse_needs_osfxsr_and_no_em_mmx_only_no_em() {
    // SSE with CR4.OSFXSR = 0: #UD.
    let mut e = Env::flat(|a| {
        a.addps(xmm0, xmm1)?;
        a.hlt()
    });
    e.run_expect_vector(6);
    // MMX (also the SSE extensions on MMX registers) does not care about OSFXSR.
    let mut e = Env::flat(|a| {
        a.paddb(mm0, mm1)?;
        a.pavgb(mm0, mm1)?;
        a.hlt()
    });
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.stub_vector(), None);
    // ... but CVTPI2PS (XMM destination) does.
    let mut e = Env::flat(|a| {
        a.cvtpi2ps(xmm0, mm1)?;
        a.hlt()
    });
    e.run_expect_vector(6);
    // CR0.EM = 1: #UD for both; LDMXCSR too.
    for k in 0..3 {
        let mut e = env(0, |a| {
            match k {
                0 => a.paddb(mm0, mm1)?,
                1 => a.mulsd(xmm0, xmm1)?,
                _ => a.ldmxcsr(dword_ptr(DATA))?,
            }
            a.hlt()
        });
        e.cpu.s.cr0 |= CR0_EM;
        e.run_expect_vector(6);
    }
    // CR0.TS = 1: #NM for MMX, SSE, EMMS, STMXCSR.
    for k in 0..4 {
        let mut e = env(0, |a| {
            match k {
                0 => a.paddb(mm0, mm1)?,
                1 => a.mulsd(xmm0, xmm1)?,
                2 => a.emms()?,
                _ => a.stmxcsr(dword_ptr(DATA))?,
            }
            a.hlt()
        });
        e.cpu.s.cr0 |= CR0_TS;
        e.run_expect_vector(7);
    }
    // LOCK: #UD.
    let mut e = env(0, |a| {
        a.db(&[0xf0, 0x0f, 0x58, 0xc1])?; // lock addps xmm0, xmm1
        a.hlt()
    });
    e.run_expect_vector(6);
}

#[test]
fn pending_x87_exception_raises_mf_for_mmx_only() {
    let prog = |k: u8| {
        move |a: &mut CodeAssembler| {
            a.fninit()?;
            a.mov(word_ptr(DATA), 0x037b)?; // ZE unmasked
            a.fldcw(word_ptr(DATA))?;
            a.fld1()?;
            a.fldz()?;
            a.fdivp(st1, st0)?; // 1/0: ZE, ES pending
            match k {
                0 => a.paddb(mm0, mm1)?,
                1 => a.emms()?,
                2 => a.cvtpi2ps(xmm0, qword_ptr(DATA))?,
                3 => a.addps(xmm0, xmm1)?,
                _ => a.cvtpi2pd(xmm0, qword_ptr(DATA))?,
            }
            a.hlt()
        }
    };
    for k in 0..3 {
        let mut e = env(0, prog(k));
        e.run_expect_vector(16);
        // The unmasked FDIVP neither stored nor popped: TOP is still 6.
        assert_eq!(e.cpu.s.fpu.top(), 6, "no MMX transition before #MF");
    }
    // SSE instructions (and CVTPI2PD with a memory source) do not take x87 exceptions.
    for k in 3..5 {
        run_ok(0, prog(k));
    }
}

#[test]
fn mmx_aliases_x87_registers() {
    let mut e = env(0, |a| {
        a.fninit()?;
        a.fld1()?;
        a.fldpi()?; // TOP = 6, R6 and R7 in use
        a.mov(dword_ptr(DATA), 0x1122_3344)?;
        a.mov(dword_ptr(DATA + 4), 0x5566_7788)?;
        a.movq(mm3, qword_ptr(DATA))?;
        a.hlt()
    });
    assert_eq!(e.run(), RunExit::Halted);
    let f = &e.cpu.s.fpu;
    assert_eq!(f.top(), 0, "MMX instructions set TOP = 0");
    assert_eq!(f.tags, 0xff, "all valid");
    assert_eq!(f.regs[3], F80::new(0xffff, 0x5566_7788_1122_3344), "MM3 is physical R3, exponent all ones");
    assert_eq!(f.regs[7], F80::ONE, "others untouched");
    // Reading MMX registers transitions too; EMMS empties the tags and keeps TOP = 0.
    let e = run_ok(0, |a| {
        a.fninit()?;
        a.fld1()?;
        a.movd(eax, mm7)?;
        a.hlt()
    });
    assert_eq!(e.cpu.s.fpu.top(), 0);
    assert_eq!(e.cpu.s.fpu.tags, 0xff);
    assert_eq!(e.r(Gpr::Rax), 0, "MM7 = R7 = 1.0: low 32 bits of the significand");
    let e = run_ok(0, |a| {
        a.fninit()?;
        a.fld1()?;
        a.emms()?;
        a.hlt()
    });
    assert_eq!(e.cpu.s.fpu.top(), 0);
    assert_eq!(e.cpu.s.fpu.tags, 0);
}

#[test]
fn alignment_of_16_byte_operands() {
    for (k, want) in [(0, Some(13)), (1, None), (2, Some(13)), (3, None), (4, None), (5, Some(13)), (6, None)] {
        let mut e = env(0, |a| {
            match k {
                0 => a.movaps(xmm0, xmmword_ptr(DATA + 8))?,
                1 => a.movups(xmm0, xmmword_ptr(DATA + 8))?,
                2 => a.addps(xmm0, xmmword_ptr(DATA + 4))?,
                3 => a.addss(xmm0, dword_ptr(DATA + 4))?,
                4 => a.lddqu(xmm0, xmmword_ptr(DATA + 1))?,
                5 => a.movntdq(xmmword_ptr(DATA + 8), xmm1)?,
                _ => a.movlps(xmm0, qword_ptr(DATA + 4))?,
            }
            a.hlt()
        });
        let x = e.run();
        assert_eq!(x, RunExit::Halted);
        assert_eq!(e.stub_vector(), want, "case {k}");
        if want.is_some() {
            assert_eq!(e.stack(0), 0, "error code 0");
        }
    }
}

/// Run `divps xmm0, xmm1` with `mxcsr`, xmm0 = `a`, xmm1 = `b`.
fn divps(cr4_bits: u64, mxcsr: u32, a: u128, b: u128) -> Env {
    let mut e = env(cr4_bits, |a| {
        a.divps(xmm0, xmm1)?;
        a.hlt()
    });
    e.cpu.s.sse.mxcsr = mxcsr;
    e.cpu.s.sse.xmm[0] = a;
    e.cpu.s.sse.xmm[1] = b;
    assert_eq!(e.run(), RunExit::Halted);
    e
}

fn ps(v: [f32; 4]) -> u128 {
    v.iter().enumerate().fold(0, |acc, (k, x)| acc | (u128::from(x.to_bits()) << (32 * k)))
}

#[test]
fn unmasked_simd_exceptions_xm_or_ud_and_flags() {
    let a = ps([1.0, 1.0, 0.0, 4.0]);
    let b = ps([0.0, 3.0, 0.0, 2.0]);
    // All masked: ZE (lane 0), PE (lane 1), IE (lane 2) set, result written.
    let e = divps(0, 0x1f80, a, b);
    assert_eq!(e.stub_vector(), None);
    assert_eq!(e.cpu.s.sse.mxcsr, 0x1f80 | 0x25);
    assert_eq!(xmm(&e, 0) >> 64 & 0xffff_ffff, 0xffc0_0000, "default NaN");
    // ZE unmasked, OSXMMEXCPT: #XM; only the pre-computation flags; destination unchanged.
    let e = divps(CR4_OSXMMEXCPT, 0x1f80 & !(sf::ZE << 7), a, b);
    assert_eq!(e.stub_vector(), Some(19));
    assert_eq!(e.cpu.s.sse.mxcsr & 0x3f, sf::IE | sf::ZE, "no PE from lane 1");
    assert_eq!(xmm(&e, 0), a);
    // Without OSXMMEXCPT: #UD.
    let e = divps(0, 0x1f80 & !(sf::ZE << 7), a, b);
    assert_eq!(e.stub_vector(), Some(6));
    // Only PE unmasked: post-computation; all flags set, destination unchanged.
    let e = divps(CR4_OSXMMEXCPT, 0x1f80 & !(sf::PE << 7), a, b);
    assert_eq!(e.stub_vector(), Some(19));
    assert_eq!(e.cpu.s.sse.mxcsr & 0x3f, sf::IE | sf::ZE | sf::PE);
    assert_eq!(xmm(&e, 0), a);
    // Unmasked UE reports exact tiny results too (masked: only with PE).
    let tiny = ps([f32::from_bits(0x0080_0000), 0.0, 0.0, 0.0]);
    let two = ps([2.0, 1.0, 1.0, 1.0]);
    let e = divps(CR4_OSXMMEXCPT, 0x1f80, tiny, two);
    assert_eq!(e.cpu.s.sse.mxcsr & 0x3f, 0, "exact denormal result, masked: no UE");
    assert_eq!(xmm(&e, 0) & 0xffff_ffff, 0x0040_0000);
    let e = divps(CR4_OSXMMEXCPT, 0x1f80 & !(sf::UE << 7), tiny, two);
    assert_eq!(e.stub_vector(), Some(19));
    assert_eq!(e.cpu.s.sse.mxcsr & 0x3f, sf::UE);
    // COMISS with an unmasked IE leaves EFLAGS alone.
    let mut e = env(CR4_OSXMMEXCPT, |a| {
        a.comiss(xmm0, xmm1)?;
        a.hlt()
    });
    e.cpu.s.sse.mxcsr = 0x1f80 & !(sf::IE << 7);
    e.cpu.s.sse.xmm[0] = 0x7fc0_0000;
    e.cpu.set_rflags(0x2 | CF);
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.stub_vector(), Some(19));
}

#[test]
fn ldmxcsr_stmxcsr_and_reserved_bits() {
    let e = run_ok(0, |a| {
        a.mov(dword_ptr(DATA), 0xffff)?;
        a.ldmxcsr(dword_ptr(DATA))?;
        a.stmxcsr(dword_ptr(DATA + 4))?;
        a.hlt()
    });
    assert_eq!(e.ram.read_u32(DATA + 4).unwrap(), 0xffff);
    let mut e = env(0, |a| {
        a.mov(dword_ptr(DATA), 0x1_1f80)?;
        a.ldmxcsr(dword_ptr(DATA))?;
        a.hlt()
    });
    e.run_expect_vector(13);
    assert_eq!(e.cpu.s.sse.mxcsr, 0x1f80, "unchanged");
}

#[test]
fn fxsave_fxrstor_store_and_load_mxcsr_and_xmm() {
    let mut e = env(0, |a| {
        a.mov(dword_ptr(DATA + 0x800), 0x7fc0)?; // MXCSR for the reload: RC=11, DAZ
        a.fxsave(ptr(DATA))?;
        a.mov(eax, dword_ptr(DATA + 24))?;
        a.mov(dword_ptr(DATA + 24), 0x7fc0)?;
        a.mov(dword_ptr(DATA + 160 + 16 * 7), 0xabcd)?;
        a.fxrstor(ptr(DATA))?;
        a.hlt()
    });
    e.cpu.s.sse.mxcsr = 0x1f81;
    for k in 0..8 {
        e.cpu.s.sse.xmm[k] = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10 * (k as u128 + 1);
    }
    let before = e.cpu.s.sse.xmm;
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.stub_vector(), None);
    assert_eq!(e.r(Gpr::Rax), 0x1f81, "MXCSR stored");
    assert_eq!(e.ram.read_u32(DATA + 28).unwrap(), 0xffff, "MXCSR_MASK with DAZ");
    for (k, v) in before.iter().enumerate() {
        let mut b = [0u8; 16];
        e.ram.read(DATA + 160 + 16 * k as u64, &mut b).unwrap();
        if k != 7 {
            assert_eq!(u128::from_le_bytes(b), *v, "XMM{k} at {}", 160 + 16 * k);
        }
    }
    assert_eq!(e.cpu.s.sse.mxcsr, 0x7fc0, "MXCSR loaded");
    assert_eq!(e.cpu.s.sse.xmm[7] as u32, 0xabcd, "XMM7 loaded");
    assert_eq!(e.cpu.s.sse.xmm[6], before[6]);
}

/// A flat machine with paging where the page at 0x30_0000 is not present.
fn paged(f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Env {
    let mut e = env(0, f);
    let pd = 0x10000u64;
    let pt = 0x11000u64;
    e.ram.write_u32(pd, (pt as u32) | 0x3).unwrap();
    e.ram.write_u32(pd + 4, 0x40_0000 | 0x80 | 0x3).unwrap();
    for k in 0..1024u64 {
        e.ram.write_u32(pt + 4 * k, ((k << 12) as u32) | 0x3).unwrap();
    }
    e.ram.write_u32(pt + 4 * 0x300, 0).unwrap();
    e.cpu.s.cr3 = pd;
    e.cpu.s.cr4 |= crate::CR4_PSE;
    e.cpu.s.cr0 |= crate::CR0_PG;
    e
}

#[test]
fn faults_are_atomic() {
    // A 16-byte store straddling into the missing page writes nothing.
    let mut e = paged(|a| {
        a.movdqu(xmmword_ptr(0x2f_fff8), xmm1)?;
        a.hlt()
    });
    e.cpu.s.sse.xmm[1] = u128::MAX;
    e.run_expect_vector(14);
    assert_eq!(e.cpu.cr(2), 0x30_0000);
    assert_eq!(e.ram.read_u64(0x2f_fff8).unwrap(), 0, "nothing written");
    // MASKMOVDQU likewise.
    let mut e = paged(|a| {
        a.mov(edi, 0x2f_fff8)?;
        a.maskmovdqu(xmm1, xmm2)?;
        a.hlt()
    });
    e.cpu.s.sse.xmm[1] = u128::MAX;
    e.cpu.s.sse.xmm[2] = u128::MAX;
    e.run_expect_vector(14);
    assert_eq!(e.ram.read_u64(0x2f_fff8).unwrap(), 0);
    // A faulting MMX load leaves the x87 state (and the register) alone.
    let mut e = paged(|a| {
        a.fninit()?;
        a.fld1()?;
        a.paddb(mm7, qword_ptr(0x2f_fffc))?;
        a.hlt()
    });
    e.run_expect_vector(14);
    assert_eq!(e.cpu.s.fpu.top(), 7);
    assert_eq!(e.cpu.s.fpu.tags, 0x80);
    assert_eq!(e.cpu.s.fpu.regs[7], F80::ONE);
    // A faulting SSE load leaves the destination and MXCSR alone.
    let mut e = paged(|a| {
        a.divss(xmm0, dword_ptr(0x30_0000))?;
        a.hlt()
    });
    e.cpu.s.sse.xmm[0] = 5;
    e.run_expect_vector(14);
    assert_eq!(xmm(&e, 0), 5);
    assert_eq!(e.cpu.s.sse.mxcsr, 0x1f80);
    // MOVNTI and STMXCSR write nothing on a segment-limit fault.
    let mut e = env(0, |a| {
        a.movnti(dword_ptr(0xffff_fffe_u32 as i32), eax)?;
        a.hlt()
    });
    e.run_expect_vector(13);
}

#[test]
fn fisttp_truncates_whatever_the_rounding_control() {
    let e = run_ok(0, |a| {
        a.fninit()?;
        a.mov(dword_ptr(DATA), 0x402c_cccd)?; // 2.7f
        a.mov(dword_ptr(DATA + 4), 0xc02c_cccd_u32 as i32)?; // -2.7f
        a.fld(dword_ptr(DATA))?;
        a.fisttp(dword_ptr(DATA + 8))?;
        a.fld(dword_ptr(DATA + 4))?;
        a.fisttp(word_ptr(DATA + 12))?;
        a.fld(dword_ptr(DATA + 4))?;
        a.fisttp(qword_ptr(DATA + 16))?;
        a.hlt()
    });
    assert_eq!(e.ram.read_u32(DATA + 8).unwrap(), 2);
    assert_eq!(e.ram.read_u32(DATA + 12).unwrap() & 0xffff, 0xfffe);
    assert_eq!(e.ram.read_u64(DATA + 16).unwrap(), (-2i64) as u64);
    assert_eq!(e.cpu.s.fpu.tags, 0, "popped");
    assert_ne!(e.cpu.s.fpu.fsw & 0x20, 0, "PE");
}

#[test]
fn state_save_includes_sse_registers() {
    let mut e = run_ok(0, |a| {
        a.pcmpeqb(xmm1, xmm1)?;
        a.hlt()
    });
    let saved = e.cpu.save_state();
    let h = e.cpu.state_hash();
    let mut c = Cpu::new(CpuConfig::i386());
    c.load_state(&saved).unwrap();
    assert_eq!(c.s.sse, e.cpu.s.sse);
    assert_eq!(c.state_hash(), h);
    e.cpu.s.sse.xmm[15] ^= 1;
    assert_ne!(e.cpu.state_hash(), h);
    e.cpu.s.sse.xmm[15] ^= 1;
    e.cpu.s.sse.mxcsr ^= 1;
    assert_ne!(e.cpu.state_hash(), h);
}

#[test]
fn rcp_rsqrt_within_the_architectural_bound() {
    let mut x: u32 = 0x1234_5678;
    for k in 0..300_000u32 {
        // Every exponent, random significands; plus a sweep over the first significands.
        let v = if k < 0x10000 { 0x3f80_0000 | (k << 7) } else { x };
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let f = f32::from_bits(v);
        if !f.is_normal() {
            continue;
        }
        let r = f32::from_bits(sf::rcp(v));
        let exact = 1.0 / f64::from(f);
        if exact.abs() >= f64::from(f32::MIN_POSITIVE) && exact.abs() <= f64::from(f32::MAX) {
            let err = ((f64::from(r) - exact) / exact).abs();
            assert!(err <= 1.5 / 4096.0, "rcp({v:#x}) = {r:e}, err {err:e}");
        }
        if f > 0.0 {
            let r = f32::from_bits(sf::rsqrt(v));
            let exact = 1.0 / f64::from(f).sqrt();
            let err = ((f64::from(r) - exact) / exact).abs();
            assert!(err <= 1.5 / 4096.0, "rsqrt({v:#x}) = {r:e}, err {err:e}");
        }
    }
    assert_eq!(sf::rcp(0), 0x7f80_0000);
    assert_eq!(sf::rcp(0x8000_0001), 0xff80_0000, "denormal acts as zero");
    assert_eq!(sf::rcp(0xff80_0000), 0x8000_0000);
    assert_eq!(sf::rsqrt(0xbf80_0000), 0xffc0_0000);
    assert_eq!(sf::rsqrt(0x7f80_0000), 0);
    assert_eq!(sf::rcp(0x7f80_0001), 0x7fc0_0001, "SNaN quieted");
    assert_eq!(sf::rcp(0x3f80_0000), 0x3f80_0000);
    assert_eq!(sf::rcp(0x7f7f_ffff), 0, "tiny results flush to zero");
}

#[test]
fn soft_float_edge_cases() {
    let mut c = Ctx::new(0x1f80);
    // Two NaNs: the first source wins (quieted); SNaN raises IE.
    assert_eq!(c.add(F32, 0x7f80_0001, 0xffc0_0002, false), 0x7fc0_0001);
    assert_eq!(c.flags, sf::IE);
    let mut c = Ctx::new(0x1f80);
    assert_eq!(c.mul(F64, 0x3ff0_0000_0000_0000, 0xfff0_0000_0000_0001), 0xfff8_0000_0000_0001);
    // inf - inf: default NaN.
    let mut c = Ctx::new(0x1f80);
    assert_eq!(c.add(F32, 0x7f80_0000, 0x7f80_0000, true), 0xffc0_0000);
    // x - x = +0, or -0 rounding down.
    let mut c = Ctx::new(0x1f80);
    assert_eq!(c.add(F32, 0x3f80_0000, 0x3f80_0000, true), 0);
    let mut c = Ctx::new(0x3f80);
    assert_eq!(c.add(F32, 0x3f80_0000, 0x3f80_0000, true), 0x8000_0000);
    // Overflow per rounding mode.
    for (rc, want) in [(0u32, 0x7f80_0000u64), (1, 0x7f7f_ffff), (2, 0x7f80_0000), (3, 0x7f7f_ffff)] {
        let mut c = Ctx::new(0x1f80 | rc << 13);
        assert_eq!(c.mul(F32, 0x7f7f_ffff, 0x4000_0000), want, "rc {rc}");
        assert_eq!(c.flags, sf::OE | sf::PE);
    }
    // FTZ: tiny results become zero with UE and PE; DAZ: denormal inputs are zeros, no DE.
    let mut c = Ctx::new(0x1f80 | sf::FTZ);
    assert_eq!(c.mul(F32, 0x0080_0000, 0x3f00_0000), 0);
    assert_eq!(c.flags, sf::UE | sf::PE);
    let mut c = Ctx::new(0x1f80 | sf::DAZ);
    assert_eq!(c.add(F32, 0x0000_0001, 0x8000_0000, false), 0);
    assert_eq!(c.flags, 0);
    let mut c = Ctx::new(0x1f80);
    assert_eq!(c.add(F32, 0x0000_0001, 0, false), 1);
    assert_eq!(c.flags, sf::DE);
    // Conversions: integer indefinite; truncation; 64-bit.
    let mut c = Ctx::new(0x1f80);
    assert_eq!(c.float_to_int(F32, 0x4f00_0000, 32, false), 0x8000_0000);
    assert_eq!(c.flags, sf::IE);
    let mut c = Ctx::new(0x1f80);
    assert_eq!(c.float_to_int(F64, (-2.5f64).to_bits(), 32, false), (-2i32) as u32 as u64);
    assert_eq!(c.float_to_int(F64, (-2.5f64).to_bits(), 32, true), (-2i32) as u32 as u64);
    assert_eq!(c.float_to_int(F64, (3.5f64).to_bits(), 64, false), 4);
    assert_eq!(c.float_to_int(F64, (-9.223_372_036_854_776e18_f64).to_bits(), 64, false), 1 << 63);
    assert_eq!(c.flags, sf::PE);
    assert_eq!(c.int_to_float(F32, i64::MAX), 0x5f00_0000);
    // CVTSD2SS of a NaN keeps the top payload bits.
    let mut c = Ctx::new(0x1f80);
    assert_eq!(c.convert(F64, F32, 0x7ff0_0000_2000_0000), 0x7fc0_0001);
    assert_eq!(c.flags, sf::IE);
    // MINPS/MAXPS return the second operand for NaNs and for two zeros.
    let mut c = Ctx::new(0x1f80);
    assert_eq!(c.minmax(F32, 0x8000_0000, 0, false), 0);
    assert_eq!(c.minmax(F32, 0x7fc0_0000, 0x3f80_0000, true), 0x3f80_0000);
    assert_eq!(c.minmax(F32, 0x3f80_0000, 0x7f80_0001, true), 0x7f80_0001);
    // Square root of -0 is -0; of a negative number the default NaN.
    let mut c = Ctx::new(0x1f80);
    assert_eq!(c.sqrt(F64, 1 << 63), 1 << 63);
    assert_eq!(c.sqrt(F64, (-4.0f64).to_bits()), 0xfff8_0000_0000_0000);
    assert_eq!(c.sqrt(F64, 4.0f64.to_bits()), 2.0f64.to_bits());
}

#[test]
fn integer_lane_operations() {
    // A few hand-checked values (the host-difference test covers the rest).
    assert_eq!(int_op(M::Paddsw, 0x7fff_8000, 0x0001_ffff, 8, 0), Some(0x7fff_8000));
    assert_eq!(int_op(M::Packuswb, 0x0100_00ff_ff80_0010, 0, 8, 0), Some(0xffff_0010));
    assert_eq!(int_op(M::Pmaddwd, 0x8000_8000, 0x8000_8000, 8, 0), Some(0x8000_0000));
    assert_eq!(int_op(M::Psraw, 0x8000_0001, 99, 8, 0), Some(0xffff_0000));
    assert_eq!(int_op(M::Psrldq, u128::MAX, 0, 16, 15), Some(0xff));
    assert_eq!(int_op(M::Palignr, 0x1122, 0x3344, 16, 1), Some((0x1122u128 << 120) | 0x33));
    assert_eq!(int_op(M::Pshufb, 0x0706_0504_0302_0100, 0x0580_0001, 8, 0), Some(0x0500_0001));
    assert_eq!(int_op(M::Pmulhrsw, 0x4000, 0x4000, 8, 0), Some(0x2000));
}

/// A CPU in flat 64-bit mode (identity-mapped first 8 MiB) with CR4.OSFXSR, running `f` at
/// `CODE`; no IDT, so any exception ends in a shutdown.
fn run_long(f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Env {
    let mut e = Env::flat(|a| a.hlt());
    let pml4 = 0x9000u64;
    e.ram.write_u64(pml4, (pml4 + 0x1000) | 3).unwrap();
    e.ram.write_u64(pml4 + 0x1000, (pml4 + 0x2000) | 3).unwrap();
    for k in 0..4u64 {
        e.ram.write_u64(pml4 + 0x2000 + 8 * k, (k << 21) | 0x83).unwrap();
    }
    let code = crate::tests::asm(64, crate::tests::CODE, f);
    e.ram.write(crate::tests::CODE, &code).unwrap();
    e.cpu = Cpu::new(CpuConfig { model: CpuModel::X86_64 });
    e.cpu.enter_flat_long_mode(pml4, crate::tests::CODE);
    e.cpu.s.cr4 |= CR4_OSFXSR;
    e.cpu.set_gpr(Gpr::Rsp, crate::tests::STACK);
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!(e.cpu.rip(), crate::tests::CODE + code.len() as u64, "{}", e.cpu.info_registers());
    e
}

#[test]
fn long_mode_rex_forms_and_fxsave64() {
    let e = run_long(|a| {
        a.mov(rax, -3i64 as u64)?;
        a.cvtsi2sd(xmm8, rax)?; // REX.W: 64-bit integer source
        a.movq(xmm15, rax)?;
        a.movq(rbx, xmm8)?;
        a.mov(rcx, 0x7ff0_0000_0000_0000u64)?;
        a.movq(xmm9, rcx)?;
        a.cvttsd2si(rdx, xmm9)?; // infinity: 64-bit integer indefinite
        a.pcmpeqb(xmm10, xmm10)?;
        a.pmovmskb(r8, xmm10)?;
        a.pextrw(r9, xmm15, 7)?;
        a.mov(r10, -1i64 as u64)?;
        a.movd(r10d, xmm8)?; // zero-extends into R10
        a.fxsave64(ptr(DATA))?;
        a.mov(qword_ptr(DATA + 160 + 16 * 12), rax)?;
        a.fxrstor64(ptr(DATA))?;
        a.fxsave(ptr(DATA + 0x200))?;
        a.hlt()
    });
    assert_eq!(e.cpu.gpr(Gpr::Rbx), (-3.0f64).to_bits());
    assert_eq!(e.cpu.gpr(Gpr::Rdx), 1 << 63);
    assert_eq!(e.cpu.gpr(Gpr::R8), 0xffff);
    assert_eq!(e.cpu.gpr(Gpr::R9), 0);
    assert_eq!(e.cpu.gpr(Gpr::R10), 0);
    assert_eq!(xmm(&e, 15), u128::from(-3i64 as u64));
    assert_eq!(xmm(&e, 12), u128::from(-3i64 as u64), "XMM12 loaded by FXRSTOR64");
    assert_eq!(e.ram.read_u64(DATA + 160 + 16 * 15).unwrap(), -3i64 as u64, "XMM15 stored by FXSAVE64");
    assert_eq!(e.ram.read_u64(DATA + 0x200 + 160 + 16 * 10).unwrap(), u64::MAX, "XMM10 stored by FXSAVE");
    assert_ne!(e.cpu.s.sse.mxcsr & sf::IE, 0, "CVTTSD2SI of infinity: IE");
}
