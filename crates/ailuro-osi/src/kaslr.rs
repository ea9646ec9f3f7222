//! KASLR: where a randomized kernel really is.
//!
//! Debian's kernels are built with `CONFIG_RANDOMIZE_BASE=y`: unless booted with `nokaslr`, the
//! decompressor (`arch/x86/boot/compressed/kaslr.c`, `choose_random_location`) extracts the
//! kernel at a random physical address and relocates it, so every kernel symbol is off from its
//! link-time address (the profile's) by the same *slide*.
//!
//! * **i386**: the physical address is random, in `CONFIG_PHYSICAL_ALIGN` steps (16 MiB on
//!   Debian's 686 kernel) from `LOAD_PHYSICAL_ADDR` up; the kernel is then mapped at
//!   `PAGE_OFFSET + physical`, so the virtual slide *is* the physical one (`choose_random_location`
//!   picks a separate virtual address only on x86_64).
//! * **x86_64**: physical and virtual addresses are picked independently; the image is mapped in
//!   the kernel text mapping `__START_KERNEL_map` (1 GiB), moved up in `CONFIG_PHYSICAL_ALIGN`
//!   (2 MiB) steps. The virtual slide is found from the page tables: the 2 MiB step at which the
//!   profile's `linux_banner` address maps to the physical copy found. (The direct map is
//!   randomized too, `page_offset_base`; that is a variable read from the slid image.)
//!
//! The physical location is found by scanning RAM for the profile's banner text — the exact
//! `linux_banner` bytes and their NUL, at the same offset within a page as the link-time address
//! (the slide is a multiple of `CONFIG_PHYSICAL_ALIGN`, which is at least a page in every
//! configuration). That is one comparison per page of RAM (65536 for 256 MiB), done once. The
//! kernel's own log copy of the banner (printk buffer) does not count: it is stored without the
//! trailing newline and almost never at the same page offset; the caller checks each candidate
//! further (the slid `init_task` must look like the idle task).
//!
//! Per-cpu symbols are not always slid: on x86_64 they are offsets from the per-cpu base
//! (`__per_cpu_start` = 0), not addresses; only symbols inside the kernel image (at or above the
//! profile's `image_virt_to_phys`) move. [`slides`] says which.

use ailuro_kprofile::Arch;

/// Step of the physical scan: a page. The kernel moves in coarser steps (`CONFIG_PHYSICAL_ALIGN`;
/// the minimum any configuration allows is 8 KiB), so a page never misses it.
pub(crate) const SCAN_STEP: u64 = 4096;
/// x86_64: step and range of the virtual slide (`CONFIG_PHYSICAL_ALIGN` = 2 MiB on Debian,
/// `KERNEL_IMAGE_SIZE` = 1 GiB with KASLR).
const X86_64_VIRT_STEP: u64 = 2 << 20;
const X86_64_VIRT_RANGE: u64 = 1 << 30;

/// Physical addresses (lowest first) where `banner` followed by a NUL is in `ram` (which starts
/// at physical `ram_base`), at the page offset of `link_pa` (the banner's physical address
/// without KASLR).
pub(crate) fn banner_copies(ram: &[u8], ram_base: u64, banner: &[u8], link_pa: u64) -> Vec<u64> {
    let mut out = Vec::new();
    if banner.is_empty() {
        return out;
    }
    let need = banner.len() + 1;
    // First candidate at or above ram_base with link_pa's page offset.
    let want = link_pa % SCAN_STEP;
    let mut pa = ram_base - ram_base % SCAN_STEP + want;
    if pa < ram_base {
        pa += SCAN_STEP;
    }
    while let Some(off) = pa.checked_sub(ram_base).map(|o| o as usize) {
        if off + need > ram.len() {
            break;
        }
        // Cheap first-byte test before the full comparison.
        if ram[off] == banner[0] && ram[off..off + banner.len()] == *banner && ram[off + banner.len()] == 0 {
            out.push(pa);
        }
        pa += SCAN_STEP;
    }
    out
}

/// Sign-extend an address difference of the architecture's pointer width.
pub(crate) fn signed(arch: Arch, delta: u64) -> i64 {
    match arch.pointer_size() {
        4 => delta as u32 as i32 as i64,
        _ => delta as i64,
    }
}

/// The virtual slide of the kernel image, given the banner's link-time virtual address
/// `link_va`, its link-time physical address `link_pa` and the physical address `found_pa`
/// where it was found. `translate` maps a virtual address through the guest's current page
/// tables (x86_64 only; i386 does not need it). `None`: no mapping of the found copy (x86_64).
pub(crate) fn virt_slide(
    arch: Arch,
    link_va: u64,
    link_pa: u64,
    found_pa: u64,
    translate: impl Fn(u64) -> Option<u64>,
) -> Option<i64> {
    match arch {
        // Mapped at PAGE_OFFSET + physical: the physical slide.
        Arch::I386 => Some(signed(arch, found_pa.wrapping_sub(link_pa))),
        // Independent of the physical slide: find the step at which the page tables map the
        // banner's address onto the copy found.
        _ => (0..X86_64_VIRT_RANGE / X86_64_VIRT_STEP)
            .map(|k| k * X86_64_VIRT_STEP)
            .find(|&s| translate(link_va.wrapping_add(s)) == Some(found_pa))
            .map(|s| s as i64),
    }
}

/// Whether a symbol moves with the kernel image: addresses at or above the image base
/// (`image_virt_to_phys`) do; x86_64's zero-based per-cpu offsets do not.
pub(crate) fn slides(sym: u64, image_base: u64) -> bool {
    sym >= image_base
}

/// `sym` moved by `slide` if it is in the kernel image, in the architecture's pointer width.
pub(crate) fn apply(arch: Arch, sym: u64, image_base: u64, slide: i64) -> u64 {
    if !slides(sym, image_base) {
        return sym;
    }
    let v = sym.wrapping_add(slide as u64);
    match arch.pointer_size() {
        4 => v & 0xffff_ffff,
        _ => v,
    }
}

/// `+0x2000000` / `-0x1000` / `0`.
pub(crate) fn format_slide(slide: i64) -> String {
    match slide {
        0 => "0".to_string(),
        s if s < 0 => format!("-{:#x}", s.unsigned_abs()),
        s => format!("+{s:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANNER: &[u8] = b"Linux version 6.1.0-50-686 (x@y) (gcc) #1 SMP\n";

    #[test]
    fn the_banner_is_found_at_a_slid_page_aligned_address_only() {
        let mut ram = vec![0u8; 8 << 20];
        let link_pa = 0x0010_0740;
        // The real one, slid by 3 MiB (a page multiple) ...
        let real = link_pa + 0x0030_0000;
        ram[real as usize..real as usize + BANNER.len()].copy_from_slice(BANNER);
        // ... a printk-buffer copy: no newline, another page offset ...
        let log = 0x0050_0123usize;
        ram[log..log + BANNER.len() - 1].copy_from_slice(&BANNER[..BANNER.len() - 1]);
        // ... a copy at the right page offset but followed by more text (not the string) ...
        let other = (link_pa + 0x0060_0000) as usize;
        ram[other..other + BANNER.len()].copy_from_slice(BANNER);
        ram[other + BANNER.len()] = b'x';
        assert_eq!(banner_copies(&ram, 0, BANNER, link_pa), vec![real]);
        // Unslid: found at its own address; not when RAM ends inside it.
        let mut ram2 = vec![0u8; 4 << 20];
        ram2[link_pa as usize..link_pa as usize + BANNER.len()].copy_from_slice(BANNER);
        assert_eq!(banner_copies(&ram2, 0, BANNER, link_pa), vec![link_pa]);
        assert!(banner_copies(&ram2[..link_pa as usize + 10], 0, BANNER, link_pa).is_empty());
        // RAM not starting at 0: addresses stay physical.
        assert_eq!(banner_copies(&ram[0x0010_0000..], 0x0010_0000, BANNER, link_pa), vec![real]);
        assert!(banner_copies(&ram, 0, b"", link_pa).is_empty());
    }

    #[test]
    fn i386_virtual_slide_is_the_physical_one_and_per_cpu_offsets_stay() {
        let s = virt_slide(Arch::I386, 0xc1a1_6740, 0x01a1_6740, 0x03a1_6740, |_| None);
        assert_eq!(s, Some(0x0200_0000));
        // A kernel below its link address (a boot loader that ignored the preferred address).
        let s = virt_slide(Arch::I386, 0xc1a1_6740, 0x01a1_6740, 0x00a1_6740, |_| None).unwrap();
        assert_eq!(s, -0x0100_0000);
        assert_eq!(format_slide(s), "-0x1000000");
        assert_eq!(format_slide(0x0200_0000), "+0x2000000");
        assert_eq!(apply(Arch::I386, 0xc1c4_44c0, 0xc000_0000, 0x0200_0000), 0xc3c4_44c0);
        assert_eq!(apply(Arch::I386, 0xc1c4_44c0, 0xc000_0000, -0x0100_0000), 0xc0c4_44c0);
        // x86_64's zero-based per-cpu symbols (current_task = 0x1fb80) do not move.
        assert_eq!(apply(Arch::X86_64, 0x1fb80, 0xffff_ffff_8000_0000, 0x0400_0000), 0x1fb80);
        assert_eq!(
            apply(Arch::X86_64, 0xffff_ffff_8216_13e0, 0xffff_ffff_8000_0000, 0x0400_0000),
            0xffff_ffff_8616_13e0
        );
    }

    #[test]
    fn x86_64_virtual_slide_comes_from_the_page_tables() {
        // Physically at +0x5000000, virtually at +0x1a00000: independent slides.
        let (link_va, link_pa) = (0xffff_ffff_8216_13e0u64, 0x0216_13e0u64);
        let found = link_pa + 0x0500_0000;
        let vslide = 0x01a0_0000u64;
        let translate = |va: u64| {
            let base = 0xffff_ffff_8000_0000u64 + vslide;
            (va >= base && va < base + (64 << 20)).then(|| va - base + 0x0500_0000)
        };
        assert_eq!(virt_slide(Arch::X86_64, link_va, link_pa, found, translate), Some(vslide as i64));
        // Not mapped anywhere in the text mapping: unknown.
        assert_eq!(virt_slide(Arch::X86_64, link_va, link_pa, found, |_| None), None);
    }
}
