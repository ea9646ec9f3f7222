//! Decoder/re-encoder for the snapshot (`AILUROSN`, docs/FORMATS.md) and for the recording pair
//! (snapshot + nondet log tied together by the snapshot's BLAKE3 in the log header).
//!
//! FORMAT DEPENDENCY: re-implements the header checksum, the section frame
//! (`tag | reserved | u64 len | payload | B3(head ‖ payload)[..16]`), the RAMH/RAMP layout and
//! the `END_` whole-file hash of `crates/ailuro-rr/src/snapshot.rs`, so that mutants with every
//! checksum repaired reach the section and RAM decoders.

use crate::framed::{self, b3, Framed};
use crate::mutators::{boundary, join_parts, mutate_bytes_n, split_parts, tweak_int};
use crate::rng::Rng;

const HEADER_FIXED: usize = 56;

/// Whether the mutators may rewrite a snapshot to describe a huge all-zero RAM with a consistent
/// page map (a small file legitimately claiming up to 64 GiB). Off by default: every reader
/// currently allocates such a RAM at once, which aborts the process (see the crate's known
/// findings); on with `ailuro-fuzz --huge-ram-claims` and in the ignored known-finding test.
pub static HUGE_RAM_CLAIMS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A decoded snapshot.
#[derive(Clone, Debug)]
pub struct Snap {
    /// Header bytes without its final checksum.
    pub header: Vec<u8>,
    /// Sections in file order: tag, reserved word, payload. The `END_` section's payload is
    /// recomputed on encoding when fixing.
    pub sections: Vec<([u8; 4], u32, Vec<u8>)>,
    /// Bytes after the last section.
    pub tail: Vec<u8>,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl Snap {
    /// Decode; `None` when the framing is too damaged to model.
    pub fn decode(b: &[u8]) -> Option<Snap> {
        if b.get(..8)? != b"AILUROSN" {
            return None;
        }
        let hlen = le32(b, 12)? as usize;
        if hlen < HEADER_FIXED + 16 || hlen > b.len() {
            return None;
        }
        let header = b[..hlen - 16].to_vec();
        let mut pos = hlen;
        let mut sections = Vec::new();
        while pos + 16 <= b.len() {
            let tag: [u8; 4] = b[pos..pos + 4].try_into().ok()?;
            let len = usize::try_from(le64(b, pos + 8)?).ok()?;
            let end = pos.checked_add(16)?.checked_add(len)?.checked_add(16)?;
            if end > b.len() {
                break;
            }
            sections.push((tag, le32(b, pos + 4)?, b[pos + 16..pos + 16 + len].to_vec()));
            pos = end;
        }
        Some(Snap { header, sections, tail: b[pos..].to_vec() })
    }

    /// Encode; with `fix`, every checksum and the `END_` hash are recomputed.
    pub fn encode(&self, fix: bool) -> Vec<u8> {
        let mut out = self.header.clone();
        let hc: [u8; 16] = b3(&[&self.header]);
        out.extend_from_slice(if fix { &hc } else { &[0; 16] });
        for (tag, reserved, payload) in &self.sections {
            let payload = if fix && tag == b"END_" && payload.len() == 32 {
                blake3::hash(&out).as_bytes().to_vec()
            } else {
                payload.clone()
            };
            let mut head = Vec::with_capacity(16);
            head.extend_from_slice(tag);
            head.extend_from_slice(&reserved.to_le_bytes());
            head.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            let c: [u8; 16] = if fix { b3(&[&head, &payload]) } else { [0; 16] };
            out.extend_from_slice(&head);
            out.extend_from_slice(&payload);
            out.extend_from_slice(&c);
        }
        out.extend_from_slice(&self.tail);
        out
    }

    fn section_mut(&mut self, tag: &[u8; 4]) -> Option<&mut Vec<u8>> {
        self.sections.iter_mut().find(|s| &s.0 == tag).map(|s| &mut s.2)
    }

    /// Replace the RAM description by an all-zero RAM of `pages` pages with a consistent page map:
    /// a small file that claims a huge RAM (the reader allocates it).
    fn claim_ram(&mut self, pages: u64) {
        let size = pages * 4096;
        if self.header.len() >= 40 {
            self.header[32..40].copy_from_slice(&size.to_le_bytes());
        }
        let ppp: u32 = 16384;
        let parts = pages.div_ceil(u64::from(ppp));
        let mut ramh = Vec::new();
        ramh.extend_from_slice(&pages.to_le_bytes());
        ramh.extend_from_slice(&ppp.to_le_bytes());
        ramh.extend_from_slice(&(parts as u32).to_le_bytes());
        ramh.resize(16 + pages.div_ceil(8) as usize, 0);
        self.sections.retain(|s| &s.0 != b"RAMH" && &s.0 != b"RAMP");
        let at = self.sections.iter().position(|s| &s.0 == b"END_").unwrap_or(self.sections.len());
        let mut new = vec![(*b"RAMH", 0, ramh)];
        for p in 0..parts as u32 {
            let mut b = p.to_le_bytes().to_vec();
            b.extend_from_slice(&0u32.to_le_bytes());
            new.push((*b"RAMP", 0, b));
        }
        self.sections.splice(at..at, new);
    }
}

/// Mutate a snapshot structure-aware; `None` if it cannot be decoded.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Option<Vec<u8>> {
    let mut s = Snap::decode(input)?;
    for _ in 0..rng.range(1, 2) {
        let ns = s.sections.len();
        match rng.below(12) {
            0 | 1 => {
                // Header fields: version, header length, arch, page size, RAM base/size, icount,
                // config/creator lengths.
                let fields: &[(usize, u32)] =
                    &[(8, 32), (12, 32), (16, 8), (20, 32), (24, 64), (32, 64), (40, 64), (48, 32)];
                let &(at, bits) = rng.pick(fields);
                let w = (bits / 8) as usize;
                if at + w <= s.header.len() {
                    let old = u64::from_le_bytes({
                        let mut a = [0u8; 8];
                        a[..w].copy_from_slice(&s.header[at..at + w]);
                        a
                    });
                    let v = tweak_int(rng, old, bits);
                    s.header[at..at + w].copy_from_slice(&v.to_le_bytes()[..w]);
                }
            }
            2 => {
                // The machine config blob (postcard, decoded by the machine at replay).
                let cl = le32(&s.header, 48).unwrap_or(0) as usize;
                if HEADER_FIXED - 4 + cl <= s.header.len() {
                    let mut cfg = s.header[52..52 + cl].to_vec();
                    mutate_bytes_n(rng, &mut cfg, 2);
                    s.header.splice(52..52 + cl, cfg.iter().copied());
                    let n = cfg.len() as u32;
                    s.header[48..52].copy_from_slice(&n.to_le_bytes());
                    let hl = s.header.len() as u32 + 16;
                    s.header[12..16].copy_from_slice(&hl.to_le_bytes());
                }
            }
            3 | 4 if ns > 0 => {
                // A section payload (CPU/device/console state blobs, RAM map, RAM parts).
                let i = rng.below(ns);
                let sec = &mut s.sections[i];
                if &sec.0 == b"RAMP" && sec.2.len() > 8 && rng.chance(1, 2) {
                    // Inside the compressed RAM part: mutate the pages and recompress.
                    if let Ok(mut raw) = zstd::bulk::decompress(&sec.2[8..], 64 << 20) {
                        mutate_bytes_n(rng, &mut raw, 2);
                        let comp = zstd::bulk::compress(&raw, 1).unwrap_or_default();
                        sec.2.truncate(8);
                        sec.2.extend_from_slice(&comp);
                    }
                } else if &sec.0 == b"RAMH" && sec.2.len() >= 16 && rng.chance(1, 2) {
                    let at = *rng.pick(&[0usize, 8, 12]);
                    let bits = if at == 0 { 64 } else { 32 };
                    let v = boundary(rng, bits);
                    let w = (bits / 8) as usize;
                    sec.2[at..at + w].copy_from_slice(&v.to_le_bytes()[..w]);
                } else if &sec.0 == b"RAMP" && sec.2.len() >= 8 && rng.chance(1, 2) {
                    let at = *rng.pick(&[0usize, 4]);
                    let v = boundary(rng, 32) as u32;
                    sec.2[at..at + 4].copy_from_slice(&v.to_le_bytes());
                } else {
                    mutate_bytes_n(rng, &mut sec.2, 3);
                }
            }
            5 if ns > 0 => {
                let i = rng.below(ns);
                s.sections[i].0 = *rng.pick(&[*b"CPU_", *b"DEVS", *b"CONS", *b"RAMH", *b"RAMP", *b"END_", *b"XXXX"]);
            }
            6 if ns > 0 => {
                let i = rng.below(ns);
                let sec = s.sections[i].clone();
                s.sections.insert(rng.below(ns + 1), sec);
            }
            7 if ns > 0 => {
                s.sections.remove(rng.below(ns));
            }
            8 if ns > 1 => {
                let (a, b) = (rng.below(ns), rng.below(ns));
                s.sections.swap(a, b);
            }
            9 => {
                // Flip a page-map bit (page counts per part no longer match).
                if let Some(h) = s.section_mut(b"RAMH") {
                    if h.len() > 16 {
                        let i = 16 + rng.below(h.len() - 16);
                        h[i] ^= 1 << rng.below(8);
                    }
                }
            }
            10 if HUGE_RAM_CLAIMS.load(std::sync::atomic::Ordering::Relaxed) => {
                // A small file describing a huge all-zero RAM: 4 GiB .. 64 GiB.
                let pages = *rng.pick(&[1u64 << 20, 1 << 22, 1 << 24]);
                s.claim_ram(pages);
            }
            _ => {
                let n = rng.range(1, 64);
                s.tail.extend(rng.bytes(n));
            }
        }
    }
    let mut out = s.encode(!rng.chance(1, 12));
    if rng.chance(1, 12) {
        mutate_bytes_n(rng, &mut out, 2);
    }
    Some(out)
}

/// Make a log belong to a snapshot: arch, start icount and snapshot hash copied from the
/// snapshot, header checksum fixed. This is what lets a mutated pair pass `check_pair` and reach
/// the machine's own state decoders.
pub fn tie_log_to_snapshot(log: &[u8], snp: &[u8]) -> Option<Vec<u8>> {
    let mut f = Framed::decode(log)?;
    if f.header.len() < 60 || snp.len() < 48 {
        return None;
    }
    f.header[16] = snp[16];
    f.header[20..28].copy_from_slice(&snp[40..48]);
    f.header[28..60].copy_from_slice(blake3::hash(snp).as_bytes());
    // Chunks must not start before the start icount: shift them if needed.
    let start = u64::from_le_bytes(snp[40..48].try_into().ok()?);
    for c in &mut f.chunks {
        if c.first < start {
            let span = c.last.saturating_sub(c.first);
            c.first = start;
            c.last = start.saturating_add(span);
        }
    }
    Some(f.encode(framed::Fix::ALL))
}

/// Mutate a recording pair (`join_parts([snapshot, log])`): one or both members, then usually
/// re-tie the log to the (possibly mutated) snapshot.
pub fn mutate_pair(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut parts = split_parts(input);
    parts.resize(2, Vec::new());
    let which = rng.below(3);
    if which != 1 {
        parts[0] = mutate(rng, &parts[0]).unwrap_or_else(|| {
            let mut b = parts[0].clone();
            mutate_bytes_n(rng, &mut b, 4);
            b
        });
    }
    if which != 0 {
        parts[1] = framed::mutate(rng, &parts[1]).unwrap_or_else(|| {
            let mut b = parts[1].clone();
            mutate_bytes_n(rng, &mut b, 4);
            b
        });
    }
    if rng.chance(7, 8) {
        if let Some(l) = tie_log_to_snapshot(&parts[1], &parts[0]) {
            parts[1] = l;
        }
    }
    join_parts(&parts)
}
