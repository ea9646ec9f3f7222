use super::*;

const MB: u64 = 1 << 20;

/// One program header for the synthetic ELF builder.
#[derive(Clone)]
struct Seg {
    p_type: u32,
    paddr: u32,
    vaddr: u32,
    data: Vec<u8>,
    memsz: u32,
    flags: u32,
}

fn load_seg(paddr: u32, data: &[u8], memsz: u32) -> Seg {
    Seg { p_type: PT_LOAD, paddr, vaddr: paddr, data: data.to_vec(), memsz, flags: 5 }
}

fn mb_header(flags: u32) -> Vec<u8> {
    let mut h = Vec::new();
    for v in [MULTIBOOT_HEADER_MAGIC, flags, 0u32.wrapping_sub(MULTIBOOT_HEADER_MAGIC).wrapping_sub(flags)] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

/// Build an ELF32 i386 executable: header, program headers, multiboot header (if `mb_flags` is
/// given), then each segment's data at a page-aligned file offset.
fn elf(entry: u32, segs: &[Seg], mb_flags: Option<u32>) -> Vec<u8> {
    let mut f = vec![0u8; 52 + 32 * segs.len()];
    f[..4].copy_from_slice(&ELF_MAGIC);
    f[4] = ELFCLASS32;
    f[5] = ELFDATA2LSB;
    f[6] = 1;
    f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
    f[18..20].copy_from_slice(&EM_386.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..28].copy_from_slice(&entry.to_le_bytes());
    f[28..32].copy_from_slice(&52u32.to_le_bytes());
    f[40..42].copy_from_slice(&52u16.to_le_bytes());
    f[42..44].copy_from_slice(&32u16.to_le_bytes());
    f[44..46].copy_from_slice(&(segs.len() as u16).to_le_bytes());
    if let Some(flags) = mb_flags {
        while !f.len().is_multiple_of(4) {
            f.push(0);
        }
        f.extend_from_slice(&mb_header(flags));
    }
    for (i, s) in segs.iter().enumerate() {
        let offset = align_up(f.len() as u64, 4096) as usize;
        f.resize(offset, 0);
        f.extend_from_slice(&s.data);
        let ph = 52 + 32 * i;
        let fields = [s.p_type, offset as u32, s.vaddr, s.paddr, s.data.len() as u32, s.memsz, s.flags, 4096];
        for (j, v) in fields.iter().enumerate() {
            f[ph + 4 * j..ph + 4 * j + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    f
}

fn simple_kernel() -> Vec<u8> {
    elf(0x10_0000, &[load_seg(0x10_0000, &[0x90, 0x90, 0xf4], 0x2000)], Some(0x3))
}

fn ram(size: u64) -> GuestRam {
    let mut r = GuestRam::new(0, size).unwrap();
    r.as_mut_slice().fill(0xcc); // make bss zeroing visible
    r
}

fn cstr(ram: &GuestRam, addr: u32) -> String {
    let s = &ram.as_slice()[addr as usize..];
    String::from_utf8(s[..s.iter().position(|&b| b == 0).unwrap()].to_vec()).unwrap()
}

fn rd(ram: &GuestRam, addr: u32) -> u32 {
    ram.read_u32(u64::from(addr)).unwrap()
}

#[test]
fn loads_elf_and_builds_info() {
    let mut r = ram(32 * MB);
    let e = load_multiboot(&mut r, &simple_kernel(), "console=ttyS0 iters=5", &[]).unwrap();
    assert_eq!(e.eip, 0x10_0000);
    assert_eq!(e.eax, 0x2BAD_B002);
    assert_eq!(e.esi, 0);
    assert_eq!(&r.as_slice()[0x10_0000..0x10_0003], &[0x90, 0x90, 0xf4]);
    assert!(r.as_slice()[0x10_0003..0x10_2000].iter().all(|&b| b == 0), "bss zeroed");
    let mbi = e.ebx;
    assert!(u64::from(mbi) >= 0x10_2000 && mbi.is_multiple_of(4096), "info after the kernel: {mbi:#x}");
    let flags = rd(&r, mbi);
    for bit in [0, 2, 3, 6, 9] {
        assert!(flags & (1 << bit) != 0, "info flag bit {bit}");
    }
    assert_eq!(rd(&r, mbi + 4), 639);
    assert_eq!(rd(&r, mbi + 8), 31 * 1024);
    assert_eq!(cstr(&r, rd(&r, mbi + 16)), "console=ttyS0 iters=5");
    assert_eq!(rd(&r, mbi + 20), 0);
    assert_eq!(cstr(&r, rd(&r, mbi + 64)), "ailuro");
    // Memory map.
    let (len, addr) = (rd(&r, mbi + 44), rd(&r, mbi + 48));
    let mut entries = Vec::new();
    let mut p = addr;
    while p < addr + len {
        let size = rd(&r, p);
        let base = r.read_u64(u64::from(p + 4)).unwrap();
        let length = r.read_u64(u64::from(p + 12)).unwrap();
        entries.push((base, length, rd(&r, p + 20)));
        p += size + 4;
    }
    assert_eq!(entries, vec![(0, 0x9fc00, 1), (0x9fc00, 0x400, 2), (0xf0000, 0x10000, 2), (0x10_0000, 31 * MB, 1)]);
}

#[test]
fn modules_are_page_aligned_after_kernel() {
    let mut r = ram(16 * MB);
    let mods = vec![
        Module { name: "initrd.img a=b".into(), data: vec![1; 5000] },
        Module { name: "second".into(), data: vec![2; 10] },
    ];
    let e = load_multiboot(&mut r, &simple_kernel(), "", &mods).unwrap();
    let mbi = e.ebx;
    assert_eq!(rd(&r, mbi + 20), 2);
    let list = rd(&r, mbi + 24);
    let m0 = (rd(&r, list), rd(&r, list + 4), cstr(&r, rd(&r, list + 8)));
    let m1 = (rd(&r, list + 16), rd(&r, list + 20), cstr(&r, rd(&r, list + 24)));
    assert_eq!(m0, (0x10_2000, 0x10_2000 + 5000, "initrd.img a=b".to_string()));
    assert_eq!(m1, (0x10_4000, 0x10_400a, "second".to_string()));
    assert!(r.as_slice()[0x10_2000..0x10_2000 + 5000].iter().all(|&b| b == 1));
    assert!(r.as_slice()[0x10_4000..0x10_400a].iter().all(|&b| b == 2));
    assert!(mbi >= 0x10_5000);
    assert_eq!(cstr(&r, rd(&r, mbi + 16)), "");
}

#[test]
fn virtual_entry_is_translated_and_low_kernel_skips_hole() {
    // Higher-half style: linked at 0xc0100000, loaded at 0x100000.
    let mut s = load_seg(0x10_0000, &[0xf4; 16], 16);
    s.vaddr = 0xc010_0000;
    let mut r = ram(8 * MB);
    let e = load_multiboot(&mut r, &elf(0xc010_0004, &[s], Some(0)), "", &[]).unwrap();
    assert_eq!(e.eip, 0x10_0004);

    // A kernel in low memory whose info block would cross the EBDA goes above 1 MiB instead.
    let mut r = ram(8 * MB);
    let e = load_multiboot(&mut r, &elf(0x9_0000, &[load_seg(0x9_0000, &[0xf4], 0xf800)], Some(0)), "", &[]).unwrap();
    assert_eq!(e.ebx, 0x10_0000);
}

#[test]
fn video_flag_is_ignored_and_high_flags_are_optional() {
    let k = elf(0x10_0000, &[load_seg(0x10_0000, &[0xf4], 1)], Some(0x8000_0007));
    assert!(load_multiboot(&mut ram(4 * MB), &k, "", &[]).is_ok());
}

#[test]
fn aout_kludge() {
    // Flat binary loaded at 0x200000: 16 bytes of code, then the header at file offset 16.
    let flags = 0x1_0002;
    let mut f = vec![0xf4u8; 16];
    f.extend_from_slice(&mb_header(flags));
    for v in [0x20_0010u32, 0x20_0000, 0, 0x20_3000, 0x20_0004] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&[0xab; 100]);
    let mut r = ram(8 * MB);
    let e = load_multiboot(&mut r, &f, "x", &[]).unwrap();
    assert_eq!(e.eip, 0x20_0004);
    assert_eq!(&r.as_slice()[0x20_0000..0x20_0000 + f.len()], &f[..]);
    assert!(r.as_slice()[0x20_0000 + f.len()..0x20_3000].iter().all(|&b| b == 0));
    assert!(e.ebx >= 0x20_3000);

    // load_addr above header_addr.
    let mut bad = f.clone();
    bad[32..36].copy_from_slice(&0x20_0020u32.to_le_bytes());
    assert!(matches!(load_multiboot(&mut r, &bad, "", &[]), Err(BootError::BadAoutLayout { .. })));
    // load_end_addr beyond the file.
    let mut bad = f.clone();
    bad[36..40].copy_from_slice(&0x20_1000u32.to_le_bytes());
    assert!(matches!(load_multiboot(&mut r, &bad, "", &[]), Err(BootError::Truncated { .. })));
    // Address fields cut off.
    assert!(matches!(load_multiboot(&mut r, &f[..36], "", &[]), Err(BootError::HeaderTruncated { offset: 16 })));
}

#[test]
fn header_errors() {
    let mut r = ram(4 * MB);
    let err = |k: &[u8], r: &mut GuestRam| load_multiboot(r, k, "", &[]).unwrap_err();

    let k = elf(0x10_0000, &[load_seg(0x10_0000, &[0xf4], 1)], None);
    assert!(matches!(err(&k, &mut r), BootError::NoHeader { .. }));
    assert!(matches!(err(&[], &mut r), BootError::NoHeader { searched: 0 }));

    // Header beyond the first 8 KiB.
    let mut k = vec![0u8; 8192];
    k.extend_from_slice(&mb_header(0));
    assert!(matches!(err(&k, &mut r), BootError::NoHeader { searched: 8192 }));

    let mut k = simple_kernel();
    let off = find_multiboot_header(&k).unwrap().offset;
    k[off + 8] ^= 1;
    let e = err(&k, &mut r);
    assert!(matches!(e, BootError::BadChecksum { .. }));
    assert!(e.to_string().contains("checksum"));

    let k = elf(0x10_0000, &[load_seg(0x10_0000, &[0xf4], 1)], Some(0x8));
    assert_eq!(err(&k, &mut r), BootError::UnsupportedFlags { flags: 8, unsupported: 8 });

    let mut k = vec![0u8; 64];
    k.extend_from_slice(&mb_header(0));
    assert_eq!(err(&k, &mut r), BootError::NotElf);
}

#[test]
fn elf_errors() {
    let mut r = ram(4 * MB);
    let err = |k: &[u8], r: &mut GuestRam| load_multiboot(r, k, "", &[]).unwrap_err();
    let base = simple_kernel();

    let mut k = base.clone();
    k[4] = 2;
    assert!(matches!(err(&k, &mut r), BootError::ElfNot32 { class: 2, .. }));
    let mut k = base.clone();
    k[18] = 62;
    assert!(matches!(err(&k, &mut r), BootError::ElfNotI386 { machine: 62 }));
    let mut k = base.clone();
    k[16] = 3;
    assert!(matches!(err(&k, &mut r), BootError::ElfNotExecutable { elf_type: 3 }));
    let k = &base[..base.len() - 1];
    assert!(matches!(err(k, &mut r), BootError::Truncated { .. }));
    let mut k = base.clone();
    k[28..32].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    assert!(matches!(err(&k, &mut r), BootError::Truncated { .. }));

    let k = elf(0x10_0000, &[load_seg(0x3f_f000, &[0xf4], 0x2000)], Some(0));
    assert!(matches!(err(&k, &mut r), BootError::SegmentOutsideRam { index: 0, .. }));
    let k = elf(0x10_0000, &[load_seg(0xf_f000, &[0xf4], 0x10)], Some(0));
    assert!(matches!(err(&k, &mut r), BootError::SegmentInHole { .. }));
    let k = elf(0x10_0000, &[load_seg(0x10_0000, &[0xf4], 0x2000), load_seg(0x10_1000, &[1], 1)], Some(0));
    assert!(matches!(err(&k, &mut r), BootError::SegmentsOverlap { first: 0, second: 1, .. }));
    let k = elf(0x10_0000, &[load_seg(0x10_0000, &[0xf4; 8], 4)], Some(0));
    assert!(matches!(err(&k, &mut r), BootError::BadSegment { index: 0, .. }));
    let mut note = load_seg(0x10_0000, &[0xf4], 1);
    note.p_type = 4;
    let k = elf(0x10_0000, &[note], Some(0));
    assert_eq!(err(&k, &mut r), BootError::NoLoadableSegments);
    let k = elf(0x4000_0000, &[load_seg(0x10_0000, &[0xf4], 1)], Some(0));
    assert!(matches!(err(&k, &mut r), BootError::EntryOutsideRam { .. }));
}

#[test]
fn ram_errors() {
    let k = simple_kernel();
    let mut r = GuestRam::new(0x1000, 4 * MB).unwrap();
    assert!(matches!(load_multiboot(&mut r, &k, "", &[]), Err(BootError::RamBase { base: 0x1000 })));
    let mut r = GuestRam::new(0, MB).unwrap();
    assert!(matches!(load_multiboot(&mut r, &k, "", &[]), Err(BootError::RamTooSmall { .. })));
    let mut r = GuestRam::new(0, 2 * MB).unwrap();
    let big = [Module { name: "big".into(), data: vec![0; MB as usize] }];
    let e = load_multiboot(&mut r, &k, "", &big).unwrap_err();
    assert!(matches!(e, BootError::DoesNotFit { .. }));
    assert!(e.to_string().contains("module 0 (big)"));
    // Kernel filling RAM to the last page: the info block does not fit.
    let k = elf(0x10_0000, &[load_seg(0x10_0000, &[0xf4], 0x10_0000)], Some(0));
    assert!(matches!(load_multiboot(&mut r, &k, "", &[]), Err(BootError::DoesNotFit { .. })));
}

#[test]
fn never_panics_on_garbage() {
    // Cheap deterministic fuzz: corrupt bytes of a valid kernel and make sure the loader only
    // returns errors or succeeds.
    let base = elf(0x10_0000, &[load_seg(0x10_0000, &[0xf4; 64], 0x100), load_seg(0x20_0000, &[1; 8], 8)], Some(3));
    let mut r = ram(4 * MB);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..2000 {
        let mut k = base.clone();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let pos = (x as usize) % 0x100;
            k[pos] = (x >> 8) as u8;
        }
        let _ = load_multiboot(&mut r, &k, "c", &[]);
    }
}

#[test]
fn loads_bundled_hello_guest() {
    let Some(path) = ailuro_guests::guest_path("hello") else { panic!("hello guest not built") };
    let kernel = std::fs::read(&path).unwrap();
    assert!(is_elf(&kernel));
    let mut r = ram(32 * MB);
    let e = load_multiboot(&mut r, &kernel, "hello-from-test", &[]).unwrap();
    assert!(e.eip >= 0x10_0000 && e.eip < 0x20_0000);
    assert_eq!(cstr(&r, rd(&r, e.ebx + 16)), "hello-from-test");
    let h = find_multiboot_header(&kernel).unwrap();
    assert_eq!(h.flags & 0xffff, 0x3);
}

#[test]
fn loads_every_bundled_guest() {
    for name in ailuro_guests::GUESTS {
        let kernel = std::fs::read(ailuro_guests::guest_path(name).unwrap()).unwrap();
        let mut r = ram(8 * MB);
        let e = load_multiboot(&mut r, &kernel, "iters=1", &[]).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(e.eax, MULTIBOOT_BOOTLOADER_MAGIC, "{name}");
        // The image starts at 1 MiB with the multiboot header, then the entry point.
        assert_eq!(r.read_u32(0x10_0000).unwrap(), MULTIBOOT_HEADER_MAGIC, "{name}");
        assert!(e.eip > 0x10_0000 && e.eip < e.ebx, "{name}: entry {:#x}, info {:#x}", e.eip, e.ebx);
    }
}

#[test]
fn qemu_style_command_lines_reach_the_guest_unchanged() {
    // The caller builds QEMU's strings: "KERNEL_PATH APPEND" for the kernel (trailing space without
    // -append) and the whole "FILE args" spec, `,,` already unescaped, for each module.
    let mut r = ram(16 * MB);
    let mods = vec![Module { name: "dir/m1 a=x,y".into(), data: vec![7; 3] }];
    let e = load_multiboot(&mut r, &simple_kernel(), "dir/k.elf console=ttyS0,115200", &mods).unwrap();
    assert_eq!(cstr(&r, rd(&r, e.ebx + 16)), "dir/k.elf console=ttyS0,115200");
    let list = rd(&r, e.ebx + 24);
    assert_eq!(cstr(&r, rd(&r, list + 8)), "dir/m1 a=x,y");
    let e = load_multiboot(&mut ram(16 * MB), &simple_kernel(), "k.elf ", &[]).unwrap();
    assert_ne!(e.ebx, 0);
}
