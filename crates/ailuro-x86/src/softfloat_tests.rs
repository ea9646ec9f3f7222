//! Differential tests of `softfloat.rs` against the host's x87 (x86_64 hosts only), plus unit
//! tests of the pieces that have no host counterpart.
//!
//! The host side runs one x87 instruction between FRSTOR and FNSAVE inside `asm!` (see
//! [`host_x87!`]), so operands, control word (RC/PC/masks) and the resulting status word, tag word
//! and registers are compared bit for bit. Operands come from a fixed-seed xorshift generator
//! biased towards special values (zeros, denormals, pseudo-denormals, unnormals, infinities,
//! NaNs, pseudo-NaNs, extreme exponents, short significands that make ties).

use crate::softfloat::{self as sf, Big, Env, F80};

/// xorshift64* with a fixed seed.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn chance(&mut self, k: u64) -> bool {
        self.below(k) == 0
    }

    /// A significand with J=1 and a random number of significant bits.
    fn sig(&mut self) -> u64 {
        let v = self.next() | (1 << 63);
        match self.below(6) {
            0 => v & !((1u64 << self.below(64)) - 1) | (1 << 63),
            1 => (1 << 63) | (self.next() & 0xff),
            2 => u64::MAX ^ (self.next() & 0xf),
            _ => v,
        }
    }

    /// An F80 biased towards interesting values.
    pub(crate) fn f80(&mut self) -> F80 {
        let s: u16 = if self.chance(2) { 0x8000 } else { 0 };
        let e = match self.below(40) {
            0 => return F80::new(s, 0),
            1 => return F80::new(s, self.next() >> self.below(64)), // denormal
            2 => return F80::new(s, self.next() | (1 << 63)),       // pseudo-denormal
            3 => return F80::new(s | 0x7fff, 1 << 63),              // infinity
            4 => return F80::new(s | 0x7fff, self.next() | (3 << 62)), // QNaN
            5 => return F80::new(s | 0x7fff, (self.next() | (1 << 63) | 1) & !(1 << 62)), // SNaN
            6 => return F80::INDEFINITE,
            7 if self.chance(3) => return F80::new(s | (1 + self.below(0x7ffe) as u16), self.next() >> 1), // unnormal
            8 if self.chance(3) => return F80::new(s | 0x7fff, self.next() >> 1), // pseudo-NaN/inf
            9 => 1 + self.below(80) as i32,
            10 => 0x7ffe - self.below(80) as i32,
            11 => 0x3fff + self.below(64) as i32, // integers
            12 => 0x3fff - 16382 + 0x1fff + self.below(200) as i32 - 100,
            13..=20 => 0x3fff + self.below(140) as i32 - 70,
            _ => 1 + self.below(0x7ffe) as i32,
        };
        F80::new(s | e as u16, self.sig())
    }

    /// An F80 close to `x` (for cancellation and equal-operand cases).
    pub(crate) fn near(&mut self, x: F80) -> F80 {
        match self.below(4) {
            0 => x,
            1 => x.neg(),
            2 => F80::new(x.se, x.m ^ (1 << self.below(12))),
            _ => F80::new(x.se.wrapping_add(self.below(3) as u16).wrapping_sub(1), x.m ^ (self.next() & 0xff)),
        }
    }

    pub(crate) fn f32_bits(&mut self) -> u32 {
        let s = (self.next() as u32) & 0x8000_0000;
        match self.below(12) {
            0 => s,
            1 => s | (self.next() as u32 & 0x7f_ffff) >> self.below(23), // denormal
            2 => s | 0x7f80_0000,
            3 => s | 0x7fc0_0000 | (self.next() as u32 & 0x3f_ffff),
            4 => s | 0x7f80_0001 | (self.next() as u32 & 0x3f_ffff),
            _ => s | ((1 + self.below(254) as u32) << 23) | (self.next() as u32 & 0x7f_ffff),
        }
    }

    pub(crate) fn f64_bits(&mut self) -> u64 {
        let s = self.next() & (1 << 63);
        match self.below(12) {
            0 => s,
            1 => s | (self.next() & 0xf_ffff_ffff_ffff) >> self.below(52),
            2 => s | 0x7ff0_0000_0000_0000,
            3 => s | 0x7ff8_0000_0000_0000 | (self.next() & 0x7_ffff_ffff_ffff),
            4 => s | 0x7ff0_0000_0000_0001 | (self.next() & 0x7_ffff_ffff_ffff),
            _ => s | ((1 + self.below(2046)) << 52) | (self.next() & 0xf_ffff_ffff_ffff),
        }
    }

    /// A control word: random RC and PC, usually all exceptions masked.
    pub(crate) fn fcw(&mut self) -> u16 {
        let masks = if self.chance(4) { self.next() as u16 & 0x3f } else { 0x3f };
        0x40 | masks | ((self.next() as u16 & 0xf) << 8)
    }
}

/// Distance in units of the last place between two finite F80 values of the same sign
/// (u64::MAX if not comparable).
pub(crate) fn ulp_diff(a: F80, b: F80) -> u64 {
    if a == b {
        return 0;
    }
    if a.sign() != b.sign() {
        if a.m == 0 && b.m == 0 {
            return 0;
        }
        return u64::MAX;
    }
    let key = |x: F80| -> i128 {
        // Monotonic integer key for normal numbers: exponent * 2^63 + (m - 2^63).
        (i128::from(x.exp()) << 63) + i128::from(x.m & !(1 << 63))
    };
    if a.exp() == 0x7fff || b.exp() == 0x7fff {
        return u64::MAX;
    }
    (key(a) - key(b)).unsigned_abs().min(u128::from(u64::MAX)) as u64
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod host {
    //! Run one x87 instruction on the host.

    /// What the host produced: the FNSAVE image after the instruction, EAX, RFLAGS and the
    /// instruction's bytes (copied out of this test binary's code).
    pub(crate) struct HostOut {
        pub img: [u8; 108],
        pub eax: u32,
        pub flags: u32,
        pub code: Vec<u8>,
    }

    /// `host_x87!("fadd st(0), st(1)")` is a `fn(&[u8; 108], &mut [u8; 32], u32, u32) ->
    /// HostOut`: FRSTOR the image, set RFLAGS' arithmetic flags, run the instruction (a memory
    /// operand is `[rdi]`, which is the same encoding as `[edi]` in 32-bit code), FNSAVE.
    /// FNSAVE also reinitialises the FPU, so the Rust code after it sees the ABI state again; the
    /// input image must not have a pending unmasked exception (the instruction would trap).
    macro_rules! host_x87 {
        ($insn:literal) => {{
            fn run(st: &[u8; 108], mem: &mut [u8; 32], eax: u32, fl: u32) -> $crate::softfloat_tests::host::HostOut {
                let mut img = [0u8; 108];
                let start: usize;
                let end: usize;
                let mut x87_rax = u64::from(eax);
                let mut flo = u64::from(fl & 0x8d5) | 2;
                // SAFETY: the block only touches the buffers passed to it, leaves the x87 stack
                // empty with the default control word (FNSAVE reinitialises it) and declares
                // every register it changes.
                unsafe {
                    core::arch::asm!(
                        "lea {s}, [rip + 21f]",
                        "lea {e}, [rip + 22f]",
                        "frstor [{st}]",
                        "push {fl}",
                        "popfq",
                        "21:",
                        $insn,
                        "22:",
                        "fnsave [{img}]",
                        "pushfq",
                        "pop {fl}",
                        st = in(reg) st.as_ptr(),
                        img = in(reg) img.as_mut_ptr(),
                        fl = inout(reg) flo,
                        s = out(reg) start,
                        e = out(reg) end,
                        in("rdi") mem.as_mut_ptr(),
                        inout("rax") x87_rax,
                        out("st(0)") _,
                        out("st(1)") _,
                        out("st(2)") _,
                        out("st(3)") _,
                        out("st(4)") _,
                        out("st(5)") _,
                        out("st(6)") _,
                        out("st(7)") _,
                    );
                }
                // SAFETY: start..end are the bytes of the instruction in this function's code.
                let code = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) }.to_vec();
                $crate::softfloat_tests::host::HostOut { img, eax: x87_rax as u32, flags: flo as u32, code }
            }
            run
        }};
    }
    pub(crate) use host_x87;

    /// Build a 108-byte FRSTOR image (32-bit protected-mode layout) from stack-ordered values.
    pub(crate) fn image(fcw: u16, fsw: u16, tags: u8, st: &[crate::softfloat::F80; 8]) -> [u8; 108] {
        let mut img = [0u8; 108];
        img[0..2].copy_from_slice(&fcw.to_le_bytes());
        img[4..6].copy_from_slice(&fsw.to_le_bytes());
        let top = usize::from((fsw >> 11) & 7);
        let mut tw = 0u16;
        for p in 0..8 {
            if tags & (1 << p) == 0 {
                tw |= 3 << (2 * p);
            }
        }
        img[8..10].copy_from_slice(&tw.to_le_bytes());
        let _ = top;
        for (k, v) in st.iter().enumerate() {
            img[28 + 10 * k..38 + 10 * k].copy_from_slice(&v.to_bytes());
        }
        img
    }
}

/// ST(i) of an FNSAVE image.
pub(crate) fn img_st(img: &[u8; 108], i: usize) -> F80 {
    F80::from_bytes(&img[28 + 10 * i..38 + 10 * i])
}

pub(crate) fn img_fsw(img: &[u8; 108]) -> u16 {
    u16::from_le_bytes([img[4], img[5]])
}

#[cfg(target_arch = "x86_64")]
mod diff {
    use super::host::{host_x87, image};
    use super::*;

    type HostFn = fn(&[u8; 108], &mut [u8; 32], u32, u32) -> super::host::HostOut;

    /// Run a two-operand host instruction with ST(0)=a, ST(1)=b; returns (ST(0), FSW).
    fn host2(f: HostFn, fcw: u16, a: F80, b: F80) -> (F80, u16) {
        let mut st = [F80::ZERO; 8];
        st[0] = a;
        st[1] = b;
        // TOP = 6: ST(0) = R6, ST(1) = R7 in use.
        let img = image(fcw, 6 << 11, 0xc0, &st);
        let mut mem = [0u8; 32];
        let o = f(&img, &mut mem, 0, 0);
        (img_st(&o.img, 0), img_fsw(&o.img))
    }

    fn check2(name: &str, f: HostFn, n: usize, soft: impl Fn(&mut Env, F80, F80) -> F80, seed: u64) {
        check2_except(name, f, n, soft, seed, |_, _, _| false)
    }

    /// The host's CPUID vendor is AuthenticAMD (CI has run on both AMD EPYC and Intel Xeon).
    fn host_is_amd() -> bool {
        let r = std::arch::x86_64::__cpuid(0);
        (r.ebx, r.edx, r.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163)
    }

    /// `check2`, not comparing the cases `vendor_specific(fcw, a, b)` names: there the emulated
    /// CPU follows Intel and an AMD host answers differently.
    fn check2_except(
        name: &str,
        f: HostFn,
        n: usize,
        soft: impl Fn(&mut Env, F80, F80) -> F80,
        seed: u64,
        vendor_specific: impl Fn(u16, F80, F80) -> bool,
    ) {
        let mut rng = Rng(seed);
        let mut bad = 0;
        for k in 0..n {
            let fcw = rng.fcw();
            let a = rng.f80();
            let b = if rng.chance(4) { rng.near(a) } else { rng.f80() };
            if vendor_specific(fcw, a, b) {
                continue;
            }
            let (hr, hsw) = host2(f, fcw, a, b);
            let mut e = Env::new(fcw);
            let r = soft(&mut e, a, b);
            // Unmasked IE/DE/ZE: the destination keeps its value.
            let r = if e.stopped() { a } else { r };
            let c1 = if e.stopped() { false } else { e.c1 };
            let ssw = e.flags | if c1 { 0x200 } else { 0 };
            let hcmp = hsw & 0x027f;
            if (r, ssw) != (hr, hcmp) {
                bad += 1;
                if bad <= 10 {
                    eprintln!(
                        "{name} #{k}: fcw={fcw:04x} a={:04x}_{:016x} b={:04x}_{:016x}: host {:04x}_{:016x} sw={hcmp:04x}, soft {:04x}_{:016x} sw={ssw:04x}",
                        a.se, a.m, b.se, b.m, hr.se, hr.m, r.se, r.m
                    );
                }
            }
        }
        assert_eq!(bad, 0, "{name}: {bad} of {n} differ from the host");
    }

    const N: usize = 200_000;

    #[test]
    fn add_matches_host() {
        check2("fadd", host_x87!("fadd st(0), st(1)"), N, |e, a, b| sf::add(e, a, b, false), 1);
    }

    #[test]
    fn sub_matches_host() {
        check2("fsub", host_x87!("fsub st(0), st(1)"), N, |e, a, b| sf::add(e, a, b, true), 2);
    }

    #[test]
    fn mul_matches_host() {
        check2("fmul", host_x87!("fmul st(0), st(1)"), N, sf::mul, 3);
    }

    #[test]
    fn div_matches_host() {
        check2("fdiv", host_x87!("fdiv st(0), st(1)"), N, sf::div, 4);
    }

    #[test]
    fn sqrt_matches_host() {
        check2("fsqrt", host_x87!("fsqrt"), N, |e, a, _| sf::sqrt(e, a), 5);
    }

    #[test]
    fn rndint_matches_host() {
        check2("frndint", host_x87!("frndint"), N, |e, a, _| sf::round_int(e, a), 6);
    }

    #[test]
    fn scale_matches_host() {
        // FSCALE of a true denormal by ±0 with underflow unmasked: Intel returns the operand
        // unchanged with DE only (what the emulator does), AMD signals underflow and returns the
        // bias-adjusted value.
        let amd = host_is_amd();
        check2_except("fscale", host_x87!("fscale"), N, sf::scale, 7, |fcw, a, b| {
            let denormal = a.se & 0x7fff == 0 && a.m != 0;
            let zero = b.se & 0x7fff == 0 && b.m == 0;
            amd && denormal && zero && fcw & 0x10 == 0
        });
    }

    /// FPREM/FPREM1 and FCOM/FUCOM at the softfloat level: result, exception flags and all four
    /// condition codes.
    fn check_cc(name: &str, f: HostFn, seed: u64, soft: impl Fn(&mut Env, F80, F80) -> (F80, Option<[bool; 4]>)) {
        let mut rng = Rng(seed);
        let mut bad = 0;
        for k in 0..N {
            let fcw = rng.fcw() | 0x3f;
            let a = rng.f80();
            let b = if rng.chance(4) { rng.near(a) } else { rng.f80() };
            let (hr, hsw) = host2(f, fcw, a, b);
            let mut e = Env::new(fcw);
            let (r, cc) = soft(&mut e, a, b);
            let [c0, c1, c2, c3] = cc.unwrap_or([false, e.c1, false, false]);
            let ssw = e.flags | u16::from(c0) << 8 | u16::from(c1) << 9 | u16::from(c2) << 10 | u16::from(c3) << 14;
            if (r, ssw) != (hr, hsw & 0x473f) {
                bad += 1;
                if bad <= 10 {
                    eprintln!(
                        "{name} #{k}: fcw={fcw:04x} a={:04x}_{:016x} b={:04x}_{:016x}: host {:04x}_{:016x} sw={:04x}, soft {:04x}_{:016x} sw={ssw:04x}",
                        a.se, a.m, b.se, b.m, hr.se, hr.m, hsw & 0x473f, r.se, r.m
                    );
                }
            }
        }
        assert_eq!(bad, 0, "{name}: {bad} of {N} differ from the host");
    }

    #[test]
    fn prem_matches_host() {
        check_cc("fprem", host_x87!("fprem"), 8, |e, a, b| sf::rem(e, a, b, false));
        check_cc("fprem1", host_x87!("fprem1"), 9, |e, a, b| sf::rem(e, a, b, true));
    }

    #[test]
    fn compare_matches_host() {
        for (name, f, quiet, seed) in
            [("fcom", host_x87!("fcom st(1)") as HostFn, false, 10), ("fucom", host_x87!("fucom st(1)"), true, 11)]
        {
            check_cc(name, f, seed, |e, a, b| {
                let (c3, c2, c0) = match sf::compare(e, a, b, quiet) {
                    sf::Cmp::Less => (false, false, true),
                    sf::Cmp::Equal => (true, false, false),
                    sf::Cmp::Greater => (false, false, false),
                    sf::Cmp::Unordered => (true, true, true),
                };
                (a, Some([c0, false, c2, c3]))
            });
        }
    }

    #[test]
    fn big_constants() {
        let pi = sf::big_pi();
        assert_eq!(pi.exp, 1);
        assert_eq!(pi.m >> 16, 0xc90f_daa2_2168_c234_c4c6_628b_80dc_u128, "{:x}", pi.m);
        let ln2 = sf::big_ln2();
        assert_eq!(ln2.exp, -1);
        assert_eq!(ln2.m >> 64, 0xb172_17f7_d1cf_79ab, "{:x}", ln2.m);
        let one = Big::from_u64(1);
        let mut e = Env::new(0x37f);
        assert_eq!(one.div(Big::from_u64(3)).mul(Big::from_u64(3)).to_f80(&mut e), F80::ONE);
    }
}
