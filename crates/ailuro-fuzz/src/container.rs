//! Decoder/re-encoder for the PANDA-compatible `.rr` container (docs/FORMATS.md):
//! `"PANDA_RR" | u64 icount | MD5(rest) | xz(tar(NAME-rr-snp, NAME-rr-nondet.log))`.
//!
//! FORMAT DEPENDENCY: mirrors `crates/ailuro-rr/src/pack.rs` (header layout, MD5 coverage, member
//! naming). Mutants are rebuilt with a fresh tar (GNU headers, mtime 0, so they are
//! deterministic), recompressed with a fast xz preset and given a correct MD5, so they reach the
//! tar walker, the member checks and the snapshot/log validation.

use std::io::{Read, Write};

use md5::{Digest, Md5};

use crate::mutators::{boundary, join_parts, mutate_bytes_n, split_parts};
use crate::rng::Rng;
use crate::snapshot;

/// One tar member.
#[derive(Clone, Debug)]
pub struct Member {
    /// Path as stored.
    pub name: Vec<u8>,
    /// tar entry type byte (`b'0'` regular).
    pub kind: u8,
    /// Contents.
    pub data: Vec<u8>,
}

/// A decoded container.
#[derive(Clone, Debug)]
pub struct Container {
    /// The instruction-count field.
    pub icount: u64,
    /// Members in order.
    pub members: Vec<Member>,
}

/// Largest decompressed tar the mutator unpacks (seeds are far smaller; a mutant that claims
/// more is mutated with generic mutations instead).
const MAX_TAR: u64 = 64 << 20;

impl Container {
    /// Decode; `None` if the xz or tar layer does not decode.
    pub fn decode(b: &[u8]) -> Option<Container> {
        if b.get(..8)? != b"PANDA_RR" || b.len() < 32 {
            return None;
        }
        let icount = u64::from_le_bytes(b[8..16].try_into().ok()?);
        let mut tar_bytes = Vec::new();
        xz2::read::XzDecoder::new_multi_decoder(&b[32..]).take(MAX_TAR).read_to_end(&mut tar_bytes).ok()?;
        let mut ar = tar::Archive::new(&tar_bytes[..]);
        let mut members = Vec::new();
        for e in ar.entries().ok()? {
            let mut e = e.ok()?;
            let name = e.path_bytes().into_owned();
            let kind = e.header().entry_type().as_byte();
            let mut data = Vec::new();
            e.read_to_end(&mut data).ok()?;
            members.push(Member { name, kind, data });
        }
        Some(Container { icount, members })
    }

    /// The tar stream of the members.
    pub fn tar(&self) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        for m in &self.members {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::new(m.kind));
            h.set_size(m.data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            // Write the name bytes directly (set_path refuses "..", which is exactly what we
            // want to test); names longer than the field are cut.
            let n = m.name.len().min(99);
            if let Some(g) = h.as_gnu_mut() {
                g.name = [0; 100];
                g.name[..n].copy_from_slice(&m.name[..n]);
            }
            if m.kind == b'2' || m.kind == b'1' {
                let _ = h.set_link_name("target");
            }
            h.set_cksum();
            let _ = t.append(&h, &m.data[..]);
        }
        t.into_inner().unwrap_or_default()
    }

    /// Encode around an already built tar stream.
    pub fn encode_tar(icount: u64, tar: &[u8], fix_md5: bool) -> Vec<u8> {
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 0);
        let _ = xz.write_all(tar);
        let body = xz.finish().unwrap_or_default();
        Self::encode_body(icount, &body, fix_md5)
    }

    /// Header + compressed body, MD5 fixed or not.
    pub fn encode_body(icount: u64, body: &[u8], fix_md5: bool) -> Vec<u8> {
        let mut out = b"PANDA_RR".to_vec();
        out.extend_from_slice(&icount.to_le_bytes());
        let md5: [u8; 16] = if fix_md5 { Md5::digest(body).into() } else { [0; 16] };
        out.extend_from_slice(&md5);
        out.extend_from_slice(body);
        out
    }
}

/// Mutate a `.rr` container structure-aware; `None` if it cannot be decoded.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Option<Vec<u8>> {
    let mut c = Container::decode(input)?;
    let n = c.members.len();
    match rng.below(10) {
        0..=3 if n >= 2 => {
            // The recording inside: pair-aware mutation (re-tied so validation passes).
            let snp = c.members.iter().position(|m| m.name.ends_with(b"-rr-snp"));
            let log = c.members.iter().position(|m| m.name.ends_with(b"-rr-nondet.log"));
            if let (Some(s), Some(l)) = (snp, log) {
                let pair = join_parts(&[c.members[s].data.clone(), c.members[l].data.clone()]);
                let mut parts = split_parts(&snapshot::mutate_pair(rng, &pair));
                parts.resize(2, Vec::new());
                c.members[l].data = parts.pop().unwrap_or_default();
                c.members[s].data = parts.pop().unwrap_or_default();
            }
        }
        4 if n > 0 => {
            let i = rng.below(n);
            let names: &[&[u8]] = &[
                b"../evil-rr-snp",
                b"/tmp/abs-rr-snp",
                b"./dir/sub/rec-rr-snp",
                b"other-rr-nondet.log",
                b"-rr-snp",
                b"rec-rr-snp/",
                b"rec",
                b"",
                b"rec\xff-rr-snp",
                b"a/../rec-rr-nondet.log",
            ];
            c.members[i].name = rng.pick(names).to_vec();
        }
        5 if n > 0 => {
            let i = rng.below(n);
            c.members[i].kind = *rng.pick(&[b'0', b'1', b'2', b'3', b'5', b'6', b'7', b'g', b'x', b'L', 0, b'S']);
        }
        6 if n > 0 => {
            let m = c.members[rng.below(n)].clone();
            c.members.insert(rng.below(n + 1), m);
        }
        7 if n > 0 => {
            c.members.remove(rng.below(n));
        }
        8 => c.icount = boundary(rng, 64),
        _ if n > 1 => c.members.swap(0, n - 1),
        _ => {}
    }
    let mut tar = c.tar();
    if rng.chance(1, 4) && tar.len() >= 512 {
        // Raw tar header damage with a valid header checksum: size fields pointing past the end,
        // odd types, non-octal digits.
        let blk = 512 * rng.below(tar.len() / 512);
        let (at, w) = *rng.pick(&[(124usize, 12usize), (0, 100), (156, 1), (257, 8), (100, 8), (345, 155)]);
        if blk + at + w <= tar.len() {
            let v: Vec<u8> = match rng.below(3) {
                0 => format!("{:011o}\0", boundary(rng, 33)).into_bytes(),
                1 => vec![0xff; w],
                _ => rng.bytes(w),
            };
            let k = v.len().min(w);
            tar[blk + at..blk + at + k].copy_from_slice(&v[..k]);
            let sum: u32 = tar[blk..blk + 512]
                .iter()
                .enumerate()
                .map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) })
                .sum();
            let ck = format!("{sum:06o}\0 ");
            tar[blk + 148..blk + 156].copy_from_slice(ck.as_bytes());
        }
    }
    if rng.chance(1, 8) {
        mutate_bytes_n(rng, &mut tar, 2);
    }
    let fix = !rng.chance(1, 16);
    let mut out = Container::encode_tar(c.icount, &tar, fix);
    if rng.chance(1, 10) {
        // Damage the xz stream itself, keeping the MD5 right so the decoder sees it.
        let mut body = out.split_off(32);
        mutate_bytes_n(rng, &mut body, 2);
        out = Container::encode_body(c.icount, &body, true);
    }
    Some(out)
}
