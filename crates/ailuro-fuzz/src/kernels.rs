//! Structure-aware mutation of kernel images: multiboot ELF32 (ELF header, program headers,
//! multiboot header with its checksum repaired) and Linux bzImage setup headers (fields at their
//! boot-protocol offsets set to boundary values, sizes pointing past the end of the file).
//!
//! FORMAT DEPENDENCY: ELF32 and multiboot v1 are public specs; bzImage offsets are from the Linux
//! boot protocol (Documentation/arch/x86/boot.rst), as used by `crates/ailuro-boot/src/linux.rs`.

use crate::mutators::{boundary, mutate_bytes_n, tweak_int};
use crate::rng::Rng;

fn rd32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn rd16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn wr(b: &mut [u8], at: usize, w: usize, v: u64) {
    if at + w <= b.len() {
        b[at..at + w].copy_from_slice(&v.to_le_bytes()[..w]);
    }
}

/// Values that matter for a loader: boundaries, the file length, RAM-ish addresses.
fn loader_value(rng: &mut Rng, file_len: usize, bits: u32) -> u64 {
    let max = if bits >= 64 { u64::MAX } else { (1 << bits) - 1 };
    let v = match rng.below(8) {
        0 => file_len as u64,
        1 => file_len as u64 + 1,
        2 => file_len as u64 - 1,
        3 => 0x10_0000,
        4 => 0x40_0000 - 1,
        5 => 0xffff_f000,
        _ => boundary(rng, bits),
    };
    v & max
}

const MB_MAGIC: u32 = 0x1bad_b002;

/// Mutate a multiboot ELF kernel.
pub fn mutate_elf(rng: &mut Rng, k: &mut Vec<u8>) {
    let len = k.len();
    match rng.below(8) {
        0 => {
            // ELF header fields: e_ident class/data/version, e_type, e_machine, e_entry, e_phoff,
            // e_ehsize, e_phentsize, e_phnum.
            let &(at, w) = rng.pick(&[
                (4usize, 1usize),
                (5, 1),
                (6, 1),
                (16, 2),
                (18, 2),
                (24, 4),
                (28, 4),
                (40, 2),
                (42, 2),
                (44, 2),
            ]);
            let v = loader_value(rng, len, (w * 8) as u32);
            wr(k, at, w, v);
        }
        1..=3 => {
            // Program header fields.
            let phoff = rd32(k, 28).unwrap_or(52) as usize;
            let phnum = rd16(k, 44).unwrap_or(0) as usize;
            if phnum > 0 {
                let i = rng.below(phnum.min(16));
                let base = phoff.saturating_add(32 * i);
                let at = base + 4 * rng.below(8); // type, offset, vaddr, paddr, filesz, memsz, flags, align
                let old = u64::from(rd32(k, at).unwrap_or(0));
                let v = if rng.chance(1, 2) { loader_value(rng, len, 32) } else { tweak_int(rng, old, 32) };
                wr(k, at, 4, v);
            }
        }
        4 | 5 => {
            // Multiboot header: flags (bit 16 = a.out kludge addresses), addresses; checksum
            // repaired so the loader accepts the header and looks at the fields.
            let Some(off) = (0..len.min(8192).saturating_sub(12)).step_by(4).find(|&o| rd32(k, o) == Some(MB_MAGIC))
            else {
                mutate_bytes_n(rng, k, 2);
                return;
            };
            match rng.below(3) {
                0 => {
                    let flags = rd32(k, off + 4).unwrap_or(0) ^ (1 << rng.below(32));
                    wr(k, off + 4, 4, u64::from(flags));
                }
                1 => {
                    let flags = rd32(k, off + 4).unwrap_or(0) | 1 << 16;
                    wr(k, off + 4, 4, u64::from(flags));
                    // Make sure the a.out fields exist, then give them loader values.
                    if off + 32 > k.len() {
                        k.resize(off + 32, 0);
                    }
                    let f = off + 12 + 4 * rng.below(5);
                    let v = loader_value(rng, len, 32);
                    wr(k, f, 4, v);
                }
                _ => {
                    let f = off + 12 + 4 * rng.below(9);
                    let v = loader_value(rng, len, 32);
                    wr(k, f, 4, v);
                }
            }
            let flags = rd32(k, off + 4).unwrap_or(0);
            wr(k, off + 8, 4, u64::from(0u32.wrapping_sub(MB_MAGIC).wrapping_sub(flags)));
        }
        6 => k.truncate(rng.below(len + 1)),
        _ => mutate_bytes_n(rng, k, 4),
    }
}

/// Setup-header fields of a bzImage: (offset, width in bytes).
const SETUP_FIELDS: &[(usize, usize)] = &[
    (0x1f1, 1), // setup_sects
    (0x1f4, 4), // syssize
    (0x1fe, 2), // boot_flag
    (0x201, 1), // jump offset = header end
    (0x202, 4), // "HdrS"
    (0x206, 2), // version
    (0x211, 1), // loadflags
    (0x214, 4), // code32_start
    (0x218, 4), // ramdisk_image
    (0x21c, 4), // ramdisk_size
    (0x22c, 4), // initrd_addr_max
    (0x230, 4), // kernel_alignment
    (0x234, 1), // relocatable_kernel
    (0x235, 1), // min_alignment
    (0x236, 2), // xloadflags
    (0x238, 4), // cmdline_size
    (0x248, 4), // payload_offset
    (0x24c, 4), // payload_length
    (0x258, 8), // pref_address
    (0x260, 4), // init_size
    (0x264, 4), // handover_offset
];

/// Mutate a bzImage.
pub fn mutate_bzimage(rng: &mut Rng, k: &mut Vec<u8>) {
    let len = k.len();
    match rng.below(6) {
        0..=3 => {
            for _ in 0..rng.range(1, 3) {
                let &(at, w) = rng.pick(SETUP_FIELDS);
                let old = {
                    let mut a = [0u8; 8];
                    if at + w <= len {
                        a[..w].copy_from_slice(&k[at..at + w]);
                    }
                    u64::from_le_bytes(a)
                };
                let v = match rng.below(3) {
                    0 => loader_value(rng, len, (w * 8) as u32),
                    1 => tweak_int(rng, old, (w * 8) as u32),
                    _ => (len as u64 / 16 + rng.below(3) as u64).wrapping_sub(1), // syssize-ish around the end
                };
                wr(k, at, w, v);
            }
        }
        4 => k.truncate(rng.below(len + 1)),
        _ => mutate_bytes_n(rng, k, 4),
    }
}

/// A synthetic bzImage (boot protocol 2.15, relocatable, 8 KiB of "kernel"): enough for
/// `parse_setup_header` and `load_linux` to accept, like the loader's own unit tests build.
pub fn synthetic_bzimage(setup_sects: u8, pm_len: usize) -> Vec<u8> {
    let sects = if setup_sects == 0 { 4 } else { setup_sects as usize };
    let mut f = vec![0u8; (sects + 1) * 512];
    f[0x1f1] = setup_sects;
    wr(&mut f, 0x1f4, 4, pm_len.div_ceil(16) as u64);
    wr(&mut f, 0x1fe, 2, 0xaa55);
    f[0x200] = 0xeb;
    f[0x201] = 0x6a;
    f[0x202..0x206].copy_from_slice(b"HdrS");
    wr(&mut f, 0x206, 2, 0x020f);
    f[0x211] = 1; // LOADED_HIGH
    wr(&mut f, 0x214, 4, 0x10_0000);
    wr(&mut f, 0x22c, 4, 0x7fff_ffff);
    wr(&mut f, 0x230, 4, 0x100_0000);
    f[0x234] = 1;
    f[0x235] = 13;
    wr(&mut f, 0x236, 2, 0x4);
    wr(&mut f, 0x238, 4, 2047);
    wr(&mut f, 0x258, 8, 0x100_0000);
    wr(&mut f, 0x260, 4, 0x20_0000);
    f.extend((0..pm_len).map(|i| (i * 7 + 3) as u8));
    f
}
