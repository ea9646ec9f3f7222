//! End-to-end tests of the PC devices test kernels expect on QEMU's `pc` machine (fw_cfg,
//! `-device pc-testdev`) and of QEMU's multiboot details (the command line starts with the
//! kernel's path; `-initrd` modules carry their own command lines, `,,` escaping a comma). A tiny
//! multiboot kernel, assembled here with nasm + ld, prints what it reads on COM1 and exits through
//! isa-debug-exit; the run is recorded and replayed with an identical console.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EMU: &str = env!("CARGO_BIN_EXE_ailuro-system-i386");

/// The test kernel. Reads fw_cfg (signature, RAM size, CPU count, feature bits, file directory,
/// command line), the multiboot command line and module list, and exercises pc-testdev (scratch
/// register at 0xe0/0xe9, flush page at 0xe4, memory at 0xff000000, IRQ line 5 seen in the 8259's
/// IRR), then writes 0 to isa-debug-exit (exit status 1).
const KERNEL_ASM: &str = r#"bits 32
section .multiboot
    dd 0x1BADB002, 0, -0x1BADB002
section .text
global _start
_start:
    mov esp, stack_top
    mov [mbi], ebx
    ; fw_cfg signature
    mov esi, s_sig
    call puts
    mov ax, 0x0000
    call fw_select
    mov ecx, 4
.sig:
    call fw_byte
    call putc
    loop .sig
    call nl
    ; RAM size (low and high dwords, little-endian)
    mov esi, s_ram
    call puts
    mov ax, 0x0003
    call fw_select
    call fw_dword
    push eax
    call fw_dword
    call puthex
    pop eax
    call puthex
    call nl
    ; CPU count (u16)
    mov esi, s_cpus
    call puts
    mov ax, 0x0005
    call fw_select
    call fw_byte
    movzx ebx, al
    call fw_byte
    movzx eax, al
    shl eax, 8
    or eax, ebx
    call puthex
    call nl
    ; feature bits
    mov esi, s_id
    call puts
    mov ax, 0x0001
    call fw_select
    call fw_dword
    call puthex
    call nl
    ; file directory count (big-endian)
    mov esi, s_dir
    call puts
    mov ax, 0x0019
    call fw_select
    call fw_dword
    call puthex
    call nl
    ; fw_cfg command line
    mov esi, s_fwcmd
    call puts
    mov ax, 0x0015
    call fw_select
.fwc:
    call fw_byte
    test al, al
    jz .fwc_done
    call putc
    jmp .fwc
.fwc_done:
    call nl
    ; multiboot command line
    mov esi, s_mbcmd
    call puts
    mov ebx, [mbi]
    mov esi, [ebx + 16]
    call puts
    call nl
    ; modules: command line and first 4 bytes
    mov ebx, [mbi]
    mov ecx, [ebx + 20]
    mov edi, [ebx + 24]
.mod:
    test ecx, ecx
    jz .mod_done
    mov esi, s_mod
    call puts
    mov esi, [edi + 8]
    call puts
    mov al, '|'
    call putc
    mov esi, [edi]
    push ecx
    mov ecx, 4
.mb:
    lodsb
    call putc
    loop .mb
    pop ecx
    call nl
    add edi, 16
    dec ecx
    jmp .mod
.mod_done:
    ; pc-testdev scratch register
    mov esi, s_ioport
    call puts
    mov eax, 0x12345678
    out 0xe0, eax
    mov al, 0xab
    out 0xe9, al
    mov eax, 0x100000
    out 0xe4, eax
    in eax, 0xe0
    call puthex
    call nl
    ; pc-testdev memory
    mov esi, s_iomem
    call puts
    mov dword [0xff000010], 0xdeadbeef
    mov eax, [0xff000010]
    call puthex
    call nl
    ; pc-testdev IRQ line 5 into a masked 8259: IRR bit 5
    mov al, 0x11
    out 0x20, al
    mov al, 0x20
    out 0x21, al
    mov al, 4
    out 0x21, al
    mov al, 1
    out 0x21, al
    mov al, 0xff
    out 0x21, al
    mov dx, 0x2005
    mov al, 1
    out dx, al
    mov al, 0x0a
    out 0x20, al
    in al, 0x20
    and eax, 0x20
    mov esi, s_irr
    push eax
    call puts
    pop eax
    call puthex
    call nl
    mov dx, 0x2005
    xor al, al
    out dx, al
    mov esi, s_done
    call puts
    call nl
    xor eax, eax
    out 0xf4, al
.hang:
    hlt
    jmp .hang

fw_select:              ; ax = key
    mov dx, 0x510
    out dx, ax
    ret
fw_byte:                ; al = next data byte
    mov dx, 0x511
    in al, dx
    ret
fw_dword:               ; eax = next four bytes, little-endian
    push ecx
    push ebx
    xor ebx, ebx
    mov ecx, 4
.l:
    call fw_byte
    movzx eax, al
    shl eax, 24
    shr ebx, 8
    or ebx, eax
    loop .l
    mov eax, ebx
    pop ebx
    pop ecx
    ret
putc:
    push edx
    mov dx, 0x3f8
    out dx, al
    pop edx
    ret
puts:                   ; esi = NUL-terminated string
    push eax
.l:
    lodsb
    test al, al
    jz .e
    call putc
    jmp .l
.e:
    pop eax
    ret
nl:
    push eax
    mov al, 10
    call putc
    pop eax
    ret
puthex:                 ; eax as 8 hex digits
    push ecx
    push ebx
    mov ebx, eax
    mov ecx, 8
.l:
    rol ebx, 4
    mov eax, ebx
    and eax, 15
    mov al, [hexd + eax]
    call putc
    loop .l
    pop ebx
    pop ecx
    ret

section .data
hexd: db "0123456789ABCDEF"
s_sig: db "SIG=", 0
s_ram: db "RAM=", 0
s_cpus: db "CPUS=", 0
s_id: db "ID=", 0
s_dir: db "FILES=", 0
s_fwcmd: db "FWCMD=", 0
s_mbcmd: db "MBCMD=", 0
s_mod: db "MOD=", 0
s_ioport: db "IOPORT=", 0
s_iomem: db "IOMEM=", 0
s_irr: db "IRR=", 0
s_done: db "DONE", 0
section .bss
mbi: resd 1
stack: resb 4096
stack_top:
"#;

const KERNEL_LD: &str = "ENTRY(_start)\nSECTIONS { . = 0x100000; .multiboot : { *(.multiboot) } .text : { *(.text) } .data : { *(.data) } .bss : { *(.bss) } }\n";

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ailuro-dev-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Assemble and link the test kernel in `dir`; returns its path.
fn build_kernel(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("t.asm"), KERNEL_ASM).unwrap();
    std::fs::write(dir.join("t.ld"), KERNEL_LD).unwrap();
    let ok = |c: &mut Command| assert!(c.status().expect("nasm and ld (scripts/setup.sh)").success());
    ok(Command::new("nasm").args(["-f", "elf32", "-o", s(&dir.join("t.o")), s(&dir.join("t.asm"))]));
    ok(Command::new("ld")
        .args(["-m", "elf_i386", "-T", s(&dir.join("t.ld")), "-o", s(&dir.join("t.elf"))])
        .arg(dir.join("t.o"))
        .stderr(Stdio::null()));
    dir.join("t.elf")
}

fn run(args: &[&str]) -> Output {
    let mut child = Command::new(EMU)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start emulator");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("emulator timed out");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "emulator panicked: {err}");
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn fw_cfg_pc_testdev_and_multiboot_command_lines_record_and_replay() {
    let dir = tmpdir("full");
    let kernel = build_kernel(&dir);
    std::fs::write(dir.join("m1"), b"M1!!").unwrap();
    std::fs::write(dir.join("m2"), b"M2??").unwrap();
    let initrd = format!("{} arg=a,,b,{}", s(&dir.join("m1")), s(&dir.join("m2")));
    let rec = dir.join("rec");
    let out = run(&[
        "-m",
        "32",
        "-kernel",
        s(&kernel),
        "-append",
        "hello=1 x,y",
        "-initrd",
        &initrd,
        "-device",
        "pc-testdev",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x4",
        "-display",
        "none",
        "-no-reboot",
        "-icount",
        "sleep=off",
        "-record",
        s(&rec),
    ]);
    let console = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "isa-debug-exit 0 -> 1; console: {console}\n{}", text(&out.stderr));
    let want = format!(
        "SIG=QEMU\nRAM=0000000002000000\nCPUS=00000001\nID=00000001\nFILES=00000000\nFWCMD=hello=1 x,y\n\
         MBCMD={k} hello=1 x,y\nMOD={m1} arg=a,b|M1!!\nMOD={m2}|M2??\nIOPORT=1234AB78\nIOMEM=DEADBEEF\n\
         IRR=00000020\nDONE\n",
        k = s(&kernel),
        m1 = s(&dir.join("m1")),
        m2 = s(&dir.join("m2")),
    );
    assert_eq!(console, want);

    let replay = run(&["-replay", s(&rec), "-display", "none"]);
    let err = text(&replay.stderr);
    assert_eq!(replay.status.code(), Some(0), "replay failed: {err}");
    assert!(err.contains("Replay completed successfully"), "{err}");
    assert_eq!(text(&replay.stdout), console, "replay console differs from the recording's");

    // The recording's board decides the devices; a replay takes no -device pc-testdev.
    let conflict = run(&["-replay", s(&rec), "-device", "pc-testdev"]);
    assert_eq!(conflict.status.code(), Some(1));
    assert!(text(&conflict.stderr).contains("conflicts with -replay"), "{}", text(&conflict.stderr));
}

#[test]
fn without_the_device_pc_testdev_is_unmapped_and_fw_cfg_is_still_there() {
    let dir = tmpdir("plain");
    let kernel = build_kernel(&dir);
    let out = run(&["-kernel", s(&kernel), "-display", "none", "-no-reboot", "-icount", "sleep=off"]);
    let console = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{console}");
    for line in [
        "SIG=QEMU\n",
        "RAM=0000000008000000\n",
        "FWCMD=\n",
        // QEMU formats "%s %s": the space stays without -append.
        &format!("MBCMD={} \n", s(&kernel)),
        "IOPORT=FFFFFFFF\n",
        "IOMEM=FFFFFFFF\n",
        "IRR=00000000\n",
    ] {
        assert!(console.contains(line), "missing {line:?} in {console}");
    }
    assert!(!console.contains("MOD="), "{console}");
}

#[test]
fn empty_initrd_entries_are_refused() {
    let dir = tmpdir("empty");
    let kernel = build_kernel(&dir);
    std::fs::write(dir.join("m1"), b"M1!!").unwrap();
    let out = run(&["-kernel", s(&kernel), "-initrd", &format!("{},", s(&dir.join("m1"))), "-display", "none"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("empty module name"), "{}", text(&out.stderr));
}
