//! The integer (and bitwise / shuffle) lane operations of MMX, SSE, SSE2 and SSSE3, as pure
//! functions on 64-bit (MMX) or 128-bit (XMM) values held in a `u128`. `sse.rs` fetches the
//! operands and writes the result; nothing here can fault.

use iced_x86::Mnemonic as M;

/// Element `k` of `bits` bits of `v`.
#[inline]
pub(crate) fn lane(v: u128, bits: u32, k: u32) -> u64 {
    let m = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    (v >> (bits * k)) as u64 & m
}

/// `v` with element `k` of `bits` bits replaced by `x`.
#[inline]
pub(crate) fn set_lane(v: u128, bits: u32, k: u32, x: u64) -> u128 {
    let m: u128 = if bits >= 64 { u128::from(u64::MAX) } else { (1u128 << bits) - 1 };
    (v & !(m << (bits * k))) | ((u128::from(x) & m) << (bits * k))
}

/// Sign-extend the low `bits` bits of `v`.
#[inline]
pub(crate) fn sx(v: u64, bits: u32) -> i64 {
    ((v << (64 - bits)) as i64) >> (64 - bits)
}

/// All-ones mask of a register of `bytes` bytes (8 or 16).
#[inline]
pub(crate) fn width_mask(bytes: u32) -> u128 {
    if bytes >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * bytes)) - 1
    }
}

fn map2(a: u128, b: u128, bytes: u32, bits: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let mut r = 0u128;
    for k in 0..bytes * 8 / bits {
        r = set_lane(r, bits, k, f(lane(a, bits, k), lane(b, bits, k)));
    }
    r
}

fn sat_s(v: i64, bits: u32) -> u64 {
    let max = (1i64 << (bits - 1)) - 1;
    let min = -(1i64 << (bits - 1));
    v.clamp(min, max) as u64
}

fn sat_u(v: i64, bits: u32) -> u64 {
    v.clamp(0, (1i64 << bits) - 1) as u64
}

/// Shift every `bits`-bit element left (`kind` b'l'), logically right (b'r') or arithmetically
/// right (b'a') by `count`; counts beyond the element width give 0 (or the sign fill).
fn shift(v: u128, bytes: u32, bits: u32, count: u64, kind: u8) -> u128 {
    if count >= u64::from(bits) {
        return match kind {
            b'a' => map2(v, 0, bytes, bits, |x, _| if sx(x, bits) < 0 { u64::MAX } else { 0 }),
            _ => 0,
        };
    }
    let c = count as u32;
    map2(v, 0, bytes, bits, |x, _| match kind {
        b'l' => x << c,
        b'r' => x >> c,
        _ => (sx(x, bits) >> c) as u64,
    })
}

/// Interleave the low (`high` false) or high halves of `d` and `s` element by element.
fn unpack(d: u128, s: u128, bytes: u32, bits: u32, high: bool) -> u128 {
    let n = bytes * 8 / bits;
    let base = if high { n / 2 } else { 0 };
    let mut r = 0u128;
    for k in 0..n / 2 {
        r = set_lane(r, bits, 2 * k, lane(d, bits, base + k));
        r = set_lane(r, bits, 2 * k + 1, lane(s, bits, base + k));
    }
    r
}

/// Saturating pack of `d` then `s` elements of `bits` into `bits / 2`.
fn pack(d: u128, s: u128, bytes: u32, bits: u32, unsigned: bool) -> u128 {
    let n = bytes * 8 / bits;
    let mut r = 0u128;
    for k in 0..2 * n {
        let v = if k < n { lane(d, bits, k) } else { lane(s, bits, k - n) };
        let v = sx(v, bits);
        let o = if unsigned { sat_u(v, bits / 2) } else { sat_s(v, bits / 2) };
        r = set_lane(r, bits / 2, k, o);
    }
    r
}

/// Horizontal add/subtract of adjacent pairs: `d`'s pairs then `s`'s pairs.
fn hop(d: u128, s: u128, bytes: u32, bits: u32, f: impl Fn(i64, i64) -> u64) -> u128 {
    let n = bytes * 8 / bits;
    let mut r = 0u128;
    for k in 0..n {
        let (src, j) = if k < n / 2 { (d, 2 * k) } else { (s, 2 * (k - n / 2)) };
        let x = sx(lane(src, bits, j), bits);
        let y = sx(lane(src, bits, j + 1), bits);
        r = set_lane(r, bits, k, f(x, y));
    }
    r
}

/// A lane-wise integer, logical or shuffle operation `d op s` on `bytes` (8 or 16) bytes, with
/// the instruction's immediate `imm`. Returns `None` for mnemonics that are not handled here.
/// Shifts by a register/memory count take the count from `s` (its low 64 bits).
pub(crate) fn int_op(m: M, d: u128, s: u128, bytes: u32, imm: u8) -> Option<u128> {
    let w = |b: u32, f: &dyn Fn(u64, u64) -> u64| map2(d, s, bytes, b, f);
    let count = s as u64;
    let r = match m {
        M::Paddb => w(8, &|x, y| x.wrapping_add(y)),
        M::Paddw => w(16, &|x, y| x.wrapping_add(y)),
        M::Paddd => w(32, &|x, y| x.wrapping_add(y)),
        M::Paddq => w(64, &|x, y| x.wrapping_add(y)),
        M::Psubb => w(8, &|x, y| x.wrapping_sub(y)),
        M::Psubw => w(16, &|x, y| x.wrapping_sub(y)),
        M::Psubd => w(32, &|x, y| x.wrapping_sub(y)),
        M::Psubq => w(64, &|x, y| x.wrapping_sub(y)),
        M::Paddsb => w(8, &|x, y| sat_s(sx(x, 8) + sx(y, 8), 8)),
        M::Paddsw => w(16, &|x, y| sat_s(sx(x, 16) + sx(y, 16), 16)),
        M::Psubsb => w(8, &|x, y| sat_s(sx(x, 8) - sx(y, 8), 8)),
        M::Psubsw => w(16, &|x, y| sat_s(sx(x, 16) - sx(y, 16), 16)),
        M::Paddusb => w(8, &|x, y| sat_u((x + y) as i64, 8)),
        M::Paddusw => w(16, &|x, y| sat_u((x + y) as i64, 16)),
        M::Psubusb => w(8, &|x, y| sat_u(x as i64 - y as i64, 8)),
        M::Psubusw => w(16, &|x, y| sat_u(x as i64 - y as i64, 16)),
        M::Pmullw => w(16, &|x, y| (sx(x, 16) * sx(y, 16)) as u64),
        M::Pmulhw => w(16, &|x, y| ((sx(x, 16) * sx(y, 16)) >> 16) as u64),
        M::Pmulhuw => w(16, &|x, y| (x * y) >> 16),
        M::Pmulhrsw => w(16, &|x, y| ((((sx(x, 16) * sx(y, 16)) >> 14) + 1) >> 1) as u64),
        M::Pmuludq => w(64, &|x, y| (x & 0xffff_ffff) * (y & 0xffff_ffff)),
        M::Pmaddwd => w(32, &|x, y| {
            let p0 = sx(x & 0xffff, 16) * sx(y & 0xffff, 16);
            let p1 = sx(x >> 16, 16) * sx(y >> 16, 16);
            p0.wrapping_add(p1) as u64
        }),
        M::Pmaddubsw => w(16, &|x, y| {
            let p0 = (x & 0xff) as i64 * sx(y & 0xff, 8);
            let p1 = (x >> 8) as i64 * sx(y >> 8, 8);
            sat_s(p0 + p1, 16)
        }),
        M::Pcmpeqb => w(8, &|x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpeqw => w(16, &|x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpeqd => w(32, &|x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpgtb => w(8, &|x, y| if sx(x, 8) > sx(y, 8) { u64::MAX } else { 0 }),
        M::Pcmpgtw => w(16, &|x, y| if sx(x, 16) > sx(y, 16) { u64::MAX } else { 0 }),
        M::Pcmpgtd => w(32, &|x, y| if sx(x, 32) > sx(y, 32) { u64::MAX } else { 0 }),
        M::Pand | M::Andps | M::Andpd => d & s,
        M::Pandn | M::Andnps | M::Andnpd => !d & s,
        M::Por | M::Orps | M::Orpd => d | s,
        M::Pxor | M::Xorps | M::Xorpd => d ^ s,
        M::Pavgb => w(8, &|x, y| (x + y + 1) >> 1),
        M::Pavgw => w(16, &|x, y| (x + y + 1) >> 1),
        M::Pmaxsw => w(16, &|x, y| if sx(x, 16) >= sx(y, 16) { x } else { y }),
        M::Pminsw => w(16, &|x, y| if sx(x, 16) <= sx(y, 16) { x } else { y }),
        M::Pmaxub => w(8, &|x, y| x.max(y)),
        M::Pminub => w(8, &|x, y| x.min(y)),
        M::Psadbw => w(64, &|x, y| (0..8).map(|k| ((x >> (8 * k)) & 0xff).abs_diff((y >> (8 * k)) & 0xff)).sum()),
        M::Pabsb => map2(s, 0, bytes, 8, |x, _| sx(x, 8).unsigned_abs()),
        M::Pabsw => map2(s, 0, bytes, 16, |x, _| sx(x, 16).unsigned_abs()),
        M::Pabsd => map2(s, 0, bytes, 32, |x, _| sx(x, 32).unsigned_abs()),
        M::Psignb | M::Psignw | M::Psignd => {
            let bits = match m {
                M::Psignb => 8,
                M::Psignw => 16,
                _ => 32,
            };
            w(bits, &|x, y| match sx(y, bits) {
                0 => 0,
                v if v < 0 => x.wrapping_neg(),
                _ => x,
            })
        }
        M::Psllw => shift(d, bytes, 16, count, b'l'),
        M::Pslld => shift(d, bytes, 32, count, b'l'),
        M::Psllq => shift(d, bytes, 64, count, b'l'),
        M::Psrlw => shift(d, bytes, 16, count, b'r'),
        M::Psrld => shift(d, bytes, 32, count, b'r'),
        M::Psrlq => shift(d, bytes, 64, count, b'r'),
        M::Psraw => shift(d, bytes, 16, count, b'a'),
        M::Psrad => shift(d, bytes, 32, count, b'a'),
        M::Pslldq => {
            if imm > 15 {
                0
            } else {
                d << (8 * u32::from(imm))
            }
        }
        M::Psrldq => {
            if imm > 15 {
                0
            } else {
                d >> (8 * u32::from(imm))
            }
        }
        M::Punpcklbw => unpack(d, s, bytes, 8, false),
        M::Punpcklwd => unpack(d, s, bytes, 16, false),
        M::Punpckldq | M::Unpcklps => unpack(d, s, bytes, 32, false),
        M::Punpcklqdq | M::Unpcklpd => unpack(d, s, bytes, 64, false),
        M::Punpckhbw => unpack(d, s, bytes, 8, true),
        M::Punpckhwd => unpack(d, s, bytes, 16, true),
        M::Punpckhdq | M::Unpckhps => unpack(d, s, bytes, 32, true),
        M::Punpckhqdq | M::Unpckhpd => unpack(d, s, bytes, 64, true),
        M::Packsswb => pack(d, s, bytes, 16, false),
        M::Packssdw => pack(d, s, bytes, 32, false),
        M::Packuswb => pack(d, s, bytes, 16, true),
        M::Pshufw | M::Pshufd => {
            let bits = if m == M::Pshufw { 16 } else { 32 };
            let mut r = 0u128;
            for k in 0..4 {
                r = set_lane(r, bits, k, lane(s, bits, u32::from(imm >> (2 * k)) & 3));
            }
            r
        }
        M::Pshuflw | M::Pshufhw => {
            let base = if m == M::Pshuflw { 0 } else { 4 };
            let mut r = s;
            for k in 0..4 {
                r = set_lane(r, 16, base + k, lane(s, 16, base + (u32::from(imm >> (2 * k)) & 3)));
            }
            r
        }
        M::Pshufb => {
            let mut r = 0u128;
            for k in 0..bytes {
                let c = lane(s, 8, k);
                if c & 0x80 == 0 {
                    r = set_lane(r, 8, k, lane(d, 8, (c as u32) & (bytes - 1)));
                }
            }
            r
        }
        M::Phaddw => hop(d, s, bytes, 16, |x, y| x.wrapping_add(y) as u64),
        M::Phaddd => hop(d, s, bytes, 32, |x, y| x.wrapping_add(y) as u64),
        M::Phaddsw => hop(d, s, bytes, 16, |x, y| sat_s(x + y, 16)),
        M::Phsubw => hop(d, s, bytes, 16, |x, y| x.wrapping_sub(y) as u64),
        M::Phsubd => hop(d, s, bytes, 32, |x, y| x.wrapping_sub(y) as u64),
        M::Phsubsw => hop(d, s, bytes, 16, |x, y| sat_s(x - y, 16)),
        M::Palignr => {
            // (d:s) >> (8 * imm), low `bytes` bytes.
            let sh = u32::from(imm) * 8;
            let bw = bytes * 8;
            let wm = width_mask(bytes);
            let (lo, hi) = (s & wm, d & wm);
            if sh >= 2 * bw {
                0
            } else if bytes == 8 {
                let cat = lo | (hi << 64);
                cat >> sh
            } else if sh == 0 {
                lo
            } else if sh < 128 {
                (lo >> sh) | (hi << (128 - sh))
            } else {
                hi >> (sh - 128)
            }
        }
        M::Shufps => {
            let mut r = 0u128;
            for k in 0..4u32 {
                let src = if k < 2 { d } else { s };
                r = set_lane(r, 32, k, lane(src, 32, u32::from(imm >> (2 * k)) & 3));
            }
            r
        }
        M::Shufpd => {
            let r = set_lane(0, 64, 0, lane(d, 64, u32::from(imm & 1)));
            set_lane(r, 64, 1, lane(s, 64, u32::from((imm >> 1) & 1)))
        }
        M::Movsldup => {
            let mut r = 0u128;
            for k in 0..4 {
                r = set_lane(r, 32, k, lane(s, 32, k & !1));
            }
            r
        }
        M::Movshdup => {
            let mut r = 0u128;
            for k in 0..4 {
                r = set_lane(r, 32, k, lane(s, 32, k | 1));
            }
            r
        }
        M::Movddup => set_lane(s, 64, 1, lane(s, 64, 0)),
        _ => return None,
    };
    Some(r & width_mask(bytes))
}

/// Byte sign mask (PMOVMSKB) of `bytes` bytes.
pub(crate) fn movmsk(v: u128, bytes: u32, bits: u32) -> u64 {
    let mut r = 0u64;
    for k in 0..bytes * 8 / bits {
        r |= (lane(v, bits, k) >> (bits - 1)) << k;
    }
    r
}
