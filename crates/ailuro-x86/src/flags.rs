//! Flag computation for arithmetic, logic, shift and rotate operations (eager evaluation).

use crate::mem::mask;
use crate::{Cpu, AF, CF, OF, PF, SF, STATUS, ZF};

/// PF for every low byte (a table: the baseline x86-64 target has no POPCNT instruction).
static PARITY: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if (i as u8).count_ones().is_multiple_of(2) { PF as u8 } else { 0 };
        i += 1;
    }
    t
};

/// PF bit value for the low byte of `v`.
#[inline(always)]
pub(crate) fn pf_bit(v: u64) -> u64 {
    u64::from(PARITY[(v & 0xff) as usize])
}

#[inline]
fn sign_bit(size: u32) -> u64 {
    1u64 << (size * 8 - 1)
}

/// Sign-extend the low `size` bytes of `v`.
#[inline]
pub(crate) fn sext(v: u64, size: u32) -> i64 {
    let sh = 64 - size * 8;
    ((v << sh) as i64) >> sh
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alu {
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shift {
    Rol,
    Ror,
    Rcl,
    Rcr,
    Shl,
    Shr,
    Sar,
}

impl Cpu {
    #[inline]
    pub(crate) fn flag(&self, f: u64) -> bool {
        self.s.rflags & f != 0
    }

    #[inline]
    pub(crate) fn set_flag(&mut self, f: u64, on: bool) {
        if on {
            self.s.rflags |= f;
        } else {
            self.s.rflags &= !f;
        }
    }

    /// Replace the status flags with `new` (only bits in STATUS).
    #[inline]
    pub(crate) fn set_status(&mut self, new: u64) {
        self.s.rflags = (self.s.rflags & !STATUS) | (new & STATUS);
    }

    /// ZF, SF, PF of a result.
    #[inline(always)]
    pub(crate) fn szp(res: u64, size: u32) -> u64 {
        let mut f = pf_bit(res);
        if res & mask(size) == 0 {
            f |= ZF;
        }
        if res & sign_bit(size) != 0 {
            f |= SF;
        }
        f
    }

    /// 32-bit ALU operation with flags (the fast path's specialisation of [`Cpu::alu`]).
    #[inline(always)]
    pub(crate) fn alu32(&mut self, op: Alu, a: u32, b: u32) -> u32 {
        let cin = (self.s.rflags & CF) as u32;
        let (r, f) = match op {
            Alu::Add | Alu::Adc => {
                let c = if op == Alu::Adc { cin } else { 0 };
                let (r1, c1) = a.overflowing_add(b);
                let (r, c2) = r1.overflowing_add(c);
                let mut f = u64::from((a ^ b ^ r) & 0x10);
                f |= u64::from(c1 | c2);
                f |= u64::from(((a ^ r) & (b ^ r)) >> 31) << 11;
                (r, f)
            }
            Alu::Sub | Alu::Sbb | Alu::Cmp => {
                let c = if op == Alu::Sbb { cin } else { 0 };
                let (r1, c1) = a.overflowing_sub(b);
                let (r, c2) = r1.overflowing_sub(c);
                let mut f = u64::from((a ^ b ^ r) & 0x10);
                f |= u64::from(c1 | c2);
                f |= u64::from(((a ^ b) & (a ^ r)) >> 31) << 11;
                (r, f)
            }
            Alu::And => (a & b, 0),
            Alu::Or => (a | b, 0),
            Alu::Xor => (a ^ b, 0),
        };
        let mut f = f | pf_bit(u64::from(r)) | (u64::from(r >> 31) << 7);
        if r == 0 {
            f |= ZF;
        }
        self.s.rflags = (self.s.rflags & !STATUS) | f;
        r
    }

    /// Two-operand ALU operation with flags; returns the (masked) result. CMP returns the
    /// difference too (the caller does not store it).
    pub(crate) fn alu(&mut self, op: Alu, a: u64, b: u64, size: u32) -> u64 {
        let m = mask(size);
        let (a, b) = (a & m, b & m);
        let sb = sign_bit(size);
        let cin = u64::from(self.flag(CF));
        let (res, f) = match op {
            Alu::Add | Alu::Adc => {
                let c = if op == Alu::Adc { cin } else { 0 };
                let r = a.wrapping_add(b).wrapping_add(c) & m;
                let carry = r < a || (c == 1 && r == a);
                let mut f = Self::szp(r, size) | ((a ^ b ^ r) & AF);
                if carry {
                    f |= CF;
                }
                if (a ^ r) & (b ^ r) & sb != 0 {
                    f |= OF;
                }
                (r, f)
            }
            Alu::Sub | Alu::Sbb | Alu::Cmp => {
                let c = if op == Alu::Sbb { cin } else { 0 };
                let r = a.wrapping_sub(b).wrapping_sub(c) & m;
                let borrow = a < b || (c == 1 && a == b);
                let mut f = Self::szp(r, size) | ((a ^ b ^ r) & AF);
                if borrow {
                    f |= CF;
                }
                if (a ^ b) & (a ^ r) & sb != 0 {
                    f |= OF;
                }
                (r, f)
            }
            Alu::And => {
                let r = a & b;
                (r, Self::szp(r, size))
            }
            Alu::Or => {
                let r = a | b;
                (r, Self::szp(r, size))
            }
            Alu::Xor => {
                let r = a ^ b;
                (r, Self::szp(r, size))
            }
        };
        self.set_status(f);
        res
    }

    /// INC/DEC: like ADD/SUB 1 but CF is preserved.
    pub(crate) fn incdec(&mut self, a: u64, dec: bool, size: u32) -> u64 {
        let cf = self.flag(CF);
        let r = if dec { self.alu(Alu::Sub, a, 1, size) } else { self.alu(Alu::Add, a, 1, size) };
        self.set_flag(CF, cf);
        r
    }

    /// Shifts and rotates with the count already read from the operand (masked here).
    pub(crate) fn shift(&mut self, op: Shift, a: u64, count: u64, size: u32) -> u64 {
        let bits = size * 8;
        let m = mask(size);
        let a = a & m;
        let cnt = (count & if size == 8 { 0x3f } else { 0x1f }) as u32;
        if cnt == 0 {
            return a;
        }
        let msb = |v: u64| (v >> (bits - 1)) & 1;
        let fl = self.s.rflags;
        match op {
            Shift::Shl => {
                let wide = (a as u128) << cnt;
                let r = (wide as u64) & m;
                let cf = ((wide >> bits) & 1) as u64;
                let mut f = Self::szp(r, size) | cf;
                if msb(r) ^ cf != 0 {
                    f |= OF;
                }
                self.set_status(f);
                r
            }
            Shift::Shr => {
                let r = if cnt >= 64 { 0 } else { a >> cnt };
                let cf = if cnt > 64 { 0 } else { (a >> (cnt - 1)) & 1 };
                let mut f = Self::szp(r, size) | cf;
                if msb(a) != 0 {
                    f |= OF;
                }
                self.set_status(f);
                r
            }
            Shift::Sar => {
                let sa = sext(a, size);
                let r = (sa >> cnt.min(63)) as u64 & m;
                let cf = ((sa >> (cnt - 1).min(63)) & 1) as u64;
                self.set_status(Self::szp(r, size) | cf);
                r
            }
            Shift::Rol => {
                let c = cnt % bits;
                let r = if c == 0 { a } else { ((a << c) | (a >> (bits - c))) & m };
                let cf = r & 1;
                let of = msb(r) ^ cf;
                self.set_status((fl & !(CF | OF)) | cf | if of != 0 { OF } else { 0 });
                r
            }
            Shift::Ror => {
                let c = cnt % bits;
                let r = if c == 0 { a } else { ((a >> c) | (a << (bits - c))) & m };
                let cf = msb(r);
                let of = msb(r) ^ ((r >> (bits - 2)) & 1);
                self.set_status((fl & !(CF | OF)) | cf | if of != 0 { OF } else { 0 });
                r
            }
            Shift::Rcl | Shift::Rcr => {
                let c = cnt % (bits + 1);
                if c == 0 {
                    return a;
                }
                // Rotate the (bits+1)-wide value CF:a.
                let w = bits + 1;
                let wm: u128 = (1u128 << w) - 1;
                let v: u128 = (a as u128) | (((fl & CF) as u128) << bits);
                let rot =
                    if op == Shift::Rcl { ((v << c) | (v >> (w - c))) & wm } else { ((v >> c) | (v << (w - c))) & wm };
                let r = (rot as u64) & m;
                let cf = ((rot >> bits) & 1) as u64;
                let of = if op == Shift::Rcl { msb(r) ^ cf } else { msb(r) ^ ((r >> (bits - 2)) & 1) };
                self.set_status((fl & !(CF | OF)) | cf | if of != 0 { OF } else { 0 });
                r
            }
        }
    }

    /// SHLD/SHRD.
    pub(crate) fn shiftd(&mut self, left: bool, dst: u64, src: u64, count: u64, size: u32) -> u64 {
        let bits = size * 8;
        let m = mask(size);
        let cnt = (count & if size == 8 { 0x3f } else { 0x1f }) as u32;
        if cnt == 0 {
            return dst & m;
        }
        let (dst, src) = (dst & m, src & m);
        // The operation is a shift of the concatenation dst:src:dst (most significant first for
        // SHLD, least significant first for SHRD). For counts up to the operand size that is the
        // architectural dst:src (SHLD) / src:dst (SHRD) shift. A 16-bit SHLD/SHRD with a masked
        // count of 17..31 is architecturally undefined; the third copy of dst reproduces Intel
        // hardware (checked on an Intel host: result and CF match for every count, and QEMU
        // implements the same "A:B:A" model). AMD parts differ; Intel is the host-diff oracle.
        // (64-bit operands only exist in long mode, where the count is masked to 63: the third
        // copy is never reached and would not fit a u128.)
        let third = if size == 8 { 0 } else { (dst as u128) << (2 * bits) };
        let wide: u128 = third | ((src as u128) << bits) | dst as u128;
        let (r, cf) = if left && size == 8 {
            let sh = ((dst as u128) << 64 | src as u128) << cnt;
            (((sh >> 64) as u64) & m, (((dst as u128) << 64 | src as u128) >> (128 - cnt)) as u64 & 1)
        } else if left {
            let sh = wide << cnt;
            (((sh >> (2 * bits)) as u64) & m, ((sh >> (3 * bits)) & 1) as u64)
        } else {
            ((wide >> cnt) as u64 & m, (wide >> (cnt - 1)) as u64 & 1)
        };
        let mut f = Self::szp(r, size) | cf;
        // OF is defined only for a count of 1 (sign change). For larger counts Intel computes it
        // with the 1-bit formula all the same: SHLD: dst[msb] ^ dst[msb-1]; SHRD: src[0] ^
        // dst[msb] (measured on the host for 16- and 32-bit operands, every count 2..31). For a
        // count of 1 both formulas equal the sign change of the result.
        let of = if left { (dst >> (bits - 1)) ^ (dst >> (bits - 2)) } else { src ^ (dst >> (bits - 1)) };
        if of & 1 != 0 {
            f |= OF;
        }
        self.set_status(f);
        r
    }

    /// Evaluate a condition code (iced's numbering: o, no, b, ae, e, ne, be, a, s, ns, p, np, l, ge,
    /// le, g).
    #[inline(always)]
    pub(crate) fn cond(&self, cc: iced_x86::ConditionCode) -> bool {
        use iced_x86::ConditionCode as C;
        let f = self.s.rflags;
        let cf = f & CF != 0;
        let zf = f & ZF != 0;
        let sf = f & SF != 0;
        let of = f & OF != 0;
        let pf = f & PF != 0;
        match cc {
            C::None => true,
            C::o => of,
            C::no => !of,
            C::b => cf,
            C::ae => !cf,
            C::e => zf,
            C::ne => !zf,
            C::be => cf || zf,
            C::a => !cf && !zf,
            C::s => sf,
            C::ns => !sf,
            C::p => pf,
            C::np => !pf,
            C::l => sf != of,
            C::ge => sf == of,
            C::le => zf || sf != of,
            C::g => !zf && sf == of,
        }
    }
}
