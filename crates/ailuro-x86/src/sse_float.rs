//! Single- and double-precision software floating point with the semantics of the SSE/SSE2 unit
//! (MXCSR rounding control, the six sticky exception flags, DAZ and FTZ), used by `sse.rs`.
//!
//! Every operation works on raw bit patterns (`u64`, the low 32 bits for single precision) and
//! accumulates exception flags in a [`Ctx`]; whether an unmasked exception suppresses the result
//! is decided by the caller per instruction (SDM Vol. 1 11.5.3). The x86 specifics followed here:
//!
//! * NaN results: a signalling NaN operand is quieted; with two NaN operands the first source
//!   operand wins; an invalid operation without NaN operands returns the default NaN (negative
//!   QNaN, `0xFFC0_0000` / `0xFFF8_0000_0000_0000`).
//! * Exception priority (SDM Vol. 3 table 6-8): SNaN invalid > QNaN operand > other invalid and
//!   divide-by-zero > denormal operand > overflow/underflow (with inexact) > inexact. Only the
//!   highest applies, except that DE accompanies the post-computation exceptions.
//! * Tininess is detected after rounding (as if the exponent range were unbounded). With the
//!   underflow exception masked, UE is reported only for tiny *and* inexact results; unmasked, for
//!   every tiny result. FTZ (only with UE masked) replaces a tiny result by a zero of the same sign
//!   and reports UE and PE.
//! * DAZ turns denormal inputs into zeros of the same sign before anything else; then no DE.
//!
//! The significands are handled as exact integers (`u128`) with a sticky bit, so every result is
//! correctly rounded.

/// Exception flags, in MXCSR bit positions (the masks are the same bits shifted left by 7).
pub(crate) const IE: u32 = 0x01;
pub(crate) const DE: u32 = 0x02;
pub(crate) const ZE: u32 = 0x04;
pub(crate) const OE: u32 = 0x08;
pub(crate) const UE: u32 = 0x10;
pub(crate) const PE: u32 = 0x20;
/// MXCSR.DAZ (denormals are zeros).
pub(crate) const DAZ: u32 = 0x40;
/// MXCSR.FZ (flush to zero).
pub(crate) const FTZ: u32 = 0x8000;

/// A binary interchange format: fraction bits and exponent bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fmt {
    fbits: u32,
    ebits: u32,
}

/// IEEE single precision.
pub(crate) const F32: Fmt = Fmt { fbits: 23, ebits: 8 };
/// IEEE double precision.
pub(crate) const F64: Fmt = Fmt { fbits: 52, ebits: 11 };

impl Fmt {
    fn bias(self) -> i32 {
        (1 << (self.ebits - 1)) - 1
    }
    fn exp_all(self) -> u64 {
        (1 << self.ebits) - 1
    }
    fn sign(self) -> u64 {
        1 << (self.fbits + self.ebits)
    }
    fn frac_mask(self) -> u64 {
        (1 << self.fbits) - 1
    }
    fn quiet_bit(self) -> u64 {
        1 << (self.fbits - 1)
    }
    fn exp_field(self, v: u64) -> u64 {
        (v >> self.fbits) & self.exp_all()
    }
    /// Infinity with the given sign.
    fn inf(self, neg: bool) -> u64 {
        self.signed(neg, self.exp_all() << self.fbits)
    }
    fn zero(self, neg: bool) -> u64 {
        self.signed(neg, 0)
    }
    fn max_finite(self, neg: bool) -> u64 {
        self.signed(neg, ((self.exp_all() - 1) << self.fbits) | self.frac_mask())
    }
    fn signed(self, neg: bool, v: u64) -> u64 {
        if neg {
            v | self.sign()
        } else {
            v
        }
    }
    /// The default NaN (QNaN floating-point indefinite).
    pub(crate) fn default_nan(self) -> u64 {
        self.sign() | (self.exp_all() << self.fbits) | self.quiet_bit()
    }
    pub(crate) fn is_nan(self, v: u64) -> bool {
        self.exp_field(v) == self.exp_all() && v & self.frac_mask() != 0
    }
    pub(crate) fn is_snan(self, v: u64) -> bool {
        self.is_nan(v) && v & self.quiet_bit() == 0
    }
    fn quiet(self, v: u64) -> u64 {
        v | self.quiet_bit()
    }
    fn neg(self, v: u64) -> bool {
        v & self.sign() != 0
    }
}

/// The operation's environment (MXCSR) and the exception flags it raised.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    /// MXCSR at the start of the instruction.
    pub mxcsr: u32,
    /// Exception flags raised so far (IE..PE bits).
    pub flags: u32,
}

/// Operand class after DAZ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Zero,
    Finite,
    Inf,
    Nan,
}

/// An unpacked operand: value = `sig * 2^exp` for finite non-zero values.
#[derive(Clone, Copy, Debug)]
struct Un {
    neg: bool,
    kind: Kind,
    exp: i32,
    sig: u64,
    /// A denormal input (DAZ off): raises DE when the operation gets that far.
    den: bool,
}

/// Round `sig` right by `shift` bits in rounding mode `rc` (MXCSR encoding) for a value of sign
/// `neg`; returns the rounded integer and whether bits were lost.
fn round_shift(sig: u128, shift: i32, rc: u32, neg: bool) -> (u128, bool) {
    if shift <= 0 {
        return (sig << (-shift).min(127) as u32, false);
    }
    let (q, rem, half_cmp) = if shift >= 128 {
        // Everything is below the rounding point; with shift == 128 the top bit may be the half.
        let half = if shift == 128 { sig.cmp(&(1u128 << 127)) } else { std::cmp::Ordering::Less };
        (0u128, sig, half)
    } else {
        let q = sig >> shift;
        let rem = sig & ((1u128 << shift) - 1);
        (q, rem, rem.cmp(&(1u128 << (shift - 1))))
    };
    if rem == 0 {
        return (q, false);
    }
    let up = match rc {
        0 => half_cmp == std::cmp::Ordering::Greater || (half_cmp == std::cmp::Ordering::Equal && q & 1 != 0),
        1 => neg,
        2 => !neg,
        _ => false,
    };
    (q + u128::from(up), true)
}

/// Integer square root of a `u128` (floor).
fn isqrt(v: u128) -> u128 {
    if v == 0 {
        return 0;
    }
    let mut r: u128 = 0;
    let mut bit: u128 = 1 << ((127 - v.leading_zeros()) & !1);
    let mut x = v;
    while bit != 0 {
        if x >= r + bit {
            x -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    r
}

impl Ctx {
    /// A context for an instruction executing under `mxcsr`.
    pub(crate) fn new(mxcsr: u32) -> Ctx {
        Ctx { mxcsr, flags: 0 }
    }

    fn rc(&self) -> u32 {
        (self.mxcsr >> 13) & 3
    }

    fn daz(&self) -> bool {
        self.mxcsr & DAZ != 0
    }

    fn ue_masked(&self) -> bool {
        self.mxcsr & (UE << 7) != 0
    }

    fn raise(&mut self, f: u32) {
        self.flags |= f;
    }

    fn unpack(&self, f: Fmt, v: u64) -> Un {
        let neg = f.neg(v);
        let e = f.exp_field(v);
        let frac = v & f.frac_mask();
        let bias = f.bias();
        let fb = f.fbits as i32;
        if e == f.exp_all() {
            let kind = if frac == 0 { Kind::Inf } else { Kind::Nan };
            return Un { neg, kind, exp: 0, sig: 0, den: false };
        }
        if e == 0 {
            if frac == 0 || self.daz() {
                return Un { neg, kind: Kind::Zero, exp: 0, sig: 0, den: false };
            }
            return Un { neg, kind: Kind::Finite, exp: 1 - bias - fb, sig: frac, den: true };
        }
        Un { neg, kind: Kind::Finite, exp: e as i32 - bias - fb, sig: frac | (1 << f.fbits), den: false }
    }

    /// NaN operand handling for a two-operand arithmetic operation: `Some(result)` if either is a
    /// NaN (IE for an SNaN; the first NaN operand, quieted).
    fn nan2(&mut self, f: Fmt, a: u64, b: u64) -> Option<u64> {
        let (an, bn) = (f.is_nan(a), f.is_nan(b));
        if !an && !bn {
            return None;
        }
        if f.is_snan(a) || f.is_snan(b) {
            self.raise(IE);
        }
        Some(f.quiet(if an { a } else { b }))
    }

    fn invalid(&mut self, f: Fmt) -> u64 {
        self.raise(IE);
        f.default_nan()
    }

    /// Round and pack `sig * 2^exp` (`sig` non-zero; bit 0 may be a sticky bit as long as at
    /// least two bits are dropped by the rounding), with overflow, underflow, FTZ and inexact.
    fn round_pack(&mut self, f: Fmt, neg: bool, exp: i32, sig: u128) -> u64 {
        if sig == 0 {
            return f.zero(neg);
        }
        let rc = self.rc();
        let p = f.fbits as i32;
        let bias = f.bias();
        let n = 127 - sig.leading_zeros() as i32;
        let e_unb = exp + n;
        // Rounded to the format's precision with an unbounded exponent: tininess after rounding.
        let (q, inexact) = round_shift(sig, n - p, rc, neg);
        let (q, e) = if q >> (p + 1) != 0 { (q >> 1, e_unb + 1) } else { (q, e_unb) };
        if e >= 1 - bias {
            if e > bias {
                self.raise(OE | PE);
                let to_inf = match rc {
                    0 => true,
                    1 => neg,
                    2 => !neg,
                    _ => false,
                };
                return if to_inf { f.inf(neg) } else { f.max_finite(neg) };
            }
            if inexact {
                self.raise(PE);
            }
            let bits = ((((e + bias) as u64) << f.fbits) | (q as u64 & f.frac_mask())) & !f.sign();
            return f.signed(neg, bits);
        }
        // Tiny.
        if self.mxcsr & FTZ != 0 && self.ue_masked() {
            self.raise(UE | PE);
            return f.zero(neg);
        }
        let (q, inexact) = round_shift(sig, (1 - bias - p) - exp, rc, neg);
        if inexact || !self.ue_masked() {
            self.raise(UE);
        }
        if inexact {
            self.raise(PE);
        }
        // A carry into bit p gives the smallest normal number: the packing is the same.
        f.signed(neg, q as u64)
    }

    /// Addition (`sub`: subtraction) `a ± b`.
    pub(crate) fn add(&mut self, f: Fmt, a: u64, b: u64, sub: bool) -> u64 {
        if let Some(r) = self.nan2(f, a, b) {
            return r;
        }
        let ua = self.unpack(f, a);
        let mut ub = self.unpack(f, b);
        if sub {
            ub.neg = !ub.neg;
        }
        if ua.kind == Kind::Inf || ub.kind == Kind::Inf {
            if ua.kind == Kind::Inf && ub.kind == Kind::Inf && ua.neg != ub.neg {
                return self.invalid(f);
            }
            if ua.den || ub.den {
                self.raise(DE);
            }
            return f.inf(if ua.kind == Kind::Inf { ua.neg } else { ub.neg });
        }
        if ua.den || ub.den {
            self.raise(DE);
        }
        let rd = self.rc() == 1;
        if ua.kind == Kind::Zero && ub.kind == Kind::Zero {
            return f.zero(if ua.neg == ub.neg { ua.neg } else { rd });
        }
        // Exact alignment with 64 guard bits; anything shifted further is a sticky bit.
        let (mut x, mut y) = (ua, ub);
        if x.kind == Kind::Zero {
            x.exp = y.exp;
        }
        if y.kind == Kind::Zero {
            y.exp = x.exp;
        }
        if y.exp > x.exp {
            std::mem::swap(&mut x, &mut y);
        }
        let xs = u128::from(x.sig) << 64;
        let d = (x.exp - y.exp) as u32;
        let ys = u128::from(y.sig) << 64;
        let ys = if d == 0 {
            ys
        } else if d >= 127 {
            u128::from(ys != 0)
        } else {
            (ys >> d) | u128::from(ys & ((1u128 << d) - 1) != 0)
        };
        let (neg, s) = if x.neg == y.neg {
            (x.neg, xs + ys)
        } else if xs >= ys {
            (x.neg, xs - ys)
        } else {
            (y.neg, ys - xs)
        };
        if s == 0 {
            return f.zero(rd);
        }
        self.round_pack(f, neg, x.exp - 64, s)
    }

    /// Multiplication.
    pub(crate) fn mul(&mut self, f: Fmt, a: u64, b: u64) -> u64 {
        if let Some(r) = self.nan2(f, a, b) {
            return r;
        }
        let (ua, ub) = (self.unpack(f, a), self.unpack(f, b));
        let neg = ua.neg != ub.neg;
        if ua.kind == Kind::Inf || ub.kind == Kind::Inf {
            if ua.kind == Kind::Zero || ub.kind == Kind::Zero {
                return self.invalid(f);
            }
            if ua.den || ub.den {
                self.raise(DE);
            }
            return f.inf(neg);
        }
        if ua.den || ub.den {
            self.raise(DE);
        }
        if ua.kind == Kind::Zero || ub.kind == Kind::Zero {
            return f.zero(neg);
        }
        self.round_pack(f, neg, ua.exp + ub.exp, u128::from(ua.sig) * u128::from(ub.sig))
    }

    /// Division `a / b`.
    pub(crate) fn div(&mut self, f: Fmt, a: u64, b: u64) -> u64 {
        if let Some(r) = self.nan2(f, a, b) {
            return r;
        }
        let (ua, ub) = (self.unpack(f, a), self.unpack(f, b));
        let neg = ua.neg != ub.neg;
        match (ua.kind, ub.kind) {
            (Kind::Inf, Kind::Inf) | (Kind::Zero, Kind::Zero) => return self.invalid(f),
            (Kind::Inf, _) => {
                if ub.den {
                    self.raise(DE);
                }
                return f.inf(neg);
            }
            (_, Kind::Zero) => {
                self.raise(ZE);
                return f.inf(neg);
            }
            _ => {}
        }
        if ua.den || ub.den {
            self.raise(DE);
        }
        if ua.kind == Kind::Zero || ub.kind == Kind::Inf {
            return f.zero(neg);
        }
        let la = ua.sig.leading_zeros();
        let lb = ub.sig.leading_zeros();
        let na = u128::from(ua.sig << la) << 64;
        let nb = u128::from(ub.sig << lb);
        let q = na / nb;
        let sticky = u128::from(na % nb != 0);
        let exp = (ua.exp - la as i32) - (ub.exp - lb as i32) - 64 - 1;
        self.round_pack(f, neg, exp, (q << 1) | sticky)
    }

    /// Square root.
    pub(crate) fn sqrt(&mut self, f: Fmt, a: u64) -> u64 {
        if f.is_nan(a) {
            if f.is_snan(a) {
                self.raise(IE);
            }
            return f.quiet(a);
        }
        let u = self.unpack(f, a);
        match u.kind {
            Kind::Zero => return a & !f.frac_mask() & !(f.exp_all() << f.fbits),
            Kind::Inf if !u.neg => return a,
            _ => {}
        }
        if u.neg {
            return self.invalid(f);
        }
        if u.den {
            self.raise(DE);
        }
        // Normalise to a leading bit at 126 or 127 so that the exponent is even.
        let l = u.sig.leading_zeros();
        let mut m = u128::from(u.sig << l) << 64;
        let mut e = u.exp - l as i32 - 64;
        if e & 1 != 0 {
            m >>= 1;
            e += 1;
        }
        let r = isqrt(m);
        let sticky = u128::from(r * r != m);
        self.round_pack(f, false, e / 2 - 1, (r << 1) | sticky)
    }

    /// Ordered comparison: `None` when unordered. `signaling`: any NaN raises IE (otherwise only
    /// an SNaN does). Denormal operands raise DE unless a NaN is involved.
    pub(crate) fn compare(&mut self, f: Fmt, a: u64, b: u64, signaling: bool) -> Option<std::cmp::Ordering> {
        if f.is_nan(a) || f.is_nan(b) {
            if signaling || f.is_snan(a) || f.is_snan(b) {
                self.raise(IE);
            }
            return None;
        }
        let (ua, ub) = (self.unpack(f, a), self.unpack(f, b));
        if ua.den || ub.den {
            self.raise(DE);
        }
        Some(Self::order(f, ua, ub))
    }

    /// Total order of two non-NaN unpacked values (zeros equal).
    fn order(f: Fmt, a: Un, b: Un) -> std::cmp::Ordering {
        use std::cmp::Ordering as O;
        let key = |u: Un| -> i128 {
            let mag: i128 = match u.kind {
                Kind::Zero => 0,
                Kind::Inf => i128::MAX,
                // Finite: the bit pattern of the magnitude orders like the value; rebuild it from
                // the unpacked form (denormals flushed by DAZ are zero above).
                _ => {
                    let n = 63 - u.sig.leading_zeros() as i32;
                    let e = u.exp + n + f.bias();
                    if e <= 0 {
                        i128::from(u.sig)
                    } else {
                        (i128::from(e) << f.fbits) | i128::from(u.sig & f.frac_mask())
                    }
                }
            };
            if u.neg {
                -mag
            } else {
                mag
            }
        };
        let (x, y) = (key(a), key(b));
        if x < y {
            O::Less
        } else if x > y {
            O::Greater
        } else {
            O::Equal
        }
    }

    /// MINPS/MAXPS element: the second operand if either is a NaN (IE for any NaN) or both are
    /// zero; otherwise the smaller (larger) one. With DAZ a denormal operand is returned as the
    /// zero it is treated as.
    pub(crate) fn minmax(&mut self, f: Fmt, a: u64, b: u64, max: bool) -> u64 {
        // DAZ applies before anything else, also to the operand returned for a NaN.
        let (ua, ub) = (self.unpack(f, a), self.unpack(f, b));
        let flush = |u: Un, v: u64| if u.kind == Kind::Zero { f.zero(u.neg) } else { v };
        let (a, b) = (flush(ua, a), flush(ub, b));
        if ua.kind == Kind::Nan || ub.kind == Kind::Nan {
            self.raise(IE);
            return b;
        }
        if ua.den || ub.den {
            self.raise(DE);
        }
        let o = Self::order(f, ua, ub);
        let pick_a = if max { o == std::cmp::Ordering::Greater } else { o == std::cmp::Ordering::Less };
        if pick_a {
            a
        } else {
            b
        }
    }

    /// Conversion between the two formats (CVTSS2SD, CVTSD2SS and the packed forms).
    pub(crate) fn convert(&mut self, from: Fmt, to: Fmt, v: u64) -> u64 {
        let neg = from.neg(v);
        if from.is_nan(v) {
            if from.is_snan(v) {
                self.raise(IE);
            }
            let frac = v & from.frac_mask();
            let frac =
                if to.fbits >= from.fbits { frac << (to.fbits - from.fbits) } else { frac >> (from.fbits - to.fbits) };
            return to.quiet(to.signed(neg, (to.exp_all() << to.fbits) | frac));
        }
        let u = self.unpack(from, v);
        match u.kind {
            Kind::Zero => to.zero(neg),
            Kind::Inf => to.inf(neg),
            _ => {
                if u.den {
                    self.raise(DE);
                }
                self.round_pack(to, neg, u.exp, u128::from(u.sig))
            }
        }
    }

    /// Signed integer to floating point (rounded per MXCSR.RC).
    pub(crate) fn int_to_float(&mut self, f: Fmt, v: i64) -> u64 {
        if v == 0 {
            return 0;
        }
        self.round_pack(f, v < 0, 0, u128::from(v.unsigned_abs()))
    }

    /// Floating point to a signed `bits`-bit integer (32 or 64), rounded per MXCSR.RC or
    /// truncated; invalid (NaN, infinity, out of range) gives the integer indefinite with IE.
    /// Returns the two's-complement bits in the low `bits` bits.
    pub(crate) fn float_to_int(&mut self, f: Fmt, v: u64, bits: u32, trunc: bool) -> u64 {
        let indefinite = 1u64 << (bits - 1);
        let u = self.unpack(f, v);
        match u.kind {
            Kind::Nan | Kind::Inf => {
                self.raise(IE);
                return indefinite;
            }
            Kind::Zero => return 0,
            Kind::Finite => {}
        }
        let rc = if trunc { 3 } else { self.rc() };
        let (mag, inexact) = if u.exp >= 0 {
            if u.exp > 64 {
                self.raise(IE);
                return indefinite;
            }
            (u128::from(u.sig) << u.exp, false)
        } else {
            round_shift(u128::from(u.sig), -u.exp, rc, u.neg)
        };
        let limit = 1u128 << (bits - 1);
        if mag > limit || (mag == limit && !u.neg) {
            self.raise(IE);
            return indefinite;
        }
        if inexact {
            self.raise(PE);
        }
        let r = if u.neg { (mag as u64).wrapping_neg() } else { mag as u64 };
        if bits == 32 {
            r & 0xffff_ffff
        } else {
            r
        }
    }
}

/// RCPSS/RCPPS element. The exact values of the hardware's table-driven approximation are
/// implementation specific; this returns 1/x correctly rounded (to nearest) to 12 significant
/// bits, so |relative error| <= 2^-12, inside the architectural bound of 1.5 * 2^-12. Like the
/// hardware: no flags, denormal inputs act as zeros (giving infinities), results below the
/// normal range are flushed to zero, SNaNs are quieted.
pub(crate) fn rcp(v: u32) -> u32 {
    approx(v, false)
}

/// RSQRTSS/RSQRTPS element: 1/sqrt(x) rounded to 12 significant bits (see [`rcp`]); negative
/// non-zero inputs give the default NaN, ±0 and denormals give ±infinity, +inf gives +0.
pub(crate) fn rsqrt(v: u32) -> u32 {
    approx(v, true)
}

fn approx(v: u32, sqrt: bool) -> u32 {
    let f = F32;
    let x = u64::from(v);
    let neg = f.neg(x);
    if f.is_nan(x) {
        return f.quiet(x) as u32;
    }
    let e = f.exp_field(x) as i32;
    if e == 0 {
        return f.inf(neg) as u32;
    }
    if sqrt && neg {
        return f.default_nan() as u32;
    }
    if e == 0xff {
        return f.zero(neg) as u32;
    }
    let sig = (x & f.frac_mask()) | (1 << 23);
    let exp = e - 127 - 23;
    // r = 2^k / g with enough bits; value = r * 2^re.
    let (r, sticky, re) = if sqrt {
        // 1/sqrt(sig * 2^exp): make the exponent even, then 2^126 / isqrt(sig << 2s).
        let (s, ee) = if exp & 1 != 0 { (u128::from(sig) << 1, exp - 1) } else { (u128::from(sig), exp) };
        let root = isqrt(s << 80); // ~ sqrt(s) * 2^40, 52..53 bits
        let num = 1u128 << 120;
        (num / root, !num.is_multiple_of(root) || root * root != s << 80, -120 + 40 - ee / 2)
    } else {
        let num = 1u128 << 100;
        (num / u128::from(sig), !num.is_multiple_of(u128::from(sig)), -100 - exp)
    };
    let r = (r << 1) | u128::from(sticky);
    let re = re - 1;
    let n = 127 - r.leading_zeros() as i32;
    let (q, _) = round_shift(r, n - 11, 0, false);
    let (q, n) = if q >> 12 != 0 { (q >> 1, n + 1) } else { (q, n) };
    let be = re + n + 127;
    if be >= 255 {
        return f.inf(neg) as u32;
    }
    if be <= 0 {
        return f.zero(neg) as u32;
    }
    f.signed(neg, ((be as u64) << 23) | ((q as u64 & 0x7ff) << 12)) as u32
}
