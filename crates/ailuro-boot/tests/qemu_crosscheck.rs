//! Opt-in cross-check of [`load_linux`] and [`build_acpi_tables`] against QEMU, the reference
//! machine: the guest RAM our loader builds is handed to `qemu-system-i386 -M pc` unchanged (with
//! `-device loader`), a 128 KiB `-bios` image holds our ACPI area (QEMU maps the last 128 KiB of the
//! BIOS at 0xe0000) plus a tiny reset stub that does what the caller of `load_linux` must do (enable
//! the PIIX4 PM I/O block at 0x600, load the GDT, enter protected mode with CS 0x10 / DS 0x18,
//! ESI = zero page, jump to 0x100000). The Debian kernel must boot, find our ACPI tables, run our
//! `/init` (hand-assembled, prints a line and calls `reboot(POWER_OFF)`) and power the machine off
//! through the DSDT's `\_S5` and PM1a_CNT.
//!
//! Runs only with `AILURO_QEMU_CROSSCHECK=1`, `qemu-system-i386` on PATH and the Debian i386 kernel
//! cached by `scripts/fetch-linux-guest.sh` (`$AILURO_CACHE` or `~/.cache/ailuro`,
//! `linux/i386/vmlinuz`); otherwise it prints why and passes. Takes about 10 s (TCG).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ailuro_boot::{build_acpi_tables, load_linux, AcpiConfig};
use ailuro_bus::GuestRam;

const MB: u64 = 1 << 20;
const INIT_MSG: &[u8] = b"AILURO-INIT: /init running, powering off\n";

/// Reset stub, assembled for `org 0xfe00` in the BIOS segment (CS base 0xffff0000 at reset):
///
/// ```text
///         cli
///         cld
///         mov dx, 0xcf8 / mov eax, 0x80000b40 / out dx, eax   ; PIIX4 PM function (0:1.3) reg 0x40
///         mov dx, 0xcfc / mov eax, 0x601 / out dx, eax        ; PMBA = 0x600, I/O space
///         mov dx, 0xcf8 / mov eax, 0x80000b80 / out dx, eax   ; reg 0x80
///         mov dx, 0xcfc / mov al, 1 / out dx, al              ; PMIOSE: enable the PM I/O block
///         o32 lgdt [cs:gdtr]
///         mov eax, cr0 / or al, 1 / mov cr0, eax
///         jmp dword 0x10:0xfffffe40                            ; to pm32
/// pm32:   (bits 32) mov ax, 0x18 / mov ds, es, ss, fs, gs
///         xor eax, ebx, ecx, edx, ebp, edi, esp
///         mov esi, 0x7000
///         jmp 0x10:0x100000
/// gdtr:   dw 0x1f / dd 0x6000
/// ```
const STUB: [u8; 110] = [
    0xfa, 0xfc, 0xba, 0xf8, 0x0c, 0x66, 0xb8, 0x40, 0x0b, 0x00, 0x80, 0x66, 0xef, 0xba, 0xfc, 0x0c, 0x66, 0xb8, 0x01,
    0x06, 0x00, 0x00, 0x66, 0xef, 0xba, 0xf8, 0x0c, 0x66, 0xb8, 0x80, 0x0b, 0x00, 0x80, 0x66, 0xef, 0xba, 0xfc, 0x0c,
    0xb0, 0x01, 0xee, 0x2e, 0x66, 0x0f, 0x01, 0x16, 0x68, 0xfe, 0x0f, 0x20, 0xc0, 0x0c, 0x01, 0x0f, 0x22, 0xc0, 0x66,
    0xea, 0x40, 0xfe, 0xff, 0xff, 0x10, 0x00, 0x66, 0xb8, 0x18, 0x00, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0x8e, 0xe0,
    0x8e, 0xe8, 0x31, 0xc0, 0x31, 0xdb, 0x31, 0xc9, 0x31, 0xd2, 0x31, 0xed, 0x31, 0xff, 0x31, 0xe4, 0xbe, 0x00, 0x70,
    0x00, 0x00, 0xea, 0x00, 0x00, 0x10, 0x00, 0x10, 0x00, 0x1f, 0x00, 0x00, 0x60, 0x00, 0x00,
];
/// At 0xffff0 (the reset vector): `jmp near 0xfe00` (16-bit).
const RESET_JMP: [u8; 3] = [0xe9, 0x0d, 0xfe];

fn cached_kernel() -> Option<PathBuf> {
    let cache = match std::env::var_os("AILURO_CACHE") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/ailuro"),
    };
    let p = cache.join("linux/i386/vmlinuz");
    p.is_file().then_some(p)
}

/// A static i386 ELF executable: write(1, INIT_MSG), reboot(MAGIC1, MAGIC2, POWER_OFF), loop.
fn init_elf() -> Vec<u8> {
    const BASE: u32 = 0x0804_8000;
    const CODE_OFF: u32 = 52 + 32;
    let mut code = Vec::new();
    let msg_addr = BASE + CODE_OFF + 46;
    for (op, imm) in [(0xb8u8, 4u32), (0xbb, 1), (0xb9, msg_addr), (0xba, INIT_MSG.len() as u32)] {
        code.push(op);
        code.extend_from_slice(&imm.to_le_bytes());
    }
    code.extend_from_slice(&[0xcd, 0x80]);
    for (op, imm) in [(0xb8u8, 88u32), (0xbb, 0xfee1_dead), (0xb9, 0x2812_1969), (0xba, 0x4321_fedc)] {
        code.push(op);
        code.extend_from_slice(&imm.to_le_bytes());
    }
    code.extend_from_slice(&[0xcd, 0x80, 0xeb, 0xfe]);
    assert_eq!(code.len(), 46);
    let total = CODE_OFF + code.len() as u32 + INIT_MSG.len() as u32;

    let mut f = vec![0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for v in [2u16, 3] {
        f.extend_from_slice(&v.to_le_bytes()); // e_type EXEC, e_machine 386
    }
    for v in [1u32, BASE + CODE_OFF, 52, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes()); // e_version, e_entry, e_phoff, e_shoff, e_flags
    }
    for v in [52u16, 32, 1, 0, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes()); // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
    }
    for v in [1u32, 0, BASE, BASE, total, total, 5, 0x1000] {
        f.extend_from_slice(&v.to_le_bytes()); // PT_LOAD of the whole file, R+X
    }
    f.extend_from_slice(&code);
    f.extend_from_slice(INIT_MSG);
    f
}

/// A newc cpio archive with /dev, /dev/console and /init.
fn initramfs() -> Vec<u8> {
    let mut out = Vec::new();
    let entries: [(&str, u32, u32, Vec<u8>); 4] = [
        ("dev", 0o040_755, 0, vec![]),
        ("dev/console", 0o020_600, 0x0501, vec![]),
        ("init", 0o100_755, 0, init_elf()),
        ("TRAILER!!!", 0, 0, vec![]),
    ];
    for (ino, (name, mode, rdev, data)) in entries.iter().enumerate() {
        let fields = [ino as u32 + 1, *mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev >> 8, rdev & 0xff];
        out.extend_from_slice(b"070701");
        for v in fields.iter().chain(&[name.len() as u32 + 1, 0]) {
            out.extend_from_slice(format!("{v:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

fn boot_in_qemu(kernel: &[u8], hpet: bool) -> String {
    let ram_size = 256 * MB;
    let mut ram = GuestRam::new(0, ram_size).unwrap();
    let initrd = initramfs();
    let e = load_linux(&mut ram, kernel, Some(&initrd), "console=ttyS0 panic=-1").unwrap();
    let cfg = AcpiConfig { hpet: hpet.then_some(0xfed0_0000), ..AcpiConfig::default() };
    build_acpi_tables(&mut ram, &cfg).unwrap();

    let dir = std::env::temp_dir().join(format!("ailuro-boot-qemu-{}-{hpet}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let m = ram.as_slice();
    let mut bios = m[0xe_0000..0x10_0000].to_vec();
    assert!(bios[0x1_fe00..].iter().all(|&b| b == 0), "stub area must be free");
    bios[0x1_fe00..0x1_fe00 + STUB.len()].copy_from_slice(&STUB);
    bios[0x1_fff0..0x1_fff3].copy_from_slice(&RESET_JMP);
    let kernel_end = 0x10_0000 + kernel.len() - e.header.kernel_offset();
    let (ia, is) = e.initrd.unwrap();
    let files = [
        ("bios.bin", bios.as_slice(), None),
        ("low.bin", &m[..0xa_0000], Some(0u64)),
        ("kernel.bin", &m[0x10_0000..kernel_end], Some(0x10_0000)),
        ("initrd.bin", &m[ia as usize..(ia + is) as usize], Some(u64::from(ia))),
    ];
    let mut cmd = Command::new("qemu-system-i386");
    cmd.args(["-M", if hpet { "pc,hpet=on" } else { "pc,hpet=off" }, "-m", "256", "-cpu", "max", "-accel", "tcg"])
        .args(["-nodefaults", "-vga", "none", "-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-no-reboot");
    for (name, bytes, addr) in files {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        match addr {
            None => cmd.arg("-bios").arg(&p),
            Some(a) => cmd.arg("-device").arg(format!("loader,file={},addr={a:#x},force-raw=on", p.display())),
        };
    }
    let out_path = dir.join("serial.log");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start qemu-system-i386");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(240) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = String::from_utf8_lossy(&std::fs::read(&out_path).unwrap()).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.is_some_and(|s| s.success()), "QEMU did not power off in time ({status:?}); serial output:\n{log}");
    log
}

#[test]
fn debian_kernel_boots_and_powers_off_in_qemu() {
    if std::env::var_os("AILURO_QEMU_CROSSCHECK").is_none() {
        eprintln!("skipping: set AILURO_QEMU_CROSSCHECK=1 to boot the cached Debian kernel in QEMU with our tables");
        return;
    }
    let Some(path) = cached_kernel() else {
        eprintln!("skipping: no Debian i386 kernel cached (scripts/fetch-linux-guest.sh)");
        return;
    };
    if Command::new("qemu-system-i386").arg("--version").output().is_err() {
        eprintln!("skipping: qemu-system-i386 not found");
        return;
    }
    let kernel = std::fs::read(path).unwrap();
    for hpet in [false, true] {
        let log = boot_in_qemu(&kernel, hpet);
        for want in [
            "BIOS-e820: [mem 0x00000000000e0000-0x00000000000fffff] reserved",
            "ACPI: RSDP 0x00000000000E0000 000014 (v00 AILURO)",
            "ACPI: PM-Timer IO Port: 0x608",
            "ACPI: INT_SRC_OVR (bus 0 bus_irq 0 global_irq 2 dfl dfl)",
            "ACPI: INT_SRC_OVR (bus 0 bus_irq 9 global_irq 9 high level)",
            "Kernel command line: console=ttyS0 panic=-1",
            "ACPI: PM: (supports S0 S5)",
            "clocksource: acpi_pm",
            "AILURO-INIT: /init running",
            "ACPI: PM: Preparing to enter system sleep state S5",
            "reboot: Power down",
        ] {
            assert!(log.contains(want), "missing {want:?} (hpet {hpet}); serial output:\n{log}");
        }
        assert_eq!(log.contains("ACPI: HPET id: 0x8086a201 base: 0xfed00000"), hpet, "{log}");
    }
}
