//! The bundled Ailuro test guests.
//!
//! Each guest is a small multiboot v1 ELF32 kernel written in assembly (`guests/<name>.asm` at the
//! repository root, sharing `guests/common.inc`), built by this crate's build script with `nasm` and
//! `ld`. They talk only to standard PC hardware (COM1, 8259 PICs, 8254 PIT, CMOS RTC, local APIC)
//! and exit through QEMU's `isa-debug-exit` device at port 0xf4: a guest that passes prints `PASS`
//! and `<name>: done` and writes 0 (QEMU exit status 1); one that fails prints `FAIL: <reason>` and
//! `<name>: done` and writes 1 (QEMU exit status 3). See `guests/README.md` for what each guest does,
//! its expected output and the QEMU command lines that serve as the reference.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};

/// Names of all bundled guests.
pub const GUESTS: &[&str] = include!("list.rs");

/// Debug-exit value a guest writes on success (QEMU reports exit status `(v << 1) | 1` = 1).
pub const EXIT_PASS: u8 = 0;
/// Debug-exit value a guest writes on failure (QEMU exit status 3).
pub const EXIT_FAIL: u8 = 1;

/// How to run a guest in a test and what its serial output must contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestSpec {
    /// Guest name (see [`GUESTS`]).
    pub name: &'static str,
    /// Multiboot command line for a test run (short variants where the guest takes parameters).
    pub cmdline: &'static str,
    /// Bytes to feed into COM1's receiver (the `serial` guest reads lines until "quit").
    pub serial_input: &'static [u8],
    /// Substrings the serial output must contain (besides `PASS` and the final `<name>: done`).
    pub expect: &'static [&'static str],
    /// Minimum guest RAM in MiB.
    pub min_ram_mib: u32,
}

/// Test-run parameters and expected output of every guest, in [`GUESTS`] order.
pub const SPECS: &[GuestSpec] = &[
    GuestSpec {
        name: "hello",
        cmdline: "hello-cmdline",
        serial_input: b"",
        expect: &["mem_lower: 639 KiB", "mem_upper: ", "hello-cmdline", "mmap: base 0x0000000000100000"],
        min_ram_mib: 2,
    },
    GuestSpec {
        name: "timer",
        cmdline: "",
        serial_input: b"",
        expect: &["latched counts:", "irq0 ticks: 100", "hlt wake-ups: 100"],
        min_ram_mib: 2,
    },
    GuestSpec {
        name: "apic",
        cmdline: "",
        serial_input: b"",
        expect: &["timer interrupts: 20, hlt wake-ups: 20", "self-IPIs: 1, spurious: 0, esr: 0x00000000"],
        min_ram_mib: 2,
    },
    GuestSpec {
        name: "paging",
        cmdline: "",
        serial_input: b"",
        expect: &[
            "4 MiB pages, global alias, INVLPG and CR4.PGE flush: ok",
            "user: hello from ring 3 via int 0x80",
            "user: hello from ring 3 via sysenter",
            "int 0x80 calls: 3, sysenter calls: 2, page faults: 4",
        ],
        min_ram_mib: 8,
    },
    GuestSpec {
        name: "serial",
        cmdline: "",
        serial_input: b"hello\nabc\nquit\n",
        expect: &["polled line: 'hello' (5 bytes)", "irq line: 'abc' -> 'ABC'", "irq line: 'quit' -> 'QUIT'"],
        min_ram_mib: 2,
    },
    GuestSpec {
        name: "clock",
        cmdline: "",
        serial_input: b"",
        expect: &["rdtsc: ", "rtc: ", "rtc status: ", "rtc periodic interrupts: 16, hlt wake-ups: 16"],
        min_ram_mib: 2,
    },
    GuestSpec {
        name: "cpubound",
        cmdline: "iters=100000",
        serial_input: b"",
        expect: &["iterations: 100000, loop instructions: 2000000", "checksum: 0x66a13609"],
        min_ram_mib: 2,
    },
    GuestSpec {
        name: "smc",
        cmdline: "",
        serial_input: b"",
        expect: &["4 page-straddling instruction: 0x11223344 then 0xbbaa3344", "6 callee patches its return site x3"],
        min_ram_mib: 2,
    },
];

/// The test spec of guest `name`.
pub fn spec(name: &str) -> Option<&'static GuestSpec> {
    SPECS.iter().find(|s| s.name == name)
}

/// Check a guest's serial output against its spec: every expected substring, a `PASS` line, no
/// `FAIL` line, and `<name>: done` as the last line. Returns what is wrong.
pub fn check_output(spec: &GuestSpec, output: &str) -> Result<(), String> {
    let lines: Vec<&str> = output.lines().map(|l| l.trim_end_matches('\r')).collect();
    if let Some(fail) = lines.iter().find(|l| l.starts_with("FAIL")) {
        return Err(format!("{}: guest reported {fail:?}", spec.name));
    }
    for want in spec.expect {
        if !output.contains(want) {
            return Err(format!("{}: output lacks {want:?}", spec.name));
        }
    }
    if !lines.contains(&"PASS") {
        return Err(format!("{}: no PASS line", spec.name));
    }
    let done = format!("{}: done", spec.name);
    if lines.iter().rev().find(|l| !l.is_empty()) != Some(&done.as_str()) {
        return Err(format!("{}: last line is not {done:?}", spec.name));
    }
    Ok(())
}

/// Path of the built ELF image of guest `name`, or `None` if there is no such guest.
pub fn guest_path(name: &str) -> Option<PathBuf> {
    if !GUESTS.contains(&name) {
        return None;
    }
    let path = Path::new(env!("OUT_DIR")).join(format!("{name}.elf"));
    path.is_file().then_some(path)
}

/// Directory holding the guest sources (`guests/` at the repository root).
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guest_is_built_and_is_multiboot_elf() {
        for name in GUESTS {
            let path = guest_path(name).unwrap_or_else(|| panic!("guest {name} not built"));
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..4], b"\x7fELF", "{name}");
            let found = bytes[..bytes.len().min(8192)]
                .chunks_exact(4)
                .any(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) == 0x1BAD_B002);
            assert!(found, "{name}: multiboot header in the first 8 KiB");
        }
        assert_eq!(guest_path("nonexistent"), None);
        assert!(source_dir().join("common.inc").is_file());
    }

    #[test]
    fn specs_cover_every_guest_in_order() {
        let names: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
        assert_eq!(names, GUESTS);
        assert_eq!(spec("paging").unwrap().min_ram_mib, 8);
    }

    #[test]
    fn output_checker() {
        let s = spec("smc").unwrap();
        let good = "smc: self-modifying code\n4 page-straddling instruction: 0x11223344 then 0xbbaa3344\n\
                    6 callee patches its return site x3: sum 0x00000666\nPASS\nsmc: done\n";
        assert_eq!(check_output(s, good), Ok(()));
        assert!(check_output(s, &good.replace("PASS", "FAIL: x")).is_err());
        assert!(check_output(s, &good.replace("smc: done", "")).is_err());
        assert!(check_output(s, &good.replace("0xbbaa3344", "0x11223344")).is_err());
    }
}
