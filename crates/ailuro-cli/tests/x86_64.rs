//! `ailuro-system-x86_64`: the bundled 32-bit guests run, record and replay on it exactly as on
//! the i386 machine; bzImages (32-bit and 64-bit) enter through the 32-bit boot protocol; a
//! recording is replayed only by the binary of its architecture, and the refusal names the other.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const X86_64: &str = env!("CARGO_BIN_EXE_ailuro-system-x86_64");
const I386: &str = env!("CARGO_BIN_EXE_ailuro-system-i386");

fn guest(name: &str) -> PathBuf {
    ailuro_guests::guest_path(name).unwrap_or_else(|| panic!("bundled guest {name} is not built"))
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ailuro-x86_64-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(emu: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(emu)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start emulator");
    {
        use std::io::Write;
        let mut s = child.stdin.take().unwrap();
        s.write_all(stdin).unwrap();
    }
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("{emu} {args:?} timed out");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "emulator panicked: {err}");
    out
}

fn field<'a>(report: &'a str, key: &str) -> &'a str {
    report.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no '{key}' in {report}")).trim()
}

/// Record `kernel` on `emu` into `name`; returns (console, exit status, recorded instructions).
fn record(emu: &str, name: &Path, kernel: &Path, extra: &[&str], stdin: &[u8]) -> (String, i32, u64) {
    let mut args = vec!["-m", "32", "-kernel", kernel.to_str().unwrap(), "-display", "none", "-no-reboot"];
    args.extend(["-icount", "sleep=off", "-record", name.to_str().unwrap()]);
    args.extend(extra);
    let out = run(emu, &args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = stderr.lines().find(|l| l.contains("complete:")).unwrap_or_else(|| panic!("no summary: {stderr}"));
    let n = line.split("complete: ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code().unwrap_or(-1), n)
}

/// Replay `name` on `emu`, expecting success; returns (console, instructions, final hash).
fn replay_ok(emu: &str, name: &Path) -> (String, u64, String) {
    let out = run(emu, &["-replay", name.to_str().unwrap(), "-display", "none"], b"");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "replay failed: {stderr}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        field(&stderr, "instructions:").parse().unwrap(),
        field(&stderr, "final state hash:").to_string(),
    )
}

#[test]
fn bundled_guests_run_record_and_replay_on_x86_64() {
    let dir = tmpdir("guests");
    for spec in ailuro_guests::SPECS {
        let g = spec.name;
        let mut extra = vec![];
        if !spec.cmdline.is_empty() {
            extra.extend(["-append", spec.cmdline]);
        }
        if !spec.serial_input.is_empty() {
            extra.extend(["-serial", "stdio"]);
        }
        let name = dir.join(g);
        let (console, status, n) = record(X86_64, &name, &guest(g), &extra, spec.serial_input);
        assert_eq!(status, 1, "{g}: exit status (PASS); console: {console}");
        assert!(console.contains("PASS") && !console.contains("FAIL"), "{g}: {console}");
        for want in spec.expect {
            assert!(console.contains(want), "{g}: '{want}' missing from {console}");
        }
        let (replayed, m, hash) = replay_ok(X86_64, &name);
        assert_eq!(replayed, console, "{g}: replay console");
        assert_eq!(m, n, "{g}: replay instruction count");
        assert_eq!(replay_ok(X86_64, &name).2, hash, "{g}: second replay");
    }
}

#[test]
fn replay_is_refused_by_the_other_architectures_binary() {
    let dir = tmpdir("cross");
    let hello = guest("hello");
    for (rec_emu, other, rec_arch, other_arch) in [(I386, X86_64, "i386", "x86_64"), (X86_64, I386, "x86_64", "i386")] {
        let name = dir.join(format!("hello-{rec_arch}"));
        let (_, status, _) = record(rec_emu, &name, &hello, &[], b"");
        assert_eq!(status, 1);
        let out = run(other, &["-replay", name.to_str().unwrap()], b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("it is a recording of an {rec_arch} guest and this is ailuro-system-{other_arch}"))
                && err.contains(&format!("replay it with ailuro-system-{rec_arch}")),
            "{err}"
        );
        assert!(out.stdout.is_empty());
        replay_ok(rec_emu, &name);
    }
}

/// A minimal bzImage (boot protocol 2.15): one setup sector, then 32-bit code that prints on COM1
/// and exits through isa-debug-exit. `kernel_64` sets XLF_KERNEL_64 (the 64-bit entry point flag
/// of an x86_64 kernel), which changes nothing about its 32-bit entry.
fn tiny_bzimage(dir: &Path, kernel_64: bool) -> PathBuf {
    let asm = dir.join("tiny.asm");
    std::fs::write(
        &asm,
        "BITS 32\nORG 0x100000\n mov esi, msg\n mov dx, 0x3f8\n.l: lodsb\n test al, al\n jz .d\n out dx, al\n \
         jmp .l\n.d: mov dx, 0xf4\n xor eax, eax\n out dx, eax\n cli\n hlt\nmsg: db 'tiny bzImage: 32-bit entry', 10, 0\n",
    )
    .unwrap();
    let bin = dir.join("tiny.bin");
    let st = Command::new("nasm").args(["-f", "bin", "-o"]).arg(&bin).arg(&asm).status().expect("nasm");
    assert!(st.success());
    let mut code = std::fs::read(&bin).unwrap();
    code.resize(code.len().div_ceil(16) * 16, 0);
    let mut img = vec![0u8; 1024];
    img[0x1f1] = 1; // setup_sects: the kernel starts at 1024
    img[0x1f4..0x1f8].copy_from_slice(&((code.len() / 16) as u32).to_le_bytes()); // syssize
    img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    img[0x200] = 0xeb;
    img[0x201] = 0x66; // header ends at 0x268
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    img[0x211] = 0x01; // LOADED_HIGH
    img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    img[0x236..0x238].copy_from_slice(&u16::from(kernel_64).to_le_bytes()); // xloadflags
    img[0x238..0x23c].copy_from_slice(&255u32.to_le_bytes()); // cmdline_size
    img[0x260..0x264].copy_from_slice(&0x1_0000u32.to_le_bytes()); // init_size
    img.extend(code);
    let path = dir.join(if kernel_64 { "bzImage-64" } else { "bzImage-32" });
    std::fs::write(&path, img).unwrap();
    path
}

#[test]
fn bzimages_enter_through_the_32_bit_protocol_and_i386_refuses_64_bit_ones() {
    let dir = tmpdir("bz");
    for kernel_64 in [false, true] {
        let bz = tiny_bzimage(&dir, kernel_64);
        let name = dir.join(format!("bz-{kernel_64}"));
        let (console, status, n) = record(X86_64, &name, &bz, &["-append", "console=ttyS0"], b"");
        assert_eq!(console, "tiny bzImage: 32-bit entry\n", "64-bit flag {kernel_64}");
        assert_eq!(status, 1);
        let (replayed, m, _) = replay_ok(X86_64, &name);
        assert_eq!((replayed, m), (console, n));
        let out = run(I386, &["-kernel", bz.to_str().unwrap(), "-display", "none", "-no-reboot"], b"");
        let err = String::from_utf8_lossy(&out.stderr);
        if kernel_64 {
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("x86_64 kernel") && err.contains("use ailuro-system-x86_64"), "{err}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "tiny bzImage: 32-bit entry\n");
        }
    }
}

#[test]
fn version_and_help_name_the_x86_64_binary() {
    let out = run(X86_64, &["-version"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ailuro-system-x86_64 "));
    let out = run(X86_64, &["-h"], b"");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("usage: ailuro-system-x86_64"));
}
