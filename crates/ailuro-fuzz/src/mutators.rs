//! Generic mutators (bytes, integers, varints, text) and the small multi-part container that
//! targets with several inputs (a recording pair, a kernel with modules, an argument vector)
//! use as their single fuzz input.

use crate::rng::Rng;

/// Boundary values for integers of `bits` width: where off-by-one and overflow bugs live.
pub fn boundary(rng: &mut Rng, bits: u32) -> u64 {
    let max = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let v = match rng.below(14) {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => max,
        4 => max - 1,
        5 => max >> 1,
        6 => (max >> 1) + 1,
        7 => 0x7f,
        8 => 0x80,
        9 => 0xffff,
        10 => 0x1_0000,
        11 => 0x100_0000 + 1, // just above 16 MiB (the event data limit)
        12 => 0x400_0000 + 1, // just above 64 MiB (the chunk limit)
        _ => 1u64 << rng.below(bits as usize),
    };
    v & max
}

/// Tweak an existing integer: small deltas, boundaries, or random bits.
pub fn tweak_int(rng: &mut Rng, v: u64, bits: u32) -> u64 {
    let max = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let r = match rng.below(6) {
        0 => v.wrapping_add(1),
        1 => v.wrapping_sub(1),
        2 => v.wrapping_add(rng.below(64) as u64).wrapping_sub(32),
        3 => v ^ (1u64 << rng.below(bits as usize)),
        4 => rng.next_u64(),
        _ => boundary(rng, bits),
    };
    r & max
}

/// Unsigned LEB128 encoding (the varint of both native formats).
pub fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decode a LEB128 varint at `pos`; `(value, length)`. Lenient (wraps, stops at 10 bytes): the
/// mutators only need to find varints, the parsers are the ones that must be strict.
pub fn get_var(b: &[u8], pos: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for i in 0..10 {
        let c = *b.get(pos + i)?;
        v |= u64::from(c & 0x7f).wrapping_shl(7 * i as u32);
        if c & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Unusual varint encodings: over-long (non-minimal), 11 bytes, overflowing 2^64, unterminated.
pub fn weird_var(rng: &mut Rng, v: u64) -> Vec<u8> {
    let mut b = Vec::new();
    match rng.below(4) {
        0 => {
            put_var(&mut b, v);
            let last = b.len() - 1;
            b[last] |= 0x80;
            b.push(0); // non-minimal encoding of the same value
        }
        1 => b.extend_from_slice(&[0xff; 11]),
        2 => {
            b.extend_from_slice(&[0xff; 9]);
            b.push(0x02); // bit 64 set
        }
        _ => b.extend_from_slice(&[0x80; 3]), // continues past what follows
    }
    b
}

/// One random generic mutation of a byte string (may leave it unchanged if it is empty).
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>) {
    let len = data.len();
    match rng.below(13) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            let r = rng.byte();
            data[i] = *rng.pick(&[0, 1, 0x7f, 0x80, 0xff, r]);
        }
        2 => {
            let i = rng.below(len + 1);
            let n = rng.small_len(64).max(1);
            let ins = if rng.chance(1, 2) { rng.bytes(n) } else { vec![*rng.pick(&[0u8, 0xff, b'A']); n] };
            data.splice(i..i, ins);
        }
        3 if len > 0 => {
            let i = rng.below(len);
            let n = rng.small_len(len - i).max(1).min(len - i);
            data.drain(i..i + n);
        }
        4 if len > 0 => data.truncate(rng.below(len)),
        5 if len > 0 => {
            // Duplicate a range in place (repeated records, chunks, headers).
            let i = rng.below(len);
            let n = rng.small_len(len - i).max(1).min(len - i);
            let copy = data[i..i + n].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, copy);
        }
        6 => {
            let n = rng.small_len(4096).max(1);
            let tail = if rng.chance(1, 2) { vec![0u8; n] } else { rng.bytes(n) };
            data.extend_from_slice(&tail);
        }
        7 if len >= 2 => {
            // Overwrite a little-endian integer of 2/4/8 bytes with a boundary value.
            let w = *rng.pick(&[2usize, 4, 8]);
            if len >= w {
                let i = rng.below(len - w + 1);
                let v = boundary(rng, (w * 8) as u32);
                data[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
        }
        8 if len > 0 => {
            // Replace a varint found at a random position with a boundary value.
            let i = rng.below(len);
            if let Some((v, n)) = get_var(data, i) {
                let mut b = Vec::new();
                if rng.chance(1, 4) {
                    b = weird_var(rng, v);
                } else {
                    put_var(&mut b, tweak_int(rng, v, 64));
                }
                data.splice(i..i + n, b);
            }
        }
        9 if len > 1 => {
            // Swap two ranges' bytes.
            let a = rng.below(len);
            let b = rng.below(len);
            data.swap(a, b);
        }
        10 if len > 0 => {
            let i = rng.below(len);
            let n = rng.small_len(len - i).max(1).min(len - i);
            let v = rng.byte();
            data[i..i + n].fill(v);
        }
        11 if len > 0 => {
            let i = rng.below(len);
            data[i] = data[i].wrapping_add(rng.byte() % 7).wrapping_sub(3);
        }
        _ => {
            let i = rng.below(len + 1);
            data.insert(i, rng.byte());
        }
    }
}

/// Apply 1..=`max` generic mutations.
pub fn mutate_bytes_n(rng: &mut Rng, data: &mut Vec<u8>, max: usize) {
    for _ in 0..rng.range(1, max) {
        mutate_bytes(rng, data);
    }
}

/// Splice: the head of `a` followed by the tail of `b` (crossover of two inputs).
pub fn splice(rng: &mut Rng, a: &[u8], b: &[u8]) -> Vec<u8> {
    let i = rng.below(a.len() + 1);
    let j = rng.below(b.len() + 1);
    let mut out = a[..i].to_vec();
    out.extend_from_slice(&b[j..]);
    out
}

/// Interesting strings for text mutations: control characters, format-like, non-ASCII, huge
/// numbers, path tricks.
pub const WEIRD_STRINGS: &[&str] = &[
    "",
    " ",
    "\0",
    "\t",
    "\r\n",
    "\x1b[2J",
    "\u{7f}",
    "%s%n",
    "{}",
    "é",
    "\u{10ffff}",
    "\u{202e}",
    "-1",
    "0",
    "0x",
    "0xffffffffffffffff",
    "18446744073709551616",
    "-9223372036854775808",
    "99999999999999999999999",
    "1e309",
    "NaN",
    "../../x",
    "/",
    "a=b=c",
    ",",
    ";",
    ":",
    "=",
    "\"",
    "'",
    "[",
    "]]",
];

/// Mutate a text string: generic byte mutations (repaired to valid UTF-8 where needed by the
/// caller via `String::from_utf8_lossy`) or token-level edits.
pub fn mutate_text(rng: &mut Rng, s: &str) -> String {
    let mut out = s.to_string();
    match rng.below(6) {
        0 => {
            let mut b = out.into_bytes();
            mutate_bytes_n(rng, &mut b, 3);
            out = String::from_utf8_lossy(&b).into_owned();
        }
        1 => {
            let mut at = rng.below(out.len() + 1);
            while !out.is_char_boundary(at) {
                at -= 1;
            }
            let w = *rng.pick::<&str>(WEIRD_STRINGS);
            out.insert_str(at, w);
        }
        2 => out = rng.pick(WEIRD_STRINGS).to_string(),
        3 => {
            // Replace a run of digits with a boundary number.
            let digits: Vec<usize> = out.char_indices().filter(|(_, c)| c.is_ascii_digit()).map(|(i, _)| i).collect();
            if let Some(&i) = digits.get(rng.below(digits.len())) {
                let end = out[i..].find(|c: char| !c.is_ascii_digit()).map_or(out.len(), |e| i + e);
                let v = boundary(rng, 64).to_string();
                out.replace_range(i..end, &v);
            }
        }
        4 => {
            let n = *rng.pick(&[100usize, 4096, 70_000]);
            out.push_str(&"A".repeat(n));
        }
        _ => {
            let c = char::from(rng.below(32) as u8);
            let mut at = rng.below(out.len() + 1);
            while !out.is_char_boundary(at) {
                at -= 1;
            }
            out.insert(at, c);
        }
    }
    out
}

/// Encode several byte strings as one fuzz input: `u32 count`, then `u32 len` + bytes each.
pub fn join_parts(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Inverse of [`join_parts`]; lenient (a damaged container yields the parts that fit, so that
/// raw mutations of the container still produce usable inputs).
pub fn split_parts(b: &[u8]) -> Vec<Vec<u8>> {
    let rd = |at: usize| b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize);
    let Some(n) = rd(0) else { return Vec::new() };
    let mut pos = 4;
    let mut out = Vec::new();
    for _ in 0..n.min(4096) {
        let Some(len) = rd(pos) else { break };
        pos += 4;
        let end = pos.saturating_add(len).min(b.len());
        out.push(b[pos..end].to_vec());
        pos = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_parts_round_trip() {
        for v in [0u64, 1, 127, 128, 1 << 40, u64::MAX] {
            let mut b = Vec::new();
            put_var(&mut b, v);
            assert_eq!(get_var(&b, 0), Some((v, b.len())));
        }
        let parts = vec![b"ab".to_vec(), vec![], vec![1, 2, 3]];
        assert_eq!(split_parts(&join_parts(&parts)), parts);
        let mut rng = Rng::new(3);
        for _ in 0..2000 {
            let mut d = b"hello world".to_vec();
            mutate_bytes_n(&mut rng, &mut d, 4);
            let _ = split_parts(&d);
            let _ = mutate_text(&mut rng, "a=1,b=2");
        }
    }
}
