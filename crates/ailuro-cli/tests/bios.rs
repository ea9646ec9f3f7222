//! `-bios FILE`: firmware images are checked like QEMU's pc machine checks them, clear errors for
//! bad files and option combinations, and a firmware run (the bundled `guests/bios-rom.asm`,
//! assembled here with nasm) records and replays exactly, without the ROM file.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const EMUS: [&str; 2] = [env!("CARGO_BIN_EXE_ailuro-system-i386"), env!("CARGO_BIN_EXE_ailuro-system-x86_64")];

fn tmpdir(tag: &str) -> PathBuf {
    support::tmpdir(&format!("bios-{tag}"))
}

fn run(emu: &str, args: &[&str]) -> Output {
    // A firmware run must never hang: killed (and failed) after a minute.
    support::run(emu, args, Duration::from_secs(60))
}

/// Assemble the bundled firmware test ROM (64 KiB, reset vector in its last 16 bytes).
fn bios_rom(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/bios-rom.asm");
    let out = dir.join("bios-rom.bin");
    let st = Command::new("nasm").args(["-f", "bin", "-o"]).arg(&out).arg(&src).status().expect("run nasm");
    assert!(st.success(), "nasm failed on {}", src.display());
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 64 << 10);
    out
}

fn stderr_of(emu: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = run(emu, args);
    assert!(out.stdout.is_empty(), "nothing may run: {}", String::from_utf8_lossy(&out.stdout));
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_firmware_files_and_option_combinations_are_refused_clearly() {
    let dir = tmpdir("bad");
    let rom = bios_rom(&dir);
    let rom = rom.to_str().unwrap();
    let write = |name: &str, len: usize| {
        let p = dir.join(name);
        std::fs::write(&p, vec![0xffu8; len]).unwrap();
        p.to_str().unwrap().to_string()
    };
    let empty = write("empty.bin", 0);
    let odd = write("odd.bin", 100_000);
    let huge = write("huge.bin", (16 << 20) + (64 << 10));
    let missing = dir.join("missing.bin");
    let hello = ailuro_guests::guest_path("hello").unwrap();
    let hello = hello.to_str().unwrap();
    for emu in EMUS {
        let cases: [(&[&str], &[&str]); 9] = [
            (&["-bios", missing.to_str().unwrap()], &["cannot read firmware (-bios)", "missing.bin"]),
            (&["-bios", &empty], &["empty.bin", "the firmware image is empty"]),
            (&["-bios", &odd], &["odd.bin", "100000 bytes, not a multiple of 64 KiB"]),
            (&["-bios", &huge], &["huge.bin", "at most 16 MiB"]),
            (&["-bios", dir.to_str().unwrap()], &["cannot read firmware (-bios)"]),
            (&["-bios", rom, "-kernel", hello], &["-bios and -kernel cannot be combined"]),
            (&["-bios", rom, "-append", "x"], &["-append is only allowed with -kernel"]),
            (&["-replay", "whatever", "-bios", rom], &["-bios conflicts with -replay"]),
            (&["-display", "none"], &["no -kernel or -bios given"]),
        ];
        for (args, wants) in cases {
            let (code, err) = stderr_of(emu, args);
            assert_eq!(code, Some(1), "{args:?}: {err}");
            for w in wants {
                assert!(err.contains(w), "{args:?}: '{w}' not in: {err}");
            }
        }
    }
}

/// The CPU must fetch the reset vector at 0xfffffff0, above RAM. Until `ailuro-x86` executes
/// from the ROM there, the run stops at instruction 0 with the CPU's message; it must neither
/// hang nor reset forever.
#[test]
fn firmware_run_ends_cleanly_whatever_the_cpu_can_fetch() {
    let dir = tmpdir("ends");
    let rom = bios_rom(&dir);
    for emu in EMUS {
        // Without -no-reboot a shutdown resets the machine; one that cannot retire a single
        // instruction after a reset stops instead of looping.
        let out = run(emu, &["-bios", rom.to_str().unwrap(), "-display", "none", "-icount", "sleep=off"]);
        let err = String::from_utf8_lossy(&out.stderr);
        let console = String::from_utf8_lossy(&out.stdout);
        if console.contains("PASS") {
            assert_eq!(out.status.code(), Some(1), "{err}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.contains("0xfffffff0") && err.contains("again right after a reset"), "{err}");
        }
    }
}

#[test]
fn firmware_rom_records_and_replays_exactly_without_the_rom_file() {
    let dir = tmpdir("rr");
    let rom = bios_rom(&dir);
    for emu in EMUS {
        let name = dir.join("rom-rec");
        let dbg = dir.join("debugcon.txt");
        let out = run(
            emu,
            &[
                "-bios",
                rom.to_str().unwrap(),
                "-display",
                "none",
                "-no-reboot",
                "-icount",
                "sleep=off",
                "-debugcon",
                &format!("file:{}", dbg.display()),
                "-global",
                "isa-debugcon.iobase=0x402",
                "-record",
                &format!("{},overwrite=on", name.display()),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let console = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}\n{console}");
        for want in [
            "bios-rom: reset vector reached, real mode",
            "bios-rom: protected mode",
            "bios-rom: high mapping matches the alias, ROM stores dropped",
            "bios-rom: RAM checksum ",
            "PASS",
        ] {
            assert!(console.contains(want), "'{want}' missing: {console}");
        }
        assert_eq!(std::fs::read_to_string(&dbg).unwrap(), "bios-rom: debugcon present\n");
        let line = err.lines().find(|l| l.contains("complete:")).unwrap_or_else(|| panic!("{err}"));
        let n: u64 = line.split("complete: ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        // The replay needs neither the ROM file nor the debugcon option; the debugcon output is
        // reconstructed when asked for.
        std::fs::rename(&rom, dir.join("moved.bin")).unwrap();
        let dbg2 = dir.join("debugcon-replay.txt");
        let rep = run(
            emu,
            &["-replay", name.to_str().unwrap(), "-display", "none", "-debugcon", &format!("file:{}", dbg2.display())],
        );
        let rerr = String::from_utf8_lossy(&rep.stderr);
        assert_eq!(rep.status.code(), Some(0), "{rerr}");
        assert_eq!(String::from_utf8_lossy(&rep.stdout), console);
        let field = |k: &str| rerr.lines().find_map(|l| l.strip_prefix(k)).unwrap().trim().to_string();
        assert_eq!(field("instructions:").parse::<u64>().unwrap(), n);
        assert_eq!(std::fs::read_to_string(&dbg2).unwrap(), "bios-rom: debugcon present\n");
        let again = run(emu, &["-replay", name.to_str().unwrap(), "-display", "none"]);
        assert!(String::from_utf8_lossy(&again.stderr).contains(&field("final state hash:")));
        std::fs::rename(dir.join("moved.bin"), &rom).unwrap();
    }
}
