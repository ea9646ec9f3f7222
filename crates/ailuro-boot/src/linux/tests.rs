use super::*;

const MB: u64 = 1 << 20;
const ZP: u64 = LINUX_ZERO_PAGE_ADDR;

/// Fields of a synthetic bzImage.
struct Img {
    setup_sects: u8,
    version: u16,
    loadflags: u8,
    pm: Vec<u8>,
    syssize: Option<u32>,
    init_size: u32,
    pref_address: u64,
    kernel_alignment: u32,
    initrd_addr_max: u32,
    cmdline_size: u32,
}

impl Default for Img {
    fn default() -> Self {
        Self {
            setup_sects: 4,
            version: 0x020f,
            loadflags: LOADFLAG_LOADED_HIGH,
            pm: (0..8192u32).map(|i| (i * 7 + 3) as u8).collect(),
            syssize: None,
            init_size: 0x20_0000,
            pref_address: 0x100_0000,
            kernel_alignment: 0x100_0000,
            initrd_addr_max: 0x7fff_ffff,
            cmdline_size: 2047,
        }
    }
}

impl Img {
    fn build(&self) -> Vec<u8> {
        let sects = if self.setup_sects == 0 { 4 } else { self.setup_sects as usize };
        let mut f = vec![0u8; (sects + 1) * 512];
        f[0x1f1] = self.setup_sects;
        let syssize = self.syssize.unwrap_or(self.pm.len().div_ceil(16) as u32);
        wr32(&mut f, 0x1f4, syssize);
        wr16(&mut f, 0x1fe, 0xaa55);
        f[0x200] = 0xeb;
        f[0x201] = 0x6a; // header ends at 0x26c, like protocol 2.15 kernels
        f[0x202..0x206].copy_from_slice(b"HdrS");
        wr16(&mut f, 0x206, self.version);
        f[0x211] = self.loadflags;
        wr32(&mut f, 0x214, 0x10_0000);
        wr32(&mut f, 0x22c, self.initrd_addr_max);
        wr32(&mut f, 0x230, self.kernel_alignment);
        f[0x234] = 1;
        f[0x235] = 13;
        wr16(&mut f, 0x236, 0x4);
        wr32(&mut f, 0x238, self.cmdline_size);
        wr64(&mut f, 0x258, self.pref_address);
        wr32(&mut f, 0x260, self.init_size);
        f[0x26b] = 0x5a; // last header byte, must be copied
        f.extend_from_slice(&self.pm);
        f
    }
}

fn ram(size: u64) -> GuestRam {
    GuestRam::new(0, size).unwrap()
}

fn e820(ram: &GuestRam) -> Vec<(u64, u64, u32)> {
    let n = ram.as_slice()[(ZP + BOOT_PARAMS_E820_ENTRIES) as usize] as u64;
    (0..n)
        .map(|i| {
            let e = ZP + BOOT_PARAMS_E820_TABLE + 20 * i;
            (ram.read_u64(e).unwrap(), ram.read_u64(e + 8).unwrap(), ram.read_u32(e + 16).unwrap())
        })
        .collect()
}

fn cstr(ram: &GuestRam, addr: u64) -> String {
    let s = &ram.as_slice()[addr as usize..];
    String::from_utf8(s[..s.iter().position(|&b| b == 0).unwrap()].to_vec()).unwrap()
}

#[test]
fn loads_kernel_initrd_cmdline_and_zero_page() {
    let img = Img::default();
    let file = img.build();
    let initrd: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut r = ram(64 * MB);
    let e = load_linux(&mut r, &file, Some(&initrd), "console=ttyS0 root=/dev/ram0").unwrap();

    assert_eq!(e.entry, BootEntry { eip: 0x10_0000, eax: 0, ebx: 0, esi: ZP as u32 });
    assert_eq!((e.gdt_base, e.gdt_limit, e.cs, e.ds), (0x6000, 31, 0x10, 0x18));
    assert_eq!(e.zero_page, ZP as u32);
    // Decompression area: 16 MiB + init_size.
    assert_eq!(e.kernel_end, 0x100_0000 + 0x20_0000);

    // Kernel image at 1 MiB.
    let mut buf = vec![0u8; img.pm.len()];
    r.read(0x10_0000, &mut buf).unwrap();
    assert_eq!(buf, img.pm);

    // initrd page aligned at the top of RAM.
    let (ia, is) = e.initrd.unwrap();
    assert_eq!(is as usize, initrd.len());
    assert_eq!(u64::from(ia), (64 * MB - initrd.len() as u64) & !0xfff);
    let mut buf = vec![0u8; initrd.len()];
    r.read(u64::from(ia), &mut buf).unwrap();
    assert_eq!(buf, initrd);

    // Zero page: header copy and loader fields.
    let zp = &r.as_slice()[ZP as usize..ZP as usize + 4096];
    assert_eq!(&zp[0x1f2..0x210], &file[0x1f2..0x210]);
    assert_eq!(zp[0x1f1], 4);
    assert_eq!(&zp[0x202..0x206], b"HdrS");
    assert_eq!(rd16(zp, 0x206), 0x020f);
    assert_eq!(zp[0x26b], 0x5a);
    assert_eq!(zp[0x210], 0xff, "type_of_loader");
    assert_eq!(zp[0x211], LOADFLAG_LOADED_HIGH | LOADFLAG_CAN_USE_HEAP);
    assert_eq!(rd32(zp, 0x214), 0x10_0000);
    assert_eq!(rd32(zp, 0x218), ia);
    assert_eq!(rd32(zp, 0x21c), is);
    assert_eq!(rd16(zp, 0x224), 0xfe00);
    assert_eq!(rd32(zp, 0x228), LINUX_CMDLINE_ADDR as u32);
    assert_eq!(rd32(zp, 0x23c), 0, "hardware_subarch");
    assert_eq!(rd32(zp, 0x1e0), (63 * 1024) as u32, "alt_mem_k");
    assert_eq!(rd16(zp, 0x002), 0xfc00, "ext_mem_k capped");
    assert_eq!(zp[0x00f], 0, "orig_video_isVGA");
    assert!(zp[0x010..0x1e0].iter().all(|&b| b == 0), "rest of screen_info etc. zero");
    assert_eq!(zp[0x1ef], 0, "sentinel");
    assert!(zp[0x26c..0x2d0].iter().all(|&b| b == 0));

    assert_eq!(e820(&r), vec![(0, 0x9fc00, 1), (0x9fc00, 0x400, 2), (0xe0000, 0x20000, 2), (0x10_0000, 63 * MB, 1)]);
    assert_eq!(cstr(&r, LINUX_CMDLINE_ADDR), "console=ttyS0 root=/dev/ram0");

    // GDT descriptors.
    assert_eq!(r.read_u64(0x6010).unwrap(), 0x00cf_9a00_0000_ffff);
    assert_eq!(r.read_u64(0x6018).unwrap(), 0x00cf_9200_0000_ffff);
    assert_eq!(r.read_u64(0x6000).unwrap() | r.read_u64(0x6008).unwrap(), 0);
    // BIOS data area.
    assert_eq!(&r.as_slice()[0x40e..0x410], &0x9fc0u16.to_le_bytes());
    assert_eq!(&r.as_slice()[0x413..0x415], &639u16.to_le_bytes());
}

#[test]
fn no_initrd_and_setup_sects_zero_means_four() {
    let img = Img { setup_sects: 0, ..Img::default() };
    let mut r = ram(32 * MB);
    let e = load_linux(&mut r, &img.build(), None, "").unwrap();
    assert_eq!(e.header.setup_sects, 4);
    assert_eq!(e.initrd, None);
    let zp = &r.as_slice()[ZP as usize..];
    assert_eq!(zp[0x1f1], 4);
    assert_eq!(rd32(zp, 0x218) | rd32(zp, 0x21c), 0);
    assert_eq!(r.as_slice()[LINUX_CMDLINE_ADDR as usize], 0);
    assert_eq!(r.read_u32(0x10_0000).unwrap(), u32::from_le_bytes(img.pm[..4].try_into().unwrap()));
    // An empty initrd is no initrd.
    let e = load_linux(&mut r, &img.build(), Some(&[]), "").unwrap();
    assert_eq!(e.initrd, None);
}

#[test]
fn initrd_respects_initrd_addr_max() {
    let img = Img { initrd_addr_max: 0x1fff_ffff, ..Img::default() };
    let mut r = ram(1024 * MB);
    let e = load_linux(&mut r, &img.build(), Some(&[1u8; 5000]), "").unwrap();
    assert_eq!(e.initrd, Some((0x2000_0000 - 0x2000, 5000)));
}

#[test]
fn non_relocatable_and_old_protocol_run_address() {
    let mut h = parse_setup_header(&Img::default().build()).unwrap();
    assert_eq!(h.run_address(), 0x100_0000);
    h.relocatable_kernel = false;
    h.pref_address = 0;
    assert_eq!(h.run_address(), 0x10_0000);
    h.relocatable_kernel = true;
    h.kernel_alignment = 0x20_0000;
    assert_eq!(h.run_address(), 0x20_0000);
}

#[test]
fn rejects_bad_images() {
    let not_bz = |r: Result<SetupHeader, LinuxBootError>| matches!(r, Err(LinuxBootError::NotBzImage { .. }));
    let good = Img::default().build();
    assert!(parse_setup_header(&good).is_ok());
    assert!(not_bz(parse_setup_header(&[])));
    assert!(not_bz(parse_setup_header(&good[..0x100])));
    let mut f = good.clone();
    f[0x1fe] = 0;
    assert!(not_bz(parse_setup_header(&f)));
    let mut f = good.clone();
    f[0x202] = b'X';
    assert!(not_bz(parse_setup_header(&f)));
    assert!(not_bz(parse_setup_header(&Img { loadflags: 0, ..Img::default() }.build())));
    assert!(not_bz(parse_setup_header(&Img { syssize: Some(0), ..Img::default() }.build())));
    assert!(not_bz(parse_setup_header(&Img { kernel_alignment: 0x3000, ..Img::default() }.build())));
    let mut f = good.clone();
    f[0x201] = 0x10; // header would end before cmdline_size
    assert!(not_bz(parse_setup_header(&f)));

    assert_eq!(
        parse_setup_header(&Img { version: 0x0205, ..Img::default() }.build()),
        Err(LinuxBootError::ProtocolTooOld { version: 0x0205 })
    );
    // Setup sectors beyond the file.
    let f = Img { setup_sects: 40, ..Img::default() }.build();
    assert!(matches!(parse_setup_header(&f[..5 * 512 + 100]), Err(LinuxBootError::Truncated { .. })));
    // syssize beyond the file.
    let f = Img { syssize: Some(8192 / 16 + 1), ..Img::default() }.build();
    assert!(matches!(parse_setup_header(&f), Err(LinuxBootError::Truncated { .. })));
    // Header cut short.
    assert!(matches!(parse_setup_header(&good[..0x250]), Err(LinuxBootError::Truncated { .. })));
}

#[test]
fn rejects_what_does_not_fit() {
    let file = Img::default().build();
    // RAM not at 0.
    let mut r = GuestRam::new(0x4000_0000, 64 * MB).unwrap();
    assert_eq!(load_linux(&mut r, &file, None, ""), Err(LinuxBootError::RamBase { base: 0x4000_0000 }));
    // Decompression area beyond RAM (needs 18 MiB).
    let mut r = ram(17 * MB);
    assert!(matches!(load_linux(&mut r, &file, None, ""), Err(LinuxBootError::KernelDoesNotFit { .. })));
    // Image beyond RAM.
    let mut r = ram(MB);
    assert!(matches!(load_linux(&mut r, &file, None, ""), Err(LinuxBootError::KernelDoesNotFit { .. })));
    // initrd too big for the space above the kernel.
    let mut r = ram(20 * MB);
    let big = vec![0u8; (2 * MB + 1) as usize];
    assert_eq!(
        load_linux(&mut r, &file, Some(&big), ""),
        Err(LinuxBootError::InitrdDoesNotFit { size: 2 * MB + 1, lowest: 18 * MB, highest: 20 * MB })
    );
    assert!(load_linux(&mut r, &file, Some(&big[..(2 * MB) as usize]), "").is_ok());
    // initrd_addr_max below the kernel.
    let f = Img { initrd_addr_max: 0xff_ffff, ..Img::default() }.build();
    assert!(matches!(load_linux(&mut r, &f, Some(&[1]), ""), Err(LinuxBootError::InitrdDoesNotFit { .. })));
}

#[test]
fn command_line_limits() {
    let file = Img { cmdline_size: 10, ..Img::default() }.build();
    let mut r = ram(32 * MB);
    assert!(load_linux(&mut r, &file, None, "0123456789").is_ok());
    assert_eq!(cstr(&r, LINUX_CMDLINE_ADDR), "0123456789");
    assert_eq!(
        load_linux(&mut r, &file, None, "0123456789a"),
        Err(LinuxBootError::CmdlineTooLong { len: 11, max: 10 })
    );
    assert_eq!(load_linux(&mut r, &file, None, "a\0b"), Err(LinuxBootError::CmdlineHasNul));
}

#[test]
fn rsdp_pointer_in_zero_page() {
    let mut r = ram(32 * MB);
    let e = load_linux(&mut r, &Img::default().build(), None, "").unwrap();
    set_boot_params_rsdp(&mut r, e.zero_page, 0xe0000).unwrap();
    assert_eq!(r.read_u64(ZP + 0x70).unwrap(), 0xe0000);
}

#[test]
fn never_panics_on_garbage() {
    let good = Img { pm: vec![0x90; 4096], init_size: 0x1000, ..Img::default() }.build();
    let mut r = ram(20 * MB);
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    for len in (0..good.len()).step_by(37) {
        let _ = load_linux(&mut r, &good[..len], Some(&[1, 2, 3]), "x");
    }
    for _ in 0..3000 {
        let mut f = good.clone();
        for _ in 0..1 + next() % 6 {
            // Mostly hit the setup header.
            let i = if next() % 4 == 0 { next() % f.len() } else { 0x1f1 + next() % 0x7b };
            f[i] = next() as u8;
        }
        let _ = load_linux(&mut r, &f, Some(&[1, 2, 3]), "console=ttyS0");
    }
    // Extreme header values.
    let mut f = good.clone();
    wr64(&mut f, 0x258, u64::MAX);
    wr32(&mut f, 0x260, u32::MAX);
    assert!(matches!(load_linux(&mut r, &f, None, ""), Err(LinuxBootError::KernelDoesNotFit { .. })));
    let mut f = good.clone();
    wr32(&mut f, 0x230, 0x8000_0000);
    assert!(matches!(load_linux(&mut r, &f, None, ""), Err(LinuxBootError::KernelDoesNotFit { .. })));
}

/// Where `scripts/fetch-linux-guest.sh` caches the Debian i386 kernel.
fn cached_kernel() -> Option<std::path::PathBuf> {
    let cache = match std::env::var_os("AILURO_CACHE") {
        Some(c) => std::path::PathBuf::from(c),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".cache/ailuro"),
    };
    let p = cache.join("linux/i386/vmlinuz");
    p.is_file().then_some(p)
}

#[test]
fn debian_i386_kernel_when_cached() {
    let Some(path) = cached_kernel() else {
        eprintln!("skipping: no Debian i386 kernel at $AILURO_CACHE or ~/.cache/ailuro/linux/i386/vmlinuz");
        eprintln!("          (scripts/fetch-linux-guest.sh puts it there)");
        return;
    };
    let file = std::fs::read(&path).unwrap();
    let h = parse_setup_header(&file).unwrap();
    assert!(h.version >= 0x020a, "protocol {:#x}", h.version);
    assert_eq!(h.xloadflags & XLF_KERNEL_64, 0, "expected an i386 kernel");
    assert!(h.relocatable_kernel);
    assert!(h.cmdline_size >= 255);
    let mut r = ram(256 * MB);
    let initrd = vec![0x5au8; 3 << 20];
    let e = load_linux(&mut r, &file, Some(&initrd), "console=ttyS0 nokaslr").unwrap();
    assert_eq!(e.entry.eip, 0x10_0000);
    assert_eq!(e.kernel_end, h.run_address() + u64::from(h.init_size));
    let (ia, is) = e.initrd.unwrap();
    assert_eq!(u64::from(ia) + u64::from(is), 256 * MB);
    assert!(u64::from(ia) >= e.kernel_end);
    let kofs = h.kernel_offset();
    let mut buf = vec![0u8; file.len() - kofs];
    r.read(0x10_0000, &mut buf).unwrap();
    assert_eq!(buf, &file[kofs..]);
    assert_eq!(&r.as_slice()[ZP as usize + 0x202..ZP as usize + 0x206], b"HdrS");
    eprintln!(
        "loaded {}: protocol {}.{:02}, run address {:#x}, init_size {:#x}, kernel_end {:#x}",
        path.display(),
        h.version >> 8,
        h.version & 0xff,
        h.run_address(),
        h.init_size,
        e.kernel_end
    );
    // Too little RAM for the decompressed kernel is an error, not a panic.
    let mut small = ram(24 * MB);
    assert!(matches!(load_linux(&mut small, &file, None, ""), Err(LinuxBootError::KernelDoesNotFit { .. })));
}
