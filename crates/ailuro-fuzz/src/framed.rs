//! Decoder/re-encoder for the two chunked formats: the nondet log (`AILUROLG`, docs/FORMATS.md)
//! and the plugin log (`AILUROPL`, docs/PLOG.md). Both are `header | chunks | trailer | footer`
//! with identical chunk and footer framing; they differ in magics and in the trailer's contents.
//!
//! FORMAT DEPENDENCY: this re-implements (without sharing code, on purpose: a fuzzer must not trust
//! the code it tests) the framing of `crates/ailuro-rr/src/log.rs` and
//! `crates/ailuro-plog/src/{format,reader,writer}.rs`: the 16-byte header checksum at the end of
//! the header, the 60-byte chunk header with its payload and header checksums, the trailers and
//! the 40-byte footer. If those layouts change, update this file (the CI test notices: mutants
//! would stop passing the checksum layer and the "deep errors" assertion fails).

use crate::mutators::{boundary, get_var, mutate_bytes_n, put_var, tweak_int, weird_var};
use crate::rng::Rng;

/// Which of the two formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Nondet log.
    Rr,
    /// Plugin log.
    Plog,
}

impl Flavor {
    fn chunk_magic(self) -> &'static [u8; 4] {
        match self {
            Self::Rr => b"CHNK",
            Self::Plog => b"PCHK",
        }
    }
    fn trailer_magic(self) -> &'static [u8; 4] {
        match self {
            Self::Rr => b"TRLR",
            Self::Plog => b"PTRL",
        }
    }
    fn footer_magic(self) -> &'static [u8; 8] {
        match self {
            Self::Rr => b"AILUROFT",
            Self::Plog => b"AILUROPF",
        }
    }
}

const CHUNK_HEADER_LEN: usize = 60;
const FOOTER_LEN: usize = 40;

/// BLAKE3 of the concatenation, truncated to N bytes (the formats' `B3(x)[..n]`).
pub fn b3<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; N];
    out.copy_from_slice(&h.finalize().as_bytes()[..N]);
    out
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One chunk, with its payload decompressed.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// Chunk number field.
    pub seq: u32,
    /// First icount field.
    pub first: u64,
    /// Last icount field.
    pub last: u64,
    /// Entry/record count field.
    pub count: u32,
    /// Decompressed payload.
    pub raw: Vec<u8>,
}

/// The trailer, as far as the re-encoder needs to understand it.
#[derive(Clone, Debug)]
pub enum Trailer {
    /// Nondet log: end icount, reason, code, final hash, entry count, per-kind stats.
    Rr {
        /// End icount.
        end_icount: u64,
        /// End reason tag.
        reason: u8,
        /// Exit code.
        code: i32,
        /// Final state hash.
        hash: [u8; 32],
        /// Total entry count field.
        entries: u64,
        /// Per-kind (kind, count, bytes).
        kinds: Vec<(u8, u64, u64)>,
    },
    /// Plugin log: per (plugin, kind) stats (counts and byte totals are recomputed).
    Plog {
        /// Per (plugin, kind, records, raw bytes).
        kinds: Vec<(String, String, u64, u64)>,
    },
}

/// A decoded chunked log.
#[derive(Clone, Debug)]
pub struct Framed {
    /// Which format.
    pub flavor: Flavor,
    /// Header bytes without the final 16-byte checksum.
    pub header: Vec<u8>,
    /// Chunks in file order.
    pub chunks: Vec<Chunk>,
    /// Trailer of a complete log.
    pub trailer: Option<Trailer>,
}

/// Which fix-ups [`Framed::encode`] applies; a mutant with everything fixed reaches the payload
/// decoders, one with a deliberately stale checksum tests that check.
#[derive(Clone, Copy, Debug)]
pub struct Fix {
    /// Recompute the header checksum.
    pub header: bool,
    /// Recompute payload checksums and lengths.
    pub payload: bool,
    /// Recompute chunk header checksums.
    pub chunk_header: bool,
    /// Rebuild the trailer's chunk index and totals from the chunks.
    pub trailer: bool,
    /// Recompute the footer.
    pub footer: bool,
}

impl Fix {
    /// Everything fixed.
    pub const ALL: Fix = Fix { header: true, payload: true, chunk_header: true, trailer: true, footer: true };

    /// Usually everything; sometimes one fix-up left out.
    pub fn random(rng: &mut Rng) -> Fix {
        let mut f = Fix::ALL;
        if rng.chance(1, 12) {
            match rng.below(5) {
                0 => f.header = false,
                1 => f.payload = false,
                2 => f.chunk_header = false,
                3 => f.trailer = false,
                _ => f.footer = false,
            }
        }
        f
    }
}

impl Framed {
    /// Decode a log of either flavor; `None` if the framing is too damaged to model (the caller
    /// then falls back to generic byte mutations).
    pub fn decode(b: &[u8]) -> Option<Framed> {
        let flavor = match b.get(..8)? {
            b"AILUROLG" => Flavor::Rr,
            b"AILUROPL" => Flavor::Plog,
            _ => return None,
        };
        let hlen = le32(b, 12)? as usize;
        if hlen < 32 || hlen > b.len() {
            return None;
        }
        let header = b[..hlen - 16].to_vec();
        // Footer → trailer.
        let mut end = b.len();
        let mut trailer_bytes = None;
        if b.len() >= hlen + FOOTER_LEN && &b[b.len() - FOOTER_LEN..b.len() - 32] == flavor.footer_magic() {
            let foot = b.len() - FOOTER_LEN;
            let t_off = le64(b, foot + 8)? as usize;
            if t_off >= hlen && t_off <= foot {
                trailer_bytes = Some(&b[t_off..foot]);
                end = t_off;
            }
        }
        let mut chunks = Vec::new();
        let mut pos = hlen;
        while pos + CHUNK_HEADER_LEN <= end && &b[pos..pos + 4] == flavor.chunk_magic() {
            let h = &b[pos..pos + CHUNK_HEADER_LEN];
            let raw_len = le32(h, 28)? as usize;
            let comp_len = le32(h, 32)? as usize;
            let payload = b.get(pos + CHUNK_HEADER_LEN..pos + CHUNK_HEADER_LEN + comp_len)?;
            let raw = zstd::bulk::decompress(payload, raw_len.min(64 << 20)).ok()?;
            chunks.push(Chunk { seq: le32(h, 4)?, first: le64(h, 8)?, last: le64(h, 16)?, count: le32(h, 24)?, raw });
            pos += CHUNK_HEADER_LEN + comp_len;
        }
        let trailer = trailer_bytes.and_then(|t| parse_trailer(flavor, t));
        Some(Framed { flavor, header, chunks, trailer })
    }

    /// Encode with the given fix-ups (un-fixed fields get plausible but stale values).
    pub fn encode(&self, fix: Fix) -> Vec<u8> {
        let mut out = self.header.clone();
        let hc: [u8; 16] = b3(&[&self.header]);
        out.extend_from_slice(if fix.header { &hc } else { &[0u8; 16] });
        let mut index = Vec::new();
        let (mut raw_total, mut comp_total) = (0u64, 0u64);
        for c in &self.chunks {
            let comp = zstd::bulk::compress(&c.raw, 1).unwrap_or_default();
            let offset = out.len() as u64;
            let mut h = Vec::with_capacity(CHUNK_HEADER_LEN);
            h.extend_from_slice(self.flavor.chunk_magic());
            h.extend_from_slice(&c.seq.to_le_bytes());
            h.extend_from_slice(&c.first.to_le_bytes());
            h.extend_from_slice(&c.last.to_le_bytes());
            h.extend_from_slice(&c.count.to_le_bytes());
            let raw_len = if fix.payload { c.raw.len() as u32 } else { c.raw.len() as u32 + 1 };
            h.extend_from_slice(&raw_len.to_le_bytes());
            h.extend_from_slice(&(comp.len() as u32).to_le_bytes());
            let pc: [u8; 16] = if fix.payload { b3(&[&comp]) } else { b3(&[&c.raw]) };
            h.extend_from_slice(&pc);
            let hc: [u8; 8] = if fix.chunk_header { b3(&[&h]) } else { [0; 8] };
            h.extend_from_slice(&hc);
            out.extend_from_slice(&h);
            out.extend_from_slice(&comp);
            index.push((offset, c.first, c.last, c.count));
            raw_total += u64::from(raw_len);
            comp_total += comp.len() as u64;
        }
        let Some(t) = &self.trailer else { return out };
        let total: u64 = self.chunks.iter().map(|c| u64::from(c.count)).sum();
        let mut tb = Vec::new();
        tb.extend_from_slice(self.flavor.trailer_magic());
        tb.extend_from_slice(&0u32.to_le_bytes());
        match t {
            Trailer::Rr { end_icount, reason, code, hash, entries, kinds } => {
                let last = self.chunks.last().map_or(0, |c| c.last);
                let end = if fix.trailer { (*end_icount).max(last) } else { *end_icount };
                tb.extend_from_slice(&end.to_le_bytes());
                tb.push(*reason);
                tb.extend_from_slice(&[0; 3]);
                tb.extend_from_slice(&code.to_le_bytes());
                tb.extend_from_slice(hash);
                tb.extend_from_slice(&(if fix.trailer { total } else { *entries }).to_le_bytes());
                tb.extend_from_slice(&(kinds.len() as u32).to_le_bytes());
                for (k, n, bytes) in kinds {
                    tb.push(*k);
                    tb.extend_from_slice(&n.to_le_bytes());
                    tb.extend_from_slice(&bytes.to_le_bytes());
                }
            }
            Trailer::Plog { kinds } => {
                tb.extend_from_slice(&total.to_le_bytes());
                tb.extend_from_slice(&raw_total.to_le_bytes());
                tb.extend_from_slice(&comp_total.to_le_bytes());
                // The reader checks that the per-kind counts add up to the total: keep them
                // consistent by putting the difference on the last kind.
                let mut kinds = kinds.clone();
                if fix.trailer {
                    let sum: u64 = kinds.iter().map(|k| k.2).fold(0, u64::wrapping_add);
                    if let Some(k) = kinds.last_mut() {
                        k.2 = k.2.wrapping_add(total.wrapping_sub(sum));
                    } else if total > 0 {
                        kinds.push(("p".into(), "k".into(), total, 0));
                    }
                }
                tb.extend_from_slice(&(kinds.len() as u32).to_le_bytes());
                for (p, k, n, bytes) in &kinds {
                    for s in [p, k] {
                        tb.extend_from_slice(&(s.len() as u32).to_le_bytes());
                        tb.extend_from_slice(s.as_bytes());
                    }
                    tb.extend_from_slice(&n.to_le_bytes());
                    tb.extend_from_slice(&bytes.to_le_bytes());
                }
            }
        }
        let index_len = if fix.trailer { index.len() } else { index.len().saturating_sub(1) };
        tb.extend_from_slice(&(index_len as u64).to_le_bytes());
        for (off, first, last, count) in &index[..index_len] {
            tb.extend_from_slice(&off.to_le_bytes());
            tb.extend_from_slice(&first.to_le_bytes());
            tb.extend_from_slice(&last.to_le_bytes());
            tb.extend_from_slice(&count.to_le_bytes());
        }
        let tlen = tb.len() as u32;
        tb[4..8].copy_from_slice(&tlen.to_le_bytes());
        let t_off = out.len() as u64;
        out.extend_from_slice(&tb);
        let mut f = Vec::with_capacity(FOOTER_LEN);
        f.extend_from_slice(self.flavor.footer_magic());
        f.extend_from_slice(&t_off.to_le_bytes());
        f.extend_from_slice(&(tb.len() as u64).to_le_bytes());
        let c: [u8; 16] = if fix.footer { b3(&[&tb, &f]) } else { [0; 16] };
        f.extend_from_slice(&c);
        out.extend_from_slice(&f);
        out
    }

    /// Set each chunk's count and last icount from its payload, where the payload can be walked
    /// (nondet log entries only), so that entry-level mutations are not stopped by the
    /// count/icount consistency checks.
    pub fn resync_rr_chunks(&mut self) {
        if self.flavor != Flavor::Rr {
            return;
        }
        for c in &mut self.chunks {
            if let Some(entries) = rr_entries::parse(&c.raw) {
                if !entries.is_empty() {
                    c.count = entries.len() as u32;
                    let span = entries.iter().fold(0u64, |a, e| a.saturating_add(e.delta));
                    c.last = c.first.saturating_add(span);
                }
            }
        }
    }
}

fn parse_trailer(flavor: Flavor, t: &[u8]) -> Option<Trailer> {
    match flavor {
        Flavor::Rr => {
            let end_icount = le64(t, 8)?;
            let reason = *t.get(16)?;
            let code = le32(t, 20)? as i32;
            let hash: [u8; 32] = t.get(24..56)?.try_into().ok()?;
            let entries = le64(t, 56)?;
            let nk = (le32(t, 64)? as usize).min(256);
            let mut kinds = Vec::new();
            for i in 0..nk {
                let at = 68 + 17 * i;
                kinds.push((*t.get(at)?, le64(t, at + 1)?, le64(t, at + 9)?));
            }
            Some(Trailer::Rr { end_icount, reason, code, hash, entries, kinds })
        }
        Flavor::Plog => {
            let nk = (le32(t, 32)? as usize).min(4096);
            let mut pos = 36;
            let mut kinds = Vec::new();
            let s = |pos: &mut usize| -> Option<String> {
                let n = le32(t, *pos)? as usize;
                let v = String::from_utf8_lossy(t.get(*pos + 4..*pos + 4 + n)?).into_owned();
                *pos += 4 + n;
                Some(v)
            };
            for _ in 0..nk {
                let p = s(&mut pos)?;
                let k = s(&mut pos)?;
                kinds.push((p, k, le64(t, pos)?, le64(t, pos + 8)?));
                pos += 16;
            }
            Some(Trailer::Plog { kinds })
        }
    }
}

/// Entry-level model of a nondet log chunk payload (docs/FORMATS.md, "Entries").
pub mod rr_entries {
    use super::*;

    /// One field of an entry, typed as encoded.
    #[derive(Clone, Debug)]
    pub enum Field {
        /// LEB128 varint (or, after mutation, a deliberately weird encoding).
        Var(u64),
        /// Raw bytes written verbatim (weird varints, fixed arrays, DMA data).
        Raw(Vec<u8>),
        /// One byte.
        U8(u8),
    }

    /// One entry: delta, kind byte, fields.
    #[derive(Clone, Debug)]
    pub struct Entry {
        /// icount delta.
        pub delta: u64,
        /// Kind byte.
        pub kind: u8,
        /// Fields of the kind.
        pub fields: Vec<Field>,
    }

    /// Parse a payload (strictly enough to re-encode it byte for byte); `None` if it does not
    /// parse (already damaged, or an unknown kind).
    pub fn parse(b: &[u8]) -> Option<Vec<Entry>> {
        let mut pos = 0;
        let mut out = Vec::new();
        let var = |pos: &mut usize| -> Option<u64> {
            let (v, n) = get_var(b, *pos)?;
            *pos += n;
            Some(v)
        };
        let u8_ = |pos: &mut usize| -> Option<u8> {
            let v = *b.get(*pos)?;
            *pos += 1;
            Some(v)
        };
        while pos < b.len() {
            let delta = var(&mut pos)?;
            let kind = u8_(&mut pos)?;
            let mut f = Vec::new();
            match kind {
                1 | 2 => {
                    f.push(Field::Var(var(&mut pos)?));
                    f.push(Field::U8(u8_(&mut pos)?));
                    f.push(Field::Var(var(&mut pos)?));
                }
                3 | 4 | 10 => f.push(Field::Var(var(&mut pos)?)),
                5 => {
                    f.push(Field::U8(u8_(&mut pos)?));
                    f.push(Field::U8(u8_(&mut pos)?));
                }
                6 | 9 => {
                    f.push(Field::Var(var(&mut pos)?));
                    let len = var(&mut pos)?;
                    f.push(Field::Var(len));
                    let data = b.get(pos..pos.checked_add(usize::try_from(len).ok()?)?)?;
                    pos += data.len();
                    f.push(Field::Raw(data.to_vec()));
                }
                7 => {
                    f.push(Field::Var(var(&mut pos)?));
                    f.push(Field::Raw(b.get(pos..pos + 16)?.to_vec()));
                    pos += 16;
                }
                8 => {}
                _ => return None,
            }
            out.push(Entry { delta, kind, fields: f });
        }
        Some(out)
    }

    /// Encode entries back into a payload.
    pub fn encode(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            put_var(&mut out, e.delta);
            out.push(e.kind);
            for f in &e.fields {
                match f {
                    Field::Var(v) => put_var(&mut out, *v),
                    Field::Raw(r) => out.extend_from_slice(r),
                    Field::U8(v) => out.push(*v),
                }
            }
        }
        out
    }

    /// A random entry of a random (known or unknown) kind.
    pub fn random_entry(rng: &mut Rng) -> Entry {
        let kind = if rng.chance(1, 8) { rng.byte() } else { rng.range(1, 10) as u8 };
        let var = |rng: &mut Rng| Field::Var(if rng.chance(1, 2) { boundary(rng, 64) } else { rng.below(1000) as u64 });
        let fields = match kind {
            1 | 2 => vec![var(rng), Field::U8(*rng.pick(&[1u8, 2, 4, 8, 0, 3, 255])), var(rng)],
            3 | 4 | 10 => vec![var(rng)],
            5 => vec![Field::U8(rng.below(4) as u8), Field::U8(rng.below(3) as u8)],
            6 | 9 => {
                let n = rng.small_len(64);
                let claimed = if rng.chance(1, 4) { boundary(rng, 32) } else { n as u64 };
                vec![var(rng), Field::Var(claimed), Field::Raw(rng.bytes(n))]
            }
            7 => vec![var(rng), Field::Raw(rng.bytes(16))],
            _ => vec![],
        };
        Entry { delta: if rng.chance(3, 4) { 0 } else { boundary(rng, 64) }, kind, fields }
    }

    /// One entry-level mutation.
    pub fn mutate(rng: &mut Rng, entries: &mut Vec<Entry>) {
        let n = entries.len();
        match rng.below(9) {
            0..=2 if n > 0 => {
                // A field to a boundary value or a weird encoding (ports, sizes, lengths...).
                let e = &mut entries[rng.below(n)];
                let nf = e.fields.len();
                if nf == 0 {
                    e.delta = tweak_int(rng, e.delta, 64);
                    return;
                }
                let f = &mut e.fields[rng.below(nf)];
                *f = match f {
                    Field::Var(v) if rng.chance(1, 6) => Field::Raw(weird_var(rng, *v)),
                    Field::Var(v) => Field::Var(tweak_int(rng, *v, 64)),
                    Field::U8(v) => Field::U8(tweak_int(rng, u64::from(*v), 8) as u8),
                    Field::Raw(r) => {
                        let mut r = r.clone();
                        mutate_bytes_n(rng, &mut r, 2);
                        Field::Raw(r)
                    }
                };
            }
            3 if n > 0 => {
                let e = &mut entries[rng.below(n)];
                e.kind = if rng.chance(1, 2) { rng.range(0, 12) as u8 } else { rng.byte() };
            }
            4 if n > 0 => {
                let e = &mut entries[rng.below(n)];
                e.delta = tweak_int(rng, e.delta, 64);
            }
            5 if n > 1 => {
                entries.remove(rng.below(n));
            }
            6 if n > 0 => {
                let e = entries[rng.below(n)].clone();
                entries.insert(rng.below(n + 1), e);
            }
            7 if n > 1 => {
                let (a, b) = (rng.below(n), rng.below(n));
                entries.swap(a, b);
            }
            _ => {
                let e = random_entry(rng);
                entries.insert(rng.below(n + 1), e);
            }
        }
    }
}

/// Mutate one chunked log (either flavor) structure-aware; `None` if it cannot be decoded.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Option<Vec<u8>> {
    let mut f = Framed::decode(input)?;
    let rounds = rng.range(1, 3);
    let mut resync = false;
    for _ in 0..rounds {
        let nc = f.chunks.len();
        match rng.below(16) {
            // Entry level (most weight: this is what checksums otherwise hide).
            0..=5 if nc > 0 => {
                let c = &mut f.chunks[rng.below(nc)];
                match (f.flavor, rr_entries::parse(&c.raw)) {
                    (Flavor::Rr, Some(mut es)) => {
                        for _ in 0..rng.range(1, 3) {
                            rr_entries::mutate(rng, &mut es);
                        }
                        c.raw = rr_entries::encode(&es);
                        resync = rng.chance(4, 5);
                    }
                    _ => {
                        // Varint-aware and byte mutations of the payload (plog records).
                        mutate_bytes_n(rng, &mut c.raw, 3);
                        if f.flavor == Flavor::Rr {
                            resync = rng.chance(1, 2);
                        }
                    }
                }
            }
            6 if nc > 0 => {
                let c = &mut f.chunks[rng.below(nc)];
                match rng.below(5) {
                    0 => c.seq = tweak_int(rng, u64::from(c.seq), 32) as u32,
                    1 => c.first = tweak_int(rng, c.first, 64),
                    2 => c.last = tweak_int(rng, c.last, 64),
                    3 => c.count = tweak_int(rng, u64::from(c.count), 32) as u32,
                    _ => c.raw.clear(),
                }
            }
            7 if nc > 0 => {
                // Duplicate a chunk (renumbered so only content checks can object).
                let i = rng.below(nc);
                let c = f.chunks[i].clone();
                f.chunks.insert(i + 1, c);
                for (j, c) in f.chunks.iter_mut().enumerate() {
                    c.seq = j as u32;
                }
            }
            8 if nc > 0 => {
                f.chunks.remove(rng.below(nc));
                if rng.chance(3, 4) {
                    for (j, c) in f.chunks.iter_mut().enumerate() {
                        c.seq = j as u32;
                    }
                }
            }
            9 if nc > 1 => {
                let (a, b) = (rng.below(nc), rng.below(nc));
                f.chunks.swap(a, b);
            }
            10 => {
                // Header fields (version, arch, start icount, lengths), checksum fixed.
                let h = &mut f.header;
                let at = *rng.pick(&[8usize, 12, 16, 20, 24, 60, 64]);
                if at + 4 <= h.len() {
                    let v = boundary(rng, 32) as u32;
                    if at == 16 && f.flavor == Flavor::Rr {
                        h[16] = rng.below(5) as u8;
                    } else {
                        h[at..at + 4].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
            11 => f.trailer = None, // an incomplete log
            12 => {
                if let Some(Trailer::Rr { end_icount, reason, code, entries, kinds, .. }) = &mut f.trailer {
                    match rng.below(5) {
                        0 => *end_icount = tweak_int(rng, *end_icount, 64),
                        1 => *reason = rng.byte(),
                        2 => *code = rng.next_u64() as i32,
                        3 => *entries = boundary(rng, 64),
                        _ => kinds.push((rng.byte(), boundary(rng, 64), boundary(rng, 64))),
                    }
                } else if let Some(Trailer::Plog { kinds }) = &mut f.trailer {
                    match rng.below(3) {
                        0 => kinds.push((String::new(), "\u{0}".into(), boundary(rng, 64), 1)),
                        1 => kinds.clear(),
                        _ => {
                            if let Some(k) = kinds.first_mut() {
                                k.0 = crate::mutators::mutate_text(rng, &k.0);
                            }
                        }
                    }
                }
            }
            13 if nc > 0 => {
                // Move a chunk's icount window (order checks) while keeping it self-consistent.
                let i = rng.below(nc);
                let d = boundary(rng, 64);
                let c = &mut f.chunks[i];
                let span = c.last.saturating_sub(c.first);
                c.first = d;
                c.last = d.saturating_add(span);
            }
            _ if nc > 0 => {
                // Entries from one chunk spliced into another (cross-chunk confusion).
                let a = rng.below(nc);
                let b = rng.below(nc);
                let src = f.chunks[a].raw.clone();
                let cut = rng.below(src.len() + 1);
                f.chunks[b].raw.extend_from_slice(&src[cut..]);
                resync = true;
            }
            _ => {}
        }
    }
    if resync {
        f.resync_rr_chunks();
    }
    let mut out = f.encode(Fix::random(rng));
    // Occasionally damage the encoded file too (cuts, zero tails, stray bytes).
    if rng.chance(1, 10) {
        match rng.below(3) {
            0 => out.truncate(rng.below(out.len() + 1)),
            1 => out.extend(std::iter::repeat_n(0u8, rng.range(1, 200))),
            _ => mutate_bytes_n(rng, &mut out, 2),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rr_log_round_trips_through_the_model() {
        let d = tempfile::TempDir::new().unwrap();
        let p = d.path().join("l");
        let lh = ailuro_rr::LogHeader {
            arch: ailuro_rr::Arch::I386,
            start_icount: 3,
            snapshot_hash: [7; 32],
            creator: "t".into(),
        };
        let mut w = ailuro_rr::LogWriter::create(&p, &lh, false).unwrap();
        w.set_chunk_size(16);
        for i in 0..20u64 {
            let event = ailuro_rr::Event::IoRead { port: 0x3f8, size: 1, value: i as u32 };
            w.append(&ailuro_rr::LogEntry { icount: 3 + i * 5, event }).unwrap();
        }
        w.finish(ailuro_rr::LogEnd {
            end_icount: 500,
            reason: ailuro_rr::EndReason::GuestExit(3),
            final_state_hash: [1; 32],
        })
        .unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let m = Framed::decode(&bytes).unwrap();
        assert!(m.chunks.len() > 2);
        for c in &m.chunks {
            let es = rr_entries::parse(&c.raw).unwrap();
            assert_eq!(rr_entries::encode(&es), c.raw);
        }
        let again = m.encode(Fix::ALL);
        // Compression level differs from the writer's, so compare by reading the re-encoding.
        std::fs::write(&p, &again).unwrap();
        let mut r = ailuro_rr::LogReader::open(&p).unwrap();
        assert_eq!(r.verify_rest().unwrap(), 20);
        assert!(r.is_complete());
    }
}
